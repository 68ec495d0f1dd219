"""Call tasks and outcomes: the call list an SDR works in power hours, and what each call did.

`outreach send` creates a task when a call step comes due (`create_task`); `outreach calls`
lists the open ones grouped by persona; `outreach call ID --outcome ...` records the result.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .app import App
from .clock import iso
from .config import Step
from .models import Prospect


@dataclass(frozen=True)
class CallTask:
    """One call to make: what plugins receive in `call_task_created` (`id`, `due`, `script`)."""

    id: int
    enrollment_id: int
    prospect_id: int
    step: int
    template: str
    due: datetime
    script: str
    status: str = "open"
    outcome: str | None = None
    note: str | None = None
    done_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "enrollment_id": self.enrollment_id, "prospect_id": self.prospect_id,
            "step": self.step, "template": self.template, "due": self.due.isoformat(),
            "script": self.script, "status": self.status, "outcome": self.outcome,
            "note": self.note, "done_at": self.done_at.isoformat() if self.done_at else None,
        }


def to_task(row: sqlite3.Row) -> CallTask:
    done = row["done_at"]
    return CallTask(
        id=row["id"], enrollment_id=row["enrollment_id"], prospect_id=row["prospect_id"],
        step=row["step"], template=row["template"], due=datetime.fromisoformat(row["due_at"]),
        script=row["script"], status=row["status"], outcome=row["outcome"], note=row["note"],
        done_at=datetime.fromisoformat(done) if done else None,
    )


def create_task(app: App, *, enrollment_id: int, prospect: Prospect, step: Step, due: datetime,
                script: str) -> CallTask:
    """Record the call task of a due call step and tell plugins; idempotent per (enrollment,
    step): a task that already exists is returned unchanged and nothing fires again."""
    template = step.templates[0] if step.templates else ""
    with app.store.transaction():
        row = app.store.call_task_for(enrollment_id, step.number)
        if row is not None:
            return to_task(row)
        task_id = app.store.insert_call_task(
            enrollment_id=enrollment_id, prospect_id=prospect.id, step=step.number,
            template=template, due=due, script=script)
        app.store.add_event("call_task", at=app.now(), prospect_id=prospect.id,
                            enrollment_id=enrollment_id, task_id=task_id, step=step.number,
                            due=iso(due))
    task = to_task(app.store.call_task(task_id))
    app.fire("call_task_created", prospect=prospect, task=task)
    return task
