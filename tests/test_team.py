"""Team mode: two reps, each with an own campaign folder and outreach.toml, share one
database. Ownership, org-wide suppression and the per-company cap, through the CLI."""

from __future__ import annotations

import json
import mailbox
import os
import subprocess
import sys
import threading
import time
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from outreach.config import Mailbox
from outreach.scaffold import init_campaign
from outreach.team import (
    MAILBOX_LIMIT,
    NO_MAILBOX,
    assign_mailboxes,
    domain_cap,
    other_rep,
    ramp_limit,
)
from outreach.watch import watch
from tests.conftest import REPO, Campaign, prospect_row
from tests.dovecot import SECOND_USER, USER, Dovecot
from tests.smtp_server import use_smtp

MONDAY_MORNING = "2026-03-02T07:30:00-06:00"   # inside the 07:00-09:00 window, Chicago


@pytest.fixture
def team(tmp_path: Path, campaign: Campaign) -> tuple[Campaign, Campaign]:
    """Dana (the `campaign` fixture) and Sam: two folders, one database file."""
    sam = Campaign(root=tmp_path / "sam", monkeypatch=campaign.monkeypatch)
    list(init_campaign(sam.root))
    if campaign.store_url:   # the PostgreSQL pass: Sam joins the campaign's database
        sam.edit_config('path = "outreach.db"', f'url = "{campaign.store_url}"')
        sam.store_url = campaign.store_url
    else:
        shared = tmp_path / "team.db"
        for rep in (campaign, sam):
            rep.edit_config('path = "outreach.db"', f'path = "{shared}"')
    sam.edit_config('name = "Dana Reyes"', 'name = "Sam Ortiz"')
    sam.edit_config('email = "dana@acme.example"', 'email = "sam@acme.example"')
    campaign.now(MONDAY_MORNING)
    return campaign, sam


