"""A killed `send` loses nothing: `kill -9` at chosen points of the SMTP conversation (a server
that stops answering there, not a sleep), then `send --dry-run` and a rerun. Every prospect
gets exactly one message; only a message whose payload was on the wire is `unknown`, and it is
reported, never resent. Also Ctrl-C and SIGTERM, and the outbox transport."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest

from outreach import handover
from outreach.transport import outbox_files
from tests.conftest import prospect_row, until
from tests.ledger import statuses
from tests.smtp_server import Recorder, Stall, StallThenHold, use_smtp

pytestmark = pytest.mark.slow

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"
EVERYONE = sorted(f"cfo{i}@maker{i}.example" for i in range(12))


def start_send(campaign, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "outreach", "send", "--json", *args,
         "--config", str(campaign.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def enroll(campaign, n=12):
    campaign.now(THURSDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(i) for i in range(n)])))
    assert campaign.run_json("enroll", "referral")["enrolled"] == n


def killed_at(campaign, smtp_server, point, nth, *, concurrency=1):
    """12 due, a server that stops answering at `point` the `nth` time; the send is killed
    with SIGKILL there, then the server is let go."""
    stall = Stall(point=point, nth=nth)
    use_smtp(campaign, smtp_server(stall).port, concurrency=concurrency)
    enroll(campaign)
    run = start_send(campaign)
    assert stall.reached.wait(20), run.communicate()
    run.kill()
    assert run.wait(10) == -signal.SIGKILL
    return stall


def rerun_delivers_the_rest(campaign, stall, *, unknown, reported=None):
    """`send --dry-run` says exactly what the rerun then does; afterwards everyone has
    exactly one message and the ledger accounts for all 12, `unknown` of them unknown (the
    rerun reports `reported` of those: the ones the killed run could not)."""
    stall.release.set()
    before = Counter(stall.recipients())
    predicted = campaign.run_json("send", "--dry-run")
    summary = campaign.run_json("send")
    sent_now = Counter(stall.recipients()) - before
    assert sorted(m["email"] for m in predicted["messages"]) == sorted(sent_now)
    assert (predicted["sent"], predicted["unknown"]) == (summary["sent"], summary["unknown"])
    assert summary["unknown"] == (unknown if reported is None else reported)
    received = Counter(stall.recipients())
    assert set(received.values()) == {1}                     # nobody twice
    missing = set(EVERYONE) - set(received)   # a payload cut off by the kill never arrived
    assert missing <= {u["email"] for u in summary["unknowns"]} and len(missing) <= unknown
    assert +statuses(campaign) == +Counter(sent=12 - unknown, unknown=unknown)
    return summary


@pytest.mark.parametrize(("point", "nth", "unknown"), [
    ("EHLO", 1, 0),   # before the first connection is up
    ("MAIL", 4, 0),   # in the middle of a chunk, between two messages
    ("RCPT", 3, 0),   # the server stalls after RCPT: the message never reached DATA
    ("DATA", 3, 1),   # the server stalls inside DATA: that one message may have arrived
], ids=["before-first-connection", "mid-chunk", "stall-after-rcpt", "stall-inside-data"])
def test_a_killed_send_loses_only_what_was_in_data(campaign, smtp_server, point, nth, unknown):
    stall = killed_at(campaign, smtp_server, point, nth)
    summary = rerun_delivers_the_rest(campaign, stall, unknown=unknown)
    if unknown:
        assert [u["email"] for u in summary["unknowns"]] == [stall.stalled_on]
        # its sequence waits for `outreach resolve`; the day-0 call of each other one is
        # created once (by the rerun, or by the killed run for those its flusher recorded)
        called = campaign.sql("SELECT p.email FROM call_tasks t JOIN enrollments e "
                              "ON e.id = t.enrollment_id JOIN prospects p ON p.id = e.prospect_id")
        assert sorted(e for (e,) in called) == [e for e in EVERYONE if e != stall.stalled_on]


def calls_created(campaign):
    return campaign.sql("SELECT count(*) FROM call_tasks")[0][0]


def hold_writes(campaign):
    """Another connection that keeps the ledger from being written until it rolls back."""
    if campaign.store_url:
        import psycopg

        db = psycopg.connect(campaign.store_url, autocommit=True)
        db.execute("BEGIN")
        db.execute("LOCK TABLE messages IN EXCLUSIVE MODE")
        return db
    db = sqlite3.connect(campaign.root / "outreach.db", isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    return db


def run_logs(campaign):
    """The hand-over logs of the runs that have not finished (one per run)."""
    return sorted(campaign.root.glob("outreach.db-handover-*"))


def in_flight(campaign):
    """How many messages killed runs had on the wire (payload out, no 250): their logs say."""
    marks = [handover.read(log) for log in run_logs(campaign)]
    return sum(len(m.reached - m.accepted) for m in marks)


def release_writes(campaign, db):
    """End `hold_writes`. On PostgreSQL a killed sender's last transaction may have reached
    the server whole (pipelined, its COMMIT too) and wait there for the lock: it is ended
    first, as if the kill had come before its COMMIT was sent."""
    if campaign.store_url:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                   "datname = current_database() AND pid <> pg_backend_pid() "
                   "AND wait_event_type = 'Lock'")
    db.execute("ROLLBACK")
    db.close()


def test_killed_between_the_servers_250_and_the_ledger(campaign, smtp_server):
    stall = StallThenHold(point="DATA", nth=3)
    use_smtp(campaign, smtp_server(stall).port, concurrency=1)
    enroll(campaign)
    run = start_send(campaign)
    assert stall.reached.wait(20)
    [log] = run_logs(campaign)
    # The two before it are recorded first, and their day-0 calls created: a write of the
    # flusher's that waited on the held ledger would hold the sender's loop, and the third
    # message's 250 would never be read.
    until(lambda: (statuses(campaign)["sent"], calls_created(campaign)) == (2, 2),
          lambda: (statuses(campaign), calls_created(campaign)))
    # From here the sender cannot record the third message.
    db = hold_writes(campaign)
    try:
        stall.release.set()
        # The 250 reached it: the third message's mark is written.
        until(lambda: log.read_bytes().count(b"\nS ") + log.read_bytes().startswith(b"S ") == 3,
              log.read_bytes)
        run.kill()
        run.wait(10)
        if campaign.store_url:
            # Its session on the server outlives it while blocked on the lock, and a batch
            # pipelined with its COMMIT would commit once the lock goes (truthfully: those
            # were accepted). End the session: this test is about a ledger that missed it.
            db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        stall.rest.set()
        release_writes(campaign, db)
    assert statuses(campaign)["sent"] == 2   # the third not recorded when it died
    # The fourth message may have gone out between the third's 250 and the kill.
    unknown = in_flight(campaign)
    assert unknown <= 1
    summary = rerun_delivers_the_rest(campaign, stall, unknown=unknown)
    assert summary["recovered"] >= 1   # accepted by the server: recorded sent, not resent


@pytest.mark.sqlite_only   # on PostgreSQL senders share the work: tests/test_send_runs.py
def test_two_senders_one_killed(campaign, smtp_server):
    stall = Stall(point="DATA", nth=5)
    use_smtp(campaign, smtp_server(stall).port, concurrency=2)
    enroll(campaign)
    runs = [start_send(campaign), start_send(campaign)]
    assert stall.reached.wait(20)
    # the loser of the lease stops by itself
    until(lambda: any(r.poll() is not None for r in runs), lambda: "neither stopped")
    loser = next(r for r in runs if r.poll() is not None)
    assert loser.returncode == 1
    assert "another `outreach send`" in loser.communicate()[1]
    winner = next(r for r in runs if r is not loser)
    winner.kill()
    winner.wait(10)
    unknown = in_flight(campaign)   # the held one, and maybe the other connection's
    assert 1 <= unknown <= 2
    rerun_delivers_the_rest(campaign, stall, unknown=unknown)


def test_four_connections_killed_at_most_four_unknown(campaign, smtp_server):
    """With 4 connections the others keep going while one is held inside DATA: whatever they
    had on the wire at the kill is unknown (at most one each); nobody else is lost."""
    stall = Stall(point="DATA", nth=20)
    use_smtp(campaign, smtp_server(stall).port, concurrency=4)
    enroll(campaign, 40)
    run = start_send(campaign)
    assert stall.reached.wait(20)
    run.kill()
    run.wait(10)
    stall.release.set()
    summary = campaign.run_json("send")
    assert 1 <= summary["unknown"] <= 4
    received = Counter(stall.recipients())
    unknown = {u["email"] for u in summary["unknowns"]}
    assert stall.stalled_on in unknown
    assert set(received.values()) == {1}          # nobody twice
    everyone = {f"cfo{i}@maker{i}.example" for i in range(40)}
    assert everyone - set(received) <= unknown    # only an unknown one may have missed out
    assert +statuses(campaign) == +Counter(sent=40 - len(unknown), unknown=len(unknown))


def interrupted(campaign, smtp_server, *signals):
    """12 due, the third message held inside DATA; `signals` sent one after the other once
    the run says it is stopping."""
    stall = Stall(point="DATA", nth=3)
    use_smtp(campaign, smtp_server(stall).port, concurrency=1)
    enroll(campaign)
    run = start_send(campaign)
    assert stall.reached.wait(20)
    run.send_signal(signals[0])
    told = run.stderr.readline()
    for sig in signals[1:]:
        run.send_signal(sig)
    return stall, run, told


def test_ctrl_c_finishes_the_message_in_data_and_stops(campaign, smtp_server):
    stall, run, told = interrupted(campaign, smtp_server, signal.SIGINT)
    assert told == "stopping: finishing 1 message in flight (up to 5 s)… (again to stop at once)\n"
    stall.release.set()
    out, err = run.communicate(timeout=20)
    assert run.returncode == 130, err
    summary = json.loads(out)
    assert (summary["sent"], summary["unknown"], summary["deferred"]) == (3, 0, 9)
    assert summary["deferred_by"] == {"interrupted": {"count": 9, "next": None}}
    assert summary["interrupted"] == "SIGINT"
    assert summary["stopped"].startswith("stopped by SIGINT: the messages in flight")
    assert statuses(campaign) == {"sent": 3}   # nothing pending became unknown
    rerun_delivers_the_rest(campaign, stall, unknown=0)


def test_a_second_ctrl_c_stops_at_once(campaign, smtp_server):
    stall, run, _ = interrupted(campaign, smtp_server, signal.SIGINT, signal.SIGINT)
    out, err = run.communicate(timeout=10)   # the server still holds the third message
    assert run.returncode == 130, err
    summary = json.loads(out)
    assert (summary["sent"], summary["unknown"], summary["deferred"]) == (2, 1, 9)
    assert summary["unknowns"][0]["email"] == stall.stalled_on
    assert summary["stopped"].startswith("stopped at once by a second SIGINT")
    rerun_delivers_the_rest(campaign, stall, unknown=1, reported=0)


def test_sigterm_text_summary_says_it_was_interrupted(campaign, smtp_server):
    stall = Stall(point="DATA", nth=3)
    use_smtp(campaign, smtp_server(stall).port, concurrency=1)
    enroll(campaign)
    run = subprocess.Popen(
        [sys.executable, "-m", "outreach", "send", "--config", str(campaign.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert stall.reached.wait(20)
    run.send_signal(signal.SIGTERM)
    assert run.stderr.readline().startswith("stopping: finishing 1 message in flight")
    stall.release.set()
    out, err = run.communicate(timeout=20)
    assert run.returncode == 143
    assert out == ("sent 3, failed 0, unknown 0, held 0, deferred 9; 3 call tasks\n"
                   "deferred 9: not started before the run stopped; they stay due: run again\n")
    assert err.endswith("Error: stopped by SIGTERM: the messages in flight were finished; "
                        "the rest were not sent and stay due\n")


def test_outbox_a_complete_file_is_sent_a_partial_one_is_not(campaign):
    """A run that died while writing the outbox: the intents it left are settled by the
    files: a finished .eml is recorded sent, a temp file is removed and its message sent."""
    enroll(campaign, 3)
    app = campaign.app()
    try:
        rows = app.store.open_enrollments()
        with app.store.transaction():
            written = app.store.add_intents([
                {"enrollment_id": e["id"], "step": 0, "template": "referral", "variant": None,
                 "message_id": f"<dead.{e['id']}@acme.example>", "subject": "s"} for e in rows],
                at=app.now())
        outbox = app.config.smtp.outbox
    finally:
        app.close()
    log = handover.Log(campaign.root / "outreach.db-handover")   # as the dead run wrote it
    log.queued([f"<dead.{e['id']}@acme.example>" for e in rows])
    log.close()
    outbox.mkdir()
    done, _ = outbox_files(outbox, "<dead.1@acme.example>")
    done.write_bytes(b"Subject: s\r\n\r\nwritten before the crash\r\n")
    _, partial = outbox_files(outbox, "<dead.2@acme.example>")
    partial.write_bytes(b"Subject: s\r\n\r\nhalf")
    assert len(written) == 3

    predicted = campaign.run_json("send", "--dry-run")
    assert (predicted["sent"], predicted["recovered"], predicted["unknown"]) == (2, 1, 0)
    summary = campaign.run_json("send")
    assert (summary["sent"], summary["recovered"], summary["unknown"]) == (2, 1, 0)
    files = sorted(p.name for p in outbox.iterdir())
    assert len(files) == 3 and not partial.exists()
    new = b"".join(p.read_bytes() for p in outbox.iterdir() if p != done)
    assert b"cfo1@maker1.example" in new and b"cfo2@maker2.example" in new
    assert b"cfo0@maker0.example" not in new   # its file was complete: not written again
    assert statuses(campaign) == {"sent": 3}


def test_a_failure_while_queueing_stops_the_run_without_hanging(campaign, monkeypatch):
    """The ledger refusing a later chunk's intents (here: a simulated error) ends the run with
    that error once the messages already queued are done; the next run sends the rest."""
    from outreach.errors import StoreError
    from outreach.settle import RunLedger

    enroll(campaign, 12)
    real = RunLedger.claim
    calls = []

    def failing(self, envelopes):
        calls.append(len(envelopes))
        if len(calls) == 2:
            raise StoreError("outreach.db: disk I/O error")
        return real(self, envelopes)

    monkeypatch.setattr(RunLedger, "claim", failing)
    failed = campaign.run("send")
    assert failed.exit_code == 1
    assert failed.stderr == "Error: outreach.db: disk I/O error\n"
    monkeypatch.setattr(RunLedger, "claim", real)
    first = statuses(campaign)
    assert first == {"sent": 8}   # the first chunk went; the failed one left no intent
    assert campaign.run_json("send")["sent"] == 4
    assert statuses(campaign) == {"sent": 12}


def test_intents_no_log_knows_of_are_unknown(campaign):
    """Intents whose run left no marks here (a deleted log, or a run on another machine
    sharing the database): nothing says how far they got, so none is resent."""
    enroll(campaign, 2)
    app = campaign.app()
    try:
        with app.store.transaction():
            app.store.add_intents([
                {"enrollment_id": e["id"], "step": 0, "template": "referral", "variant": None,
                 "message_id": f"<elsewhere.{e['id']}@acme.example>", "subject": "s"}
                for e in app.store.open_enrollments()], at=app.now())
    finally:
        app.close()
    summary = campaign.run_json("send")
    assert (summary["sent"], summary["unknown"]) == (0, 2)
    assert statuses(campaign) == {"unknown": 2}


@pytest.mark.sqlite_only   # PostgreSQL's lease is an advisory lock held by the connection
def test_a_suspended_sender_keeps_its_lease(campaign, smtp_server):
    """A sender stopped (Ctrl-Z, a laptop's lid) for longer than its lease is still alive
    and resumes where it was: a second `send` meanwhile must not take over and settle its
    queued messages as never sent, or both send them."""
    stall = Stall(point="MAIL", nth=3)
    use_smtp(campaign, smtp_server(stall).port, concurrency=1)
    enroll(campaign)
    first = start_send(campaign)
    assert stall.reached.wait(20)
    first.send_signal(signal.SIGSTOP)
    try:
        # What another process sees after the wall clock moved past the lease's expiry.
        db = sqlite3.connect(campaign.root / "outreach.db")
        db.execute("UPDATE locks SET expires_at = '2000-01-01T00:00:00+00:00'")
        db.commit()
        db.close()
        second = campaign.run("send")
    finally:
        stall.release.set()
        first.send_signal(signal.SIGCONT)
    assert first.wait(20) == 0, first.communicate()
    assert Counter(stall.recipients()) == Counter(EVERYONE)   # each exactly once
    assert second.exit_code == 1
    assert "another `outreach send` is running" in second.output


def test_a_hand_over_log_that_cannot_be_written_sends_nothing(campaign, smtp_server,
                                                              monkeypatch):
    """A full disk: the mark before the payload cannot be written, so the payload does not
    go out either (a crash would otherwise resend it). Nothing is `unknown`; the messages
    stay due and the next run sends each once."""
    server = smtp_server(Recorder())
    use_smtp(campaign, server.port, concurrency=1)
    enroll(campaign)

    def full(self, message_id):
        raise OSError(28, "No space left on device")

    from outreach import transport

    monkeypatch.setattr(transport, "RETRY_INITIAL", 0.01)   # it retries, as for a lost line
    writable = handover.Log.reached_data
    monkeypatch.setattr(handover.Log, "reached_data", full)
    stopped = campaign.run("send", "--json")
    assert stopped.exit_code == 1
    summary = json.loads(stopped.stdout)
    assert (summary["sent"], summary["failed"], summary["unknown"]) == (0, 5, 0)
    assert summary["failures"][0]["error"] == (
        "not sent: the hand-over log could not be written (No space left on device)")
    assert summary["failures"][0]["retry"] is True
    assert server.handler.recipients() == []
    monkeypatch.setattr(handover.Log, "reached_data", writable)   # space again
    again = campaign.run("send")
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith("sent 12,"), again.output
    assert Counter(server.handler.recipients()) == Counter(EVERYONE)
