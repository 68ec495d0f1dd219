"""The SQLite engine: one file, WAL mode, `BEGIN IMMEDIATE` transactions, `PRAGMA
user_version` as the schema version, and leases held as flocks on a file beside the database
(a SQLite file is only ever written from one host)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..clock import iso
from ..errors import LockedError, StoreError
from .engine import Cursor, PerEngine, Record, migration_sql, running, transaction


class SQLiteEngine:
    name = "sqlite"
    position = "instr"
    lock_rows = ""   # `BEGIN IMMEDIATE` already holds the whole file
    IntegrityError = sqlite3.IntegrityError

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self._leases: dict[str, Any] = {}   # lease name -> its open, flocked file
        self._seen: int | None = None        # PRAGMA data_version at the last look
        try:
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None

    @classmethod
    def copy_of(cls, path: Path) -> SQLiteEngine:
        """A private in-memory copy of the database file at `path` (empty if there is none),
        read without writing to the file or creating it: `explain` acts on the copy as poll
        would, and drops it."""
        engine = cls(":memory:")
        if path.exists():
            # With no -wal file beside it no connection has it open: read it as it is, or a
            # read-only connection would make a -wal and -shm it cannot remove.
            live = path.with_name(f"{path.name}-wal").exists()
            try:
                source = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro{'' if live else '&immutable=1'}",
                    uri=True)
                try:
                    source.backup(engine.conn)
                finally:
                    source.close()
            except sqlite3.DatabaseError as exc:
                engine.close()
                raise StoreError(f"{path}: not an outreach database ({exc})") from None
        return engine

    def open(self, migrations: Sequence[str | PerEngine]) -> None:
        try:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA busy_timeout = 30000")
            self.migrate(migrations)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(f"{self.path}: not an outreach database ({exc})") from None

    def close(self) -> None:
        self.conn.close()

    # -- statements ----------------------------------------------------------------------

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return self.conn.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def execute_each(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[Any]:
        """`sql` run once per row; every row the runs returned, in order (`RETURNING`)."""
        return [out for row in rows for out in self.conn.execute(sql, row).fetchall()]

    def queue(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Writes whose results nobody reads: on a local file, at once."""
        self.conn.executemany(sql, rows)

    def records(self, sql: str, args: Sequence[Any] = ()) -> list[Record]:
        cur = self.conn.execute(sql, args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    @staticmethod
    def json_put(column: str) -> str:
        """`column` (JSON text) with key ?1 set to the string ?2."""
        return f"json_set({column}, '$.\"' || ? || '\"', ?)"

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def transaction(self) -> AbstractContextManager[SQLiteEngine]:
        """BEGIN IMMEDIATE: the write lock at once, so a check and its write are one step."""
        return transaction(self, self.conn.execute, nested=self.conn.in_transaction,
                           begin="BEGIN IMMEDIATE")

    # -- schema --------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, migrations: Sequence[str | PerEngine]) -> None:
        """Apply the migrations this database has not seen; refuse one from a newer outreach."""
        current = self.version
        if current > len(migrations):
            raise StoreError(
                f"{self.path}: written by a newer outreach (schema {current}, this one knows "
                f"{len(migrations)}). Upgrade outreach: `pip install -U outreach`."
            )
        for number, migration in enumerate(migrations[current:], start=current + 1):
            self.conn.executescript(
                f"BEGIN IMMEDIATE;\n{migration_sql(migration, self.name)}\n"
                f"PRAGMA user_version = {number};\nCOMMIT;"
            )

    def long_lived(self) -> None:
        """Nothing to do: a file does not drop its connection."""

    def tables(self) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]

    def reset_ids(self, table: str) -> None:
        """Nothing to do: a new row's id is max(id) + 1."""

    # -- leases --------------------------------------------------------------------------

    def acquire_lock(self, name: str, *, owner: str, now: datetime, until: datetime) -> None:
        """Take a named lease, or raise LockedError naming the holder. The lease is an flock
        on a file beside the database, held until released or the process ends: a holder
        that is alive keeps it however long it was stopped (Ctrl-Z, a sleeping laptop), and
        a dead one's lapses at once. The row only says who holds it."""
        handle = _flocked(self.path.with_name(f"{self.path.name}.{name}-lock"))
        if handle is None:
            row = self.conn.execute("SELECT owner, pid FROM locks WHERE name = ?",
                                    (name,)).fetchone()
            holder = f" (pid {row[1]}, since {row[0]})" if row else ""
            raise LockedError(f"{self.path}: another {running(name)} is running{holder}; "
                              "wait for it to finish, then run again.")
        self._leases[name] = handle
        with self.transaction():
            self.conn.execute(
                "INSERT INTO locks (name, owner, pid, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, pid = excluded.pid, "
                "expires_at = excluded.expires_at", (name, owner, os.getpid(), iso(until)))

    def renew_lock(self, name: str, *, until: datetime) -> None:
        """Extend this process's lease (a long run renews it as it goes)."""
        self.conn.execute("UPDATE locks SET expires_at = ? WHERE name = ? AND pid = ?",
                          (iso(until), name, os.getpid()))

    def release_lock(self, name: str) -> None:
        self.conn.execute("DELETE FROM locks WHERE name = ? AND pid = ?", (name, os.getpid()))
        handle = self._leases.pop(name, None)
        if handle is not None:
            handle.close()   # closing the file drops the flock

    def hold_run(self, run: str) -> None:
        """This `send` run's lease: an flock on a file of its own, held until released or
        the process ends (one sender at a time anyway: the `send` lease). The files of
        dead runs that left no intents to settle (killed before their first) go now."""
        if not self.take_runs([run]):
            raise LockedError(f"{self.path}: send run {run} is already running")
        prefix, suffix = f"{self.path.name}.send-run-", "-lock"
        left = [f.name[len(prefix):-len(suffix)] for f in self.path.parent.glob(
            f"{prefix}*{suffix}")]
        for dead in self.take_runs(r for r in left if r != run):
            self.release_run(dead)

    def take_runs(self, runs: Iterable[str]) -> set[str]:
        """Of these runs, those whose process is gone, now held by this one until
        `release_run`."""
        taken = set()
        for run in runs:
            handle = _flocked(self._run_file(run))
            if handle is None:
                continue
            self._leases[f"send-run:{run}"] = handle
            taken.add(run)
        return taken

    def release_run(self, run: str) -> None:
        handle = self._leases.pop(f"send-run:{run}", None)
        if handle is not None:
            self._run_file(run).unlink(missing_ok=True)
            handle.close()

    def _run_file(self, run: str) -> Path:
        return self.path.with_name(f"{self.path.name}.send-run-{run}-lock")

    def lock_quota(self) -> None:
        """Nothing to do: `BEGIN IMMEDIATE` holds the write lock until the transaction ends."""

    @contextmanager
    def exclusive(self, name: str, message: str) -> Iterator[None]:
        """Hold `name` for the block or raise LockedError(message): an flock on a file beside
        the database, released by the kernel however the process ends, and no database write
        (so a pass with nothing to do writes nothing at all)."""
        import fcntl

        with open(self.path.with_name(f"{self.path.name}.{name}-lock"), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(message) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- suppressions written by other processes -------------------------------------------

    def watch_suppressions(self) -> None:
        """From now on, `suppressions_changed` tells whether another connection committed."""
        self._seen = self._data_version()

    def suppressions_changed(self) -> bool:
        """Might another connection have added a suppression since the last look? SQLite
        cannot say which table changed: any commit by another connection is a maybe. PRAGMA
        data_version is answered from this process's view of the file, with no disk read."""
        seen, self._seen = self._seen, self._data_version()
        return seen != self._seen

    def _data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])


def _flocked(path: Path) -> Any:
    """`path` opened (made if need be) and flocked for this process, or None if another
    holds it: the lease lasts until the file is closed or the process ends."""
    import fcntl

    handle = open(path, "a")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
