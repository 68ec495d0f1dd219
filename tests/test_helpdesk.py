"""Help-desk and ticketing acknowledgements (Zendesk, Freshdesk, ServiceNow, Jira Service
Management, any ticket system) are machine mail, even without an Auto-Submitted header: read as
a reply they would make a lead and stop the sequence (issue #13: when unsure, `other`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach import classify
from outreach.replies import parse_fast
from tests.test_classify import CONTEXT, _mail
from tests.test_poll import seed, state

ACKS = Path(__file__).parent / "corpus" / "helpdesk"
SAMPLES = {  # file -> the verdict's `why`
    "zendesk-relayed": "sent by a help desk (X-Mailer: Zendesk Mailer)",
    "freshdesk-ticket-received":
        'a help-desk acknowledgement with a ticket number ("we have received your request")',
    "servicenow-headers": "sent by a help desk (X-ServiceNow-Source header)",
    "jira-service-management": "sent by a help desk (X-JIRA-FingerPrint header)",
    "generic-automated-response":
        'says it was sent automatically ("this is an automated response")',
}


def test_every_sample_is_tabled():
    assert {p.stem for p in ACKS.glob("*.eml")} == set(SAMPLES)


@pytest.mark.parametrize(("name", "why"), SAMPLES.items(), ids=list(SAMPLES))
def test_a_help_desk_acknowledgement_is_other(name, why):
    verdict = classify.classify(parse_fast((ACKS / f"{name}.eml").read_bytes()), CONTEXT)
    assert (verdict.kind, verdict.why) == ("other", why)


@pytest.mark.parametrize(("headers", "body", "why"), [
    # Vendor headers alone, whatever the text says.
    ("X-Freshdesk-Ticket-Id: 3381\n", None, "sent by a help desk (X-Freshdesk-Ticket-Id header)"),
    ("X-Mailer: ServiceNow\n", None, "sent by a help desk (X-Mailer: ServiceNow)"),
    ("RT-Ticket: maker5.example #4821\n", None, "sent by a help desk (RT-Ticket header)"),
    # An opening that acknowledges, with a ticket number in the subject or the opening.
    ("", "Hello,\n\nYour ticket #48213 has been created. An agent will contact you shortly.",
     'a help-desk acknowledgement with a ticket number ("your ticket #48213 has been '
     'created")'),
    ("", "Thank you for contacting Maker 5 Support. We have received your email (Ref: 48213).",
     'a help-desk acknowledgement with a ticket number ("we have received your email")'),
    ("", "This email was generated automatically. Please do not reply.",
     'says it was sent automatically ("this email was generated automatically")'),
])
def test_help_desk_rules(headers, body, why):
    verdict = classify.classify(_mail(headers, body) if body else _mail(headers), CONTEXT)
    assert (verdict.kind, verdict.why) == ("other", why)


@pytest.mark.parametrize(("subject", "body"), [
    # A person may say they got the request: with no ticket number it stays a reply.
    ("Re: Who handles month-end close?",
     "We have received your request and I will pass it to our controller, Ana Ruiz."),
    # A number in the subject and an ordinary reply.
    ("Re: Who handles month-end close? (#2026 budget)", "That's me. Call me on Tuesday."),
    ("Re: ISO-9001 audit and month-end close", "Your request was received well. Call me Tuesday."),
])
def test_a_person_is_still_read_as_a_reply(subject, body):
    raw = (f"From: Carla Diaz <cfo5@maker5.example>\nTo: dana@acme.example\nSubject: {subject}\n"
           f"Message-ID: <x@maker5.example>\n\n{body}\n").encode()
    assert classify.classify(parse_fast(raw), CONTEXT).kind == "reply"


def test_poll_keeps_the_sequence_going_on_an_acknowledgement(campaign):
    import mailbox

    seeded = seed(campaign)
    box = mailbox.Maildir(seeded.root / "mail", create=True)
    for name in SAMPLES:
        box.add((ACKS / f"{name}.eml").read_bytes())
    doc = seeded.run_json("poll")
    assert (doc["replies"], doc["other"], doc["unmatched"]) == (0, 5, 0)
    for n in (5, 6, 7, 8, 9):
        s = state(seeded, f"cfo{n}@maker{n}.example")
        assert (s["stage"], s["enrollments"][0]["state"]) == ("prospect", "active")
