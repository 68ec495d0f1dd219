"""Addresses in inbound mail that outreach could never write to, and the unsubscribe token."""

from __future__ import annotations

import sqlite3

import pytest

from outreach.migrations import MIGRATIONS
from outreach.render import legacy_unsubscribe_token, unsubscribe_token
from tests.test_poll import NOW, drop, seed, state


def message(*headers: str, body: str) -> bytes:
    head = "\r\n".join(("Date: Mon, 02 Mar 2026 14:00:00 +0000", *headers))
    return f"{head}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n".encode()


def _token_mail(token: str, n: int, sender: str = "frontdesk@maker3.example") -> bytes:
    return message(f"From: {sender}", "To: unsubscribe@acme.example",
                   f"Message-ID: <tok{n}@maker3.example>", f"Subject: unsubscribe {token}",
                   body=".")


def test_unsubscribe_token_names_the_prospect_whatever_the_sender(campaign):
    seed(campaign)
    with campaign.app() as app:
        token = unsubscribe_token("cfo3@maker3.example", app.store.unsubscribe_secret())
    drop(campaign, raw=_token_mail(token, 1))
    assert campaign.run_json("poll")["unsubscribes"] == 1
    cfo3 = state(campaign, "cfo3@maker3.example")
    assert cfo3["suppressed"] is True
    assert [e["state"] for e in cfo3["enrollments"]] == ["unsubscribed"]
    assert state(campaign, "cfo4@maker4.example")["suppressed"] is False


@pytest.mark.parametrize("forged", [
    legacy_unsubscribe_token("cfo3@maker3.example"),  # the old unkeyed hash of the address
    unsubscribe_token("cfo3@maker3.example", b"a guessed key"),
])
def test_forged_unsubscribe_token_is_ignored(campaign, forged):
    """Knowing an address is not enough: a token this database did not key names nobody
    (the sender, who wrote to the unsubscribe address, is suppressed themselves)."""
    seed(campaign)
    drop(campaign, raw=_token_mail(forged, 2, sender="mallory@elsewhere.example"))
    campaign.run_json("poll")
    assert state(campaign, "cfo3@maker3.example")["suppressed"] is False
    assert state(campaign, "cfo3@maker3.example")["enrollments"][0]["state"] == "active"
    with campaign.app() as app:
        assert app.store.is_suppressed("mallory@elsewhere.example")


@pytest.mark.sqlite_only  # a SQLite file from before the key; PostgreSQL support came after it
def test_old_unkeyed_token_still_works_for_mail_sent_before_the_key(campaign, tmp_path):
    """A database from before the key: the mail it sent carried the unkeyed token, which
    keeps working for those prospects (and only those) after the upgrade."""
    db = tmp_path / "old.db"
    old = sqlite3.connect(db)
    old.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
    for n in (3, 4):
        old.execute("INSERT INTO prospects (email, created_at, updated_at) VALUES (?, ?, ?)",
                    (f"cfo{n}@maker{n}.example", NOW, NOW))
        old.execute("INSERT INTO enrollments (prospect_id, sequence, started_at) "
                    "VALUES (?, 'referral', ?)", (n - 2, NOW))
    old.execute("INSERT INTO messages (enrollment_id, step, template, message_id, subject, "
                "status, created_at, sent_at) VALUES (1, 0, 'referral', '<old@acme.example>', "
                "'s', 'sent', ?, ?)", (NOW, NOW))  # cfo3 was written to, cfo4 not yet
    old.commit()
    old.close()
    campaign.edit_config('path = "outreach.db"', f'path = "{db}"')
    campaign.now(NOW)
    for n, email in ((3, "cfo4@maker4.example"), (4, "cfo3@maker3.example")):
        drop(campaign, raw=_token_mail(legacy_unsubscribe_token(email), n,
                                       sender=f"alias{n}@elsewhere.example"))
    assert campaign.run_json("poll")["unsubscribes"] == 2
    assert state(campaign, "cfo3@maker3.example")["suppressed"] is True
    assert state(campaign, "cfo4@maker4.example")["suppressed"] is False


def test_non_ascii_referral_is_not_created_and_sending_goes_on(campaign):
    seed(campaign)
    drop(campaign, raw=message(
        "From: First1 Last1 <cfo1@maker1.example>", "To: dana@acme.example",
        "Message-ID: <ref-utf8@maker1.example>", "In-Reply-To: <m1@acme.example>",
        "Subject: Re: Who handles ...",
        body="Not me. Talk to Jörg, jörg@maker1.example, he runs finance."))
    result = campaign.run_json("poll")
    assert (result["replies"], result["referrals"], result["malformed"]) == (1, 0, [])
    assert "jörg@maker1.example" not in [p["email"] for p in campaign.run_json("prospects")]
    assert state(campaign, "cfo1@maker1.example")["enrollments"][0]["state"] == "replied"
    # Nothing unsendable was enrolled: the next send runs clean.
    sent = campaign.run("send", "--ignore-window", "--json")
    assert sent.exit_code == 0, sent.stderr


def test_unsubscribe_from_a_non_ascii_address_still_suppresses_the_prospect(campaign):
    seed(campaign)
    drop(campaign, raw=message(
        "From: Jörg <jörg@gmx.example>", "To: dana@acme.example",
        "Message-ID: <unsub-utf8@gmx.example>", "In-Reply-To: <m2@acme.example>",
        "Subject: Re: Who handles ...", body="Please remove me from your list."))
    result = campaign.run_json("poll")
    assert (result["unsubscribes"], result["malformed"]) == (1, [])
    assert state(campaign, "cfo2@maker2.example")["suppressed"] is True
