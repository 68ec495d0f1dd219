"""The PostgreSQL engine, for a team sharing one database (psycopg 3).

Statements keep the store's `?` placeholders and are translated once each. The schema version
is a row in `schema_version`; migrations run under a transaction-scoped advisory lock so two
processes opening a new database do not both apply them. Leases are session advisory locks:
they work across hosts, and the server drops them the moment the holder's connection ends
(a killed process, a crashed host), whatever the `locks` row (kept to name the holder) says.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..clock import iso
from ..errors import LockedError, StoreError
from .engine import Cursor, PerEngine, Record, migration_sql, running, transaction

_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
_MIGRATE_LOCK = 0x6F7574726561636B  # any fixed key: "outreack"
_SUPPRESSIONS = "outreach_suppressions"   # notified on each new suppression (migration M004)


class PostgresEngine:
    name = "postgresql"
    position = "strpos"
    lock_rows = " FOR UPDATE OF e SKIP LOCKED"   # another sender's rows: skipped, not awaited
    IntegrityError = psycopg.IntegrityError

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self.url, self.where = url, redact(url)
        self.options: dict[str, Any] = {"autocommit": True, "password": password,
                                        "application_name": "outreach"}
        try:
            self.conn: psycopg.Connection[Any] = psycopg.connect(url, **self.options)
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot connect: {_first_line(exc)}") from None
        self.held: set[str] = set()
        self.renewed: dict[str, float] = {}   # lease -> when its row was last rewritten
        self.pool: Any = None
        self.pipe: psycopg.Pipeline | None = None   # the open transaction's pipeline
        self._listening = False
        self._noticed = False   # a suppression notification arrived since the last look

    def long_lived(self) -> None:
        """For `watch`, which runs for weeks: the connection comes from a pool of one
        (psycopg_pool) that checks it before handing it out, so a restarted server or a
        dropped network costs one failed pass and a reconnect, not the process."""
        from psycopg_pool import ConnectionPool

        self.pool = ConnectionPool(self.url, kwargs=self.options, min_size=1, max_size=1,
                                   check=ConnectionPool.check_connection, open=True,
                                   name="outreach")
        old, self.conn = self.conn, self.pool.getconn()
        old.close()

    def _ready(self) -> None:
        """Between transactions, a long-lived engine swaps a broken connection for a checked
        one and takes its leases again (the server dropped them with the old session)."""
        if self.pool is None or not (self.conn.broken or self.conn.closed):
            return
        self.pool.putconn(self.conn)   # the pool discards a broken connection
        self.conn = self.pool.getconn()
        for name in sorted(self.held):
            if not self._try_lock(name):
                self.held.discard(name)
                raise LockedError(f"{self.where}: the connection dropped and another process "
                                  f"took `{name}` meanwhile; this one stops.")

    def open(self, migrations: Sequence[str | PerEngine]) -> None:
        try:
            self.migrate(migrations)
        except psycopg.Error as exc:
            self.conn.close()
            raise StoreError(f"{self.where}: cannot migrate: {_first_line(exc)}") from None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.putconn(self.conn)
            self.pool.close()
        else:
            self.conn.close()

    # -- statements ----------------------------------------------------------------------

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        self._ready()
        cur = self.conn.execute(_pg(sql, bool(args)), tuple(args) or None)
        self._sync()   # its rows, row count and error are there when it returns
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        self._ready()
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(_pg(sql, True), rows)   # pipelined: one round trip
                self._sync()

    def execute_each(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """`sql` run once per row (prepared, pipelined: one round trip); every row the runs
        returned, in order (`RETURNING`)."""
        self._ready()
        if not rows:
            return []
        out: list[Any] = []
        with self.conn.cursor() as cur:
            cur.executemany(_pg(sql, True), rows, returning=True)
            self._sync()
            while True:
                out.extend(cur.fetchall())
                if not cur.nextset():
                    return out

    def queue(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Writes whose results nobody reads: inside a transaction they travel with the next
        statement or the COMMIT (one round trip for several), and an error surfaces there,
        failing the transaction all the same. Outside one they run at once."""
        rows = list(rows)
        self._ready()
        if rows:
            self.conn.cursor().executemany(_pg(sql, True), rows)   # prepared once, run per row

    def records(self, sql: str, args: Sequence[Any] = ()) -> list[Record]:
        self._ready()
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(_pg(sql, bool(args)), tuple(args) or None)
            return cur.fetchall()   # (in a transaction's pipeline: fetched up to here)

    def _sync(self) -> None:
        if self.pipe is not None:
            self.pipe.sync()

    @staticmethod
    def json_put(column: str) -> str:
        """`column` (JSON text) with key ?1 set to the string ?2."""
        return f"({column}::jsonb || jsonb_build_object(?::text, ?::text))::text"

    @property
    def in_transaction(self) -> bool:
        return (self.pipe is not None
                or self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)

    def transaction(self) -> AbstractContextManager[PostgresEngine]:
        """BEGIN (read committed); the ledger's checks sit in the statements that write.
        Inside another transaction, a savepoint."""
        self._ready()
        if self.in_transaction:
            return transaction(self, self.execute, nested=True, begin="")
        return self._pipelined()

    @contextmanager
    def _pipelined(self) -> Iterator[PostgresEngine]:
        """A transaction in pipeline mode: BEGIN goes with its first statement, and COMMIT
        with the writes queued before it, so a transaction of writes is one round trip to
        the server, and one that reads first is two. Each round trip waits on the server, so
        on a busy host they are what a sender spends its time on."""
        try:
            with self.conn.pipeline() as self.pipe:
                self.conn.execute(b"BEGIN")
                try:
                    yield self
                except BaseException:
                    self.conn.execute(b"ROLLBACK")
                    raise
                self.conn.execute(b"COMMIT")   # sent, and its outcome read, as the pipeline ends
        finally:
            self.pipe = None
            # A queued write that failed made the server skip the rest, ROLLBACK included.
            if (not self.conn.closed and self.conn.info.transaction_status
                    == psycopg.pq.TransactionStatus.INERROR):
                self.conn.execute(b"ROLLBACK")

    # -- schema --------------------------------------------------------------------------

    @property
    def version(self) -> int:
        self.conn.execute(_VERSION_TABLE)
        row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    def migrate(self, migrations: Sequence[str | PerEngine]) -> None:
        """Apply the migrations this database has not seen; refuse one from a newer outreach."""
        if self.version >= len(migrations):
            self._refuse_newer(self.version, len(migrations))
            return
        # Not pipelined: a migration is several statements in one string.
        with transaction(self, self.conn.execute, nested=False, begin="BEGIN"):
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            current = self.version   # another process may have migrated meanwhile
            for number, migration in enumerate(migrations[current:], start=current + 1):
                self.conn.execute(migration_sql(migration, self.name).encode())
                self.conn.execute("DELETE FROM schema_version")
                self.conn.execute("INSERT INTO schema_version VALUES (%s)", (number,))

    def _refuse_newer(self, current: int, known: int) -> None:
        if current > known:
            raise StoreError(
                f"{self.where}: written by a newer outreach (schema {current}, this one knows "
                f"{known}). Upgrade outreach: `pip install -U outreach`.")

    def tables(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]

    def reset_ids(self, table: str) -> None:
        """After rows were written with explicit ids, the identity continues after them."""
        self.conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                          f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)".encode())

    # -- leases --------------------------------------------------------------------------

    def acquire_lock(self, name: str, *, owner: str, now: datetime, until: datetime) -> None:
        """Take a named lease, or raise LockedError naming the holder."""
        if not self._try_lock(name):
            row = self.conn.execute("SELECT owner, pid FROM locks WHERE name = %s",
                                    (name,)).fetchone()
            holder = f" (pid {row[1]} on {row[0]})" if row else ""
            raise LockedError(f"{self.where}: another {running(name)} is running{holder}; "
                              "wait for it to finish, then run again.")
        self.conn.execute(
            "INSERT INTO locks (name, owner, pid, expires_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, "
            "expires_at = excluded.expires_at",
            (name, f"{socket.gethostname()} since {owner}", os.getpid(), iso(until)))
        self.renewed[name] = time.monotonic()

    def renew_lock(self, name: str, *, until: datetime) -> None:
        """The advisory lock lasts as long as the connection; the row, which only says until
        when, is rewritten once a minute (a sender renews after every batch it records)."""
        if name in self.held and time.monotonic() - self.renewed.get(name, 0.0) > 60:
            self.conn.execute("UPDATE locks SET expires_at = %s WHERE name = %s",
                              (iso(until), name))
            self.renewed[name] = time.monotonic()

    def release_lock(self, name: str) -> None:
        if name in self.held:
            self.conn.execute("DELETE FROM locks WHERE name = %s", (name,))
            self._unlock(name)

    @contextmanager
    def exclusive(self, name: str, message: str) -> Iterator[None]:
        """Hold `name` for the block or raise LockedError(message); nothing is written."""
        if not self._try_lock(name):
            raise LockedError(message)
        try:
            yield
        finally:
            self._unlock(name)

    def hold_run(self, run: str) -> None:
        """This `send` run's lease, for as long as its connection lives."""
        if not self._try_lock(f"send-run:{run}"):
            raise LockedError(f"{self.where}: send run {run} is already running")

    def take_runs(self, runs: Iterable[str]) -> set[str]:
        """Of these runs, those whose process is gone (the server dropped its lock with its
        connection), now held by this one until `release_run`."""
        return {run for run in runs if self._try_lock(f"send-run:{run}")}

    def release_run(self, run: str) -> None:
        self._unlock(f"send-run:{run}")

    def lock_quota(self) -> None:
        """Until the transaction ends, no other process writes intents: the team's counts
        read next stay true until this one's intents are committed."""
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key("quota"),))

    def _try_lock(self, name: str) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (_key(name),)).fetchone()
        if row and row[0]:
            self.held.add(name)
            return True
        return False

    def _unlock(self, name: str) -> None:
        self.held.discard(name)
        if not self.conn.closed:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (_key(name),))


    # -- suppressions written by other processes -------------------------------------------

    def watch_suppressions(self) -> None:
        """LISTEN for new suppressions (M004's trigger notifies them on commit, whoever
        writes them); from now on `suppressions_changed` tells whether one arrived."""
        if not self._listening:
            self.conn.add_notify_handler(self._notice)
            self.conn.execute(f"LISTEN {_SUPPRESSIONS}")
            self._listening = True
        self._noticed = False

    def _notice(self, notify: psycopg.Notify) -> None:
        """Notifications that came in with another statement's reply (psycopg hands them
        over as it reads)."""
        if notify.channel == _SUPPRESSIONS:
            self._noticed = True

    def suppressions_changed(self) -> bool:
        """Was a suppression written since the last look? Reads what already arrived on the
        connection's socket without waiting and without a round trip (libpq's socket is
        non-blocking): a notification sent after a suppression's commit."""
        pgconn = self.conn.pgconn
        pgconn.consume_input()
        while (notify := pgconn.notifies()) is not None:
            if notify.relname.decode() == _SUPPRESSIONS:
                self._noticed = True
        noticed, self._noticed = self._noticed, False
        return noticed


def connection_lost(exc: BaseException) -> bool:
    """The server or the network went away (a long-lived engine reconnects on next use)."""
    return isinstance(exc, psycopg.OperationalError)


def _key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lease name."""
    digest = hashlib.blake2b(f"outreach:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@lru_cache(maxsize=512)
def _pg(sql: str, has_args: bool) -> bytes:
    """The store's `?` placeholders as psycopg's `%s` (outside string literals); a literal `%`
    doubled when there are arguments."""
    if not has_args:
        return sql.encode()
    out: list[str] = []
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
        if char == "%":
            out.append("%%")
        elif char == "?" and not quoted:
            out.append("%s")
        else:
            out.append(char)
    return "".join(out).encode()


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", "@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
