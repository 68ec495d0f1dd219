"""A suppression written mid-run by another process stops every queued message whose SMTP
transaction has not started: the sink holds message A inside DATA while B and C wait, another
process's `poll` (or `outreach suppress`) suppresses C, the sink lets go: B arrives, C never
does. On both engines; the look before each message asks the database nothing until a
suppression may have been written (PostgreSQL: LISTEN/NOTIFY; SQLite: PRAGMA data_version)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest

from outreach.clock import parse_now
from outreach.lastlook import LastLook
from outreach.store import Store
from tests.conftest import prospect_row, until
from tests.ledger import statuses
from tests.smtp_server import Stall, StallThenHold, use_smtp
from tests.test_team import unsubscribe_mail

pytestmark = pytest.mark.slow

THURSDAY = "2026-03-05T07:30:00-06:00"   # inside Chicago's 07:00-09:00 window
A, B, C = "cfo1@maker1.example", "cfo2@maker2.example", "cfo3@maker3.example"


def held_in_data(campaign, smtp_server, *args: str,
                 stall: Stall | None = None) -> tuple[Stall, subprocess.Popen[str]]:
    """A, B and C due; `outreach send ARGS` in its own process, on one connection, with A
    held inside DATA by the sink (B and C queued: their intents are written)."""
    stall = stall or Stall(point="DATA", nth=1)
    use_smtp(campaign, smtp_server(stall).port, concurrency=1)
    campaign.now(THURSDAY)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in (1, 2, 3)])))
    assert campaign.run_json("enroll", "referral")["enrolled"] == 3
    run = subprocess.Popen([sys.executable, "-m", "outreach", "send", *args,
                            "--config", str(campaign.config_path)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert stall.reached.wait(20), run.communicate()
    assert stall.stalled_on == A
    assert statuses(campaign) == {"intent": 3}
    return stall, run


@contextmanager
def sent_out(campaign) -> Iterator[None]:
    """The block writes a suppression; on PostgreSQL its notification reaches the sender a
    moment after the commit, so wait until it reached a listener of our own (the server
    signals every listener at once) before the sink lets go. SQLite's counter is immediate."""
    if not campaign.store_url:
        yield
        return
    import psycopg

    with psycopg.connect(campaign.store_url, autocommit=True) as listener:
        listener.execute("LISTEN outreach_suppressions")
        yield
        assert list(listener.notifies(timeout=10, stop_after=1)), "no notification"


def let_go(campaign, stall: StallThenHold) -> None:
    """Let A go, and B only once A's delivery is recorded. That record is a statement the
    sender sent after the suppression's notification was out (`sent_out`), and PostgreSQL
    hands a listening session its notifications before the reply to its next statement: by
    the look before C the sender has it. (Its own travel to the idle session is not bound
    to be over: a busy machine let the look before C come first.)"""
    stall.release.set()
    until(lambda: statuses(campaign)["sent"] == 1, lambda: statuses(campaign))
    stall.rest.set()


def enrollment_state(campaign, email: str) -> str:
    [(state,)] = campaign.sql("SELECT e.state FROM enrollments e JOIN prospects p "
                              "ON p.id = e.prospect_id WHERE p.email = ?", email)
    return str(state)


def test_an_unsubscribe_polled_mid_run_stops_the_queued_message(campaign, smtp_server):
    stall, run = held_in_data(campaign, smtp_server, "--json",
                              stall=StallThenHold(point="DATA", nth=1))
    unsubscribe_mail(campaign, C)   # C's opt-out, read by a `poll` in this (other) process
    with sent_out(campaign):
        assert campaign.run_json("poll")["unsubscribes"] == 1
    let_go(campaign, stall)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    summary = json.loads(out)
    assert stall.recipients() == [A, B]
    assert (summary["sent"], summary["suppressed_mid_run"]) == (2, 1)
    assert summary["suppressions_mid_run"] == [{"email": C, "step": 0}]
    assert statuses(campaign) == {"sent": 2}   # C's intent is gone: it was never handed over
    assert enrollment_state(campaign, C) == "unsubscribed"
    assert summary["calls"] == 2               # the day-0 call only after a sent email


