"""Several `send` runs at once. On a team's PostgreSQL any number of one rep's senders share
the due work: each chunk is claimed with `FOR UPDATE SKIP LOCKED`, so nobody gets a message
twice and no sender waits for another; the daily limit and the per-company cap hold across
processes (checked again when the intents are written); a dead run's intents are settled by
the next run that can take its lease, from its own hand-over log, and a live run's never.
Real processes, a real PostgreSQL (tests/postgres.py), real SMTP sinks."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from outreach.scaffold import init_campaign
from tests.conftest import Campaign, engine_under_test, prospect_row
from tests.ledger import statuses
from tests.smtp_server import Recorder, Slow, Stall, use_smtp
from tests.test_send_subprocess import start_send

pytestmark = pytest.mark.slow
team_only = pytest.mark.skipif(engine_under_test() != "postgresql",
                               reason="senders share work on PostgreSQL (the PG pass runs it)")
THURSDAY = "2026-03-05T07:30:00-06:00"


def another(campaign: Campaign, name: str, *, email: str = "dana@acme.example") -> Campaign:
    """A second folder (another machine) on the campaign's database: the same rep unless
    `email` names another one."""
    other = Campaign(root=campaign.root.parent / name, monkeypatch=campaign.monkeypatch,
                     store_url=campaign.store_url)
    list(init_campaign(other.root))
    other.edit_config('path = "outreach.db"', f'url = "{campaign.store_url}"')
    other.edit_config('email = "dana@acme.example"', f'email = "{email}"')
    return other


def limits(campaign: Campaign, *, daily: int = 500) -> None:
    campaign.edit_config("daily_limit = 75 ", f"daily_limit = {daily} ")
    campaign.edit_config("per_run_limit = 50 ", "per_run_limit = 500 ")


def enroll(campaign: Campaign, rows: list[dict], *, limit: int | None = None) -> None:
    campaign.now(THURSDAY)
    campaign.run_json("import", str(campaign.write_csv(rows)))
    more = ["--limit", str(limit)] if limit else []
    assert campaign.run_json("enroll", "referral", *more)["enrolled"] == (limit or len(rows))


def finish(runs: list) -> list[dict]:
    """Each run's summary, once all exit 0."""
    results = [(run.wait(timeout=60), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0] * len(runs), [e for _, _, e in results]
    return [json.loads(out) for _, out, _ in results]


@team_only
def test_two_senders_of_one_rep_share_the_work(campaign, smtp_server):
    sink = Slow(delay=0.02)
    use_smtp(campaign, smtp_server(sink).port, concurrency=2)
    limits(campaign)
    enroll(campaign, [prospect_row(i) for i in range(100)])

    summaries = finish([start_send(campaign), start_send(campaign)])

    sent = [s["sent"] for s in summaries]
    assert sum(sent) == 100 and min(sent) > 0, sent   # neither waited for the other
    assert Counter(sink.recipients()) == Counter(
        {f"cfo{i}@maker{i}.example": 1 for i in range(100)})
    assert statuses(campaign) == {"sent": 100}
    assert campaign.sql("SELECT count(DISTINCT run) FROM messages") == [(2,)]


@team_only
def test_the_daily_limit_holds_across_senders(campaign, smtp_server):
    """Both plan 30 (nothing sent yet); the counts read when intents are written keep the
    two together at 30 (one connection each, a slow server: they overlap)."""
    sink = Slow(delay=0.05)
    use_smtp(campaign, smtp_server(sink).port, concurrency=1)
    limits(campaign, daily=30)
    enroll(campaign, [prospect_row(i) for i in range(100)])

    summaries = finish([start_send(campaign), start_send(campaign)])
    assert sum(s["sent"] for s in summaries) == 30
    assert len(sink.recipients()) == 30 and len(set(sink.recipients())) == 30
    assert statuses(campaign) == {"sent": 30}
    assert all(s["limited_by"] == "daily_limit" for s in summaries), summaries
    assert campaign.run_json("send")["sent"] == 0   # and the day is over for this rep


@team_only
def test_a_shared_mailboxs_limit_holds_across_reps(campaign, smtp_server):
    """Two reps sending from one mailbox (its limit 20 a day): each plans 20 from its own
    prospects, each seeing only what the other had claimed when it planned; 20 go in all."""
    sink = Slow(delay=0.05)
    port = smtp_server(sink).port
    sam = another(campaign, "sam")
    sam.edit_config('# rep = "dana@acme.example"', 'rep = "sam"')
    for rep in (campaign, sam):
        use_smtp(rep, port, concurrency=1)
        limits(rep, daily=20)
    enroll(campaign, [prospect_row(i) for i in range(60)], limit=30)
    assert sam.run_json("enroll", "referral")["enrolled"] == 30

    summaries = finish([start_send(campaign), start_send(sam)])

    assert sum(s["sent"] for s in summaries) == 20 == len(set(sink.recipients()))
    assert statuses(campaign) == {"sent": 20}


@team_only
def test_two_reps_racing_never_pass_the_company_cap(campaign, smtp_server):
    """Ten people at one company for each of two reps, cap 3 a day for the team: both reps'
    runs plan 3 at once; 3 go in all."""
    sink = Slow(delay=0.02)
    port = smtp_server(sink).port
    sam = another(campaign, "sam", email="sam@acme.example")
    for rep in (campaign, sam):
        use_smtp(rep, port, concurrency=2)
        limits(rep)
    rows = [prospect_row(i, email=f"p{i}@bigco.example", domain="bigco.example",
                         company="BigCo") for i in range(20)]
    enroll(campaign, rows, limit=10)
    assert sam.run_json("enroll", "referral")["enrolled"] == 10

    summaries = finish([start_send(campaign), start_send(sam)])

    assert len(sink.recipients()) == 3 == sum(s["sent"] for s in summaries)
    assert sum(s["capped_domains"].get("bigco.example", 0) for s in summaries) == 17
    assert statuses(campaign) == {"sent": 3}


@team_only
def test_a_killed_sender_is_settled_by_the_next_run_and_a_live_one_is_not(
        campaign, smtp_server):
    """Two senders of one rep on two machines; one is killed inside DATA while the other is
    held inside DATA too (alive, its intents on the wire). A third run on the killed one's
    machine settles the dead run from its log, leaves the live run's intents alone and sends
    what is left; the live one then finishes its own. Nobody gets a message twice."""
    dead_sink, live_sink = Stall(point="DATA", nth=3), Stall(point="DATA", nth=2)
    other = another(campaign, "laptop")
    use_smtp(campaign, smtp_server(dead_sink).port, concurrency=1)
    use_smtp(other, smtp_server(live_sink).port, concurrency=1, timeout=60)
    for folder in (campaign, other):
        limits(folder)
    enroll(campaign, [prospect_row(i) for i in range(40)])
    doomed, alive = start_send(campaign), start_send(other)
    assert dead_sink.reached.wait(20) and live_sink.reached.wait(20)
    doomed.kill()
    assert doomed.wait(10) == -signal.SIGKILL
    dead_sink.release.set()
    runs = dict(campaign.sql("SELECT run, count(*) FROM messages WHERE status = 'intent' "
                             "GROUP BY run"))
    assert len(runs) == 2
    [live_run] = [r for r in runs if (campaign.root.parent / "laptop" /
                                      f"outreach.db-handover-{r}").exists()]

    summary = campaign.run_json("send")

    assert summary["unknown"] == 1   # the one the dead run had inside DATA
    assert [u["email"] for u in summary["unknowns"]] == [dead_sink.stalled_on]
    # The live run's messages are untouched: the one in DATA is still an intent, none unknown.
    assert campaign.sql("SELECT DISTINCT run FROM messages WHERE status = 'intent'") == [
        (live_run,)]
    assert campaign.sql(
        "SELECT m.status FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
        "JOIN prospects p ON p.id = e.prospect_id WHERE p.email = ?",
        live_sink.stalled_on) == [("intent",)]
    assert campaign.sql("SELECT count(*) FROM messages WHERE run = ? AND status = 'unknown'",
                        live_run) == [(0,)]
    assert not list(campaign.root.glob("outreach.db-handover-*"))   # the dead run's log went
    live_sink.release.set()
    [last] = finish([alive])
    assert last["sent"] >= runs[live_run] and last["unknown"] == 0
    received = Counter(dead_sink.recipients()) + Counter(live_sink.recipients())
    assert received == Counter({f"cfo{i}@maker{i}.example": 1 for i in range(40)})
    assert statuses(campaign) == {"sent": 39, "unknown": 1}


def test_a_dry_run_leaves_a_live_runs_messages_alone(campaign, smtp_server):
    """`send --dry-run` while a sender is inside DATA: its intents are a live run's, so the
    dry run predicts no settlement of them (unknown 0) and lists none of them."""
    stall = Stall(point="DATA", nth=2)
    use_smtp(campaign, smtp_server(stall).port, concurrency=1, timeout=60)
    limits(campaign)
    enroll(campaign, [prospect_row(i) for i in range(12)])
    run = start_send(campaign)
    try:
        assert stall.reached.wait(20)
        predicted = campaign.run_json("send", "--dry-run")
        in_flight = {r[0] for r in campaign.sql(
            "SELECT p.email FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
            "JOIN prospects p ON p.id = e.prospect_id WHERE m.status = 'intent'")}
    finally:
        stall.release.set()
    assert (predicted["unknown"], predicted["recovered"]) == (0, 0)
    assert stall.stalled_on in in_flight
    assert not in_flight & {m["email"] for m in predicted["messages"]}
    assert finish([run])[0]["sent"] == 12
    assert statuses(campaign) == {"sent": 12}


def test_message_sent_fires_for_what_a_dead_run_had_handed_over(campaign, smtp_server):
    """A dead run's message the server accepted (its log says 250) is recorded sent by the
    next run and reported to `message_sent` with what the ledger keeps of it; one that never
    reached DATA is sent now and reported as sent."""
    from outreach import handover, hookimpl
    from outreach.send import send

    server = smtp_server(Recorder())
    use_smtp(campaign, server.port)
    limits(campaign)
    enroll(campaign, [prospect_row(i) for i in range(2)])
    with campaign.app() as app:
        first, second = app.store.open_enrollments()
        with app.store.transaction():
            app.store.add_intents([
                {"enrollment_id": e["id"], "step": 0, "template": "referral", "variant": None,
                 "message_id": f"<dead.{e['id']}@acme.example>", "subject": "Quick question",
                 "run": "d3adbeef"} for e in (first, second)], at=app.now())
        log = handover.Log(campaign.root / "outreach.db-handover-d3adbeef")
        log.queued([f"<dead.{first['id']}@acme.example>", f"<dead.{second['id']}@acme.example>"])
        log.reached_data(f"<dead.{first['id']}@acme.example>")
        log.accepted(f"<dead.{first['id']}@acme.example>")
        log.close()
        seen = []

        class Listener:
            @hookimpl
            def message_sent(self, prospect, message):
                seen.append((prospect.email, message["Message-ID"], message["Subject"],
                             message["To"], bool(message.get_payload())))

        app.pm.register(Listener(), name="listener")
        try:
            result = send(app)
        finally:
            app.pm.unregister(name="listener")
    assert (result.recovered, result.sent) == (1, 1)
    assert seen[0] == ("cfo0@maker0.example", f"<dead.{first['id']}@acme.example>",
                       "Quick question", "cfo0@maker0.example", False)
    assert seen[1][0] == "cfo1@maker1.example" and seen[1][4]   # sent now, in full
    assert server.handler.recipients() == ["cfo1@maker1.example"]
    assert not (campaign.root / "outreach.db-handover-d3adbeef").exists()
    assert statuses(campaign) == {"sent": 2}


@pytest.mark.sqlite_only
def test_a_dead_runs_lock_file_goes_and_a_live_ones_stays(campaign):
    """A run killed before its first intent leaves its lease's file beside the database; the
    next run removes it, never one a live process holds."""
    import fcntl

    enroll(campaign, [prospect_row(0)])
    dead = campaign.root / "outreach.db.send-run-d3ad-lock"
    dead.touch()
    live = campaign.root / "outreach.db.send-run-a11e-lock"
    with open(live, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        campaign.run_json("send")
        assert not dead.exists() and live.exists()
    assert sorted(p.name for p in campaign.root.glob("outreach.db.send-run-*")) == [live.name]


@team_only
def test_intents_from_before_runs_had_ids_are_left_to_a_live_older_sender(
        campaign, smtp_server):
    """An intent with no run id was written by an outreach from before (upgraded while it
    ran), whose senders held the rep's `send:REP` lease. While such a sender holds it, its
    intent is a live one's: left alone, not dropped from its log and sent again. Once the
    lease is free the next run settles it, and the message goes once."""
    import psycopg

    from outreach.handover import path_for
    from outreach.store.postgres import _key

    sink = Recorder()
    use_smtp(campaign, smtp_server(sink).port)
    limits(campaign)
    enroll(campaign, [prospect_row(i) for i in range(3)])
    [(enrollment,)] = campaign.sql(
        "SELECT e.id FROM enrollments e JOIN prospects p ON p.id = e.prospect_id "
        "WHERE p.email = 'cfo0@maker0.example'")
    campaign.sql("INSERT INTO messages (enrollment_id, step, template, message_id, subject, "
                 "status, created_at, rep) VALUES (?, 0, 'intro', '<old-1@acme.example>', "
                 "'Hi', 'intent', '2026-03-05T13:29:00+00:00', 'dana@acme.example')",
                 enrollment)
    path_for(campaign.config().store_path).write_text("Q <old-1@acme.example>\n")
    older = psycopg.connect(campaign.store_url, autocommit=True)
    older.execute("SELECT pg_advisory_lock(%s)", (_key("send:dana@acme.example"),))

    first = campaign.run_json("send")

    assert (first["sent"], first["unknown"]) == (2, 0)
    assert "cfo0@maker0.example" not in sink.recipients()
    assert campaign.sql("SELECT status FROM messages WHERE message_id = "
                        "'<old-1@acme.example>'") == [("intent",)]
    older.close()   # the older sender is gone: its intent never reached DATA
    campaign.run_json("send")
    assert Counter(sink.recipients()) == Counter(
        {f"cfo{i}@maker{i}.example": 1 for i in range(3)})
    assert statuses(campaign) == {"sent": 3}


def test_a_dead_runs_log_with_nothing_to_settle_goes_and_a_live_ones_stays(campaign):
    """A run killed before its first intent was committed (or after its last was recorded)
    leaves its hand-over log and no intents: nothing would ever settle it, so the next run
    removes it; the log of a run that is alive (its lease held) stays."""
    import contextlib
    import fcntl

    import psycopg

    from outreach import handover
    from outreach.store.postgres import _key

    enroll(campaign, [prospect_row(0)])
    dead, live = (campaign.root / f"outreach.db-handover-{run}" for run in ("d3ad", "a11e"))
    for log in (dead, live):
        mark = handover.Log(log)
        mark.queued([f"<{log.name}@acme.example>"])
        mark.close()
    with contextlib.ExitStack() as alive:
        if campaign.store_url:
            db = alive.enter_context(psycopg.connect(campaign.store_url, autocommit=True))
            db.execute("SELECT pg_advisory_lock(%s)", (_key("send-run:a11e"),))
        else:
            held = alive.enter_context(open(campaign.root / "outreach.db.send-run-a11e-lock",
                                            "a"))
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert campaign.run_json("send")["sent"] == 1
        assert not dead.exists() and live.exists()


@team_only
def test_a_run_whose_deliveries_cannot_be_recorded_stops_sending(
        campaign, smtp_server, monkeypatch):
    """Recording a batch fails (here: the events table locked past the sender's
    lock_timeout): the run sends nothing more, says so and exits 1, instead of going on
    unrecorded with the error hidden. The next run settles the batch from the hand-over log
    and sends the rest: each prospect gets one message."""
    import psycopg

    sink = Slow(delay=0.1)
    use_smtp(campaign, smtp_server(sink).port, concurrency=1)
    limits(campaign)
    enroll(campaign, [prospect_row(i) for i in range(30)])
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=300")
    run = start_send(campaign)
    sink.wait_for(2)
    with psycopg.connect(campaign.store_url) as db:   # one transaction, until the run ends
        db.execute("LOCK TABLE events IN EXCLUSIVE MODE")
        code = run.wait(timeout=60)
    _, err = run.communicate()

    assert code == 1, err
    assert "canceling statement due to lock timeout" in err and "Traceback" not in err
    assert len(sink.recipients()) < 30
    monkeypatch.delenv("PGOPTIONS")
    campaign.run_json("send")
    assert Counter(sink.recipients()) == Counter(
        {f"cfo{i}@maker{i}.example": 1 for i in range(30)})
    assert statuses(campaign) == {"sent": 30}
