"""Templates and message bytes: sandboxed StrictUndefined rendering, errors that name file, line
and prospect, RFC 2047 headers, folding, quoted-printable bodies, threading, check and preview."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from email import message_from_bytes
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import pytest

from outreach import hookimpl
from outreach.config import Step
from outreach.errors import TemplateError
from outreach.models import Prospect
from outreach.render import (
    Rendered,
    compose,
    context,
    legacy_unsubscribe_token,
    lint,
    render_template_email,
    reply_subject,
    thread_for,
    unsubscribe_token,
)
from tests.conftest import prospect_row

NOW = datetime(2026, 3, 5, 13, 30, tzinfo=UTC)
KEY = bytes(range(32))  # a database's unsubscribe secret
STEP = Step(number=0, day=0, kind="email", templates=("t",))


class _App:
    """Just enough of App for render.context: the config and a plugin manager."""

    def __init__(self, config, pm=None):
        from outreach.plugins import make_manager

        self.config = config
        self.pm = pm or make_manager()

    def fire(self, hook, **kwargs):
        from outreach.plugins import fire

        return fire(self.pm, hook, **kwargs)


def prospect(**overrides) -> Prospect:
    base = {"id": 1, "email": "jane@maker.example", "first_name": "Jane", "last_name": "Doe",
            "company": "Maker Inc", "timezone": "America/Chicago"}
    base.update(overrides)
    return Prospect(**base)


def write(campaign, name: str, text: str) -> Path:
    path = campaign.root / "templates" / f"{name}.txt"
    path.write_text(text, encoding="utf-8")
    return path


def render(campaign, text: str, who: Prospect | None = None, app=None) -> Rendered:
    write(campaign, "t", text)
    config = campaign.config()
    app = app or _App(config)
    ctx = context(app, who or prospect(), STEP, "referral")
    return render_template_email(config, "t", ctx, who=(who or prospect()).email)


def parse(data: bytes):
    return BytesParser(policy=default_policy).parsebytes(data)


# -- rendering ----------------------------------------------------------------------------


def test_headers_body_and_footer(campaign):
    out = render(campaign, "Subject: Hi {{ prospect.first_name }}\nReply-To: {{ sender.email }}"
                           "\n\nHello {{ prospect.company }}.\n")
    assert out.subject == "Hi Jane"
    assert out.headers == (("Reply-To", "dana@acme.example"),)
    body, footer = out.body.split("\n\n--\n")
    assert body == "Hello Maker Inc."
    assert "Acme Analytics, 1 Main St" in footer and "unsubscribe@acme.example" in footer


@pytest.mark.parametrize(("text", "message"), [
    ("Subject: x\n\nHi {{ prospect.nickname }}\n",
     "templates/t.txt line 3: 'outreach.models.Prospect object' has no attribute 'nickname' "
     "(prospect jane@maker.example)"),
    ("Subject: x\n\nfirst\nsecond\n{{ missing }}\n",
     "templates/t.txt line 5: 'missing' is undefined (prospect jane@maker.example)"),
    ("Subject: {{ nope }}\n\nbody\n",
     "templates/t.txt line 1: 'nope' is undefined (prospect jane@maker.example)"),
    ("Subject: x\n\none\n{% if %}\n",
     "templates/t.txt line 4: Expected an expression, got 'end of statement block'"),
    ("Subject: x\nFrom: someone@else.example\n\nbody\n",
     "templates/t.txt line 2: From is written by outreach itself; remove the line"),
    ("Subject: x\nnot a header\n\nbody\n",
     "templates/t.txt line 2: expected a header line like \"Subject: ...\" or a blank line "
     "before the body"),
    ("Subject: x\n\n{{ ''.__class__.__mro__ }}\n",
     "templates/t.txt line 3: "),   # the sandbox refuses dunder access
])
def test_render_errors_name_file_line_and_prospect(campaign, text, message):
    with pytest.raises(TemplateError) as caught:
        render(campaign, text)
    assert str(caught.value).startswith(message)


def test_a_run_reads_each_template_once_and_the_next_run_sees_edits(campaign):
    from outreach.render import steady

    write(campaign, "t", "Subject: one\n\nFirst.\n")
    config = campaign.config()
    ctx = context(_App(config), prospect(), STEP, "referral")
    with steady():
        assert render_template_email(config, "t", ctx, who="x").subject == "one"
        path = write(campaign, "t", "Subject: two\n\nSecond.\n")
        os.utime(path, ns=(1, 1))   # a modification time that certainly differs
        assert render_template_email(config, "t", ctx, who="x").subject == "one"
    assert render_template_email(config, "t", ctx, who="x").subject == "two"


def test_a_line_break_in_a_header_value_is_refused(campaign):
    who = prospect(custom={"pain_point": "close\r\nBcc: all@victim.example"})
    with pytest.raises(TemplateError, match=r"^templates/t\.txt line 1: the Subject header "
                                            r"would contain a line break \(prospect "
                                            r"jane@maker\.example\)"):
        render(campaign, "Subject: {{ prospect.pain_point }}\n\nbody\n", who=who)
    # in the body a line break is just text
    assert "Bcc: all@" in render(campaign, "Subject: x\n\n{{ prospect.pain_point }}\n",
                                 who=who).body


def test_an_email_template_without_a_subject_is_an_error(campaign):
    with pytest.raises(TemplateError, match=r'^templates/t\.txt line 1: no "Subject:" line; '
                                            r'an email template starts with "Subject: \.\.\."'):
        render(campaign, "Just a body, {{ prospect.first_name }}.\n")


def test_an_empty_subject_is_an_error(campaign):
    with pytest.raises(TemplateError, match=r"^templates/t\.txt line 1: the Subject is empty "
                                            r"\(prospect jane@maker\.example\)"):
        render(campaign, 'Subject: {{ prospect.nickname | default("") }}\n\nHi\n')


@pytest.mark.parametrize(("source", "error"), [
    ("Subject: Hi\n\nHi {{ prospect.first_name }},\n", "line 3: first_name is blank"),
    ("Subject: at {{ prospect.company }}?\n\nHi\n", "line 1: company is blank"),
    ("Subject: Hi\n\n{{ prospect.name | upper }}\n", "line 3: name is blank"),
    ("Subject: Hi\n\nWe have {{ prospect.employees }} people\n",
     "line 3: employees is blank"),
])
def test_a_blank_column_without_a_fallback_is_an_error(campaign, source, error):
    who = prospect(first_name="", last_name="", company="", employees=None)
    with pytest.raises(TemplateError, match="^templates/t\\.txt " + error + " for this "
                       "prospect; give it a fallback"):
        render(campaign, source, who=who)


def test_a_blank_column_with_a_fallback_renders(campaign):
    who = prospect(first_name="", company="", title="CFO")
    out = render(campaign, 'Subject: at {{ prospect.company | default("your company") }}?\n\n'
                 'Hi {{ prospect.first_name | default("there") }},\n'
                 '{% if prospect.company %}never{% else %}no company{% endif %}\n'
                 '{{ prospect.title }}\n', who=who)
    assert out.subject == "at your company?"
    assert out.body.startswith("Hi there,\nno companyCFO\n")  # trim_blocks eats a newline


def test_template_context_plugins_add_but_cannot_replace(campaign):
    class Extra:
        @hookimpl
        def template_context(self, prospect, step):
            return {"greeting": f"Howdy {prospect.first_name}", "prospect": "hijacked"}

    config = campaign.config()
    app = _App(config)
    app.pm.register(Extra(), name="extra")
    out = render(campaign, "Subject: {{ greeting }}\n\n{{ prospect.company }}\n", app=app)
    assert out.subject == "Howdy Jane" and out.body.startswith("Maker Inc")


@pytest.mark.parametrize(("body", "subject", "warnings"), [
    ("Short and plain. When works?", "Hi", []),
    (" ".join(["word"] * 121), "Hi", ["body is 121 words (keep it under 120)"]),
    ("See https://acme.example/demo", "Hi", [
        "contains a link (plain text without links lands in the inbox)"]),
    ("Visit www.acme.example", "Hi", [
        "contains a link (plain text without links lands in the inbox)"]),
    ("<p>Hello</p>", "Hi", ["contains HTML tags (messages are plain text)"]),
    ("a < b and c > d", "Hi", []),
])
def test_lint(body, subject, warnings):
    rendered = Rendered(template="t", variant="A", subject=subject, headers=(),
                        body=f"{body}\n\n--\nfooter words " + "x " * 200)
    assert lint(rendered) == warnings


# -- message bytes ------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "last", "subject"), [
    ("Jane", "Doe", "Who handles close at Maker?"),
    ("Zoë", "Ångström", "Société Générale: qui s'occupe de la clôture ?"),
    ("Jo", "Smith, Jr.", "Quotes \"inside\" and a comma, too"),
    ("李", "小龙", "月末结账的负责人是谁？" * 4),                  # long non-ASCII: several words
    ("Ann", "Lee", "A long plain subject " * 6),                # folded at spaces
    ("Ann", "Lee", "Looks encoded =?utf-8?q?x?= but is not"),
])
def test_headers_round_trip(campaign, first, last, subject):
    config = campaign.config()
    who = prospect(first_name=first, last_name=last)
    rendered = Rendered(template="t", variant="A", subject=subject.strip(), headers=(),
                        body="Hi.\n")
    env = compose(config, who, rendered, message_id="<1@acme.example>", now=NOW,
                  unsubscribe_secret=KEY)
    assert env.data.isascii()
    head = env.data.split(b"\r\n\r\n")[0].split(b"\r\n")
    # every header line is folded to 78 characters, but for one unbreakable mailto URI
    assert [line for line in head if len(line) > 78 and b"mailto:" not in line] == []
    msg = parse(env.data)
    assert msg["Subject"] == subject.strip()
    assert msg["To"].addresses[0].display_name == f"{first} {last}"
    assert msg["To"].addresses[0].addr_spec == "jane@maker.example"
    assert msg["From"].addresses[0].display_name == "Dana Reyes"
    assert msg["Date"].datetime == NOW
    assert msg["Message-ID"] == "<1@acme.example>"


@pytest.mark.parametrize("body", [
    "Plain ASCII.\n.leading dot\n",
    "Grüße aus Köln — bis bald.\n",
    "x" * 1200 + "\n",
    "emoji 🙂 and = signs = fine\n",
])
def test_body_round_trips(campaign, body):
    config = campaign.config()
    rendered = Rendered(template="t", variant="A", subject="s", headers=(), body=body)
    env = compose(config, prospect(), rendered, message_id="<1@acme.example>", now=NOW,
                  unsubscribe_secret=KEY)
    msg = parse(env.data)
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    expected = "7bit" if body.isascii() and len(body) < 998 else "quoted-printable"
    assert msg["Content-Transfer-Encoding"] == expected
    assert msg.get_content().replace("\r\n", "\n") == body
    assert all(len(line) <= 998 for line in env.data.split(b"\r\n"))


def test_envelope_as_email_message_matches_the_bytes(campaign):
    rendered = Rendered(template="t", variant="A", subject="Grüße", headers=(), body="Hi\n")
    env = compose(campaign.config(), prospect(), rendered, message_id="<9@acme.example>",
                  now=NOW, unsubscribe_secret=KEY)
    msg = env.as_email_message()
    assert msg["Subject"] == "Grüße" and msg.as_bytes(policy=default_policy.clone(
        linesep="\r\n")).count(b"Message-ID") == 1


@pytest.mark.parametrize(("subject", "expected"), [
    ("Who handles close?", "Re: Who handles close?"),
    ("Re: Who handles close?", "Re: Who handles close?"),
    ("RE: re: AW: Fwd: x", "Re: x"),
])
def test_reply_subject(subject, expected):
    assert reply_subject(subject) == expected


def test_thread_references_every_earlier_message():
    previous = [{"message_id": "<a@x>", "subject": "Hello"},
                {"message_id": "<b@x>", "subject": "Re: Hello"}]
    thread = thread_for(previous)
    assert thread is not None
    assert (thread.in_reply_to, thread.references, thread.subject) == (
        "<b@x>", ("<a@x>", "<b@x>"), "Re: Hello")
    assert thread_for([]) is None


def test_unsubscribe_token_is_per_prospect_stable_and_keyed():
    assert unsubscribe_token("Jane@Maker.example", KEY) == unsubscribe_token("jane@maker.example",
                                                                             KEY)
    assert unsubscribe_token("a@x.example", KEY) != unsubscribe_token("b@x.example", KEY)
    assert len(unsubscribe_token("a@x.example", KEY)) == 16
    # Another database's key, or none (the old unkeyed token): another token.
    assert unsubscribe_token("a@x.example", KEY) != unsubscribe_token("a@x.example", b"other")
    assert unsubscribe_token("a@x.example", KEY) != legacy_unsubscribe_token("a@x.example")


# -- check and preview --------------------------------------------------------------------


def enroll_two(campaign):
    campaign.now("2026-03-05T07:30:00-06:00")
    rows = [prospect_row(1), prospect_row(2, pain_point="")]
    campaign.run_json("import", str(campaign.write_csv(rows)))
    campaign.run_json("enroll", "referral")


def test_check_renders_every_step_for_every_enrolled_prospect(campaign):
    enroll_two(campaign)
    clean = campaign.run_json("check")
    assert clean["errors"] == [] and not [w for w in clean["warnings"] if "templates/" in w]

    write(campaign, "meeting-b", "Subject: hello\n\nHello {{ prospect.first_name }}, see "
          "<b>https://acme.example</b>\n" + "word " * 130)
    write(campaign, "referral-bump",
          "Subject: bump\n\nHi {{ prospect.nickname }}\n")
    result = campaign.run("check", "--json")
    assert result.exit_code == 1
    import json

    report = json.loads(result.stdout)
    assert report["errors"] == [
        "templates/referral-bump.txt line 3: 'outreach.models.Prospect object' has no "
        "attribute 'nickname'; fix the template or the prospect's data "
        "[prospects cfo1@maker1.example, cfo2@maker2.example]"]
    warnings = [w for w in report["warnings"] if w.startswith("templates/")]
    two = "[prospects cfo1@maker1.example, cfo2@maker2.example]"
    assert warnings == [
        f"templates/meeting-b.txt: body is 134 words (keep it under 120) {two}",
        "templates/meeting-b.txt: contains a link (plain text without links lands in the "
        f"inbox) {two}",
        f"templates/meeting-b.txt: contains HTML tags (messages are plain text) {two}",
    ]


def test_check_reports_a_syntax_error_without_prospects(campaign):
    write(campaign, "referral", "Subject: x\n\n{% for %}\n")
    result = campaign.run("check")
    assert result.exit_code == 1
    assert "error: templates/referral.txt line 3: Expected an expression" in result.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("Subject: x\n\n{% include 'footer.txt' %}\n",
     "a template cannot include, import or extend another"),
    ("Subject: x\nCc: boss@acme.example\n\nHi.\n",
     "templates/referral.txt line 2: Cc is not supported: each email goes to its prospect only"),
])
def test_check_refuses_what_outreach_cannot_send(campaign, text, message):
    enroll_two(campaign)
    write(campaign, "referral", text)
    result = campaign.run("check")
    assert result.exit_code == 1
    assert message in result.stderr


def test_check_reads_call_scripts_as_bodies(campaign):
    enroll_two(campaign)
    write(campaign, "voicemail", "Goal: find the owner of {{ prospect.company }}\nHi.\n")
    result = campaign.run("check")
    assert result.exit_code == 0, result.stderr
    assert "error" not in result.stderr
    script = campaign.run("preview", "cfo2@maker2.example", "--step", "1").stdout
    assert script.startswith("Goal: find the owner of Maker 2 Inc")


def test_preview_prints_the_exact_message(campaign):
    enroll_two(campaign)
    shown = campaign.run("preview", "cfo2@maker2.example")
    assert shown.exit_code == 0
    msg = message_from_bytes(shown.stdout_bytes)
    assert msg["Subject"] == "Who handles month-end close at Maker 2 Inc?"   # blank -> default
    assert msg["To"] == "First2 Last2 <cfo2@maker2.example>"
    assert b"\r\n\r\nHi First2,\r\n" in shown.stdout_bytes

    campaign.run_json("send")
    sent = next((campaign.root / "outbox").glob("*.2.0.*.eml")).read_bytes()
    strip = (b"Date:", b"Message-ID:")

    def same(data):
        return [line for line in data.split(b"\r\n") if not line.startswith(strip)]

    assert same(sent) == same(shown.stdout_bytes)

    script = campaign.run("preview", "cfo2@maker2.example", "--step", "1").stdout
    assert script.startswith("Hi First2, this is Dana Reyes from Acme Analytics.")
    assert "the email I sent on Thursday, March 5" in script

    bump = message_from_bytes(campaign.run("preview", "cfo2@maker2.example").stdout_bytes)
    assert bump["Subject"] == "Re: Who handles month-end close at Maker 2 Inc?"
    assert bump["In-Reply-To"] == message_from_bytes(sent)["Message-ID"]


@pytest.mark.parametrize(("args", "message"), [
    (("nobody@x.example",), 'no prospect "nobody@x.example"'),
    (("cfo1@maker1.example", "--step", "5"), "step 5 of referral recycles the lead"),
    (("cfo1@maker1.example", "--step", "9"), "sequence referral has steps 0-5; pass --step N"),
])
def test_preview_errors(campaign, args, message):
    enroll_two(campaign)
    result = campaign.run("preview", *args)
    assert result.exit_code == 1 and message in result.stderr


def test_preview_refuses_what_would_never_be_sent(campaign):
    enroll_two(campaign)
    campaign.run("suppress", "cfo1@maker1.example")
    result = campaign.run("preview", "cfo1@maker1.example")
    assert result.exit_code == 1 and result.stdout == ""
    assert "cfo1@maker1.example is suppressed: nothing will ever be sent to it" in result.stderr
    campaign.run("mark", "cfo2@maker2.example", "lead")
    result = campaign.run("preview", "cfo2@maker2.example")
    assert result.exit_code == 1
    assert ("cfo2@maker2.example: its referral sequence ended (replied), so nothing would be "
            "sent") in result.stderr


def test_preview_of_an_unenrolled_prospect(campaign):
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1, industry="Retail")])))
    result = campaign.run("preview", "cfo1@maker1.example")
    assert "is not enrolled in a sequence: run `outreach enroll SEQUENCE` first" in result.stderr


@pytest.mark.parametrize("name", ["referral", "referral-bump", "meeting-a", "meeting-b",
                                  "referred"])
def test_shipped_email_templates_are_short_plain_and_ask_one_question(campaign, name):
    config = campaign.config()
    who = prospect(title="CFO", custom={"pain_point": "inventory write-offs"})
    referrer = prospect(id=2, email="sam@maker.example", first_name="Sam", last_name="Ortiz")
    ctx = context(_App(config), who, STEP, "referral", referrer=referrer)
    out = render_template_email(config, name, ctx, who=who.email)
    body = out.body.split("\n\n--\n")[0]
    assert lint(out) == []
    assert len(body.split()) < 100
    assert body.count("?") == 1
    assert "inventory write-offs" in out.subject + body
    if name == "referred":
        assert out.subject == "Sam suggested I reach out"
        assert body.count("Sam Ortiz suggested I reach out") == 1


def test_voicemail_script_names_the_last_email_or_not(campaign):
    config = campaign.config()
    voicemail = Step(number=1, day=0, kind="call", templates=("voicemail",))
    from outreach.render import render_script

    said = render_script(config, "voicemail", context(
        _App(config), prospect(), voicemail, "referral", last_email_date="Tuesday, March 3"),
        who="jane@maker.example")
    assert said == (
        "Hi Jane, this is Dana Reyes from Acme Analytics.\n"
        "My number is +1 312 555 0100, again +1 312 555 0100.\n"
        "I'm following up on the email I sent on Tuesday, March 3 about month-end close at "
        "Maker Inc.\n"
        "Who is the best person to talk to about it? Again, Dana Reyes, +1 312 555 0100.\n")
    cold = render_script(config, "voicemail", context(_App(config), prospect(), voicemail,
                                                      "referral"), who="jane@maker.example")
    assert "I'm calling about month-end close at Maker Inc." in cold


def test_preview_names_step_template_and_variant_on_stderr(campaign):
    from outreach.schedule import choose_variant

    enroll_two(campaign)
    shown = campaign.run("preview", "cfo1@maker1.example")
    assert shown.stderr == "preview: step 0 of referral: templates/referral.txt\n"
    assert shown.stdout_bytes.startswith(b"From: Dana Reyes <dana@acme.example>\r\n")
    call = campaign.run("preview", "cfo1@maker1.example", "--step", "1")
    assert call.stderr == "preview: step 1 of referral: call script templates/voicemail.txt\n"
    chosen = choose_variant(("meeting-a", "meeting-b"), email="cfo1@maker1.example",
                            sequence="referral", step=4)
    letter = "A" if chosen == "meeting-a" else "B"
    ab = campaign.run("preview", "cfo1@maker1.example", "--step", "4")
    assert ab.stderr == (f"preview: step 4 of referral: templates/{chosen}.txt, "
                         f"A/B variant {letter} of 2\n")
