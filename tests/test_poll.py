"""`outreach poll` over a local Maildir: matching, actions, hooks, handled-once."""

from __future__ import annotations

import json
import mailbox
import shutil
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from outreach.clock import iso
from tests.conftest import prospect_row

CORPUS = Path(__file__).parent / "corpus"
NOW = "2026-03-02T15:00:00+00:00"
N = 47  # corpus messages name prospects cfo1 ... cfo47

RECORDER = '''
import json, pathlib
from outreach import hookimpl

LOG = pathlib.Path(__file__).parent.parent / "hooks.jsonl"

@hookimpl
def reply_received(prospect, reply, kind):
    with LOG.open("a") as fh:
        fh.write(json.dumps({"email": prospect.email, "kind": kind,
                             "type": type(reply).__name__,
                             "subject": str(reply["subject"])}) + "\\n")

@hookimpl
def classify_reply(reply):
    if "PLUGIN-SAYS-UNSUBSCRIBE" in str(reply.get("Subject", "")):
        return "unsubscribe"
    return None
'''


@pytest.fixture
def seeded(campaign):
    return seed(campaign)


def seed(campaign):
    """Prospects cfo1..cfo47 enrolled in `referral`, each sent <mN@acme.example>."""
    campaign.now(NOW)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in range(1, N + 1)])))
    campaign.run_json("enroll", "referral")
    with campaign.app() as app:
        for n in range(1, N + 1):
            prospect = app.store.prospect(f"cfo{n}@maker{n}.example")
            enrollment = app.store.enrollments(prospect.id)[0]
            app.store.add_ledger_row(enrollment["id"], step=0, message_id=f"<m{n}@acme.example>",
                                     at=datetime.fromisoformat(NOW) - timedelta(hours=6),
                                     template="referral", subject="Who handles ...")
    return campaign


def drop(campaign, *names: str, raw: bytes | None = None) -> None:
    box = mailbox.Maildir(campaign.root / "mail", create=True)
    for name in names:
        box.add((CORPUS / f"{name}.eml").read_bytes())
    if raw is not None:
        box.add(raw)


def drop_corpus(campaign) -> None:
    drop(campaign, *sorted(p.stem for p in CORPUS.glob("*.eml")))


def state(campaign, email: str) -> dict:
    return campaign.run_json("status", email)


