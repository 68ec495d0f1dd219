"""Call tasks: one per (enrollment, call step), open until done or closed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..clock import iso
from .base import Part
from .engine import Record, chunks


class Calls(Part):
    def close_call_tasks(self, prospect_id: int, *, reason: str, at: datetime) -> int:
        """Close a prospect's open call tasks (they replied, were suppressed, or won)."""
        cur = self.db.execute(
            "UPDATE call_tasks SET status = 'closed', note = ?, done_at = ? "
            "WHERE prospect_id = ? AND status = 'open'", (reason, iso(at), prospect_id))
        return cur.rowcount

    def call_task(self, task_id: int) -> Record | None:
        return self.one("SELECT * FROM call_tasks WHERE id = ?", (task_id,))

    def call_task_for(self, enrollment_id: int, step: int) -> Record | None:
        return self.one("SELECT * FROM call_tasks WHERE enrollment_id = ? AND step = ?",
                        (enrollment_id, step))

    def insert_call_task(self, *, enrollment_id: int, prospect_id: int, step: int,
                         template: str, due: datetime, script: str) -> int | None:
        """The new task's id, or None when the (enrollment, step) already has a task."""
        new = self.insert_call_tasks([(enrollment_id, prospect_id, step, template, iso(due),
                                       script)])
        return new.get((enrollment_id, step))

    def insert_call_tasks(self, rows: Sequence[tuple[int, int, int, str, str, str]]
                          ) -> dict[tuple[int, int], int]:
        """insert_call_task for many (enrollment_id, prospect_id, step, template, due_at ISO,
        script) rows, 100 per statement: {(enrollment_id, step): new id} of those inserted."""
        out: dict[tuple[int, int], int] = {}
        for chunk in chunks(rows, 100):
            values = ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
            out.update(((r[1], r[2]), r[0]) for r in self.db.execute(
                "INSERT INTO call_tasks (enrollment_id, prospect_id, step, template, due_at, "
                f"script) VALUES {values} ON CONFLICT (enrollment_id, step) DO NOTHING "
                "RETURNING id, enrollment_id, step", [v for row in chunk for v in row]
            ).fetchall())
        return out

    def open_call_tasks(self, *, due_by: datetime | None = None) -> list[Record]:
        """Open tasks (due by `due_by` when given), oldest first."""
        sql = "SELECT * FROM call_tasks WHERE status = 'open'"
        args: tuple[Any, ...] = ()
        if due_by is not None:
            sql += " AND due_at <= ?"
            args = (iso(due_by),)
        return self.db.records(sql + " ORDER BY due_at, id", args)

    def open_call_task_ids(self, prospect_id: int) -> list[int]:
        return [r[0] for r in self.db.execute(
            "SELECT id FROM call_tasks WHERE prospect_id = ? AND status = 'open' ORDER BY id",
            (prospect_id,))]

    def finish_call_task(self, task_id: int, *, status: str, outcome: str | None,
                         note: str | None, at: datetime) -> bool:
        """Move an open task to `status` ('done' or 'closed'); False if it was not open."""
        cur = self.db.execute(
            "UPDATE call_tasks SET status = ?, outcome = ?, note = ?, done_at = ? "
            "WHERE id = ? AND status = 'open'", (status, outcome, note, iso(at), task_id))
        return cur.rowcount == 1

    def record_call_outcome(self, task_id: int, *, outcome: str, note: str | None,
                            at: datetime) -> None:
        self.db.execute(
            "UPDATE call_tasks SET status = 'done', outcome = ?, note = ?, done_at = ? "
            "WHERE id = ?", (outcome, note, iso(at), task_id))
