"""Config: discovery, relative paths, and an error naming file + key for every kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach.config import find_config, load_config
from outreach.errors import ConfigError


def test_example_config_loads_with_paths_relative_to_its_folder(campaign):
    config = campaign.config()
    assert config.store_path == campaign.root / "outreach.db"
    assert config.smtp.outbox == campaign.root / "outbox"
    assert config.imap.maildir == campaign.root / "mail"
    assert config.smtp.transport == "outbox" and config.imap.source == "maildir"
    assert [str(w) for w in config.sending.windows] == ["07:00-09:00", "17:00-19:00"]
    seq = config.sequences["referral"]
    assert [(s.day, s.kind, s.templates, s.thread) for s in seq.steps] == [
        (0, "email", ("referral",), False),
        (0, "call", ("voicemail",), False),
        (4, "email", ("referral-bump",), True),
        (4, "call", ("voicemail",), False),
        (9, "email", ("meeting-a", "meeting-b"), False),
        (21, "recycle", (), False),
    ]
    assert seq.on_referral == "referred" and seq.recycle_cooldown_days == 90


def test_discovery_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTREACH_CONFIG", raising=False)
    assert find_config(None) == Path("outreach.toml")
    monkeypatch.setenv("OUTREACH_CONFIG", "/x/env.toml")
    assert find_config(None) == Path("/x/env.toml")
    assert find_config("given.toml") == Path("given.toml")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("daily_limit = 75", "daily_limt = 75",
         '[sending] has unknown key "daily_limt": did you mean "daily_limit"?'),
        ("daily_limit = 75", 'daily_limit = "75"', "[sending] daily_limit must be a whole number"),
        ("daily_limit = 75", "daily_limit = 0", "[sending] daily_limit must be 1 or more"),
        ('windows = ["07:00-09:00", "17:00-19:00"]', 'windows = ["07:00-09:00", "17-19"]',
         '[sending] windows[1] "17-19": expected HH:MM-HH:MM'),
        ('windows = ["07:00-09:00", "17:00-19:00"]', 'windows = ["09:00-07:00"]',
         "[sending] windows[0] \"09:00-07:00\": the end must be after the start"),
        ('windows = ["07:00-09:00", "17:00-19:00"]', "windows = []",
         "[sending] windows is empty: nothing could ever be sent"),
        ('days = ["mon", "tue", "wed", "thu", "fri"]', "days = []",
         "[sending] days is empty: nothing could ever be sent"),
        ('days = ["mon", "tue", "wed", "thu", "fri"]', 'days = ["mon", "funday"]',
         '[sending] days[1] "funday" is not a weekday'),
        ('timezone = "America/Chicago"', 'timezone = "Mars/Olympus"',
         '[sender] timezone "Mars/Olympus" is not a known time zone'),
        ('icp = "cfo-manufacturing"', 'icp = "cfo-manufactoring"',
         '[sequences.referral] icp "cfo-manufactoring" is not an [icp.*] table'),
        ('{ day = 0,  email = "referral" }', '{ day = 0,  email = "referal" }',
         '[sequences.referral] steps[0] email "referal": no template templates/referal.txt'),
        ('{ day = 0,  email = "referral" }', '{ day = 0 }',
         "[sequences.referral] steps[0] needs exactly one of email, call or recycle"),
        ('{ day = 4,  call = "voicemail" }', '{ day = 3,  call = "voicemail" }',
         "[sequences.referral] steps[3] day is 3, before the previous step's day 4"),
        ('{ day = 9,  email = ["meeting-a", "meeting-b"] }',
         '{ day = 9,  email = ["meeting-a", "referral"] }',
         '[sequences.referral] steps[4] email "referral" is already steps[0]: each email '
         "template is sent once per sequence"),
        ('security = "starttls"', 'security = "none"',
         '[smtp] security "none" is refused for host "smtp.acme.example"'),
        ('security = "tls"', 'security = "ssl"', '[imap] security "ssl" is not allowed'),
        ('postal_address = "Acme Analytics, 1 Main St, Springfield, IL 62701, USA"',
         'postal_address = ""', "[sender] postal_address is required (CAN-SPAM)"),
        ('on_referral = "referred"', 'on_referral = "nobody"',
         '[sequences.referral] on_referral "nobody" is not a [sequences.*] table'),
        ("[store]", "[stores]", '[stores] is not a known table: did you mean "[store]"?'),
        ('unsubscribe_url = ""', 'unsubscribe_url = "http://x.example/u"',
         "[compliance] unsubscribe_url"),
        ('password_env = "OUTREACH_SMTP_PASSWORD"', 'password_env = "hunter2 secret"',
         "[smtp] password_env"),
        ("employees = [200, 5000]", "employees = [5000, 200]",
         "[icp.cfo-manufacturing] employees must be [min, max]"),
    ],
)
def test_each_mistake_names_file_and_key(campaign, old, new, expected):
    campaign.edit_config(old, new)
    with pytest.raises(ConfigError) as err:
        campaign.config()
    assert str(err.value).startswith("outreach.toml: ")
    assert expected in str(err.value)
    # The CLI says the same on stderr, exit 1, no traceback.
    result = campaign.run("check")
    assert result.exit_code == 1
    assert expected in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_security_none_is_fine_on_loopback(campaign):
    campaign.edit_config('host = "smtp.acme.example"', 'host = "127.0.0.1"')
    campaign.edit_config('security = "starttls"', 'security = "none"')
    assert campaign.config().smtp.security == "none"


def test_plugin_tables_are_settings_for_that_plugin(campaign):
    campaign.edit_config('paths = ["plugins"]',
                         'paths = ["plugins"]\n[plugins.crm]\npath = "x.jsonl"\ntoken_env = "T"')
    # Paths are resolved against the config's folder, like every other path in it.
    assert campaign.config().plugin_settings == {
        "crm": {"path": str(campaign.root / "x.jsonl"), "token_env": "T"}}


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match=r"no config at .*nope.toml \(named by --config\)"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "outreach.toml"
    bad.write_text("[sender\nname = 1", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"outreach.toml: not valid TOML"):
        load_config(bad)
    bad.write_text('[smtp]\nport = 25\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[sender\] is missing"):
        load_config(bad)


def test_config_found_through_environment(campaign, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from outreach.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OUTREACH_CONFIG", str(campaign.config_path))
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert str(campaign.config_path) in result.stdout
