"""`outreach send`: due steps become call tasks and emails, inside windows and limits, at most once.

A run is put together from four parts: `planning` decides from data which steps are due and
which emails go now (windows, limits, mailboxes); `steps` does the steps without a message
(call tasks, recycles); `dispatch` delivers the chosen emails over the connections; `settle`
keeps the ledger (intents before a message goes, what the servers said, a dead run's intents).
This module holds them together: `send` runs the whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from . import clock, handover, mailboxes, render
from .app import App
from .clock import iso
from .config import Config, Step
from .dispatch import dispatch
from .errors import OutreachError
from .models import Prospect
from .planning import Action, Due, choose, plan, walk
from .plugins import has_impls
from .schedule import day_bounds
from .settle import LEASE, RunLedger
from .steps import Steps
from .store import Record
from .transport import Delivery

FOLLOW_UP_SLICE = 48         # steps after sent emails done per turn (one transaction each)

Progress = Callable[[int, int, int], None]   # (sent, failed, total)
Tell = Callable[[str], None]                  # a line for the person at the terminal


@dataclass
class SendResult:
    """What a run did; `as_dict` is the `--json` summary of CONTRACT §6 plus detail."""

    dry_run: bool = False
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    deferred: int = 0
    window_open: bool = False
    next_window: datetime | None = None
    calls: int = 0
    recycled: int = 0
    completed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    unknowns: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    limited_by: str | None = None   # the limit that held messages back: daily_limit, ...
    held: int = 0                   # due emails that wait for a fix (see `holds`)
    holds: list[dict[str, Any]] = field(default_factory=list)
    recovered: int = 0              # a dead run's messages the server accepted, recorded now
    # Why the deferred wait, with when they may go: {"window": {"count", "next"}, ...}; the
    # keys are "window", a limit's name, "interrupted" and "stopped".
    deferred_by: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: str | None = None  # SIGINT or SIGTERM, when a signal stopped the run
    # Team mode: {company domain: held back} past [team] max_emails_per_domain_per_day
    # (each also counted in deferred_by), and the cap they hit.
    capped_domains: dict[str, int] = field(default_factory=dict)
    cap_per_domain: int = 0
    # Messages stopped right before their SMTP transaction: another process suppressed their
    # prospect after their intent was written ({email, step} each). Never sent.
    suppressed_mid_run: list[dict[str, Any]] = field(default_factory=list)

    def defer(self, why: str, count: int = 1, *, until: datetime | None = None) -> None:
        """Count `count` due emails that wait, and why; `until` is when they may go."""
        if count <= 0:
            return
        self.deferred += count
        entry = self.deferred_by.setdefault(why, {"count": 0, "next": None})
        entry["count"] += count
        if until is not None and (entry["next"] is None or until < entry["next"]):
            entry["next"] = until

    def hold(self, email: str, step: int, reason: str) -> None:
        self.held += 1
        self.holds.append({"email": email, "step": step, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "sent": self.sent, "failed": self.failed, "deferred": self.deferred,
            "window_open": self.window_open,
            "next_window": self.next_window.isoformat() if self.next_window else None,
            "unknown": self.unknown, "held": self.held, "recovered": self.recovered,
            "calls": self.calls, "recycled": self.recycled,
            "completed": self.completed, "dry_run": self.dry_run, "stopped": self.stopped,
            "interrupted": self.interrupted, "limited_by": self.limited_by,
            "deferred_by": {why: {"count": d["count"],
                                  "next": d["next"].isoformat() if d["next"] else None}
                            for why, d in self.deferred_by.items()},
            "capped_domains": self.capped_domains,
            "errors": self.errors, "failures": self.failures, "unknowns": self.unknowns,
            "holds": self.holds,
            "suppressed_mid_run": len(self.suppressed_mid_run),
            "suppressions_mid_run": self.suppressed_mid_run,
        }
        if self.dry_run:
            doc["messages"] = self.messages
        return doc



class _Run:
    """One run's state; delivery's `Books` (it composes and claims chunks, records batches
    and does the steps after recorded emails between deliveries)."""

    def __init__(self, app: App, *, dry_run: bool, limit: int | None, ignore_window: bool,
                 progress: Progress | None, tell: Tell | None = None) -> None:
        self.app = app
        self.tell = tell
        self.config = app.config
        self.now = app.now()
        self.dry_run = dry_run
        self.limit = limit
        self.ignore_window = ignore_window
        self.progress = progress
        self.result = SendResult(dry_run=dry_run)
        self.views = mailboxes.views(self.config)   # mailbox address -> config it sends as
        self.prospects: dict[int, Prospect] = {}
        self.total = 0
        self.hooks = has_impls(app.pm, "message_sent")
        self.sent_at: dict[int, str] = {}   # enrollment id -> when this run's email went
        # The steps right after this run's emails (a day-0 call after the day-0 email), found
        # as each batch is recorded and done while later messages are on the wire.
        self.follow_ups: list[Action] = []
        self.followed: set[int] = set()     # enrollments whose follow-ups were looked up
        self.follow_blocked: set[int] = set()
        self.renewed = time.monotonic()
        self.lease, own = lease_for(app.config)
        self.day = day_bounds(self.now, ZoneInfo(self.config.sender.timezone))
        self.ledger = RunLedger(app, now=self.now, day=self.day, result=self.result,
                                views=self.views, lease=self.lease, own=own, dry_run=dry_run,
                                prospect=self.prospect)
        self.steps = Steps(app, now=self.now, dry_run=dry_run, result=self.result,
                           prospect=self.prospect, sent_at=self.sent_at)

    def plan(self, rows: list[Record]) -> tuple[list[Action], list[Due]]:
        return plan(rows, config=self.config, now=self.now, unresolved=self.ledger.unresolved,
                    settled=self.ledger.settled, busy=self.ledger.busy, result=self.result)

    def walk(self, enrollment: Record, start: int, actions: list[Action]) -> None:
        """Collect the due steps from `start` on (an enrollment waiting for an unknown
        delivery to be resolved has none)."""
        if enrollment["id"] not in self.ledger.unresolved:
            walk(enrollment, self.config.sequences[enrollment["sequence"]], start, actions,
                 config=self.config, now=self.now)

    def choose(self, emails: list[Due]) -> list[Due]:
        return choose(emails, config=self.config, now=self.now,
                      counts=self.ledger.counts(), day=self.day,
                      ignore_window=self.ignore_window, limit=self.limit, result=self.result)

    def load_prospects(self, prospect_ids: Iterable[int]) -> None:
        """Read the prospects of the steps about to be done, in one query."""
        missing = {i for i in prospect_ids if i not in self.prospects}
        if missing:
            self.prospects.update(self.app.store.prospects_by_ids(missing))

    def prospect(self, prospect_id: int) -> Prospect:
        if prospect_id not in self.prospects:
            found = self.app.store.prospect_by_id(prospect_id)
            assert found is not None
            self.prospects[prospect_id] = found
        return self.prospects[prospect_id]

    # -- delivery's books -------------------------------------------------------------

    def prepare(self, items: list[Due]) -> list[Due]:
        items = self.ledger.unclaimed(items)
        self.load_prospects(item.enrollment["prospect_id"] for item in items)
        return items

    def compose(self, item: Due) -> render.Envelope | None:
        e, step = item.enrollment, item.step
        prospect = self.prospect(e["prospect_id"])
        try:
            rendered = render.render_email(self.app, prospect, e, step)
        except OutreachError as exc:
            self.result.errors.append({"email": prospect.email, "step": step.number,
                                       "error": str(exc)})
            self.result.hold(prospect.email, step.number, str(exc))
            return None
        thread = render.thread_for(self.app.store.handed_over(e["id"])) if step.thread else None
        view = self.views[item.mailbox] if item.mailbox else self.config
        message_id = render.new_message_id(view.sender.domain, enrollment_id=e["id"],
                                           step=step.number, now=self.now)
        envelope = render.compose(view, prospect, rendered, message_id=message_id,
                                  now=self.now, thread=thread,
                                  unsubscribe_secret=self.app.store.unsubscribe_secret())
        envelope.meta.update(enrollment_id=e["id"], enrollment=e, prospect=prospect, step=step,
                             template=rendered.template, variant=rendered.variant,
                             mailbox=item.mailbox, due=item)
        return envelope

    def claim(self, envelopes: list[render.Envelope]) -> list[render.Envelope]:
        return self.ledger.claim(envelopes)

    @property
    def contested(self) -> int:
        return self.ledger.contested

    def release(self, unsent: list[render.Envelope]) -> None:
        self.ledger.release(unsent)

    def settle_cut_short(self) -> int:
        return self.ledger.settle_stale(own=True)

    def record(self, batch: list[tuple[render.Envelope, Delivery]]) -> None:
        """Record what the transport reported, in one transaction; then tell plugins."""
        now = self.app.now()
        sent, bounced = self.ledger.record(batch, now=now)
        stamp = iso(now)
        for m in sent:
            self.sent_at[m["enrollment_id"]] = stamp
        self.find_follow_ups([(env.meta["enrollment"], env.meta["step"]) for env, _ in batch])
        for prospect in bounced:
            from .lifecycle import suppress

            suppress(self.app, prospect.email, reason="bounce", source="send")
        if self.hooks:
            accepted = {m["ledger_id"] for m in sent}
            for env, _ in batch:
                if env.meta["ledger_id"] in accepted:
                    self.app.fire("message_sent", prospect=env.meta["prospect"],
                                  message=env.as_email_message())
        if self.progress:
            self.progress(self.result.sent, self.result.failed, self.total)

    async def between(self) -> None:
        """Follow-ups in slices, scripts rendered a few per turn of the loop first, so the
        connections keep sending; and the lease kept ours even when nothing completes (a
        very slow server)."""
        while self.follow_ups:
            await self.steps.render_ahead(self.follow_ups[:FOLLOW_UP_SLICE])
            self.steps.act(self.follow_ups[:FOLLOW_UP_SLICE], self.follow_blocked)
            del self.follow_ups[:FOLLOW_UP_SLICE]   # (if it failed, the run redoes it)
            await asyncio.sleep(0)
        if self.lease and time.monotonic() - self.renewed > LEASE.total_seconds() / 4:
            self.app.store.renew_lock(self.lease, until=clock.wall_now() + LEASE)
            self.renewed = time.monotonic()

    def find_follow_ups(self, sent: list[tuple[Record, Step]]) -> None:
        """Queue the due steps after these enrollments' recorded emails, from the step each
        is at now (advanced, or left at a step to retry); ended ones have none."""
        self.followed.update(e["id"] for e, _ in sent)
        # Whether advanced or left to retry, an enrollment whose next step is an email has
        # nothing to do before it: only the others are read back and walked.
        enrollments = [e for e, step in sent if not self._email_next(e, step)]
        if not enrollments:
            return
        steps = self.app.store.open_next_steps([e["id"] for e in enrollments])
        for e in sorted(enrollments, key=lambda e: e["id"]):
            if e["id"] in steps:
                self.walk(e, steps[e["id"]], self.follow_ups)

    def _email_next(self, enrollment: Record, step: Step) -> bool:
        steps = self.config.sequences[enrollment["sequence"]].steps
        return step.number + 1 < len(steps) and steps[step.number + 1].kind == "email"

    # -- delivering -------------------------------------------------------------------

    async def deliver(self, chosen: list[Due]) -> None:
        log = self.ledger.log = handover.Log(self.ledger.log_path)
        try:
            conns = mailboxes.routed_connections(self.views, (i.mailbox for i in chosen),
                                                 handover=log, look=self.ledger.may_send)
            if self.progress:
                self.progress(0, 0, self.total)   # the bar from the start, not the first reply
            await dispatch(chosen, conns=conns, books=self, result=self.result,
                           tell=self.tell, timeout=self.config.smtp.timeout)
        finally:
            self.ledger.log = None
            log.close()
        if not self.app.store.has_intents(run=self.ledger.run):   # every mark is recorded
            handover.remove(self.ledger.log_path)

    def dry_report(self, chosen: list[Due]) -> list[Due]:
        """Compose what would go and list it; returns those that render."""
        rendered = []
        for item in chosen:
            env = self.compose(item)
            if env is None:
                continue
            rendered.append(item)
            self.result.sent += 1
            self.result.messages.append({
                "email": env.rcpt_to, "step": item.step.number, "template": env.meta["template"],
                "variant": env.meta["variant"], "subject": env.subject})
        return rendered


def lease_for(config: Config) -> tuple[str | None, str | None]:
    """The `send` lease, if senders take turns, and whose dead runs this run settles. On a
    SQLite file, shared or not, the senders take turns (one file, one write lock anyway). On
    a team's PostgreSQL any number send at once, each run holding only its own run's lease,
    and each settles only its rep's dead runs (their hand-over logs are on that rep's
    machines)."""
    if config.store_url:
        return None, config.team.rep
    return "send", None


def send(app: App, *, dry_run: bool = False, limit: int | None = None,
         ignore_window: bool = False, progress: Progress | None = None,
         tell: Tell | None = None) -> SendResult:
    """One `outreach send`: settle a dead run's intents, create due call tasks, send due emails.
    `tell` gets the lines for a person waiting at a terminal (Ctrl-C's "stopping: ...")."""
    run = _Run(app, dry_run=dry_run, limit=limit, ignore_window=ignore_window,
               progress=progress, tell=tell)
    store = app.store
    if not dry_run:
        started = clock.wall_now()
        if run.lease:
            store.acquire_lock(run.lease, owner=iso(started), now=started,
                               until=started + LEASE)
        store.hold_run(run.ledger.run)
    try:
        with render.steady():   # a template edited during the run is read by the next one
            _send(run, dry_run=dry_run)
    finally:
        if not dry_run:
            store.release_run(run.ledger.run)
            if run.lease:
                store.release_lock(run.lease)
    return run.result


def _send(run: _Run, *, dry_run: bool) -> None:
    """Settle dead intents, create due call tasks, send due emails, then the steps after them."""
    app, store = run.app, run.app.store
    run.ledger.settle_stale()   # a dry run predicts the settlement the real run will write
    if run.hooks:
        for prospect, message in run.ledger.recovered_messages():
            app.fire("message_sent", prospect=prospect, message=message)
    rows = store.send_candidates(rep=app.config.team.rep)
    actions, emails = run.plan(rows)
    run.load_prospects(a.enrollment["prospect_id"] for a in actions)
    run.steps.act(actions)
    chosen = run.choose(emails)
    run.total = len(chosen)
    if dry_run:
        run.load_prospects(item.enrollment["prospect_id"] for item in chosen)
        # Only the steps after emails that render: the real run goes no further on the others.
        after = [(item.enrollment, item.step.number + 1) for item in run.dry_report(chosen)]
    else:
        if chosen:
            asyncio.run(run.deliver(chosen))
        run.steps.act(run.follow_ups, run.follow_blocked)   # those delivery did not get to
        rest = sorted((item.enrollment for item in chosen
                       if item.enrollment["id"] not in run.followed), key=lambda e: e["id"])
        steps = store.open_next_steps([e["id"] for e in rest])
        after = [(e, steps[e["id"]]) for e in rest if e["id"] in steps]
    # Steps right after this run's emails (a day-0 call after the day-0 email) are due now.
    later: list[Action] = []
    for row, start in after:
        run.walk(row, start, later)
    run.steps.act(later, run.follow_blocked)