def test_a_domain_suppressed_mid_run_stops_its_queued_message(campaign, smtp_server):
    stall, run = held_in_data(campaign, smtp_server,
                              stall=StallThenHold(point="DATA", nth=1))
    with sent_out(campaign):
        assert campaign.run("suppress", "@maker3.example").exit_code == 0
    let_go(campaign, stall)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert out == ("sent 2, failed 0, unknown 0, held 0, deferred 0; 2 call tasks; "
                   "1 suppressed mid-run, not sent\n")
    assert err == (f"not sent: {C} step 0: suppressed while this run was sending (by another "
                   "process); its sequence has ended\n")
    assert stall.recipients() == [A, B]
    assert statuses(campaign) == {"sent": 2}
    assert enrollment_state(campaign, C) == "stopped"
    # Nothing is left to send to C, now or later.
    assert campaign.run_json("send", "--dry-run")["messages"] == []


def test_a_suppression_after_the_transaction_started_does_not_stop_it(campaign, smtp_server):
    """The look is before each message's transaction: A, already inside DATA, goes."""
    stall, run = held_in_data(campaign, smtp_server, "--json")
    assert campaign.run("suppress", A).exit_code == 0
    stall.release.set()
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert stall.recipients() == [A, B, C]
    assert json.loads(out)["suppressed_mid_run"] == 0


@dataclass
class StallThenTryLater(Stall):
    """Holds the first message inside DATA, then answers 451 (try again later): the sender
    retries it after a backoff, in a new SMTP transaction."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await self._point("DATA", envelope)
        if self.counts["DATA"] == 1:
            return "451 4.3.0 try again later"
        return self.accept(envelope)


def test_a_retry_after_the_suppression_is_withheld(campaign, smtp_server):
    """A, held inside DATA, is suppressed; the server then says 451: the retry, a new SMTP
    transaction, is looked at first and never goes."""
    stall, run = held_in_data(campaign, smtp_server, "--json",
                              stall=StallThenTryLater(point="DATA", nth=1))
    assert campaign.run("suppress", A).exit_code == 0
    stall.release.set()
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    summary = json.loads(out)
    assert stall.recipients() == [B, C]
    assert (summary["sent"], summary["failed"], summary["suppressed_mid_run"]) == (2, 0, 1)
    assert summary["suppressions_mid_run"] == [{"email": A, "step": 0}]
    assert statuses(campaign) == {"sent": 2}


class Statements:
    """Every statement one store sends to its database, in order."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sql: list[str] = []
        if store.db.name == "sqlite":
            conn: Any = store.db
            conn.conn.set_trace_callback(self.sql.append)
            return
        import psycopg

        real = psycopg.Cursor.execute

        def counted(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if cur.connection is watched:
                self.sql.append(query.decode() if isinstance(query, bytes) else str(query))
            return real(cur, query, *args, **kwargs)

        watched = cast(Any, store.db).conn
        monkeypatch.setattr(psycopg.Cursor, "execute", counted)


def wait_for_news(store: Store) -> None:
    """On PostgreSQL a notification travels after the writer's commit: wait until it is on
    the socket (a blocking wait, not a sleep)."""
    if store.db.name == "postgresql":
        conn: Any = store.db
        assert select.select([conn.conn.pgconn.socket], [], [], 10)[0]


def test_the_last_look_asks_the_database_only_after_a_suppression(campaign, monkeypatch):
    campaign.now(THURSDAY)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(n) for n in (1, 2, 3)])))
    campaign.run_json("enroll", "referral")
    target = campaign.config().store_target
    sender, other = Store(target), Store(target)
    try:
        ids = [sender.add_ledger_row(e, step=0, message_id=f"<m{e}@acme.example>",
                                     at=parse_now(THURSDAY), status="intent")
               for e in (1, 2, 3)]
        look = LastLook(sender)
        look.queued(ids)
        counted = Statements(sender, monkeypatch)
        assert look.may_send(ids[0])
        # Another process writes something that is no suppression: at most a cheap look.
        other.set_stage(1, "lead", cause="test", at=parse_now(THURSDAY))
        assert look.may_send(ids[1])
        if sender.db.name == "postgresql":
            assert counted.sql == []   # no statement at all: only the socket was read
        else:   # the file's change counter each time; a re-read as another connection wrote
            assert counted.sql[:2] == ["PRAGMA data_version"] * 2
            assert len(counted.sql) == 3 and "suppressions" in counted.sql[2]
        counted.sql.clear()
        with other.transaction():
            other.suppress("@maker3.example", reason="manual", source="test",
                           at=parse_now(THURSDAY))
        wait_for_news(sender)
        assert not look.may_send(ids[2])   # C: its domain was suppressed meanwhile
        assert len([s for s in counted.sql if "suppressions" in s]) == 1
    finally:
        sender.close()
        other.close()
