"""Addresses in inbound mail that outreach could never write to, and the unsubscribe token."""

from __future__ import annotations

from outreach.render import unsubscribe_token
from tests.test_poll import drop, seed, state


def message(*headers: str, body: str) -> bytes:
    head = "\r\n".join(("Date: Mon, 02 Mar 2026 14:00:00 +0000", *headers))
    return f"{head}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n".encode()


def test_unsubscribe_token_names_the_prospect_whatever_the_sender(campaign):
    seed(campaign)
    token = unsubscribe_token("cfo3@maker3.example")
    drop(campaign, raw=message(
        "From: Front Desk <frontdesk@maker3.example>", "To: unsubscribe@acme.example",
        "Message-ID: <tok1@maker3.example>", f"Subject: unsubscribe {token}", body="."))
    assert campaign.run_json("poll")["unsubscribes"] == 1
    cfo3 = state(campaign, "cfo3@maker3.example")
    assert cfo3["suppressed"] is True
    assert [e["state"] for e in cfo3["enrollments"]] == ["unsubscribed"]
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
