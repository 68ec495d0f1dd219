"""The pure classifier, on the fixture corpus (tests/corpus/*.eml) and on tables of text."""

from __future__ import annotations

from datetime import date
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path

import pytest

from outreach import classify
from outreach.replies import parse_fast

CORPUS = Path(__file__).parent / "corpus"
TODAY = date(2026, 3, 2)
FOOTER = ("Dana Reyes, Acme Analytics, Acme Analytics, 1 Main St, Springfield, IL 62701, USA\n"
          'Not the right fit? Reply "unsubscribe" or write to unsubscribe@acme.example and you '
          "will not hear from me again.")
CONTEXT = classify.Context.make(own=["dana@acme.example"], unsubscribe="unsubscribe@acme.example",
                                footer=FOOTER, today=TODAY)


def load(name: str) -> Message:
    return parse_fast((CORPUS / f"{name}.eml").read_bytes())


def verdict(name: str) -> classify.Verdict:
    return classify.classify(load(name), CONTEXT)


# Every corpus message: (file, kind, what else must hold).
CASES = [
    # Replies in the quoting styles of common clients; each quotes our footer ("unsubscribe").
    ("reply-gmail-interested", "reply", {"text": "That's me. Happy to chat"}),
    ("reply-outlook-interested", "reply", {"text": "Send me a calendar invite"}),
    ("reply-apple-mail", "reply", {"text": "Call me."}),
    ("reply-html-only", "reply", {"text": "free on Friday"}),
    ("reply-german-outlook", "reply", {"text": "rufen Sie mich am Mittwoch an"}),
    ("reply-french-gmail", "reply", {"text": "Appelez-moi demain matin"}),
    ("reply-spanish", "reply", {"text": "me interesa"}),
    ("reply-not-interested", "reply", {"not_interested": True}),
    ("reply-not-interested-german", "reply", {"not_interested": True}),
    ("reply-quoted-printable-latin1", "reply", {"text": "Très intéressant"}),
    ("reply-base64-utf8", "reply", {"text": "Good timing — we are reviewing"}),
    ("reply-references-only", "reply", {}),
    ("reply-colleague-same-domain", "reply", {"sender": "sam.ortiz@maker13.example"}),
    ("reply-unmatched-stranger", "reply", {}),
    ("reply-signature-disclaimer", "reply", {"text": "Yes, send me more info."}),
    ("reply-later-date", "reply", {"not_interested": False}),
    ("odd-unknown-charset", "reply", {"text": "call me on Tuesday"}),
    # Referrals: named in the new text, or copied.
    ("referral-name-and-address", "reply",
     {"referrals": [("jane.smith@maker17.example", "Jane Smith")], "not_interested": False}),
    ("referral-role-address", "reply",
     {"referrals": [("finance@maker18.example", "")], "not_interested": False}),
    ("referral-cc", "reply", {"referrals": [("carlos.ruiz@maker19.example", "Carlos Ruiz")]}),
    ("referral-other-company", "reply", {"referrals": [("bob@otherco.example", "")]}),
    ("referral-angle-brackets", "reply",
     {"referrals": [("priya.patel@maker21.example", "Priya Patel")]}),
    ("referral-german", "reply",
     {"referrals": [("petra.mueller@maker22.example", "Petra Müller")]}),
    # Unsubscribes: asked in words (four languages), or mailed to the unsubscribe address.
    ("unsubscribe-plain", "unsubscribe", {}),
    ("unsubscribe-remove-me", "unsubscribe", {}),
    ("unsubscribe-stop-emailing", "unsubscribe", {}),
    ("unsubscribe-to-address", "unsubscribe", {}),
    ("unsubscribe-to-address-any-text", "unsubscribe", {}),
    ("unsubscribe-german", "unsubscribe", {}),
    ("unsubscribe-french", "unsubscribe", {}),
    ("unsubscribe-spanish", "unsubscribe", {}),
    # Auto-replies: headers, subjects, four languages, with and without a return date.
    ("auto-en-outlook", "auto_reply", {"return_date": date(2026, 3, 9)}),
    ("auto-en-gmail-vacation", "auto_reply", {"return_date": date(2026, 3, 16)}),
    ("auto-de", "auto_reply", {"return_date": date(2026, 3, 13)}),
    ("auto-fr", "auto_reply", {"return_date": date(2026, 3, 20)}),
    ("auto-es", "auto_reply", {"return_date": date(2026, 3, 18)}),
    ("auto-no-date", "auto_reply", {"return_date": None}),
    ("auto-names-colleague", "auto_reply", {"return_date": date(2026, 3, 12), "referrals": []}),
    ("auto-precedence-autoreply", "auto_reply", {"return_date": None}),
    # Bounces: Postfix, Exim, Exchange, Gmail, qmail; hard and soft.
    ("bounce-postfix-hard", "bounce", {"permanent": True, "status": "5.1.1",
                                       "recipients": ["cfo39@maker39.example"],
                                       "original_ids": ["<m39@acme.example>"]}),
    ("bounce-postfix-soft", "bounce", {"permanent": False, "status": "4.4.1"}),
    ("bounce-exim-hard", "bounce", {"permanent": True, "status": "5.1.1",
                                    "recipients": ["cfo41@maker41.example"],
                                    "original_ids": ["<m41@acme.example>"]}),
    ("bounce-exim-soft", "bounce", {"permanent": False, "recipients": ["cfo42@maker42.example"]}),
    ("bounce-exchange-hard", "bounce", {"permanent": True, "status": "5.1.10",
                                        "original_ids": ["<m43@acme.example>"]}),
    ("bounce-gmail-hard", "bounce", {"permanent": True, "status": "5.1.1",
                                     "recipients": ["cfo44@maker44.example"]}),
    ("bounce-gmail-soft", "bounce", {"permanent": False, "status": "4.2.2"}),
    ("bounce-qmail-hard", "bounce", {"permanent": True, "recipients": ["cfo46@maker46.example"],
                                     "original_ids": ["<m46@acme.example>"]}),
]