def unsubscribe_mail(rep: Campaign, sender: str) -> None:
    """An "unsubscribe" mail from `sender` lands in the rep's local Maildir."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "unsubscribe@acme.example"
    msg["Subject"] = "unsubscribe"
    msg["Message-ID"] = f"<unsub-{sender}>"
    msg.set_content("please remove me\n")
    mailbox.Maildir(rep.root / "mail", create=True).add(msg)


def test_enroll_skips_and_counts_prospects_another_rep_owns(team):
    dana, sam = team
    dana.run_json("import", str(dana.write_csv([prospect_row(n) for n in (1, 2, 3)])))
    result = dana.run("enroll", "referral", "--limit", "2")
    assert result.output == "referral: enrolled 2; skipped 1 limit\n"
    # Sam imports the same list plus one more: the two Dana works are hers alone.
    sam.run_json("import", str(sam.write_csv([prospect_row(n) for n in (1, 2, 3, 4)])))
    result = sam.run("enroll", "referral")
    assert result.output == "referral: enrolled 2; skipped 2 other_rep\n"
    assert sam.run_json("enroll", "referral", "--dry-run")["skipped"] == {
        "active": 2, "other_rep": 2}
    assert [p["email"] for p in sam.run_json("prospects", "--owner", "me")] == [
        "cfo3@maker3.example", "cfo4@maker4.example"]
    assert [p["email"] for p in dana.run_json("prospects", "--owner", "me")] == [
        "cfo1@maker1.example", "cfo2@maker2.example"]
    owners = {p["email"]: p["owner"] for p in dana.run_json("prospects")}
    assert owners["cfo1@maker1.example"] == "dana@acme.example"
    assert owners["cfo4@maker4.example"] == "sam@acme.example"
    table = dana.run("prospects", "--owner", "sam@acme.example").output.splitlines()
    assert table[0].split() == ["EMAIL", "NAME", "TITLE", "COMPANY", "STAGE", "OWNER"]
    assert [line.split()[0] for line in table[1:]] == ["cfo3@maker3.example",
                                                       "cfo4@maker4.example"]
    assert dana.run_json("prospects", "--owner", "none") == []


def test_each_rep_sends_only_what_they_work(team):
    dana, sam = team
    dana.run_json("import", str(dana.write_csv([prospect_row(n) for n in (1, 2)])))
    dana.run_json("enroll", "referral", "--limit", "1")
    sam.run_json("enroll", "referral")
    assert sam.run_json("send")["sent"] == 1
    assert [p.name for p in (sam.root / "outbox").glob("*.eml")] != []
    (mail,) = (sam.root / "outbox").glob("*.eml")
    text = mail.read_text()
    assert "From: Dana Reyes" not in text and "To: First2 Last2 <cfo2@maker2.example>" in text
    assert "From: Sam Ortiz <sam@acme.example>" in text
    assert dana.run_json("send")["sent"] == 1
    assert "cfo1@maker1.example" in next((dana.root / "outbox").glob("*.eml")).read_text()


def test_one_reps_poll_suppression_stops_the_other_reps_next_send(team):
    dana, sam = team
    rows = [prospect_row(1), prospect_row(2), prospect_row(3, email="ann@maker3.example"),
            prospect_row(4, email="bob@maker3.example")]
    dana.run_json("import", str(dana.write_csv(rows)))
    sam.run_json("enroll", "referral")   # Sam works all four
    # Dana's poll reads an unsubscribe from Sam's prospect, and Dana suppresses a whole company.
    unsubscribe_mail(dana, "cfo1@maker1.example")
    assert dana.run_json("poll")["unsubscribes"] == 1
    assert dana.run("suppress", "@maker3.example").exit_code == 0
    doc = sam.run_json("send")
    assert doc["sent"] == 1
    (mail,) = (sam.root / "outbox").glob("*.eml")
    assert "To: First2 Last2 <cfo2@maker2.example>" in mail.read_text()
    status = sam.run_json("status", "cfo1@maker1.example")
    assert status["suppressed"] and status["enrollments"][0]["state"] == "unsubscribed"
    assert status["owner"] == "sam@acme.example"
    assert dana.run("status", "cfo2@maker2.example").output.splitlines()[1] == (
        "stage: prospect   owner: sam@acme.example")
    assert sam.run("status", "cfo2@maker2.example").output.splitlines()[1] == "stage: prospect"


def test_the_team_sends_one_company_at_most_its_daily_cap(team):
    dana, sam = team
    rows = [prospect_row(n, email=f"p{n}@bigco.example") for n in range(1, 6)] + [
        prospect_row(9)]
    dana.run_json("import", str(dana.write_csv(rows)))
    dana.run_json("enroll", "referral", "--limit", "2")
    sam.run_json("enroll", "referral")
    assert dana.run_json("send")["sent"] == 2
    doc = sam.run_json("send")
    # The default cap is 3 a day: Dana's two plus one of Sam's three; cfo9 is elsewhere.
    assert (doc["sent"], doc["deferred"], doc["capped_domains"]) == (2, 2, {"bigco.example": 2})
    result = sam.run("send")
    assert result.exit_code == 0
    assert result.output == (
        "sent 0, failed 0, unknown 0, held 0, deferred 2; 0 call tasks\n"
        "deferred 2: bigco.example had [team] max_emails_per_domain_per_day (3) from the team "
        "today; they stay due and go from Tue 03 Mar 07:00\n")
    assert sam.run_json("send")["deferred_by"]["max_emails_per_domain_per_day"] == {
        "count": 2, "next": "2026-03-03T13:00:00+00:00"}
    # The next day the company may hear from the team again.
    sam.now("2026-03-03T07:30:00-06:00")
    assert sam.run_json("send")["sent"] == 2


def test_the_domain_cap_is_a_team_key(team):
    dana, sam = team
    sam.edit_config("max_emails_per_domain_per_day = 3 ",
                    'rep = "Sam"\nmax_emails_per_domain_per_day = 1 ')
    rows = [prospect_row(n, email=f"p{n}@bigco.example") for n in range(1, 4)]
    sam.run_json("import", str(sam.write_csv(rows)))
    assert sam.run("enroll", "referral").output == "referral: enrolled 3\n"
    assert {p["owner"] for p in sam.run_json("prospects")} == {"sam"}
    assert sam.run_json("send")["capped_domains"] == {"bigco.example": 2}
    assert dana.run("enroll", "referral").output == "referral: enrolled 0; skipped 3 other_rep\n"


# -- the pure decisions ---------------------------------------------------------------------

def _box(email: str = "a@x.example", *, limit: int = 50, start: int | None = None,
         step: int = 0) -> Mailbox:
    return Mailbox(email=email, name="A", smtp=None, imap=None, daily_limit=limit,  # type: ignore[arg-type]
                   ramp_start=start, ramp_step=step, windows=None)


@pytest.mark.parametrize(("start", "step", "first", "today", "limit"), [
    (None, 0, None, date(2026, 3, 2), 50),              # no ramp: the daily limit
    (10, 5, None, date(2026, 3, 2), 10),                # never sent: day 0
    (10, 5, date(2026, 3, 2), date(2026, 3, 2), 10),    # the first day
    (10, 5, date(2026, 3, 2), date(2026, 3, 5), 25),    # three days on
    (10, 5, date(2026, 3, 2), date(2026, 4, 30), 50),   # never past daily_limit
    (10, 0, date(2026, 3, 2), date(2026, 4, 30), 10),   # a flat start
])
def test_ramp_limit(start, step, first, today, limit):
    assert ramp_limit(_box(start=start, step=step), first_used=first, today=today) == limit


def test_domain_cap_keeps_order_and_counts_what_it_holds_back():
    items = ["a@big.example", "b@big.example", "c@small.example", "d@big.example"]
    kept, held = domain_cap(items, lambda e: e.split("@")[1], sent_today={"big.example": 1},
                            cap=2)
    assert kept == ["a@big.example", "c@small.example"]
    assert held == {"big.example": 2}


def test_assign_mailboxes_sticks_spreads_and_respects_room():
    items = ["new1", "new2", "new3", "old-a", "old-gone", "new4"]
    sticky = {"old-a": "a", "old-gone": "z"}
    chosen, waiting, rest = assign_mailboxes(
        items, mailboxes=["a", "b"], sticky=sticky.get, room={"a": 2, "b": 2}, total=10,
        is_open=lambda item, m: True)
    # Spread by room left (ties to the first listed); "old-a" sticks to a, full by then.
    assert chosen == [("new1", "a"), ("new2", "b"), ("new3", "a"), ("new4", "b")]
    assert waiting == [("old-a", MAILBOX_LIMIT), ("old-gone", NO_MAILBOX)]
    assert rest == []


def test_assign_mailboxes_stops_at_total_and_skips_closed_windows():
    chosen, waiting, rest = assign_mailboxes(
        ["p1", "p2", "p3"], mailboxes=["a", "b"], sticky=lambda item: None,
        room={"a": 5, "b": 9}, total=2, is_open=lambda item, m: m == "a")
    assert chosen == [("p1", "a"), ("p2", "a")] and waiting == [] and rest == ["p3"]


@pytest.mark.parametrize(("owner", "open_rep", "other"), [
    (None, None, False), ("me", None, False), ("me", "me", False),
    ("you", None, True), (None, "you", True), ("me", "you", True),
])
def test_other_rep(owner, open_rep, other):
    assert other_rep(owner, open_rep, "me") is other


# -- config -------------------------------------------------------------------------------

TWO_MAILBOXES = """
[[mailboxes]]
email = "dana@acme-mail.example"
daily_limit = 40
ramp_start = 10
ramp_step = 5
[mailboxes.smtp]
transport = "smtp"
host = "127.0.0.1"
port = 2525
security = "none"
[mailboxes.imap]
source = "maildir"
maildir = "mail-a"

