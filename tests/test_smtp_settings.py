"""SMTP and IMAP settings that explain themselves: provider presets, `auth`, a relay without
AUTH, TLS on a plaintext port, and finding the config (issues #11 and #14)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from outreach.cli import cli
from outreach.config import load_config
from outreach.errors import ConfigError
from tests.conftest import prospect_row
from tests.smtp_server import use_smtp
from tests.test_send import enrolled, ledger


def test_relay_without_auth_says_so_and_auth_none_connects_without_login(campaign, smtp_server,
                                                                        monkeypatch):
    monkeypatch.setenv("OUTREACH_SMTP_PASSWORD", "s3cret")
    server = smtp_server()   # like `python -m aiosmtpd`: no AUTH offered
    use_smtp(campaign, server.port, username="dana@acme.example")
    enrolled(campaign, [prospect_row(1)])
    refused = campaign.run("send")
    assert refused.exit_code == 1
    assert (f'[smtp] 127.0.0.1:{server.port}: server offers no AUTH: set auth = none (or '
            'username = "") if it needs no login') in refused.stderr
    assert "cannot connect" not in refused.stderr
    assert ledger(campaign) == [] and server.handler.messages == []
    check = campaign.run("check", "--connect")
    assert check.exit_code == 1 and "server offers no AUTH" in check.stderr
    campaign.edit_config('username = "dana@acme.example"',
                         'username = "dana@acme.example"\nauth = "none"')
    check = campaign.run("check", "--connect")
    assert f"smtp 127.0.0.1:{server.port}: connected (no login)" in check.stdout
    assert "logged in" not in check.stdout
    assert campaign.run_json("send")["sent"] == 1


def test_no_username_is_no_login_as_before(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port, username="")
    assert campaign.config().smtp.auth == "none"
    assert "connected (no login)" in campaign.run("check", "--connect").stdout


def test_tls_on_a_plaintext_port_names_the_fix(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    campaign.edit_config('security = "none"', 'security = "tls"')
    enrolled(campaign, [prospect_row(1)])
    result = campaign.run("send")
    assert result.exit_code == 1
    assert (f"[smtp] 127.0.0.1:{server.port}: this port does not speak TLS: 587 usually wants "
            "starttls, 465 tls") in result.stderr
    assert "WRONG_VERSION_NUMBER" not in result.stderr
    check = campaign.run("check", "--connect")
    assert "this port does not speak TLS" in check.stderr


def test_starttls_on_a_tls_port_names_the_fix(campaign, smtp_server, tmp_path):
    from tests.smtp_server import self_signed_certificate

    server = smtp_server(certificate=self_signed_certificate(tmp_path), implicit_tls=True)
    use_smtp(campaign, server.port, timeout=0.5)
    campaign.edit_config('security = "none"', 'security = "starttls"')
    enrolled(campaign, [prospect_row(1)])
    result = campaign.run("send")
    assert result.exit_code == 1
    assert (f"[smtp] 127.0.0.1:{server.port}: cannot connect: no greeting within 0.5 s; a port "
            "that speaks TLS from the first byte waits for it in silence: 465 usually wants "
            'security = "tls"') in result.stderr
    assert ledger(campaign) == [] and server.handler.messages == []


def test_config_takes_the_campaign_folder(campaign):
    result = CliRunner().invoke(cli, ["check", "--config", str(campaign.root)])
    assert result.exit_code == 0, result.output
    assert f"{campaign.config_path}: OK" in result.stdout


def test_no_config_names_the_folder_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OUTREACH_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 1
    assert (f"no outreach.toml in {tmp_path} (the current folder): run outreach in your "
            "campaign folder, or pass --config FOLDER") in result.stderr
    assert "`outreach init FOLDER`" in result.stderr
    assert "Run `outreach init`" not in result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = CliRunner().invoke(cli, ["check", "--config", str(elsewhere)])
    assert f"no config at {elsewhere / 'outreach.toml'} (named by --config)" in result.stderr


# -- provider presets and auth ---------------------------------------------------------------


def _write(campaign, smtp: str, imap: str = "", extra: str = "") -> None:
    text = campaign.config_path.read_text(encoding="utf-8")
    start, end = text.index("[smtp]"), text.index("[sending]")
    campaign.config_path.write_text(text[:start] + f"[smtp]\n{smtp}\n\n[imap]\n{imap}\n\n"
                                    + extra + "\n\n" + text[end:], encoding="utf-8")


def test_presets_fill_host_port_and_security(campaign):
    _write(campaign, 'transport = "smtp"\nprovider = "microsoft"\nusername = "dana@acme.example"',
           'source = "imap"\nprovider = "google"\nusername = "dana@acme.example"\n'
           'password_env = "P"')
    config = campaign.config()
    smtp, imap = config.smtp, config.imap
    assert (smtp.host, smtp.port, smtp.security) == ("smtp.office365.com", 587, "starttls")
    assert (imap.host, imap.port, imap.security) == ("imap.gmail.com", 993, "tls")
    assert smtp.auth == imap.auth == "password" and config.oauth2 == {}


def test_oauth2_presets_pick_the_flow_and_scopes(campaign, monkeypatch):
    _write(campaign, 'transport = "smtp"\nprovider = "microsoft"\nauth = "oauth2"\n'
           'username = "dana@acme.example"',
           'source = "imap"\nprovider = "google"\nauth = "oauth2"\nusername = "dana@acme.example"',
           '[oauth2]\nclient_id = "common-id"\n[oauth2.google]\nclient_id = "g-id"\n'
           'client_secret_env = "GOOGLE_SECRET"\n[oauth2.microsoft]\ntenant = "acme.example"')
    config = campaign.config()
    ms, google = config.oauth2["microsoft"], config.oauth2["google"]
    assert ms.client_id == "common-id" and ms.flow == "device"
    assert ms.token_url == "https://login.microsoftonline.com/acme.example/oauth2/v2.0/token"
    assert ms.scopes[:3] == ("https://outlook.office.com/SMTP.Send",
                             "https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access")
    assert google.client_id == "g-id" and google.flow == "browser"
    assert google.scopes[0] == "https://mail.google.com/"
    assert google.client_secret_env == "GOOGLE_SECRET"


@pytest.mark.parametrize(("smtp", "extra", "where"), [
    ('provider = "microsoft"\nhost = "smtp.acme.example"', "",
     '[smtp] host \'smtp.acme.example\' differs from provider = "microsoft" '
     "('smtp.office365.com'): remove host"),
    ('provider = "yahoo"', "", '[smtp] provider "yahoo" is not allowed'),
    ('auth = "kerberos"\nusername = "d@a.example"', "", '[smtp] auth "kerberos" is not allowed'),
    ('auth = "password"', "", '[smtp] username is required for auth = "password"'),
    ('provider = "microsoft"\nauth = "oauth2"\nusername = "d@a.example"', "",
     '[oauth2] client_id is required for [smtp] auth = "oauth2"'),
    ('provider = "google"\nauth = "oauth2"\nusername = "d@a.example"', '[oauth2]\nclient_id = "x"',
     "[oauth2] client_secret_env is required for Google"),
    ('auth = "oauth2"\nusername = "d@a.example"', '[oauth2]\nclient_id = "x"',
     '[oauth2] token_url is required for provider = "custom"'),
    ('auth = "oauth2"\nusername = "d@a.example"',
     '[oauth2]\nclient_id = "x"\ntoken_url = "http://idp.example/token"',
     '[oauth2] token_url "http://idp.example/token" must be an https:// URL'),
    ('auth = "oauth2"\nusername = "d@a.example"',
     '[oauth2]\nclient_id = "x"\ntoken_url = "https://[::1/token"',
     '[oauth2] token_url "https://[::1/token" is not a valid URL (Invalid IPv6 URL)'),
    ('auth = "oauth2"\nusername = "d@a.example"',
     '[oauth2]\nclient_id = "x"\ntoken_url = "https://idp.example/token"\n'
     'device_authorization_url = "https://idp.example:99999/device"',
     '[oauth2] device_authorization_url "https://idp.example:99999/device" is not a valid '
     "URL (Port out of range 0-65535)"),
    ('auth = "oauth2"\nusername = "d@a.example"',
     '[oauth2]\nclient_id = "x"\ntoken_url = "https:/idp.example/token"',
     '[oauth2] token_url "https:/idp.example/token" must be an https:// URL'),
    ('auth = "oauth2"\nusername = "d@a.example"',
     '[oauth2]\nclient_id = "x"\ntoken_url = "https://idp.example/token"',
     "[oauth2] device_authorization_url or authorization_url is required"),
    ('auth = "oauth2"\nusername = "d@a.example"',
     '[oauth2]\nclient_id = "x"\ntoken_url = "https://idp.example/token"\n'
     'authorization_url = "https://idp.example/auth"',
     "[oauth2] scopes is required"),
    ("", '[oauth2]\nclient = "x"', '[oauth2] has unknown key "client": did you mean "client_id"?'),
])
def test_auth_config_errors_name_file_and_key(campaign, smtp, extra, where):
    _write(campaign, 'transport = "smtp"\n' + smtp, extra=extra)
    with pytest.raises(ConfigError) as info:
        load_config(campaign.config_path)
    assert str(info.value).startswith("outreach.toml: ")
    assert where in str(info.value)