def test_corpus_is_big_enough_and_fully_tabled():
    names = {p.stem for p in CORPUS.glob("*.eml")}
    assert len(names) >= 40
    assert names == {c[0] for c in CASES} | {"malformed-garbage", "malformed-broken-mime"}


@pytest.mark.parametrize(("name", "kind", "expect"), CASES, ids=[c[0] for c in CASES])
def test_corpus(name, kind, expect):
    v = verdict(name)
    assert v.kind == kind
    # Plugins get the same message parsed with policy.default: the same answer.
    rich = BytesParser(policy=policy.default).parsebytes((CORPUS / f"{name}.eml").read_bytes())
    assert classify.classify(rich, CONTEXT) == v
    for key, value in expect.items():
        if key == "text":
            assert value in v.text
        else:
            assert getattr(v, key) == value, key


@pytest.mark.parametrize("name", ["reply-gmail-interested", "reply-outlook-interested",
                                  "reply-apple-mail", "reply-html-only", "reply-french-gmail"])
def test_quoted_footer_is_not_new_text(name):
    v = verdict(name)
    assert "unsubscribe" not in v.text.lower()
    assert "Who is the best point of contact" not in v.text


@pytest.mark.parametrize("name", ["malformed-garbage", "malformed-broken-mime"])
def test_malformed_raises(name):
    with pytest.raises(classify.MalformedMessage):
        verdict(name)


def test_hook_kind_names_referrals():
    assert verdict("referral-cc").hook_kind == "referral"
    assert verdict("reply-apple-mail").hook_kind == "reply"


def test_verdict_for_computes_once():
    message = load("reply-apple-mail")
    with classify.using(CONTEXT):
        first = classify.verdict_for(message)
        assert classify.verdict_for(message) is first