def test_whole_corpus_in_one_pass(seeded):
    (seeded.root / "plugins" / "recorder.py").write_text(RECORDER, encoding="utf-8")
    drop_corpus(seeded)
    result = seeded.run("poll", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert {k: doc[k] for k in ("processed", "replies", "auto_replies", "bounces",
                                "unsubscribes", "referrals", "unmatched")} == {
        "processed": 49, "replies": 22, "auto_replies": 8, "bounces": 8, "unsubscribes": 8,
        "referrals": 5, "unmatched": 1}
    assert len(doc["malformed"]) == 2
    assert all(m["key"].startswith("maildir:") for m in doc["malformed"])

    # A second pass finds nothing new.
    again = seeded.run_json("poll")
    assert again["processed"] == 0

    # Replies stop the sequence and make a lead; "not interested" is recorded as such.
    s1 = state(seeded, "cfo1@maker1.example")
    assert s1["stage"] == "lead" and s1["enrollments"][0]["state"] == "replied"
    assert any(e["kind"] == "reply" for e in s1["events"])
    assert state(seeded, "cfo8@maker8.example")["stage"] == "not-interested"
    # Matched by the domain (one active prospect there), not the address.
    assert state(seeded, "cfo13@maker13.example")["stage"] == "lead"
    # The trap: a reply quoting our footer is not an unsubscribe.
    assert not state(seeded, "cfo2@maker2.example")["suppressed"]

    # Unsubscribes: suppressed for good, enrollment ended.
    s23 = state(seeded, "cfo23@maker23.example")
    assert s23["suppressed"] and s23["enrollments"][0]["state"] == "unsubscribed"
    assert state(seeded, "cfo26@maker26.example")["suppressed"]  # mailed the unsubscribe address

    # Auto-replies pause until the day after the return date, in the prospect's time.
    s31 = state(seeded, "cfo31@maker31.example")
    assert s31["stage"] == "prospect"
    until = datetime.combine(datetime(2026, 3, 10).date(), time(0), ZoneInfo("America/Chicago"))
    assert s31["enrollments"][0]["state"] == "paused"
    assert s31["enrollments"][0]["paused_until"] == iso(until)
    s36 = state(seeded, "cfo36@maker36.example")  # no date: three days
    assert s36["enrollments"][0]["paused_until"] == iso(
        datetime.fromisoformat(NOW) + timedelta(days=3))

    # Bounces: hard suppresses and ends as bounced, soft only records.
    s39 = state(seeded, "cfo39@maker39.example")
    assert s39["suppressed"] and s39["enrollments"][0]["state"] == "bounced"
    bounce = next(e for e in s39["events"] if e["kind"] == "bounce")
    assert bounce["status"] == "5.1.1" and bounce["permanent"] is True
    s40 = state(seeded, "cfo40@maker40.example")
    assert not s40["suppressed"] and s40["enrollments"][0]["state"] == "active"
    assert next(e for e in s40["events"] if e["kind"] == "bounce")["permanent"] is False

    # Referrals: a new prospect at the same company, referrer set, enrolled in on_referral.
    jane = state(seeded, "jane.smith@maker17.example")
    assert jane["name"] == "Jane Smith" and jane["company"] == "Maker 17 Inc"
    assert [e["sequence"] for e in jane["enrollments"]] == ["referred"]
    with seeded.app() as app:
        referrer = app.store.prospect("cfo17@maker17.example")
        assert app.store.prospect("jane.smith@maker17.example").referrer_id == referrer.id
        assert app.store.prospect("finance@maker18.example") is not None
        assert app.store.prospect("carlos.ruiz@maker19.example").first_name == "Carlos"
        # Another company's address, and a colleague named in an out-of-office: not created.
        assert app.store.prospect("bob@otherco.example") is None
        assert app.store.prospect("mark.lee@maker37.example") is None

    hooks = [json.loads(line) for line in
             (seeded.root / "hooks.jsonl").read_text().splitlines()]
    # Plugins get the full EmailMessage (policy.default): headers decoded.
    assert {h["type"] for h in hooks} == {"EmailMessage"}
    assert "Réponse automatique : Who handles month-end close at Maker 34 Inc?" in {
        h["subject"] for h in hooks}
    for h in hooks:
        del h["type"], h["subject"]
    kinds = {}
    for h in hooks:
        kinds[h["kind"]] = kinds.get(h["kind"], 0) + 1
    assert kinds == {"reply": 22, "auto_reply": 8, "bounce": 8, "unsubscribe": 8, "referral": 5}
    assert {"email": "jane.smith@maker17.example", "kind": "referral"} in hooks


def test_plugin_classification_wins(seeded):
    (seeded.root / "plugins" / "recorder.py").write_text(RECORDER, encoding="utf-8")
    raw = (CORPUS / "reply-apple-mail.eml").read_bytes().replace(
        b"Subject: Re:", b"Subject: PLUGIN-SAYS-UNSUBSCRIBE Re:")
    drop(seeded, raw=raw)
    doc = seeded.run_json("poll")
    assert doc["unsubscribes"] == 1 and doc["replies"] == 0
    assert state(seeded, "cfo3@maker3.example")["suppressed"]


def test_three_soft_bounces_in_a_row_suppress(seeded):
    soft = (CORPUS / "bounce-gmail-soft.eml").read_bytes()
    for i in range(3):
        drop(seeded, raw=soft.replace(b"<dsn-45@", f"<dsn-45-{i}@".encode()))
        seeded.run_json("poll")
        assert state(seeded, "cfo45@maker45.example")["suppressed"] is (i == 2)
    assert state(seeded, "cfo45@maker45.example")["enrollments"][0]["state"] == "bounced"


def test_a_reply_between_soft_bounces_resets_the_count(seeded):
    soft = (CORPUS / "bounce-gmail-soft.eml").read_bytes()
    drop(seeded, raw=soft.replace(b"<dsn-45@", b"<dsn-45-a@"))
    drop(seeded, raw=soft.replace(b"<dsn-45@", b"<dsn-45-b@"))
    seeded.run_json("poll")
    with seeded.app() as app:
        app.store.add_event("reply", at=datetime.fromisoformat(NOW),
                            prospect_id=app.store.prospect("cfo45@maker45.example").id)
    drop(seeded, raw=soft.replace(b"<dsn-45@", b"<dsn-45-c@"))
    seeded.run_json("poll")
    assert not state(seeded, "cfo45@maker45.example")["suppressed"]


def test_maildir_message_read_by_the_client_is_not_handled_again(seeded):
    drop(seeded, "reply-apple-mail")
    assert seeded.run_json("poll")["replies"] == 1
    box = mailbox.Maildir(seeded.root / "mail")
    for key in list(box.iterkeys()):  # the mail client moves it to cur/ and flags it seen
        msg = box[key]
        msg.set_subdir("cur")
        msg.add_flag("S")
        box[key] = msg
    assert list((seeded.root / "mail" / "new").iterdir()) == []
    assert seeded.run_json("poll")["processed"] == 0


def test_same_message_twice_acts_once(seeded):
    drop(seeded, "unsubscribe-plain", "unsubscribe-plain")
    doc = seeded.run_json("poll")
    assert doc["processed"] == 2 and doc["unsubscribes"] == 1 and doc["duplicates"] == 1
    events = [e for e in state(seeded, "cfo23@maker23.example")["events"]
              if e["kind"] == "unsubscribe"]
    assert len(events) == 1


def test_malformed_message_is_reported_and_does_not_stop_the_pass(seeded):
    drop(seeded, "malformed-garbage", "reply-apple-mail")
    result = seeded.run("poll")
    assert result.exit_code == 0
    assert "processed 2: 1 reply," in result.stdout
    assert "skipped malformed message maildir:" in result.stderr
    assert "no sender address" in result.stderr


def test_unmatched_is_left_alone(seeded):
    drop(seeded, "reply-unmatched-stranger")
    doc = seeded.run_json("poll")
    assert doc["unmatched"] == 1 and doc["replies"] == 0
    with seeded.app() as app:
        assert app.store.prospect("someone@nowhere.example") is None
        [row] = app.store.inbound()
        assert row["kind"] == "unmatched"


def test_referral_already_known_or_suppressed_is_not_created(seeded):
    seeded.run_json("suppress", "jane.smith@maker17.example")
    drop(seeded, "referral-name-and-address")
    doc = seeded.run_json("poll")
    assert doc["replies"] == 1 and doc["referrals"] == 0
    with seeded.app() as app:
        assert app.store.prospect("jane.smith@maker17.example") is None


def test_missing_maildir_is_created_empty(campaign):
    shutil.rmtree(campaign.root / "mail", ignore_errors=True)
    assert campaign.run_json("poll")["processed"] == 0
    assert (campaign.root / "mail" / "new").is_dir()


def test_one_poll_at_a_time(seeded):
    from outreach.replies import poll_lock

    with seeded.app() as app, poll_lock(app):  # as a running `outreach watch` holds it
        result = seeded.run("poll")
        assert result.exit_code == 1
        assert "another `outreach poll` or `outreach watch` is running" in result.stderr
    assert seeded.run("poll").exit_code == 0


def test_builtin_classifier_is_a_plugin(campaign):
    plugins = campaign.run_json("plugins")
    builtin = next(p for p in plugins if p["name"] == "outreach.default_plugins.classifier")
    assert builtin["hooks"] == ["classify_reply"] and builtin["builtin"] is True


def test_watch_polls_a_maildir_and_stops(seeded):
    import threading

    from outreach.watch import watch

    stop = threading.Event()
    passes = []

    def on_pass(result):
        passes.append(result.processed)
        if len(passes) == 1:
            drop(seeded, "reply-apple-mail")  # arrives between two passes
        elif result.processed:
            stop.set()

    guard = threading.Timer(20, stop.set)
    guard.start()
    try:
        with seeded.app() as app:
            total = watch(app, interval=0.5, stop=stop, on_pass=on_pass)
    finally:
        guard.cancel()
    assert passes[0] == 0 and passes[-1] == 1 and total.replies == 1
    assert state(seeded, "cfo3@maker3.example")["stage"] == "lead"


def test_our_own_footer_pasted_back_unquoted_is_not_an_unsubscribe(seeded):
    from outreach.replies import context_for

    with seeded.app() as app:
        context = context_for(app)
        cfg = app.config
        footer = (cfg.root / "templates" / "footer.txt").read_text(encoding="utf-8")
    assert context.footer_lines, "the footer's fixed lines are known"
    rendered = (footer.replace("{{ sender.name }}", cfg.sender.name)
                .replace("{{ sender.company }}", cfg.sender.company)
                .replace("{{ sender.postal_address }}", cfg.sender.postal_address)
                .replace("{{ unsubscribe_mailto }}", cfg.compliance.unsubscribe_mailto))
    rendered = rendered.split("--\n", 1)[-1]  # without the "--" line that would cut it anyway
    raw = (b"From: First5 Last5 <cfo5@maker5.example>\nTo: dana@acme.example\n"
           b"Subject: Re: hello\nMessage-ID: <pasted-5@maker5.example>\n"
           b"In-Reply-To: <m5@acme.example>\nContent-Type: text/plain; charset=utf-8\n\n"
           + f"Sounds good, call me Tuesday.\n\n{rendered}".encode())
    drop(seeded, raw=raw)
    doc = seeded.run_json("poll")
    assert doc["replies"] == 1 and doc["unsubscribes"] == 0
    assert not state(seeded, "cfo5@maker5.example")["suppressed"]


def test_maildir_subfolders(seeded):
    seeded.edit_config('folders = ["INBOX"]', 'folders = ["INBOX", "Replies"]')
    box = mailbox.Maildir(seeded.root / "mail", create=True)
    box.add_folder("Replies").add((CORPUS / "reply-apple-mail.eml").read_bytes())
    drop(seeded, "auto-de")
    doc = seeded.run_json("poll")
    assert doc["processed"] == 2 and doc["replies"] == 1 and doc["auto_replies"] == 1
    assert seeded.run_json("poll")["processed"] == 0
