"""Spam complaints and multi-recipient bounces through `outreach poll`: who is acted on, what
stops, what hooks and the guard see, and the audit trail `poll --json` prints."""

from __future__ import annotations

import json

from tests.test_poll import RECORDER, drop, seed, state

# A Yahoo-style ARF report whose recipient is redacted: only our Message-ID names them.
ARF = b"""\
From: Yahoo! Mail AntiSpam Feedback <feedback@arf.mail.yahoo.example>
To: abuse@acme.example
Subject: Fw: Who handles month-end close at Maker 5 Inc?
Message-ID: <arf-1@arf.mail.yahoo.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="B"

--B
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP 192.0.2.7.

--B
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/1.0
Version: 1
Original-Mail-From: <dana@acme.example>
Source-IP: 192.0.2.7

--B
Content-Type: text/rfc822-headers

From: Dana Reyes <dana@acme.example>
To: redacted@yahoo.example
Subject: Who handles month-end close at Maker 5 Inc?
Message-ID: <m5@acme.example>

--B--
"""

# One Postfix-style notice for two of our recipients, in no RFC 3464 report.
MULTI_BOUNCE = b"""\
From: MAILER-DAEMON@mail.acme.example (Mail Delivery System)
To: dana@acme.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce-multi@mail.acme.example>

This is the mail system at host mail.acme.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<cfo6@maker6.example>: host mx.maker6.example said: 550 5.1.1 User unknown
<cfo7@maker7.example>: host mx.maker7.example said: 550 5.1.1 User unknown
"""


def test_complaint_suppresses_stops_every_sequence_and_is_no_lead(campaign):
    seeded = seed(campaign)
    (seeded.root / "plugins" / "recorder.py").write_text(RECORDER, encoding="utf-8")
    drop(seeded, raw=ARF)
    doc = seeded.run_json("poll")
    assert (doc["complaints"], doc["replies"], doc["unmatched"]) == (1, 0, 0)
    assert doc["messages"] == [{
        "key": doc["messages"][0]["key"], "message_id": "<arf-1@arf.mail.yahoo.example>",
        "kind": "complaint", "addresses": ["redacted@yahoo.example"],
        "prospects": ["cfo5@maker5.example"],
        "action": "suppressed", "why": "ARF spam-complaint report (abuse)"}]
    s5 = state(seeded, "cfo5@maker5.example")
    assert s5["suppressed"] and s5["stage"] == "prospect"
    assert [e["state"] for e in s5["enrollments"]] == ["complained"]
    assert any(e["kind"] == "complaint" for e in s5["events"])
    hooks = [json.loads(line) for line in (seeded.root / "hooks.jsonl").read_text().splitlines()]
    assert [(h["email"], h["kind"]) for h in hooks] == [("cfo5@maker5.example", "complaint")]
    assert seeded.run_json("stats")["totals"]["complained"] == 1


def test_complaint_rate_over_the_limit_stops_send(campaign):
    seeded = seed(campaign)
    seeded.edit_config("guard_min_sent = 100", "guard_min_sent = 10")
    drop(seeded, raw=ARF)
    assert seeded.run("poll").output.startswith(
        "processed 1: 0 replies, 0 auto-replies, 0 bounces, 0 unsubscribes, 1 spam complaint, "
        "0 unmatched")
    refused = seeded.run("send", "--dry-run")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "Error: spam-complaint rate 2.13% (1 of 47 sent in the last 7 days) is above the 0.3% "
        "limit: ")
    check = seeded.run_json("check")
    assert check["deliverability"]["complained"] == 1
    assert check["deliverability"]["ok"] is False


def test_a_bounce_naming_two_prospects_suppresses_both(campaign):
    seeded = seed(campaign)
    (seeded.root / "plugins" / "recorder.py").write_text(RECORDER, encoding="utf-8")
    drop(seeded, raw=MULTI_BOUNCE)
    doc = seeded.run_json("poll")
    assert doc["bounces"] == 1
    entry = doc["messages"][0]
    assert entry["prospects"] == ["cfo6@maker6.example", "cfo7@maker7.example"]
    assert entry["action"] == "suppressed"
    for email in ("cfo6@maker6.example", "cfo7@maker7.example"):
        s = state(seeded, email)
        assert s["suppressed"] and s["enrollments"][0]["state"] == "bounced"
    hooks = [json.loads(line) for line in (seeded.root / "hooks.jsonl").read_text().splitlines()]
    assert [(h["email"], h["kind"]) for h in hooks] == [
        ("cfo6@maker6.example", "bounce"), ("cfo7@maker7.example", "bounce")]


def test_a_plugin_may_call_a_persons_own_message_a_complaint(campaign):
    """A reply saying "this is spam": a classify_reply plugin answers `complaint`, and the
    sender is the complainant (the built-in reading found no report naming anyone)."""
    seeded = seed(campaign)
    (seeded.root / "plugins" / "spam_words.py").write_text(
        "from outreach import hookimpl\n\n\n@hookimpl\ndef classify_reply(reply):\n"
        "    return 'complaint' if 'Re:' in str(reply['Subject']) else None\n",
        encoding="utf-8")
    drop(seeded, "reply-gmail-interested")
    doc = seeded.run_json("poll")
    assert (doc["complaints"], doc["replies"]) == (1, 0)
    assert doc["messages"][0]["why"].startswith("a classify_reply plugin said complaint")
    s1 = state(seeded, "cfo1@maker1.example")
    assert s1["suppressed"] and s1["stage"] == "prospect"
    assert s1["enrollments"][0]["state"] == "complained"


def test_a_complaint_naming_no_prospect_still_suppresses_the_address(campaign):
    """A report about an address that is no prospect here (deleted, or mail sent from
    another campaign of the domain): the complainant is suppressed all the same, so a later
    import never writes to them."""
    seeded = seed(campaign)
    stranger = (ARF.replace(b"redacted@yahoo.example", b"someone@yahoo.example")
                .replace(b"<m5@acme.example>", b"<unknown@acme.example>"))
    assert stranger != ARF
    drop(seeded, raw=stranger)
    doc = seeded.run_json("poll")
    assert (doc["complaints"], doc["unmatched"]) == (1, 0)
    assert [(m["action"], m["addresses"]) for m in doc["messages"]] == [
        ("suppressed (no prospect)", ["someone@yahoo.example"])]
    assert seeded.sql("SELECT target, reason FROM suppressions") == [
        ("someone@yahoo.example", "complaint")]