@pytest.mark.parametrize(("text", "expected"), [
    ("I am out of the office until March 9, 2026.", date(2026, 3, 9)),
    ("Back on Monday, March 16th", date(2026, 3, 16)),
    ("I'm away from 2 March and back 10 March.", date(2026, 3, 10)),
    ("Returning 2026-03-20.", date(2026, 3, 20)),
    ("zurück am 15.03.2026", date(2026, 3, 15)),
    ("bis 15.3.", date(2026, 3, 15)),
    ("Je serai de retour le 1er avril.", date(2026, 4, 1)),
    ("de vuelta el 5 de abril de 2026", date(2026, 4, 5)),
    ("Ich bin ab dem 7. April wieder da.", date(2026, 4, 7)),
    ("back 3/16/2026", date(2026, 3, 16)),
    ("back January 5", date(2027, 1, 5)),  # no year and already past: next year
    ("I'm travelling with limited access to email.", None),
    ("Back in 2 weeks.", None),
    ("Out until 31.02.2026.", None),  # no such day
    ("Back on 2019-01-01.", None),  # long past: not a return date
])
def test_return_date(text, expected):
    assert classify.return_date(text, today=TODAY) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("unsubscribe", True),
    ("Please remove me from your list", True),
    ("Take me off this list.", True),
    ("stop emailing me", True),
    ("Do not contact me again.", True),
    ("Please don't email me anymore", True),
    ("Please don't email me anymore\n\nBest, Bob", True),
    ("Stop sending me these.", True),
    ("Don't email me the deck, just call.", False),
    ("Could you stop sending invoices to my old address?", False),
    ("opt-out", True),
    ("Bitte abmelden.", True),
    ("Merci de me désinscrire", True),
    ("Quiero darme de baja", True),
    ("Sounds good, call me.", False),
    ("I'm not the right person, try finance@maker.example", False),
    ("Not interested.", False),
])
def test_asks_to_unsubscribe(text, expected):
    assert classify.asks_to_unsubscribe(text) is expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Not interested, thanks.", True),
    ("No thanks.", True),
    ("We're all set.", True),
    ("We're good, thanks.", True),
    ("We're good to go for Thursday.", False),
    ("kein Interesse", True),
    ("Pas intéressé.", True),
    ("No me interesa.", True),
    ("I'm not the right person, try finance@maker.example", False),
    ("Interested! Let's talk.", False),
])
def test_not_interested(text, expected):
    assert classify.not_interested(text) is expected


@pytest.mark.parametrize(("body", "expected"), [
    ("Yes.\n\nOn Mon, Mar 2, 2026 at 8:15 AM Dana <dana@acme.example> wrote:\n> unsubscribe",
     "Yes."),
    ("Yes.\n\nOn Mon, Mar 2, 2026 at 8:15 AM Dana Reyes <\ndana@acme.example> wrote:\n> x",
     "Yes."),
    ("Sure.\n-----Original Message-----\nFrom: Dana\nunsubscribe", "Sure."),
    ("Ok\n\nAm 02.03.2026 um 08:15 schrieb Dana Reyes:\n> Hallo", "Ok"),
    ("Ok.\n-- \nBob\nunsubscribe from our newsletter", "Ok."),
    # Our own footer pasted back without quote marks is not new text either.
    ("Call me.\n" + FOOTER, "Call me."),
])
def test_new_text(body, expected):
    assert classify.new_text(body, CONTEXT) == expected


@pytest.mark.parametrize(("text", "cc", "expected"), [
    ("talk to Jane Smith, jane@maker.example", [], [("jane@maker.example", "Jane Smith")]),
    ("try finance@maker.example", [], [("finance@maker.example", "")]),
    ("Ask Tom (tom.b@maker.example).", [], [("tom.b@maker.example", "Tom")]),
    ("copying him", [("Al Bo", "al@maker.example")], [("al@maker.example", "Al Bo")]),
    ("write to dana@acme.example or me", [], []),  # our own address is not a referral
])
def test_referrals(text, cc, expected):
    got = classify.referrals(text, cc, exclude=["dana@acme.example", "cfo@maker.example"])
    assert got == expected


def _mail(headers: str, body: str = "Thanks, sounds interesting. Call me Tuesday?") -> Message:
    base = ("From: Carla Diaz <cfo5@maker5.example>\nTo: dana@acme.example\n"
            "Subject: Re: Who handles month-end close?\nMessage-ID: <x@maker5.example>\n")
    return parse_fast((base + headers + "\n" + body + "\n").encode())


@pytest.mark.parametrize(
    ("headers", "body", "kind", "why"),
    [
        ("", None, "reply", "written by a person"),
        # RFC 3834 and vendor auto-reply headers.
        ("Auto-Submitted: auto-replied\n", None, "auto_reply", "Auto-Submitted: auto-replied"),
        ("Auto-Submitted: no\n", None, "reply", "written by a person"),
        ("X-Autoreply: yes\n", None, "auto_reply", "X-Autoreply header"),
        ("X-Autogenerated: Reply\n", None, "auto_reply", "X-Autogenerated header"),
        ("Precedence: auto_reply\n", None, "auto_reply", "Precedence: auto_reply"),
        ("Precedence: junk\n", None, "auto_reply", "Precedence: junk"),
        ("Precedence: bulk\n", None, "auto_reply", "Precedence: bulk"),
        ("X-Auto-Response-Suppress: All\n", None, "auto_reply", "X-Auto-Response-Suppress: all"),
        # Mailing lists and newsletters, from a prospect's address or not.
        ("List-Id: <finance.maker5.example>\n", None, "other", "List-Id"),
        ("List-Unsubscribe: <https://news.maker5.example/u/1>\nPrecedence: bulk\n", None,
         "other", "List-Unsubscribe"),
        ("Precedence: list\n", None, "other", "Precedence: list"),
        # Challenge-response, no-reply senders, null return path, notices naming nobody.
        ("", "Your message is held pending verification. Please verify you are human by "
             "clicking the link below.", "other", "challenge-response"),
        ("", "I am protected by Boxbe. Add yourself to my approved senders list.", "other",
         "challenge-response"),
        ("Return-Path: <>\n", None, "other", "null return path"),
    ],
)
def test_machine_mail_is_never_a_reply(headers, body, kind, why):
    v = classify.classify(_mail(headers, body) if body else _mail(headers), CONTEXT)
    assert v.kind == kind
    assert why in v.why