[[mailboxes]]
email = "Dana@Acme-Outreach.example"
name = "Dana at Acme"
windows = ["10:00-11:00"]
"""


def without_servers(campaign: Campaign) -> None:
    """Drop the single-mailbox [smtp] and [imap] tables ([[mailboxes]] replace them)."""
    text = campaign.config_path.read_text(encoding="utf-8")
    start, end = text.index("\n[smtp]"), text.index("\n# Several mailboxes")
    campaign.config_path.write_text(text[:start] + text[end:], encoding="utf-8")


def test_the_single_smtp_and_imap_config_is_one_mailbox(campaign):
    config = campaign.config()
    (box,) = config.mailboxes
    assert (box.email, box.name, box.daily_limit, box.ramp_start) == (
        "dana@acme.example", "Dana Reyes", 75, None)
    assert box.smtp is config.smtp and box.imap is config.imap
    assert config.team.rep == "dana@acme.example"
    assert config.team.max_emails_per_domain_per_day == 3


def test_mailboxes_parse_with_the_smtp_and_imap_keys(campaign):
    without_servers(campaign)
    campaign.config_path.write_text(campaign.config_path.read_text() + TWO_MAILBOXES)
    a, b = campaign.config().mailboxes
    assert (a.email, a.name, a.daily_limit, a.ramp_start, a.ramp_step) == (
        "dana@acme-mail.example", "Dana Reyes", 40, 10, 5)
    assert (a.smtp.transport, a.smtp.port, a.smtp.security) == ("smtp", 2525, "none")
    assert a.imap.maildir == campaign.root / "mail-a"
    assert a.windows is None
    assert (b.email, b.name, b.daily_limit, [str(w) for w in b.windows]) == (
        "dana@acme-outreach.example", "Dana at Acme", 75, ["10:00-11:00"])
    assert b.smtp.transport == "outbox"
    view = campaign.config().for_mailbox(b)
    assert (view.sender.email, view.sender.name, view.sender.company) == (
        "dana@acme-outreach.example", "Dana at Acme", "Acme Analytics")
    assert view.compliance.unsubscribe_mailto == "unsubscribe@acme.example"   # the team's


@pytest.mark.parametrize(("toml", "message"), [
    ('[[mailboxes]]\nemail = "a@x.example"\n[mailboxes.smtp]\nport = 0\n',
     "outreach.toml: [mailboxes[1].smtp] port must be 1-65535, not 0"),
    ('[[mailboxes]]\nemail = "a@x.example"\n[mailboxes.smtp]\nhots = "x"\n',
     'outreach.toml: [mailboxes[1].smtp] has unknown key "hots": did you mean "host"?'),
    ('[[mailboxes]]\nemail = "a@x.example"\n[mailboxes.imap]\nfolders = []\n',
     'outreach.toml: [mailboxes[1].imap] folders is empty: list at least one, e.g. ["INBOX"]'),
    ('[[mailboxes]]\nemail = "a@x.example"\n\n[[mailboxes]]\nemail = "not-an-address"\n',
     'outreach.toml: [mailboxes[2]] email "not-an-address" is not an email address'),
    ('[[mailboxes]]\nemail = "a@x.example"\n\n[[mailboxes]]\nemail = "A@x.example"\n',
     'outreach.toml: [mailboxes[2]] email "a@x.example" is listed twice'),
    ('[[mailboxes]]\nname = "A"\n', "outreach.toml: [mailboxes[1]] email is required"),
    ('[[mailboxes]]\nemail = "a@x.example"\nramp_step = 5\n',
     "outreach.toml: [mailboxes[1]] ramp_step must be 0 or more, and goes with ramp_start "
     "(start at ramp_start a day, add ramp_step each day)"),
    ('[[mailboxes]]\nemail = "a@x.example"\nramp_start = 0\n',
     "outreach.toml: [mailboxes[1]] ramp_start must be 1 or more, not 0"),
    ('[[mailboxes]]\nemail = "a@x.example"\nwindows = ["9-10"]\n',
     'outreach.toml: [mailboxes[1]] windows[0] "9-10": expected HH:MM-HH:MM, e.g. "07:00-09:00"'),
    ('[[mailboxes]]\nemail = "a@x.example"\ndaily_limt = 5\n',
     'outreach.toml: [mailboxes[1]] has unknown key "daily_limt": did you mean "daily_limit"?'),
    ("[team]\nmax_emails_per_domain_per_day = 0\n",
     "outreach.toml: [team] max_emails_per_domain_per_day must be 1 or more, not 0"),
    ('[team]\nrep = ""\n',
     "outreach.toml: [team] rep must be a one-line name, e.g. your email address"),
    ("[team]\nrepp = 1\n", 'outreach.toml: [team] has unknown key "repp": did you mean "rep"?'),
])
def test_team_and_mailbox_mistakes_name_the_key(campaign, toml, message):
    without_servers(campaign)
    campaign.edit_config("\n[team] ", "\n# [team] ")   # the mistake's own [team] instead
    campaign.edit_config("\nmax_emails_per_domain_per_day", "\n# max_emails_per_domain_per_day")
    campaign.config_path.write_text(campaign.config_path.read_text() + "\n" + toml)
    result = campaign.run("check")
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"


def test_smtp_beside_mailboxes_is_refused(campaign):
    campaign.config_path.write_text(campaign.config_path.read_text() + TWO_MAILBOXES)
    result = campaign.run("check")
    assert result.stderr == ("Error: outreach.toml: [smtp] cannot be used with [[mailboxes]]: "
                             "move it into each mailbox as [mailboxes.smtp]\n")


# -- several mailboxes per rep: real SMTP sinks --------------------------------------------

def mailbox_toml(email: str, port: int, extra: str = "") -> str:
    return (f'\n[[mailboxes]]\nemail = "{email}"\n{extra}\n[mailboxes.smtp]\n'
            f'transport = "smtp"\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
            "concurrency = 2\ntimeout = 5\n")


def test_send_spreads_over_mailboxes_within_limit_and_ramp_and_sticks(campaign, smtp_server):
    a, b = smtp_server(), smtp_server()
    without_servers(campaign)
    campaign.config_path.write_text(
        campaign.config_path.read_text()
        + mailbox_toml("dana@acme-mail.example", a.port, "ramp_start = 2\nramp_step = 1")
        + mailbox_toml("dana@acme-reach.example", b.port, "daily_limit = 3"))
    campaign.now(MONDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in range(1, 8)])))
    campaign.run_json("enroll", "referral")
    result = campaign.run("send")
    assert result.output.splitlines() == [
        "sent 5, failed 0, unknown 0, held 0, deferred 2; 5 call tasks",
        "deferred 2: their mailbox reached its daily_limit (or ramp-up) today; they stay due "
        "and go from Tue 03 Mar 07:00"]
    assert result.exit_code == 0
    got = {m.rcpt_tos[0]: m for m in a.handler.messages + b.handler.messages}
    assert len(a.handler.messages) == 2 and len(b.handler.messages) == 3
    for server, address in ((a, "dana@acme-mail.example"), (b, "dana@acme-reach.example")):
        for m in server.handler.messages:
            assert m.mail_from == address
            assert m.message["From"] == f"Dana Reyes <{address}>"
            assert m.message["Message-ID"].endswith("@" + address.split("@")[1] + ">")
    first = {rcpt: (m.mail_from, m.message["Message-ID"]) for rcpt, m in got.items()}
    # preview shows the next step as it will go: from the mailbox of the first email.
    rcpt = b.handler.messages[0].rcpt_tos[0]
    shown = campaign.run("preview", rcpt)
    assert "From: Dana Reyes <dana@acme-reach.example>\n" in shown.stdout
    assert shown.stderr.rstrip().endswith(", from dana@acme-reach.example")
    # Day 1: mailbox a's ramp allows 3; b is full again at 3. The two waiting go now.
    campaign.now("2026-03-03T07:30:00-06:00")
    assert campaign.run_json("send")["sent"] == 2
    assert len(a.handler.messages) + len(b.handler.messages) == 7
    # Day 4: the threaded bump goes from the mailbox of each prospect's first email.
    campaign.now("2026-03-06T07:30:00-06:00")
    before = len(a.handler.messages), len(b.handler.messages)
    doc = campaign.run_json("send", "--limit", "4")
    assert doc["sent"] == 4
    for m in a.handler.messages[before[0]:] + b.handler.messages[before[1]:]:
        sender, message_id = first[m.rcpt_tos[0]]
        assert m.mail_from == sender and m.message["In-Reply-To"] == message_id
    groups = campaign.run_json("stats", "--by", "mailbox")["groups"]
    assert {g["key"]: g["sent"] for g in groups} == {
        "dana@acme-mail.example": len(a.handler.messages),
        "dana@acme-reach.example": len(b.handler.messages)}


def test_stats_and_report_by_rep_and_for_the_team(team, tmp_path):
    dana, sam = team
    dana.run_json("import", str(dana.write_csv([prospect_row(n) for n in range(1, 6)])))
    dana.run_json("enroll", "referral", "--limit", "2")
    sam.run_json("enroll", "referral")
    dana.run_json("send")
    sam.run_json("send")
    unsubscribe_mail(dana, "cfo3@maker3.example")   # one of Sam's, read by Dana's poll
    dana.run_json("poll")
    doc = dana.run_json("stats", "--by", "rep")
    assert doc["totals"]["sent"] == 5 and doc["totals"]["unsubscribed"] == 1
    assert [(g["key"], g["sent"], g["unsubscribed"]) for g in doc["groups"]] == [
        ("dana@acme.example", 2, 0), ("sam@acme.example", 3, 1)]
    assert sam.run_json("stats", "--by", "rep") == doc   # one team, one answer
    by_box = sam.run_json("stats", "--by", "mailbox")["groups"]
    assert [(g["key"], g["sent"]) for g in by_box] == [("dana@acme.example", 2),
                                                       ("sam@acme.example", 3)]
    text = sam.run("stats", "--by", "rep").output
    assert "sam@acme.example" in text and "dana@acme.example" in text
    report = tmp_path / "team.html"
    assert sam.run("stats", "--html", str(report)).exit_code == 0
    page = report.read_text(encoding="utf-8")
    assert "<h2>Reps (the team)</h2>" in page and "<h2>Mailboxes</h2>" in page
    assert "<td>sam@acme.example</td><td>3</td>" in page


# -- poll and watch read every mailbox: the private Dovecot with two accounts -----------------

def imap_mailbox_toml(email: str, smtp_port: int, dovecot: Dovecot) -> str:
    return mailbox_toml(email, smtp_port) + (
        f'[mailboxes.imap]\nsource = "imap"\nhost = "127.0.0.1"\nport = {dovecot.port}\n'
        f'security = "none"\nusername = "{email}"\npassword_env = "OUTREACH_IMAP_PASSWORD"\n')


def two_imap_mailboxes(campaign: Campaign, dovecot: Dovecot, ports: tuple[int, int], *,
                       second_login: str = SECOND_USER) -> None:
    """A rep with two mailboxes: an SMTP sink each, two accounts of the private Dovecot."""
    without_servers(campaign)
    second = imap_mailbox_toml(SECOND_USER, ports[1], dovecot)
    campaign.config_path.write_text(
        campaign.config_path.read_text() + imap_mailbox_toml(USER, ports[0], dovecot)
        + second.replace(f'username = "{SECOND_USER}"', f'username = "{second_login}"'))


def reply_to(message: Any, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = message["To"]
    msg["To"] = message["From"]
    msg["Subject"] = "Re: " + message["Subject"]
    msg["Message-ID"] = f"<re-{message['To'].split('<')[1].rstrip('>')}>"
    msg["In-Reply-To"] = message["Message-ID"]
    msg.set_content(text)
    return msg.as_bytes().replace(b"\n", b"\r\n")


@pytest.mark.dovecot
def test_poll_and_watch_read_every_mailbox(campaign, smtp_server, dovecot):
    a, b = smtp_server(), smtp_server()
    two_imap_mailboxes(campaign, dovecot, (a.port, b.port))
    campaign.now(MONDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in (1, 2, 3)])))
    campaign.run_json("enroll", "referral")
    assert campaign.run_json("send")["sent"] == 3
    (first, third), (second,) = ([m.message for m in a.handler.messages],
                                 [m.message for m in b.handler.messages])
    dovecot.append(reply_to(first, "Sure, call me Tuesday.\n"), user=USER)
    dovecot.append(reply_to(second, "Happy to talk next week.\n"), user=SECOND_USER)
    doc = campaign.run_json("poll")
    assert (doc["processed"], doc["replies"]) == (2, 2)
    for message in (first, second):
        status = campaign.run_json("status", message["To"].split("<")[1].rstrip(">"))
        assert status["enrollments"][0]["state"] == "replied"
    # watch: one IDLE connection per mailbox wakes a pass for mail to the second one.
    stop = threading.Event()
    passes: list[Any] = []

    def watching() -> None:   # the store's connection belongs to the thread that opens it
        with campaign.app() as app:
            watch(app, interval=600, stop=stop, on_pass=passes.append)

    thread = threading.Thread(target=watching)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not passes and time.monotonic() < deadline:
            time.sleep(0.05)
        unsubscribe = EmailMessage()
        unsubscribe["From"] = third["To"]
        unsubscribe["To"] = "unsubscribe@acme.example"
        unsubscribe["Subject"] = "unsubscribe"
        unsubscribe["Message-ID"] = "<unsub-3@maker3.example>"
        unsubscribe.set_content("remove me\n")
        dovecot.append(unsubscribe.as_bytes().replace(b"\n", b"\r\n"), user=SECOND_USER)
        while sum(p.unsubscribes for p in passes) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(20)
    assert sum(p.unsubscribes for p in passes) == 1, "IDLE on the second mailbox did not wake"
    assert campaign.run_json("status", "cfo3@maker3.example")["suppressed"]


def test_the_team_example_runs_end_to_end(tmp_path):
    team = tmp_path / "team"
    env = {**os.environ, "OUTREACH": str(Path(sys.executable).parent / "outreach")}
    env.pop("OUTREACH_NOW", None)   # like the demo, on the real clock
    done = subprocess.run(["bash", str(REPO / "examples" / "team.sh"), str(team)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "referral: enrolled 14; skipped 5 other_rep" in out
    assert "processed 1: 0 replies, 0 auto-replies, 0 bounces, 1 unsubscribe" in out
    assert "max_emails_per_domain_per_day (3) from the team today" in out
    assert "From: Sam Ortiz <sam@acme-reach.example>" in out
    assert (team / "report.html").is_file() and (team / "team.db").is_file()


@pytest.mark.dovecot
def test_check_connect_logs_in_to_every_mailbox(campaign, smtp_server, dovecot):
    a, b = smtp_server(), smtp_server()
    two_imap_mailboxes(campaign, dovecot, (a.port, b.port),
                       second_login="nobody@acme-reach.example")
    result = campaign.run("check", "--connect")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    for port, user in ((a.port, USER), (b.port, SECOND_USER)):
        assert f"{user}: smtp 127.0.0.1:{port}: connected (no login)" in lines
    assert any(line.startswith(f"{USER}: imap 127.0.0.1:{dovecot.port}: logged in as {USER}")
               for line in lines), lines
    assert f"error: {SECOND_USER}: " in result.stderr   # the refused login names its mailbox
    doc = json.loads(campaign.run("check", "--connect", "--json").stdout)
    assert [m["mailbox"] for m in doc["mailboxes"]] == [USER, SECOND_USER]
    assert doc["smtp"] == f"smtp 127.0.0.1:{a.port}: connected (no login)"


def test_a_prospect_is_in_one_open_sequence_whoever_enrolls_it(team):
    dana, _sam = team
    dana.run_json("import", str(dana.write_csv([prospect_row(1)])))
    with dana.app() as app:
        (prospect,) = app.store.prospects()
        now = app.now()
        first = app.store.enroll(prospect.id, "referral", at=now, rep="dana@acme.example")
        # Sam's enroll read its facts before Dana's committed: the database still says no.
        assert app.store.enroll(prospect.id, "referral", at=now, rep="sam@acme.example") is None
        assert [e["id"] for e in app.store.enrollments(prospect.id)] == [first]
        assert app.store.prospect_by_id(prospect.id).owner == "dana@acme.example"


def test_each_mailbox_opens_at_most_its_own_concurrency(campaign, smtp_server):
    a, b = smtp_server(), smtp_server()
    without_servers(campaign)
    campaign.config_path.write_text(
        campaign.config_path.read_text()
        + mailbox_toml("dana@acme-mail.example", a.port).replace("concurrency = 2",
                                                                 "concurrency = 1")
        + mailbox_toml("dana@acme-reach.example", b.port).replace("concurrency = 2",
                                                                  "concurrency = 3"))
    campaign.now(MONDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in range(1, 13)])))
    campaign.run_json("enroll", "referral")
    assert campaign.run_json("send")["sent"] == 12
    assert len(a.handler.messages) == 6 and len(b.handler.messages) == 6
    assert a.handler.connections == 1   # three workers, one connection: they take turns
    assert 1 <= b.handler.connections <= 3


def test_a_mailbox_with_own_windows_sends_only_inside_them(campaign):
    without_servers(campaign)
    campaign.config_path.write_text(campaign.config_path.read_text() + """
