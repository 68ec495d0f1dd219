"""The timeline (`events`) and the counts stats, the report and the guard read."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from ..clock import iso
from .base import Part
from .engine import Record, marks

_INSERT_EVENT = ("INSERT INTO events (prospect_id, enrollment_id, kind, detail, at) "
                 "VALUES (?, ?, ?, ?, ?)")


class Stats(Part):
    def add_event(self, kind: str, *, at: datetime, prospect_id: int | None = None,
                  enrollment_id: int | None = None, **detail: Any) -> None:
        self.db.execute(_INSERT_EVENT, (prospect_id, enrollment_id, kind,
                                        json.dumps(detail, default=str), iso(at)))

    def add_events(self, kind: str, events: Iterable[tuple[int | None, int | None,
                                                           dict[str, Any]]], *,
                   at: datetime) -> None:
        """add_event for many (prospect_id, enrollment_id, detail) of one kind and time."""
        stamp = iso(at)
        self.db.executemany(_INSERT_EVENT, [
            (prospect_id, enrollment_id, kind, json.dumps(detail, default=str), stamp)
            for prospect_id, enrollment_id, detail in events])

    def events(self, prospect_id: int) -> list[dict[str, Any]]:
        return [
            {"at": r["at"], "kind": r["kind"], "enrollment_id": r["enrollment_id"],
             **json.loads(r["detail"])}
            for r in self.db.records(
                "SELECT * FROM events WHERE prospect_id = ? ORDER BY at, id", (prospect_id,))
        ]

    def sending_health(self, *, since: datetime) -> dict[str, int]:
        """Messages sent since `since`, and the distinct prospects who bounced, unsubscribed
        or complained since then: the deliverability guard's counts."""
        stamp = iso(since)
        sent = self.value("SELECT count(*) FROM messages WHERE status = 'sent' "
                          "AND sent_at >= ?", (stamp,))
        counts = {"sent": int(sent), "bounced": 0, "unsubscribed": 0, "complained": 0}
        names = {"bounce": "bounced", "unsubscribe": "unsubscribed", "complaint": "complained"}
        for kind, n in self.db.execute(
                "SELECT kind, count(DISTINCT coalesce(prospect_id, -id)) FROM events "
                "WHERE kind IN ('bounce', 'unsubscribe', 'complaint') AND at >= ? GROUP BY kind",
                (stamp,)):
            counts[names[kind]] = int(n)
        return counts

    def stats_messages(self) -> list[Record]:
        """Every message the server accepted, with its sequence and the prospect's persona."""
        return self.db.records(
            "SELECT m.id, m.enrollment_id, e.prospect_id, e.sequence, m.step, m.template, "
            "m.variant, m.sent_at, m.rep, m.mailbox, p.title, p.industry, p.stage "
            "FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
            "JOIN prospects p ON p.id = e.prospect_id "
            "WHERE m.status = 'sent' ORDER BY m.sent_at, m.id")

    def stats_events(self, kinds: Sequence[str]) -> list[dict[str, Any]]:
        """Events of these kinds, oldest first, with the prospect's persona and the sequence."""
        rows = self.db.records(
            "SELECT ev.prospect_id, ev.enrollment_id, ev.kind, ev.detail, ev.at, "
            "p.title, p.industry, p.stage, e.sequence, e.rep "
            "FROM events ev LEFT JOIN prospects p ON p.id = ev.prospect_id "
            "LEFT JOIN enrollments e ON e.id = ev.enrollment_id "
            f"WHERE ev.kind IN ({marks(len(kinds))}) ORDER BY ev.at, ev.id", tuple(kinds))
        return [{**json.loads(row.pop("detail")), **row} for row in rows]

    def events_by_prospect(self, kinds: Sequence[str]) -> dict[int, list[dict[str, Any]]]:
        """Events of these kinds grouped by prospect, for scoring a whole list at once."""
        out: dict[int, list[dict[str, Any]]] = {}
        for pid, kind, detail, at in self.db.execute(
                f"SELECT prospect_id, kind, detail, at FROM events WHERE kind IN "
                f"({marks(len(kinds))}) AND prospect_id IS NOT NULL ORDER BY at, id",
                tuple(kinds)):
            out.setdefault(pid, []).append({**json.loads(detail), "kind": kind, "at": at})
        return out
