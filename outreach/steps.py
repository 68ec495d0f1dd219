"""The steps of a `send` run that send no message: call tasks (their scripts rendered), the
end of a recycled sequence, and the completion of one that ran out of steps.

Each batch of them is one transaction: a call task is committed with the enrollment moving
past its step, so a crash in between redoes both and never makes a task twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from . import render
from .app import App
from .config import Step
from .dispatch import PIECE
from .errors import OutreachError
from .models import Prospect
from .planning import Action
from .store import Record

if TYPE_CHECKING:
    from .send import SendResult

ACT_BATCH = 200              # call tasks and enrollment ends per transaction


class Steps:
    """Does a run's due steps without a message; `scripts` holds call scripts rendered
    ahead, between deliveries: (enrollment, step) -> script or the error rendering it."""

    def __init__(self, app: App, *, now: datetime, dry_run: bool, result: SendResult,
                 prospect: Callable[[int], Prospect], sent_at: Mapping[int, str]) -> None:
        self.app, self.store, self.now, self.dry_run = app, app.store, now, dry_run
        self.result, self.prospect, self.sent_at = result, prospect, sent_at
        self.scripts: dict[tuple[int, int], str | OutreachError] = {}

    def act(self, actions: list[Action], blocked: set[int] | None = None) -> None:
        """Create due call tasks and end recycled or finished enrollments, committing in
        batches (create_tasks' own transaction nests as a savepoint). `blocked` holds the
        enrollments whose step failed to render: they go no further (shared by the calls
        that together do one list of actions)."""
        blocked = set() if blocked is None else blocked
        for start in range(0, len(actions), ACT_BATCH):
            if self.dry_run:
                self._act(actions[start:start + ACT_BATCH], blocked)
                continue
            with self.store.transaction():
                self._act(actions[start:start + ACT_BATCH], blocked)

    def _act(self, actions: list[Action], blocked: set[int]) -> None:
        from .calls import NewTask, create_tasks

        store = self.store
        advanced: list[tuple[int, int]] = []
        tasks: list[NewTask] = []
        for action in actions:
            e, step = action.enrollment, action.step
            if e["id"] in blocked:
                continue
            prospect = self.prospect(e["prospect_id"])
            if step is None or step.kind == "recycle":
                state = "recycled" if step is not None else "completed"
                if state == "recycled":
                    self.result.recycled += 1
                else:
                    self.result.completed += 1
                if not self.dry_run and store.end_enrollment(
                        e["id"], state=state, at=self.now,
                        reason="recycle step" if step else "sequence done"):
                    store.add_event("enrollment_ended", at=self.now, prospect_id=prospect.id,
                                    enrollment_id=e["id"], state=state)
                continue
            script = self.scripts.pop((e["id"], step.number), None)
            if script is None:
                script = self._script(e, step)
            if isinstance(script, OutreachError):
                self.result.errors.append({"email": prospect.email, "step": step.number,
                                           "error": str(script)})
                blocked.add(e["id"])
                continue
            self.result.calls += 1
            if self.dry_run:
                continue
            # Due from when this run found it (right after the day's email), not from the
            # midnight it became due in the prospect's zone, which reads as "yesterday".
            tasks.append(NewTask(e["id"], prospect, step, self.now, script))
            advanced.append((e["id"], step.number))
        if tasks:
            create_tasks(self.app, tasks)
        if advanced:   # committed with the tasks: a crash in between redoes both
            store.advance_enrollments(advanced)

    def _script(self, e: Record, step: Step) -> str | OutreachError:
        try:
            return render.render_call_script(self.app, self.prospect(e["prospect_id"]), e, step,
                                             last_sent_at=self.sent_at.get(e["id"]))
        except OutreachError as exc:
            return exc

    async def render_ahead(self, actions: list[Action]) -> None:
        """Render these actions' call scripts a few per turn of the loop (outside any
        transaction: another task's intents must never nest in an open one); `_act` uses
        them."""
        for n, action in enumerate(actions, start=1):
            step = action.step
            if step is not None and step.kind == "call":
                self.scripts[action.enrollment["id"], step.number] = self._script(
                    action.enrollment, step)
            if n % PIECE == 0:
                await asyncio.sleep(0)