@pytest.mark.parametrize("sender", ["noreply@maker5.example", "no-reply@maker5.example",
                                    "donotreply@maker5.example", "postmaster@maker5.example"])
def test_no_reply_senders_are_other(sender):
    raw = (f"From: {sender}\nTo: dana@acme.example\nSubject: Your request\n\n"
           "Thanks for reaching out, we will get back to you.\n").encode()
    assert classify.classify(parse_fast(raw), CONTEXT).kind == "other"


def test_a_person_forwarding_a_bounce_is_not_a_bounce():
    """A prospect forwards a notice about a colleague's address: their own threaded message,
    a reply, so no detector reads the quoted notice as a delivery failure to suppress."""
    raw = ("From: Carla Diaz <cfo5@maker5.example>\nTo: dana@acme.example\n"
           "Subject: Fwd: Undelivered Mail Returned to Sender\n"
           "In-Reply-To: <m5@acme.example>\nReferences: <m5@acme.example>\n\n"
           "Your email to my colleague bounced, she moved to jane.doe@maker5.example.\n\n"
           "---------- Forwarded message ----------\nFrom: MAILER-DAEMON@mx.maker5.example\n"
           "I'm sorry to have to inform you that your message could not\n"
           "be delivered to one or more recipients.\n\n"
           "<jane@maker5.example>: host mx.maker5.example said: 550 5.1.1 User unknown\n")
    verdict = classify.classify(parse_fast(raw.encode()), CONTEXT)
    assert (verdict.kind, verdict.recipients, verdict.permanent) == ("reply", [], False)


_REPORT = ("From: {sender}\nTo: dana@acme.example\nSubject: {subject}\n"
           "In-Reply-To: <m5@acme.example>\nMIME-Version: 1.0\n"
           'Content-Type: multipart/report; report-type={kind}; boundary="b"\n\n'
           "--b\nContent-Type: text/plain\n\n{text}\n"
           "--b\nContent-Type: message/{kind}\n\n{fields}\n--b--\n")


def test_a_read_receipt_is_not_a_reply():
    """An Outlook read receipt (RFC 8098), from the prospect's own address and threaded onto
    our email: a mail program wrote it, so it never makes a lead."""
    raw = _REPORT.format(
        sender="Carla Diaz <cfo5@maker5.example>", kind="disposition-notification",
        subject="Read: Who handles month-end close?", text="Your message was read.",
        fields="Final-Recipient: rfc822;cfo5@maker5.example\n"
               "Original-Message-ID: <m5@acme.example>\n"
               "Disposition: manual-action/MDN-sent-manually; displayed\n")
    verdict = classify.classify(parse_fast(raw.encode()), CONTEXT)
    assert (verdict.kind, verdict.why) == (
        "other", "a disposition-notification report (multipart/report), made by a mail program")


def test_a_delivered_notice_is_no_bounce():
    """A success DSN ("Delivered:", Action: delivered, 2.0.0) names the recipient: not a
    failure, not even a temporary one (three of those in a row would suppress them)."""
    raw = _REPORT.format(
        sender="postmaster@maker5.example", kind="delivery-status",
        subject="Delivered: Who handles month-end close?",
        text="Your message has been delivered to cfo5@maker5.example",
        fields="Reporting-MTA: dns;mx.maker5.example\n\n"
               "Final-Recipient: rfc822;cfo5@maker5.example\nAction: delivered\n"
               "Status: 2.0.0\n")
    verdict = classify.classify(parse_fast(raw.encode()), CONTEXT)
    assert (verdict.kind, verdict.recipients, verdict.why) == (
        "other", [], "delivery report: delivered, nothing failed")
