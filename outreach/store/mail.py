"""What `poll` reads and records: inbound messages handled once, mailbox positions, and the
ledger rows a reply refers to."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from .base import Part
from .engine import Record, chunks, marks


class Mail(Part):
    def ledger_match(self, message_ids: Sequence[str]) -> Record | None:
        """The ledger row (with prospect_id) for the first of these Message-IDs we sent."""
        ids = [m for m in message_ids if m][:50]
        rows = self.ledger_rows(ids)
        return next((rows[m] for m in ids if m in rows), None)

    def ledger_rows(self, message_ids: Iterable[str]) -> dict[str, Record]:
        """Message-ID -> ledger row (with prospect_id, sequence) for those we sent: a poll
        batch's references, in one query per 500."""
        out: dict[str, Record] = {}
        for chunk in chunks(list(dict.fromkeys(m for m in message_ids if m))):
            out.update((r["message_id"], r) for r in self.db.records(
                "SELECT m.message_id, m.enrollment_id, e.prospect_id, e.sequence FROM messages m"
                " JOIN enrollments e ON e.id = m.enrollment_id WHERE m.message_id IN "
                f"({marks(len(chunk))})", chunk))
        return out

    def soft_bounce_streak(self, prospect_id: int) -> int:
        """Soft bounces in a row, newest first, until a hard bounce or any answer."""
        streak = 0
        for kind, detail in self.db.execute(
                "SELECT kind, detail FROM events WHERE prospect_id = ? AND kind IN "
                "('bounce', 'reply', 'auto_reply') ORDER BY id DESC LIMIT 20", (prospect_id,)):
            if kind != "bounce" or json.loads(detail).get("permanent"):
                break
            streak += 1
        return streak

    def inbound_keys(self, source: str) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT key FROM inbound WHERE source = ?",
                                              (source,))}

    def inbound_message_ids(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs an earlier poll recorded."""
        out: set[str] = set()
        for chunk in chunks(list(dict.fromkeys(message_ids))):
            out.update(r[0] for r in self.db.execute(
                f"SELECT message_id FROM inbound WHERE message_id IN ({marks(len(chunk))})",
                chunk))
        return out

    def add_inbound_many(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Many (source, key, uidvalidity, uid, message_id, prospect_id, kind, detail,
        received_at) rows: a poll batch's messages, in the batch's transaction."""
        with self.db.transaction() as db:
            db.executemany(
                "INSERT INTO inbound (source, key, uidvalidity, uid, message_id, "
                "prospect_id, kind, detail, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING", rows)

    def inbound(self, *, source: str | None = None) -> list[Record]:
        sql, args = "SELECT * FROM inbound", cast(tuple[Any, ...], ())
        if source:
            sql, args = sql + " WHERE source = ?", (source,)
        return self.db.records(sql + " ORDER BY id", args)

    def mailbox_state(self, source: str) -> Record | None:
        return self.one("SELECT * FROM mailbox_state WHERE source = ?", (source,))

    def set_mailbox_state(self, source: str, *, uidvalidity: int, last_uid: int) -> None:
        self.db.execute(
            "INSERT INTO mailbox_state (source, uidvalidity, last_uid) VALUES (?, ?, ?) "
            "ON CONFLICT (source) DO UPDATE SET uidvalidity = excluded.uidvalidity, "
            "last_uid = excluded.last_uid", (source, uidvalidity, last_uid))
