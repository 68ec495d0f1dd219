"""The PostgreSQL engine itself: migration, leases across connections, config. Runs on the
PostgreSQL pass (OUTREACH_TEST_STORE=postgresql); the rest of the suite covers behaviour."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from outreach.errors import LockedError, StoreError
from outreach.migrations import MIGRATIONS
from outreach.store import Store

from .conftest import engine_under_test

pytestmark = pytest.mark.skipif(engine_under_test() != "postgresql",
                                reason="the PostgreSQL pass runs these")
TABLES = {"prospects", "suppressions", "enrollments", "messages", "inbound", "mailbox_state",
          "call_tasks", "stage_history", "events", "locks", "secrets", "schema_version"}
NOW = datetime(2026, 3, 5, 13, 0, tzinfo=UTC)


def test_empty_database_is_migrated_once(postgres_server):
    url = postgres_server.create_database(empty=True)
    with Store(url) as store:
        assert store.version == len(MIGRATIONS)
        names = {r[0] for r in store.db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert names >= TABLES
        secret = store.unsubscribe_secret()
        assert len(secret) == 32
    with Store(url) as again:
        assert again.version == len(MIGRATIONS) and again.unsubscribe_secret() == secret
    with Store(postgres_server.create_database(empty=True)) as other:
        assert other.unsubscribe_secret() != secret


def test_database_from_a_newer_outreach_is_refused(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS) + 1,))
    with pytest.raises(StoreError, match=r"written by a newer outreach .*Upgrade"):
        Store(postgres_url)


def test_an_unreachable_server_is_a_clear_error(postgres_server):
    url = postgres_server.url("no_such_database")
    with pytest.raises(StoreError, match=r"no_such_database.*: cannot connect: .*does not exist"):
        Store(url)


def test_the_send_lease_holds_across_connections_and_lapses_when_its_holder_dies(postgres_url):
    first, second = Store(postgres_url), Store(postgres_url)
    first.acquire_lock("send", owner="t1", now=NOW, until=NOW + timedelta(minutes=10))
    with pytest.raises(LockedError, match=r"another `outreach send` is running \(pid \d+ on "):
        second.acquire_lock("send", owner="t2", now=NOW, until=NOW + timedelta(minutes=10))
    first.close()   # the holder dies without releasing: the server drops its lock
    deadline = time.monotonic() + 10
    while True:   # as soon as the server has ended the holder's session
        try:
            second.acquire_lock("send", owner="t2", now=NOW, until=NOW + timedelta(minutes=10))
            break
        except LockedError:
            assert time.monotonic() < deadline, "the dead holder's lease never lapsed"
            time.sleep(0.01)
    second.release_lock("send")
    assert second.db.execute("SELECT count(*) FROM locks").fetchone()[0] == 0
    second.close()


def test_poll_is_exclusive_and_writes_nothing(postgres_url):
    with Store(postgres_url) as one, Store(postgres_url) as two:
        with one.exclusive("poll", "busy"):
            with pytest.raises(LockedError, match="busy"), two.exclusive("poll", "busy"):
                pass
            assert one.db.execute("SELECT count(*) FROM locks").fetchone()[0] == 0
        with two.exclusive("poll", "busy"):
            pass


def test_password_env_is_used(campaign, monkeypatch):
    url = campaign.store_url
    campaign.edit_config(f'url = "{url}"', f'url = "{url}"\npassword_env = "TEAM_DB_PASSWORD"')
    result = campaign.run("prospects")
    assert result.exit_code == 1
    assert "[store] password_env: environment variable TEAM_DB_PASSWORD is not set" in \
        result.stderr
    monkeypatch.setenv("TEAM_DB_PASSWORD", "trust-ignores-it")
    assert campaign.run("prospects").exit_code == 0


def test_a_long_lived_store_survives_a_dropped_connection_and_keeps_its_lease(postgres_url):
    """`watch` runs for weeks: when the server drops its connection, the pass that was
    running fails (and is retried), the next one reconnects and holds the poll lease again."""
    from outreach.store import connection_lost

    with Store(postgres_url) as store, Store(postgres_url) as other:
        store.long_lived()
        with store.exclusive("poll", "busy"):
            pid = store.db.execute("SELECT pg_backend_pid()").fetchone()[0]
            other.db.execute("SELECT pg_terminate_backend(?)", (pid,))
            with pytest.raises(psycopg.OperationalError) as dropped:
                store.count_prospects()
            assert connection_lost(dropped.value)
            assert store.count_prospects() == 0   # a new connection from the pool
            assert store.db.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
            with pytest.raises(LockedError, match="busy"), other.exclusive("poll", "busy"):
                pass   # the lease was taken again on the new connection
        with other.exclusive("poll", "busy"):
            pass


def test_a_server_that_goes_away_mid_command_is_a_clear_error(campaign, monkeypatch):
    from outreach.store.prospects import Prospects

    def dropped(self):
        raise psycopg.OperationalError("server closed the connection unexpectedly\n\tdetail")

    monkeypatch.setattr(Prospects, "count_prospects", dropped)
    result = campaign.run("check")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: the database server stopped answering (server closed the connection "
        "unexpectedly); what was not committed was rolled back. Run again when it is back.\n")


def test_a_transaction_of_queued_writes_is_one_round_trip(postgres_url, monkeypatch):
    from psycopg import waiting

    from .postgres import round_trip_counter

    with Store(postgres_url) as store:
        trips, counted = round_trip_counter(waiting.wait)
        monkeypatch.setattr(waiting, "wait", counted)
        with store.transaction():
            store.db.queue("INSERT INTO secrets (name, value) VALUES (?, ?)",
                           [("one", "1"), ("two", "2")])
            store.db.queue("UPDATE secrets SET value = ? WHERE name = ?", [("3", "two")])
        assert trips[0] == 1   # BEGIN, the writes and COMMIT together
        with store.transaction():
            cur = store.db.execute("UPDATE secrets SET value = '4' WHERE name IN ('one', 'two')")
            assert cur.rowcount == 2   # a statement's count is there when it returns
        assert trips[0] == 3
        assert not store.db.in_transaction
        assert dict(store.db.execute("SELECT name, value FROM secrets WHERE name IN "
                                     "('one', 'two')").fetchall()) == {"one": "4", "two": "4"}


def test_a_queued_write_that_fails_fails_its_transaction(postgres_url):
    with Store(postgres_url) as store:
        with pytest.raises(psycopg.IntegrityError), store.transaction():
            store.db.queue("INSERT INTO secrets (name, value) VALUES (?, ?)", [("kept", "no")])
            store.db.queue("INSERT INTO secrets (name, value) VALUES (?, ?)",
                           [("twice", "1"), ("twice", "2")])
        assert not store.db.in_transaction
        assert store.db.execute("SELECT count(*) FROM secrets WHERE name IN ('kept', 'twice')"
                                ).fetchone()[0] == 0
        with pytest.raises(psycopg.IntegrityError), store.transaction():
            store.db.queue("INSERT INTO secrets (name, value) VALUES (?, ?)",
                           [("unsubscribe", "x")])
            store.db.execute("SELECT 1")   # the next statement carries the queued write
        with store.transaction():   # the connection goes on as before
            store.db.queue("INSERT INTO secrets (name, value) VALUES (?, ?)", [("kept", "yes")])
        assert store.value("SELECT value FROM secrets WHERE name = 'kept'") == "yes"
