"""`outreach poll`, `watch` and `check --connect` against a private Dovecot over IMAP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_poll import CORPUS, NOW, seed

pytestmark = pytest.mark.dovecot


def eml(name: str) -> bytes:
    """A corpus message with CRLF line ends, as IMAP wants them."""
    return (CORPUS / f"{name}.eml").read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def imap_campaign(campaign, dovecot):
    seed(campaign)
    campaign.edit_config('[imap]\nsource = "maildir"', "[imap-was]\nsource = \"maildir\"")
    return campaign


def use_imap(campaign, dovecot, folders=("INBOX",)) -> None:
    """Swap the campaign's [imap] table for one pointing at the private server."""
    text = campaign.config_path.read_text(encoding="utf-8")
    start = text.index("[imap]")
    end = text.index("\n[", start + 1)
    campaign.config_path.write_text(text[:start] + dovecot.imap_toml(folders) + text[end:],
                                    encoding="utf-8")


@pytest.fixture
def imap(campaign, dovecot):
    seed(campaign)
    use_imap(campaign, dovecot)
    return campaign


def test_poll_over_imap_classifies_and_leaves_flags_alone(imap, dovecot):
    names = ["reply-gmail-interested", "auto-de", "bounce-postfix-hard", "unsubscribe-plain",
             "referral-name-and-address", "reply-unmatched-stranger"]
    for i, name in enumerate(names):
        dovecot.append(eml(name), flags=(b"\\Seen",) if i % 2 else ())
    before = dovecot.flags()
    doc = imap.run_json("poll")
    assert {k: doc[k] for k in ("processed", "replies", "auto_replies", "bounces",
                                "unsubscribes", "referrals", "unmatched")} == {
        "processed": 6, "replies": 2, "auto_replies": 1, "bounces": 1, "unsubscribes": 1,
        "referrals": 1, "unmatched": 1}
    assert dovecot.flags() == before  # nothing marked \Seen, nothing moved or deleted
    assert imap.run_json("status", "cfo1@maker1.example")["stage"] == "lead"
    assert imap.run_json("status", "cfo39@maker39.example")["suppressed"] is True

    assert imap.run_json("poll")["processed"] == 0
    dovecot.append(eml("reply-apple-mail"))
    again = imap.run_json("poll")
    assert again["processed"] == 1 and again["replies"] == 1


def test_uidvalidity_change_rescans_without_acting_twice(campaign, dovecot):
    seed(campaign)
    use_imap(campaign, dovecot, folders=("INBOX", "Replies"))
    no_id = eml("auto-de").replace(b"Message-ID: <reply-33@mail.maker33.example>\r\n", b"")
    assert b"Message-ID" not in no_id
    dovecot.append(eml("reply-gmail-interested"), folder="Replies")
    dovecot.append(eml("unsubscribe-plain"), folder="Replies")
    dovecot.append(no_id, folder="Replies")
    assert campaign.run_json("poll")["processed"] == 3
    old = dovecot.uidvalidity("Replies")
    with dovecot.client() as client:  # the folder is rebuilt: new UIDVALIDITY, same mail
        client.delete_folder("Replies")
    dovecot.append(eml("reply-gmail-interested"), folder="Replies")
    dovecot.append(eml("unsubscribe-plain"), folder="Replies")
    dovecot.append(no_id, folder="Replies")
    dovecot.append(eml("reply-apple-mail"), folder="Replies")
    assert dovecot.uidvalidity("Replies") != old
    doc = campaign.run_json("poll")
    assert doc["processed"] == 4 and doc["duplicates"] == 3 and doc["replies"] == 1
    events = campaign.run_json("status", "cfo23@maker23.example")["events"]
    assert [e["kind"] for e in events].count("unsubscribe") == 1
    events = campaign.run_json("status", "cfo33@maker33.example")["events"]
    assert [e["kind"] for e in events].count("auto_reply") == 1


def test_wrong_password_is_a_clear_error(imap, monkeypatch):
    monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", "not-the-password")
    result = imap.run("poll")
    assert result.exit_code == 1
    assert "login as \"dana@acme.example\" refused" in result.stderr
    assert "$OUTREACH_IMAP_PASSWORD" in result.stderr


def test_missing_password_variable_is_a_clear_error(imap, monkeypatch):
    monkeypatch.delenv("OUTREACH_IMAP_PASSWORD")
    result = imap.run("poll")
    assert result.exit_code == 1
    assert "OUTREACH_IMAP_PASSWORD is not set" in result.stderr


def test_missing_folder_is_a_clear_error(campaign, dovecot):
    seed(campaign)
    use_imap(campaign, dovecot, folders=("INBOX", "Nope"))
    result = campaign.run("poll")
    assert result.exit_code == 1
    assert 'cannot open folder "Nope"' in result.stderr


def test_check_connect_logs_in_to_imap(imap, monkeypatch):
    doc = imap.run_json("check", "--connect")
    assert "logged in as dana@acme.example; INBOX readable" in doc["imap"]
    monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", "wrong")
    doc = imap.run("check", "--connect", "--json")
    assert any("refused" in e for e in __import__("json").loads(doc.stdout)["errors"])


def _inbound_count(campaign) -> int:
    return campaign.sql("SELECT count(*) FROM inbound")[0][0]


def _mailbox_state(campaign) -> bool:
    return campaign.sql("SELECT count(*) FROM mailbox_state")[0][0] > 0


def _wait(predicate, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_watch_uses_idle_recovers_from_a_dropped_connection_and_stops_on_sigterm(imap, dovecot):
    env = {**os.environ, "OUTREACH_NOW": NOW}
    proc = subprocess.Popen(
        [sys.executable, "-m", "outreach", "watch", "--interval", "600",
         "--config", str(imap.config_path)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert _wait(lambda: _mailbox_state(imap)), "the first pass did not run"
        dovecot.append(eml("reply-gmail-interested"))
        # The safety-net interval is 10 minutes: only IDLE can make this quick.
        assert _wait(lambda: _inbound_count(imap) == 1), "IDLE did not wake a pass"
        dovecot.kick()
        dovecot.append(eml("reply-apple-mail"))
        assert _wait(lambda: _inbound_count(imap) == 2, 40), "watch did not recover"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        print(out.decode(), err.decode())
    assert proc.returncode == 0, err.decode()
    assert b"outreach watch: stopped" in err
    assert b"processed 1: 1 reply," in out
    assert b"reconnecting" in err


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_against_a_plain_server_is_a_clear_error(imap, security):
    imap.edit_config('security = "none"', f'security = "{security}"')
    result = imap.run("poll")
    assert result.exit_code == 1
    if security == "tls":   # the TLS handshake met a plaintext greeting: say which to use
        assert "this port does not speak TLS: 143 usually wants starttls, 993 tls" in \
            result.stderr
    else:
        assert "cannot connect" in result.stderr and "check [imap] host, port and security" \
            in result.stderr
