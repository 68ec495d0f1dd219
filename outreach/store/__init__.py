"""Every SQL statement outreach runs, behind one interface split by concern: prospects and
suppression, enrollments and the send ledger, mail read, calls, stats. Each concern's SQL is
written once; an engine (SQLite, the embedded default, or PostgreSQL, for a team) runs it and
owns what must differ: the dialect, transactions, the schema version and leases.

Migrations are applied on open. Writes that carry a promise (never twice, never to the
suppressed) run inside explicit transactions so two processes cannot interleave them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime

from ..errors import StoreError
from ..migrations import MIGRATIONS
from .base import OPEN_STATES, domain_of, suppression_targets, to_prospect
from .calls import Calls
from .engine import Engine, Record
from .ledger import Enrollments, Ledger
from .mail import Mail
from .prospects import Prospects
from .stats import Stats

__all__ = ["OPEN_STATES", "Record", "Store", "connection_lost", "domain_of", "is_url",
           "open_engine",
           "suppression_targets", "to_prospect"]

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(target: str | os.PathLike[str]) -> bool:
    """A PostgreSQL URL (a team database) rather than a SQLite file."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


def open_engine(target: str | os.PathLike[str], *, password: str | None = None) -> Engine:
    """The engine for a store target: a postgresql:// URL, else a SQLite file path."""
    if is_url(target):
        try:  # psycopg only loads for a team database
            from .postgres import PostgresEngine
        except ImportError:
            raise StoreError(f"{target}: a PostgreSQL database needs its driver: "
                             "pip install 'outreach[postgresql]'") from None

        engine: Engine = PostgresEngine(str(target), password=password)
    else:
        from .sqlite import SQLiteEngine

        engine = SQLiteEngine(target)
    return engine


def connection_lost(exc: BaseException) -> bool:
    """Did the database server or the network go away (worth retrying)?"""
    import sys

    if "psycopg" not in sys.modules:   # SQLite only: a file does not go away
        return False
    from .postgres import connection_lost as lost

    return lost(exc)


class Store(Prospects, Enrollments, Ledger, Mail, Calls, Stats):
    """One connection to the state database, migrated to the current schema."""

    def __init__(self, target: str | os.PathLike[str] | Engine, *,
                 password: str | None = None) -> None:
        db = (open_engine(target, password=password) if isinstance(target, str | os.PathLike)
              else target)
        db.open(MIGRATIONS)
        super().__init__(db)
        self.where = db.where

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        return self.db.version

    def transaction(self) -> AbstractContextManager[Engine]:
        """BEGIN ... COMMIT, rolled back on any exception. Inside another transaction it is a
        savepoint, committed with the outer one (batching callers)."""
        return self.db.transaction()

    def long_lived(self) -> None:
        """This process runs for long (`watch`): survive a dropped database connection."""
        self.db.long_lived()

    # -- leases --------------------------------------------------------------------------

    def acquire_lock(self, name: str, *, owner: str, now: datetime, until: datetime) -> None:
        """Take a named lease (`send`), or raise LockedError naming the holder. A lease lapses
        when it expires or its holder is gone."""
        self.db.acquire_lock(name, owner=owner, now=now, until=until)

    def renew_lock(self, name: str, *, until: datetime) -> None:
        """Extend this process's lease (a long run renews it as it goes)."""
        self.db.renew_lock(name, until=until)

    def release_lock(self, name: str) -> None:
        self.db.release_lock(name)

    def hold_run(self, run: str) -> None:
        """Take this `send` run's lease: while it is held, its intents are a live run's."""
        self.db.hold_run(run)

    def take_runs(self, runs: Iterable[str]) -> set[str]:
        """Of these `send` runs, those whose process is gone, held by this one (so no other
        settles them meanwhile) until `release_run`."""
        return self.db.take_runs(runs)

    def release_run(self, run: str) -> None:
        self.db.release_run(run)

    def lock_quota(self) -> None:
        """Inside a transaction: no other process writes intents until it ends, so the
        limits' counts read next hold for the intents this one writes."""
        self.db.lock_quota()

    @contextmanager
    def exclusive(self, name: str, message: str) -> Iterator[None]:
        """Hold `name` (`poll`) for the block, writing nothing; LockedError(message) if another
        process holds it. Released however the process ends."""
        with self.db.exclusive(name, message):
            yield