[[mailboxes]]
email = "dana@acme-mail.example"
[mailboxes.smtp]
outbox = "outbox-mail"

[[mailboxes]]
email = "dana@acme-reach.example"
windows = ["10:00-11:00"]
[mailboxes.smtp]
outbox = "outbox-reach"
""")
    campaign.now(MONDAY_MORNING)   # 07:30: only the first mailbox's (default) window is open
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in (1, 2)])))
    campaign.run_json("enroll", "referral")
    assert campaign.run_json("send")["sent"] == 2
    assert len(list((campaign.root / "outbox-mail").glob("*.eml"))) == 2
    campaign.now("2026-03-02T10:30:00-06:00")   # only the second mailbox's window is open
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in (3, 4)])))
    campaign.run_json("enroll", "referral")
    assert campaign.run_json("send")["sent"] == 2
    assert len(list((campaign.root / "outbox-reach").glob("*.eml"))) == 2
    campaign.now("2026-03-02T12:00:00-06:00")   # neither is open: the earliest next one goes
    campaign.run_json("import", str(campaign.write_csv([prospect_row(5)])))
    campaign.run_json("enroll", "referral")
    doc = campaign.run_json("send")
    assert (doc["sent"], doc["window_open"]) == (0, False)
    assert doc["deferred_by"]["window"]["next"] == "2026-03-02T23:00:00+00:00"   # 17:00 Chicago


def test_each_rep_calls_only_their_own(team):
    dana, sam = team
    dana.run_json("import", str(dana.write_csv([prospect_row(n) for n in (1, 2, 3)])))
    dana.run_json("enroll", "referral", "--limit", "1")
    sam.run_json("enroll", "referral")
    assert dana.run_json("send")["calls"] == 1 and sam.run_json("send")["calls"] == 2
    assert [t["email"] for t in dana.run_json("calls")] == ["cfo1@maker1.example"]
    assert sorted(t["email"] for t in sam.run_json("calls")) == [
        "cfo2@maker2.example", "cfo3@maker3.example"]


def test_mail_sent_before_team_mode_sticks_to_the_first_mailbox(campaign, smtp_server):
    old = smtp_server()
    use_smtp(campaign, old.port)
    campaign.now(MONDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1)])))
    campaign.run_json("enroll", "referral")
    assert campaign.run_json("send")["sent"] == 1
    # As if sent before the migration that records rep and mailbox.
    campaign.sql("UPDATE prospects SET mailbox = NULL, owner = NULL")
    campaign.sql("UPDATE enrollments SET rep = NULL")
    campaign.sql("UPDATE messages SET rep = NULL, mailbox = NULL")
    a, b = smtp_server(), smtp_server()
    without_servers(campaign)
    campaign.config_path.write_text(
        campaign.config_path.read_text()
        + mailbox_toml("dana@acme.example", a.port, "daily_limit = 1")
        + mailbox_toml("dana@acme-reach.example", b.port))
    campaign.now("2026-03-06T07:30:00-06:00")   # day 4: the threaded bump is due
    assert campaign.run_json("send")["sent"] == 1
    (bump,) = a.handler.messages
    assert bump.message["In-Reply-To"] == old.handler.messages[0].message["Message-ID"]
    assert b.handler.messages == []
    # Stats name those older messages for what they are.
    groups = campaign.run_json("stats", "--by", "mailbox")["groups"]
    assert [(g["key"], g["sent"]) for g in groups] == [
        ("(before team mode)", 1), ("dana@acme.example", 1)]
