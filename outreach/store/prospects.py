"""Prospects, their stages, and suppression (an address or "@domain", for good)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from ..clock import iso
from ..models import KNOWN_COLUMNS, Prospect
from .base import Part, like, suppression_targets, to_prospect
from .engine import Record, chunks, marks

_INSERT_COLUMNS = ("email", *KNOWN_COLUMNS, "custom", "referrer_id")


class Prospects(Part):
    def prospect(self, email: str) -> Prospect | None:
        row = self.one(f"{self.prospect_select} WHERE p.email = ?", (email.strip().lower(),))
        return to_prospect(row) if row else None

    def prospect_by_id(self, prospect_id: int) -> Prospect | None:
        row = self.one(f"{self.prospect_select} WHERE p.id = ?", (prospect_id,))
        return to_prospect(row) if row else None

    def prospects(self, *, order: str = "p.id") -> Iterator[Prospect]:
        for row in self.db.records(f"{self.prospect_select} ORDER BY {order}"):
            yield to_prospect(row)

    def prospects_by_ids(self, ids: Iterable[int]) -> dict[int, Prospect]:
        out: dict[int, Prospect] = {}
        for chunk in chunks(list(ids)):
            for row in self.db.records(
                    f"{self.prospect_select} WHERE p.id IN ({marks(len(chunk))})", chunk):
                out[row["id"]] = to_prospect(row)
        return out

    def prospects_by_email(self, emails: Sequence[str]) -> dict[str, Record]:
        """Raw rows for a batch of (lower-cased) emails, for the importer's compare step."""
        out: dict[str, Record] = {}
        for chunk in chunks(emails):
            for row in self.db.records(
                    f"SELECT * FROM prospects WHERE email IN ({marks(len(chunk))})", chunk):
                out[row["email"]] = row
        return out

    def known_emails(self, emails: Sequence[str]) -> set[str]:
        """Which of these (lower-cased) emails are prospects': a poll batch's senders."""
        out: set[str] = set()
        for chunk in chunks(emails):
            out.update(r[0] for r in self.db.execute(
                f"SELECT email FROM prospects WHERE email IN ({marks(len(chunk))})", chunk))
        return out

    def insert_prospects(self, rows: Iterable[Mapping[str, Any]], *, at: datetime) -> None:
        """Insert new prospects (email lower-cased, custom as JSON). The rows of one call share
        their keys; columns they lack get the table's blank defaults."""
        rows = list(rows)
        if rows:
            cols = [c for c in _INSERT_COLUMNS if c in rows[0]]
            self.insert_prospect_rows(cols, [[r[c] for c in cols] for r in rows], at=at)

    def insert_prospect_rows(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                             at: datetime, skip_known: bool = False) -> None:
        """Insert new prospects given as values in `columns` order: the importer's fast path,
        no dict per row. `skip_known`: a row whose address is already in is left out."""
        # The timestamp is ours (ISO text, no quotes): inlined, so rows need no extra values.
        stamp = f"'{iso(at)}'"
        sql = (f"INSERT INTO prospects ({', '.join(columns)}, created_at, updated_at) "
               f"VALUES ({marks(len(columns))}, {stamp}, {stamp})"
               + (" ON CONFLICT (email) DO NOTHING" if skip_known else ""))
        self.db.executemany(sql, rows)

    def prospect_emails_in_order(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT email FROM prospects ORDER BY id")]

    @contextmanager
    def loading_prospects(self) -> Iterator[None]:
        """Many new prospects into an EMPTY table, inside a transaction: the domain indexes
        are built once at the end (one sort each) instead of row by row. A rollback restores
        them. (The same definitions as the migrations that made them.)"""
        indexes = {"prospects_domain": "prospects(domain)",
                   "prospects_email_domain":
                       f"prospects(substr(email, {self.db.position}(email, '@') + 1))"}
        for name in indexes:
            self.db.execute(f"DROP INDEX {name}")
        yield
        for name, on in indexes.items():
            self.db.execute(f"CREATE INDEX {name} ON {on}")

    def update_prospects(self, rows: Iterable[Mapping[str, Any]], *, at: datetime) -> None:
        cols = (*KNOWN_COLUMNS, "custom")
        # A new phone number clears a `bad-number` flag (SET reads the old row's values).
        sql = (f"UPDATE prospects SET {', '.join(f'{c} = ?' for c in cols)}, updated_at = ?, "
               "phone_bad = CASE WHEN phone = ? THEN phone_bad ELSE 0 END WHERE email = ?")
        stamp = iso(at)
        self.db.executemany(sql, ([r.get(c) for c in cols] + [stamp, r.get("phone"), r["email"]]
                                  for r in rows))

    def prospect_emails(self) -> list[tuple[int, str]]:
        """(id, email) of every prospect: cheap rows for lookups built in Python."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT id, email FROM prospects")]

    def prospects_in_domain(self, domain: str) -> list[Prospect]:
        """Prospects whose address is at `domain` (or its subdomains)."""
        rows = self.db.records(
            f"{self.prospect_select} WHERE p.email LIKE ? ESCAPE '\\' "
            "OR p.email LIKE ? ESCAPE '\\'", ("%@" + like(domain), "%@%." + like(domain)))
        return [to_prospect(r) for r in rows]

    def count_prospects(self) -> int:
        return int(self.value("SELECT count(*) FROM prospects"))

    def set_stage(self, prospect_id: int, new: str, *, cause: str, at: datetime,
                  old: str | None = None) -> str | None:
        """Move a prospect to a stage and record it; returns the old stage (None if unchanged).
        `old`, when the caller holds the prospect as it stands, saves reading it again."""
        if old is None:
            old = self.value("SELECT stage FROM prospects WHERE id = ?", (prospect_id,))
        if old == new:
            return None
        self.db.execute("UPDATE prospects SET stage = ?, updated_at = ? WHERE id = ?",
                        (new, iso(at), prospect_id))
        self.db.execute(
            "INSERT INTO stage_history (prospect_id, old, new, cause, at) VALUES (?, ?, ?, ?, ?)",
            (prospect_id, old, new, cause, iso(at)),
        )
        return str(old)

    def stage_history(self, prospect_id: int) -> list[Record]:
        return self.db.records(
            "SELECT old, new, cause, at FROM stage_history WHERE prospect_id = ? ORDER BY id",
            (prospect_id,))

    def touch_activity(self, prospect_id: int, *, at: datetime) -> None:
        """A reply or a connected call: move `last_activity` forward to that day (never back)."""
        day = iso(at)[:10]
        self.db.execute(
            "UPDATE prospects SET last_activity = ? WHERE id = ? "
            "AND (last_activity IS NULL OR last_activity < ?)", (day, prospect_id, day))

    def flag_bad_phone(self, prospect_id: int, *, at: datetime) -> None:
        self.db.execute("UPDATE prospects SET phone_bad = 1, updated_at = ? WHERE id = ?",
                        (iso(at), prospect_id))

    # -- suppressions --------------------------------------------------------------------

    def suppress(self, target: str, *, reason: str, source: str, at: datetime) -> bool:
        """Suppress an address or "@domain" for good; False if it already was."""
        cur = self.db.execute(
            "INSERT INTO suppressions (target, reason, source, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (target) DO NOTHING",
            (target.strip().lower(), reason, source, iso(at)),
        )
        return cur.rowcount == 1

    def is_suppressed(self, email: str) -> bool:
        return self.suppression(email) is not None

    def suppression(self, email: str) -> Record | None:
        """The earliest suppression covering `email` (address, domain or parent domain)."""
        targets = suppression_targets(email)
        return self.one(f"SELECT * FROM suppressions WHERE target IN ({marks(len(targets))}) "
                        "ORDER BY created_at LIMIT 1", targets)

    def suppressions(self) -> list[Record]:
        return self.db.records("SELECT * FROM suppressions ORDER BY created_at")

    def watch_suppressions(self) -> None:
        """Start noticing suppressions other processes write (see `suppressions_changed`)."""
        self.db.watch_suppressions()

    def suppressions_changed(self) -> bool:
        """Might another process have written a suppression since the last look (or since
        `watch_suppressions`)? Answered without a database round trip, so a sender can ask
        before every message: PostgreSQL says so by a notification, SQLite by any commit."""
        return self.db.suppressions_changed()

    # -- the unsubscribe key -------------------------------------------------------------

    _secret: bytes | None = None

    def unsubscribe_secret(self) -> bytes:
        """This database's key for List-Unsubscribe tokens (made once by a migration; read
        once per connection, as every message sent asks)."""
        if self._secret is None:
            self._secret = bytes.fromhex(
                self.value("SELECT value FROM secrets WHERE name = 'unsubscribe'"))
        return self._secret

    def legacy_token_prospects(self) -> list[tuple[int, str]]:
        """(id, email) of the prospects sent mail before the unsubscribe key existed: that
        mail carried the old unkeyed token, still honoured for them alone."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT DISTINCT p.id, p.email FROM prospects p "
            "JOIN enrollments e ON e.prospect_id = p.id "
            "JOIN messages m ON m.enrollment_id = e.id "
            "WHERE m.id <= (SELECT CAST(value AS INTEGER) FROM secrets "
            "WHERE name = 'unsubscribe_legacy_until_message')")]
