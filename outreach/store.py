"""Every SQL statement outreach runs. SQLite in WAL mode; migrations are applied on open.

Writes that carry a promise (never twice, never to the suppressed) run inside explicit
`BEGIN IMMEDIATE` transactions so two processes cannot interleave them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .clock import iso
from .errors import LockedError, StoreError
from .migrations import MIGRATIONS
from .models import KNOWN_COLUMNS, Prospect

# A suppression is an address or "@domain"; "@domain" also covers every subdomain. The SQL
# walks the address's domain up to its last label (a recursive CTE: each level once, indexed
# lookups), and `suppression_targets` lists the same entries in Python.
_SUPPRESSED_SQL = (
    "EXISTS (WITH RECURSIVE d(x) AS ("
    "SELECT substr(p.email, instr(p.email, '@') + 1) "
    "UNION ALL SELECT substr(x, instr(x, '.') + 1) FROM d WHERE instr(x, '.') > 0) "
    "SELECT 1 FROM suppressions s WHERE s.target IN (SELECT p.email UNION ALL "
    "SELECT '@' || x FROM d))"
)


def suppression_targets(email: str) -> list[str]:
    """The suppression entries that would cover `email`: itself, its domain, parent domains."""
    email = email.strip().lower()
    domain = domain_of(email)
    targets = [email, "@" + domain]
    while "." in domain:
        domain = domain.partition(".")[2]
        targets.append("@" + domain)
    return targets


_PROSPECT_SELECT = f"SELECT p.*, {_SUPPRESSED_SQL} AS suppressed FROM prospects p"
OPEN_STATES = ("active", "paused")
_INSERT_COLUMNS = ("email", *KNOWN_COLUMNS, "custom", "referrer_id")


def domain_of(email: str) -> str:
    return email.rpartition("@")[2].lower()


class Store:
    """One connection to the state database, migrated to the current schema."""

    _secret: bytes | None = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(f"{self.path}: not an outreach database ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def migrate(self) -> None:
        """Apply the migrations this database has not seen; refuse one from a newer outreach."""
        current = self.version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: written by a newer outreach (schema {current}, this one knows "
                f"{len(MIGRATIONS)}). Upgrade outreach: `pip install -U outreach`."
            )
        for number, sql in enumerate(MIGRATIONS[current:], start=current + 1):
            self.db.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception. Inside another
        transaction it is a savepoint, committed with the outer one (batching callers)."""
        if self.db.in_transaction:
            self.db.execute("SAVEPOINT nested")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK TO nested")
                self.db.execute("RELEASE nested")
                raise
            self.db.execute("RELEASE nested")
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- prospects -----------------------------------------------------------------------

    def prospect(self, email: str) -> Prospect | None:
        row = self.db.execute(f"{_PROSPECT_SELECT} WHERE p.email = ?",
                              (email.strip().lower(),)).fetchone()
        return to_prospect(row) if row else None

    def prospect_by_id(self, prospect_id: int) -> Prospect | None:
        row = self.db.execute(f"{_PROSPECT_SELECT} WHERE p.id = ?", (prospect_id,)).fetchone()
        return to_prospect(row) if row else None

    def prospects(self, *, order: str = "p.id") -> Iterator[Prospect]:
        for row in self.db.execute(f"{_PROSPECT_SELECT} ORDER BY {order}"):
            yield to_prospect(row)

    def prospects_by_email(self, emails: Sequence[str]) -> dict[str, sqlite3.Row]:
        """Raw rows for a batch of (lower-cased) emails, for the importer's compare step."""
        out: dict[str, sqlite3.Row] = {}
        for start in range(0, len(emails), 500):
            chunk = emails[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"SELECT * FROM prospects WHERE email IN ({marks})",
                                       chunk):
                out[row["email"]] = row
        return out

    def insert_prospects(self, rows: Iterable[Mapping[str, Any]], *, at: datetime) -> None:
        """Insert new prospects (email lower-cased, custom as JSON). The rows of one call share
        their keys; columns they lack get the table's blank defaults."""
        rows = list(rows)
        if rows:
            cols = [c for c in _INSERT_COLUMNS if c in rows[0]]
            self.insert_prospect_rows(cols, [[r[c] for c in cols] for r in rows], at=at)

    def insert_prospect_rows(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                             at: datetime) -> None:
        """Insert new prospects given as values in `columns` order: the importer's fast path,
        no dict per row."""
        # The timestamp is ours (ISO text, no quotes): inlined, so rows need no extra values.
        stamp = f"'{iso(at)}'"
        sql = (f"INSERT INTO prospects ({', '.join(columns)}, created_at, updated_at) "
               f"VALUES ({', '.join('?' * len(columns))}, {stamp}, {stamp})")
        self.db.executemany(sql, rows)

    def update_prospects(self, rows: Iterable[Mapping[str, Any]], *, at: datetime) -> None:
        cols = (*KNOWN_COLUMNS, "custom")
        # A new phone number clears a `bad-number` flag (SET reads the old row's values).
        sql = (f"UPDATE prospects SET {', '.join(f'{c} = ?' for c in cols)}, updated_at = ?, "
               "phone_bad = CASE WHEN phone IS ? THEN phone_bad ELSE 0 END WHERE email = ?")
        stamp = iso(at)
        self.db.executemany(sql, ([r.get(c) for c in cols] + [stamp, r.get("phone"), r["email"]]
                                  for r in rows))

    def prospect_emails(self) -> list[tuple[int, str]]:
        """(id, email) of every prospect: cheap rows for lookups built in Python."""
        return [(r[0], r[1]) for r in self.db.execute("SELECT id, email FROM prospects")]

    def unsubscribe_secret(self) -> bytes:
        """This database's key for List-Unsubscribe tokens (made once by a migration; read
        once per connection, as every message sent asks)."""
        if self._secret is None:
            row = self.db.execute("SELECT value FROM secrets WHERE name = 'unsubscribe'")
            self._secret = bytes.fromhex(row.fetchone()[0])
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

    def prospects_in_domain(self, domain: str) -> list[Prospect]:
        """Prospects whose address is at `domain` (or its subdomains)."""
        rows = self.db.execute(
            f"{_PROSPECT_SELECT} WHERE p.email LIKE ? ESCAPE '\\' OR p.email LIKE ? ESCAPE '\\'",
            ("%@" + _like(domain), "%@%." + _like(domain)),
        )
        return [to_prospect(r) for r in rows]

    def count_prospects(self) -> int:
        return self.db.execute("SELECT count(*) FROM prospects").fetchone()[0]

    def set_stage(self, prospect_id: int, new: str, *, cause: str, at: datetime) -> str | None:
        """Move a prospect to a stage and record it; returns the old stage (None if unchanged)."""
        old = self.db.execute("SELECT stage FROM prospects WHERE id = ?",
                              (prospect_id,)).fetchone()[0]
        if old == new:
            return None
        self.db.execute("UPDATE prospects SET stage = ?, updated_at = ? WHERE id = ?",
                        (new, iso(at), prospect_id))
        self.db.execute(
            "INSERT INTO stage_history (prospect_id, old, new, cause, at) VALUES (?, ?, ?, ?, ?)",
            (prospect_id, old, new, cause, iso(at)),
        )
        return old

    def stage_history(self, prospect_id: int) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT old, new, cause, at FROM stage_history WHERE prospect_id = ? ORDER BY id",
            (prospect_id,),
        ).fetchall()

    # -- suppressions --------------------------------------------------------------------

    def suppress(self, target: str, *, reason: str, source: str, at: datetime) -> bool:
        """Suppress an address or "@domain" for good; False if it already was."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO suppressions (target, reason, source, created_at) "
            "VALUES (?, ?, ?, ?)",
            (target.strip().lower(), reason, source, iso(at)),
        )
        return cur.rowcount == 1

    def is_suppressed(self, email: str) -> bool:
        return self.suppression(email) is not None

    def suppression(self, email: str) -> sqlite3.Row | None:
        """The earliest suppression covering `email` (address, domain or parent domain)."""
        targets = suppression_targets(email)
        return self.db.execute(
            f"SELECT * FROM suppressions WHERE target IN ({','.join('?' * len(targets))}) "
            "ORDER BY created_at LIMIT 1", targets,
        ).fetchone()

    def suppressions(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM suppressions ORDER BY created_at").fetchall()

    # -- enrollments ---------------------------------------------------------------------

    def enroll(self, prospect_id: int, sequence: str, *, at: datetime) -> int:
        cur = self.db.execute(
            "INSERT INTO enrollments (prospect_id, sequence, started_at) VALUES (?, ?, ?)",
            (prospect_id, sequence, iso(at)),
        )
        return int(cur.lastrowid or 0)

    def enrollments(self, prospect_id: int) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM enrollments WHERE prospect_id = ? ORDER BY id", (prospect_id,)
        ).fetchall()

    def enrollment(self, enrollment_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM enrollments WHERE id = ?",
                               (enrollment_id,)).fetchone()

    def open_enrollments(self, *, sequence: str | None = None) -> list[sqlite3.Row]:
        sql = "SELECT * FROM enrollments WHERE state IN ('active', 'paused')"
        args: tuple[Any, ...] = ()
        if sequence:
            sql += " AND sequence = ?"
            args = (sequence,)
        return self.db.execute(sql + " ORDER BY id", args).fetchall()

    def enrollment_facts(self) -> dict[int, dict[str, Any]]:
        """Per prospect: has an open enrollment, when a sequence last ran out without an
        answer (recycled, or completed with no recycle step), ever replied. For enroll."""
        facts: dict[int, dict[str, Any]] = {}
        for row in self.db.execute(
            "SELECT prospect_id, "
            "max(state IN ('active', 'paused')) AS open, "
            "max(CASE WHEN state IN ('recycled', 'completed') THEN ended_at END) "
            "AS recycled_at, "
            "max(state IN ('replied', 'won')) AS replied "
            "FROM enrollments GROUP BY prospect_id"
        ):
            facts[row["prospect_id"]] = dict(row)
        return facts

    def end_enrollments(self, prospect_id: int, *, state: str, reason: str,
                        at: datetime) -> list[int]:
        """End every open enrollment of a prospect; returns their ids."""
        rows = self.db.execute(
            "UPDATE enrollments SET state = ?, end_reason = ?, ended_at = ?, paused_until = NULL "
            "WHERE prospect_id = ? AND state IN ('active', 'paused') RETURNING id",
            (state, reason, iso(at), prospect_id),
        ).fetchall()
        return [r[0] for r in rows]

    # -- call tasks ----------------------------------------------------------------------

    def close_call_tasks(self, prospect_id: int, *, reason: str, at: datetime) -> int:
        """Close a prospect's open call tasks (they replied, were suppressed, or won)."""
        cur = self.db.execute(
            "UPDATE call_tasks SET status = 'closed', note = ?, done_at = ? "
            "WHERE prospect_id = ? AND status = 'open'",
            (reason, iso(at), prospect_id),
        )
        return cur.rowcount

    def call_task(self, task_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM call_tasks WHERE id = ?", (task_id,)).fetchone()

    def call_task_for(self, enrollment_id: int, step: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM call_tasks WHERE enrollment_id = ? AND step = ?",
                               (enrollment_id, step)).fetchone()

    def insert_call_task(self, *, enrollment_id: int, prospect_id: int, step: int,
                         template: str, due: datetime, script: str) -> int | None:
        """The new task's id, or None when the (enrollment, step) already has a task."""
        row = self.db.execute(
            "INSERT INTO call_tasks (enrollment_id, prospect_id, step, template, due_at, script) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (enrollment_id, step) DO NOTHING RETURNING id",
            (enrollment_id, prospect_id, step, template, iso(due), script),
        ).fetchone()
        return None if row is None else int(row[0])

    def insert_call_tasks(self, rows: Sequence[tuple[int, int, int, str, str, str]]
                          ) -> dict[tuple[int, int], int]:
        """insert_call_task for many (enrollment_id, prospect_id, step, template, due_at ISO,
        script) rows, 100 per statement: {(enrollment_id, step): new id} of those inserted."""
        out: dict[tuple[int, int], int] = {}
        for start in range(0, len(rows), 100):
            chunk = rows[start:start + 100]
            values = ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
            out.update(((r[1], r[2]), r[0]) for r in self.db.execute(
                "INSERT INTO call_tasks (enrollment_id, prospect_id, step, template, due_at, "
                f"script) VALUES {values} ON CONFLICT (enrollment_id, step) DO NOTHING "
                "RETURNING id, enrollment_id, step", [v for row in chunk for v in row]))
        return out

    def open_call_tasks(self, *, due_by: datetime | None = None) -> list[sqlite3.Row]:
        """Open tasks (due by `due_by` when given), oldest first."""
        sql = "SELECT * FROM call_tasks WHERE status = 'open'"
        args: tuple[Any, ...] = ()
        if due_by is not None:
            sql += " AND due_at <= ?"
            args = (iso(due_by),)
        return self.db.execute(sql + " ORDER BY due_at, id", args).fetchall()

    def open_call_task_ids(self, prospect_id: int) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM call_tasks WHERE prospect_id = ? AND status = 'open' ORDER BY id",
            (prospect_id,))]

    def finish_call_task(self, task_id: int, *, status: str, outcome: str | None,
                         note: str | None, at: datetime) -> bool:
        """Move an open task to `status` ('done' or 'closed'); False if it was not open."""
        cur = self.db.execute(
            "UPDATE call_tasks SET status = ?, outcome = ?, note = ?, done_at = ? "
            "WHERE id = ? AND status = 'open'",
            (status, outcome, note, iso(at), task_id),
        )
        return cur.rowcount == 1

    def record_call_outcome(self, task_id: int, *, outcome: str, note: str | None,
                            at: datetime) -> None:
        self.db.execute(
            "UPDATE call_tasks SET status = 'done', outcome = ?, note = ?, done_at = ? "
            "WHERE id = ?", (outcome, note, iso(at), task_id))

    def flag_bad_phone(self, prospect_id: int, *, at: datetime) -> None:
        self.db.execute("UPDATE prospects SET phone_bad = 1, updated_at = ? WHERE id = ?",
                        (iso(at), prospect_id))

    # -- events --------------------------------------------------------------------------

    def add_event(self, kind: str, *, at: datetime, prospect_id: int | None = None,
                  enrollment_id: int | None = None, **detail: Any) -> None:
        self.db.execute(
            "INSERT INTO events (prospect_id, enrollment_id, kind, detail, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (prospect_id, enrollment_id, kind, json.dumps(detail, default=str), iso(at)),
        )

    def add_events(self, kind: str, events: Iterable[tuple[int | None, int | None,
                                                           dict[str, Any]]], *,
                   at: datetime) -> None:
        """add_event for many (prospect_id, enrollment_id, detail) of one kind and time."""
        stamp = iso(at)
        self.db.executemany(
            "INSERT INTO events (prospect_id, enrollment_id, kind, detail, at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(prospect_id, enrollment_id, kind, json.dumps(detail, default=str), stamp)
             for prospect_id, enrollment_id, detail in events])

    def events(self, prospect_id: int) -> list[dict[str, Any]]:
        return [
            {"at": r["at"], "kind": r["kind"], "enrollment_id": r["enrollment_id"],
             **json.loads(r["detail"])}
            for r in self.db.execute(
                "SELECT * FROM events WHERE prospect_id = ? ORDER BY at, id", (prospect_id,))
        ]

    # -- stats ---------------------------------------------------------------------------

    def touch_activity(self, prospect_id: int, *, at: datetime) -> None:
        """A reply or a connected call: move `last_activity` forward to that day (never back)."""
        day = iso(at)[:10]
        self.db.execute(
            "UPDATE prospects SET last_activity = ? WHERE id = ? "
            "AND (last_activity IS NULL OR last_activity < ?)", (day, prospect_id, day))

    def sending_health(self, *, since: datetime) -> dict[str, int]:
        """Messages sent since `since`, and the distinct prospects who bounced, unsubscribed
        or complained since then: the deliverability guard's counts."""
        stamp = iso(since)
        sent = self.db.execute("SELECT count(*) FROM messages WHERE status = 'sent' "
                               "AND sent_at >= ?", (stamp,)).fetchone()[0]
        counts = {"sent": sent, "bounced": 0, "unsubscribed": 0, "complained": 0}
        names = {"bounce": "bounced", "unsubscribe": "unsubscribed", "complaint": "complained"}
        for kind, n in self.db.execute(
            "SELECT kind, count(DISTINCT coalesce(prospect_id, -id)) FROM events "
            "WHERE kind IN ('bounce', 'unsubscribe', 'complaint') AND at >= ? GROUP BY kind",
            (stamp,)
        ):
            counts[names[kind]] = n
        return counts

    def stats_messages(self) -> list[sqlite3.Row]:
        """Every message the server accepted, with its sequence and the prospect's persona."""
        return self.db.execute(
            "SELECT m.id, m.enrollment_id, e.prospect_id, e.sequence, m.step, m.template, "
            "m.variant, m.sent_at, p.title, p.industry, p.stage "
            "FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
            "JOIN prospects p ON p.id = e.prospect_id "
            "WHERE m.status = 'sent' ORDER BY m.sent_at, m.id"
        ).fetchall()

    def stats_events(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Events of these kinds, oldest first, with the prospect's persona and the sequence."""
        marks = ",".join("?" * len(kinds))
        rows = self.db.execute(
            "SELECT ev.prospect_id, ev.enrollment_id, ev.kind, ev.detail, ev.at, "
            "p.title, p.industry, p.stage, e.sequence "
            "FROM events ev LEFT JOIN prospects p ON p.id = ev.prospect_id "
            "LEFT JOIN enrollments e ON e.id = ev.enrollment_id "
            f"WHERE ev.kind IN ({marks}) ORDER BY ev.at, ev.id", tuple(kinds))
        out = []
        for row in rows:
            fields = dict(row)
            out.append({**json.loads(fields.pop("detail")), **fields})
        return out

    def events_by_prospect(self, kinds: Sequence[str]) -> dict[int, list[dict[str, Any]]]:
        """Events of these kinds grouped by prospect, for scoring a whole list at once."""
        out: dict[int, list[dict[str, Any]]] = {}
        marks = ",".join("?" * len(kinds))
        for r in self.db.execute(f"SELECT prospect_id, kind, detail, at FROM events "
                                 f"WHERE kind IN ({marks}) AND prospect_id IS NOT NULL "
                                 "ORDER BY at, id", tuple(kinds)):
            out.setdefault(r["prospect_id"], []).append(
                {**json.loads(r["detail"]), "kind": r["kind"], "at": r["at"]})
        return out

    # -- inbound (poll) ------------------------------------------------------------------

    def add_ledger_row(self, enrollment_id: int, *, step: int, message_id: str, at: datetime,
                       template: str = "", subject: str = "", status: str = "sent") -> int:
        """Record a sent message in the ledger directly (tests, and mail sent elsewhere)."""
        cur = self.db.execute(
            "INSERT INTO messages (enrollment_id, step, template, message_id, subject, status, "
            "created_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (enrollment_id, step, template, message_id, subject, status, iso(at), iso(at)),
        )
        return int(cur.lastrowid or 0)

    def ledger_match(self, message_ids: Sequence[str]) -> sqlite3.Row | None:
        """The ledger row (with prospect_id) for the first of these Message-IDs we sent."""
        ids = [m for m in message_ids if m][:50]
        rows = self.ledger_rows(ids)
        return next((rows[m] for m in ids if m in rows), None)

    def ledger_rows(self, message_ids: Iterable[str]) -> dict[str, sqlite3.Row]:
        """Message-ID -> ledger row (with prospect_id, sequence) for those we sent: a poll
        batch's references, in one query per 500."""
        ids = list(dict.fromkeys(m for m in message_ids if m))
        out: dict[str, sqlite3.Row] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            out.update((r["message_id"], r) for r in self.db.execute(
                "SELECT m.message_id, m.enrollment_id, e.prospect_id, e.sequence FROM messages m"
                " JOIN enrollments e ON e.id = m.enrollment_id WHERE m.message_id IN "
                f"({','.join('?' * len(chunk))})", chunk))
        return out

    def open_prospects_by_domain(self) -> dict[str, list[int]]:
        """Email domain -> ids of prospects there with an active or paused enrollment."""
        out: dict[str, list[int]] = {}
        for pid, email in self.db.execute(
            "SELECT DISTINCT p.id, p.email FROM prospects p JOIN enrollments e "
            "ON e.prospect_id = p.id WHERE e.state IN ('active', 'paused')"):
            out.setdefault(domain_of(email), []).append(pid)
        return out

    def latest_enrollment(self, prospect_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM enrollments WHERE prospect_id = ? "
                               "ORDER BY id DESC LIMIT 1", (prospect_id,)).fetchone()

    def pause_enrollments(self, prospect_id: int, *, until: datetime) -> list[int]:
        """Pause a prospect's open enrollment until `until` (an auto-reply's return)."""
        rows = self.db.execute(
            "UPDATE enrollments SET state = 'paused', paused_until = ? "
            "WHERE prospect_id = ? AND state IN ('active', 'paused') RETURNING id",
            (iso(until), prospect_id),
        ).fetchall()
        return [r[0] for r in rows]

    def soft_bounce_streak(self, prospect_id: int) -> int:
        """Soft bounces in a row, newest first, until a hard bounce or any answer."""
        streak = 0
        for row in self.db.execute(
            "SELECT kind, detail FROM events WHERE prospect_id = ? AND kind IN "
            "('bounce', 'reply', 'auto_reply') ORDER BY id DESC LIMIT 20", (prospect_id,)):
            if row["kind"] != "bounce" or json.loads(row["detail"]).get("permanent"):
                break
            streak += 1
        return streak

    def inbound_keys(self, source: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT key FROM inbound WHERE source = ?",
                                              (source,))}

    def inbound_message_ids(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs an earlier poll recorded."""
        ids = list(dict.fromkeys(message_ids))
        out: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            out.update(r[0] for r in self.db.execute(
                "SELECT message_id FROM inbound WHERE message_id IN "
                f"({','.join('?' * len(chunk))})", chunk))
        return out

    def add_inbound_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Many (source, key, uidvalidity, uid, message_id, prospect_id, kind, detail,
        received_at) rows: a poll batch's messages, in the batch's transaction."""
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO inbound (source, key, uidvalidity, uid, message_id, "
                "prospect_id, kind, detail, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows)

    def inbound(self, *, source: str | None = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM inbound", ()
        if source:
            sql, args = sql + " WHERE source = ?", (source,)
        return self.db.execute(sql + " ORDER BY id", args).fetchall()

    def mailbox_state(self, source: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM mailbox_state WHERE source = ?",
                               (source,)).fetchone()

    def set_mailbox_state(self, source: str, *, uidvalidity: int, last_uid: int) -> None:
        self.db.execute(
            "INSERT INTO mailbox_state (source, uidvalidity, last_uid) VALUES (?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET uidvalidity = excluded.uidvalidity, "
            "last_uid = excluded.last_uid", (source, uidvalidity, last_uid))

    # -- locks ---------------------------------------------------------------------------

    def acquire_lock(self, name: str, *, owner: str, now: datetime, until: datetime) -> None:
        """Take a named lease, or raise LockedError naming the holder. Expired leases lapse."""
        with self.transaction() as db:
            row = db.execute("SELECT owner, pid, expires_at FROM locks WHERE name = ?",
                             (name,)).fetchone()
            if row and row["expires_at"] > iso(now) and _pid_alive(row["pid"]):
                raise LockedError(
                    f"{self.path}: another `outreach {name}` is running (pid {row['pid']}, "
                    f"since {row['owner']}); wait for it to finish, then run again."
                )
            db.execute("INSERT OR REPLACE INTO locks (name, owner, pid, expires_at) "
                       "VALUES (?, ?, ?, ?)", (name, owner, os.getpid(), iso(until)))

    def release_lock(self, name: str) -> None:
        self.db.execute("DELETE FROM locks WHERE name = ? AND pid = ?", (name, os.getpid()))

    # -- send ledger ---------------------------------------------------------------------

    def renew_lock(self, name: str, *, until: datetime) -> None:
        """Extend this process's lease (a long run renews it as it goes)."""
        self.db.execute("UPDATE locks SET expires_at = ? WHERE name = ? AND pid = ?",
                        (iso(until), name, os.getpid()))

    def send_candidates(self) -> list[sqlite3.Row]:
        """Open enrollments with their prospect's address, time zone and suppression."""
        return self.db.execute(
            f"SELECT e.*, p.email, p.timezone AS prospect_timezone, {_SUPPRESSED_SQL} "
            "AS suppressed FROM enrollments e JOIN prospects p ON p.id = e.prospect_id "
            "WHERE e.state IN ('active', 'paused') ORDER BY e.id"
        ).fetchall()

    def open_next_steps(self, ids: Sequence[int]) -> dict[int, int]:
        """{enrollment id: next step} of those among `ids` still open (active or paused)."""
        out: dict[int, int] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            out.update(self.db.execute(
                "SELECT id, next_step FROM enrollments WHERE state IN ('active', 'paused') "
                f"AND id IN ({marks})", chunk).fetchall())
        return out

    def prospects_by_ids(self, ids: Iterable[int]) -> dict[int, Prospect]:
        out: dict[int, Prospect] = {}
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(f"{_PROSPECT_SELECT} WHERE p.id IN ({marks})", chunk):
                out[row["id"]] = to_prospect(row)
        return out

    def handed_over(self, enrollment_id: int) -> list[sqlite3.Row]:
        """An enrollment's messages that reached a server (or may have), oldest step first."""
        return self.db.execute(
            "SELECT * FROM messages WHERE enrollment_id = ? AND status IN ('sent', 'unknown') "
            "ORDER BY step", (enrollment_id,)).fetchall()

    def last_email_sent_at(self, enrollment_id: int) -> str | None:
        return self.db.execute("SELECT max(sent_at) FROM messages WHERE enrollment_id = ? "
                               "AND status = 'sent'", (enrollment_id,)).fetchone()[0]

    def messages_started_between(self, start: datetime, end: datetime) -> int:
        """Messages handed over (or about to be) in [start, end): what daily_limit counts."""
        return self.db.execute(
            "SELECT count(*) FROM messages WHERE status != 'failed' AND created_at >= ? "
            "AND created_at < ?", (iso(start), iso(end))).fetchone()[0]

    def add_intents(self, intents: Sequence[Mapping[str, Any]], *, at: datetime) -> dict[str, int]:
        """Write ledger intents (keys: enrollment_id, step, template, variant, message_id,
        subject), each only while its enrollment is open at that step, not paused, and its
        prospect not suppressed. Returns {message_id: ledger id} of those written; the rest
        were refused or are already in the ledger. Call inside a transaction."""
        stamp = iso(at)
        self.db.executemany(
            "INSERT OR IGNORE INTO messages (enrollment_id, step, template, variant, message_id, "
            "subject, status, created_at) SELECT ?, ?, ?, ?, ?, ?, 'intent', ? "
            "WHERE EXISTS (SELECT 1 FROM enrollments e JOIN prospects p ON p.id = e.prospect_id "
            "WHERE e.id = ? AND e.state IN ('active', 'paused') AND e.next_step = ? "
            f"AND (e.paused_until IS NULL OR e.paused_until <= ?) AND NOT {_SUPPRESSED_SQL})",
            [(i["enrollment_id"], i["step"], i["template"], i["variant"], i["message_id"],
              i["subject"], stamp, i["enrollment_id"], i["step"], stamp) for i in intents])
        ids = [i["message_id"] for i in intents]
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        return {r[0]: r[1] for r in self.db.execute(
            f"SELECT message_id, id FROM messages WHERE status = 'intent' "
            f"AND message_id IN ({marks})", ids)}

    def ledger_templates(self, enrollment_ids: Iterable[int]) -> dict[tuple[int, str], int]:
        """(enrollment id, template) -> the step it went out as, for these enrollments."""
        ids = list(enrollment_ids)
        out: dict[tuple[int, str], int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in self.db.execute(
                    "SELECT enrollment_id, template, step FROM messages WHERE enrollment_id IN "
                    f"({','.join('?' * len(chunk))})", chunk):
                out[(r[0], r[1])] = r[2]
        return out

    def mark_sent(self, sent: Sequence[Mapping[str, Any]], *, at: datetime) -> None:
        """Mark accepted messages sent, add their `sent` events and move their enrollments
        past the step, in three statements (keys: ledger_id, prospect_id, enrollment_id, step,
        template, variant, message_id, subject). Call inside a transaction."""
        stamp = iso(at)
        self.db.executemany("UPDATE messages SET status = 'sent', sent_at = ? WHERE id = ?",
                            [(stamp, m["ledger_id"]) for m in sent])
        self.db.executemany(
            "INSERT INTO events (prospect_id, enrollment_id, kind, detail, at) "
            "VALUES (?, ?, 'sent', ?, ?)",
            [(m["prospect_id"], m["enrollment_id"], json.dumps({
                "template": m["template"], "variant": m["variant"], "step": m["step"],
                "message_id": m["message_id"], "subject": m["subject"]}), stamp) for m in sent])
        self.advance_enrollments((m["enrollment_id"], m["step"]) for m in sent)

    def record_variant(self, enrollment_id: int, step: int, template: str) -> None:
        self.db.execute("UPDATE enrollments SET variants = json_set(variants, ?, ?) "
                        "WHERE id = ?", (f'$."{step}"', template, enrollment_id))

    def set_message_status(self, message_id: int, status: str, *, at: datetime | None = None,
                           error: str | None = None) -> None:
        self.db.execute("UPDATE messages SET status = ?, sent_at = ?, error = ? WHERE id = ?",
                        (status, iso(at) if at else None, error, message_id))

    def drop_intent(self, message_id: int) -> None:
        """Forget an intent that was provably never handed over, so a later run may send it."""
        self.db.execute("DELETE FROM messages WHERE id = ? AND status = 'intent'", (message_id,))

    def stale_intents(self) -> list[sqlite3.Row]:
        """Intents left by a run that died: their fate is unknown."""
        return self.db.execute(
            "SELECT m.*, e.prospect_id FROM messages m JOIN enrollments e "
            "ON e.id = m.enrollment_id WHERE m.status = 'intent' ORDER BY m.id").fetchall()

    def advance_enrollments(self, steps: Iterable[tuple[int, int]]) -> None:
        """Move open enrollments past a step, for (enrollment id, step) pairs (never
        backwards); a paused one that was due is active again."""
        self.db.executemany(
            "UPDATE enrollments SET next_step = max(next_step, ?), state = 'active', "
            "paused_until = NULL WHERE id = ? AND state IN ('active', 'paused')",
            [(step + 1, enrollment_id) for enrollment_id, step in steps])

    def advance_enrollment(self, enrollment_id: int, *, past_step: int) -> None:
        self.advance_enrollments([(enrollment_id, past_step)])

    def end_enrollment(self, enrollment_id: int, *, state: str, reason: str,
                       at: datetime) -> bool:
        cur = self.db.execute(
            "UPDATE enrollments SET state = ?, end_reason = ?, ended_at = ?, paused_until = NULL "
            "WHERE id = ? AND state IN ('active', 'paused')",
            (state, reason, iso(at), enrollment_id))
        return cur.rowcount == 1


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _pid_alive(pid: int) -> bool:
    """A lease whose process is gone (killed, crashed) is stale, whatever its expiry says."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def to_prospect(row: sqlite3.Row) -> Prospect:
    last = row["last_activity"]
    try:
        suppressed = bool(row["suppressed"])
    except IndexError:   # a query without the suppression column
        suppressed = False
    return Prospect(
        id=row["id"],
        email=row["email"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        title=row["title"],
        company=row["company"],
        domain=row["domain"],
        industry=row["industry"],
        employees=row["employees"],
        country=row["country"],
        timezone=row["timezone"],
        phone=row["phone"],
        last_activity=date.fromisoformat(last) if last else None,
        stage=row["stage"],
        suppressed=suppressed,
        referrer_id=row["referrer_id"],
        phone_bad=bool(row["phone_bad"]),
        custom=MappingProxyType(json.loads(row["custom"])),
    )
