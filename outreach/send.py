"""`outreach send`: due steps become call tasks and emails, inside windows and limits, at most once.

The ledger (`messages`) makes "never twice" hold: an intent row is committed before a message
is handed to the transport and marked sent once the server accepts it. Ledger writes are
batched into one transaction per chunk so the safety costs little throughput; what happened to
each message between two commits is in the hand-over log (`handover.py`). A run that dies
leaves intents behind; the next run (holding the `send` lease, so no other sender is alive)
settles them from that log and the outbox: accepted ones are recorded sent, those whose payload
was on the wire become `unknown` (reported, never resent, and their enrollment held until
`outreach resolve`), and the rest are simply due again.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from . import clock, handover, mailboxes, render
from .app import App
from .clock import iso
from .config import Config, Mailbox, Sequence, Step
from .errors import OutreachError
from .models import Prospect
from .plugins import has_impls
from .schedule import allowance, day_bounds, due_at, next_window, window_open, zone_for
from .store import Record, domain_of
from .team import NO_MAILBOX, assign_mailboxes, domain_cap, ramp_limit
from .transport import Delivery, Outcome, outbox_files

LEASE = timedelta(minutes=10)
STOP_AFTER_FAILURES = 5      # consecutive failed messages that stop the run
# Intents are written per transaction in chunks of 2 per connection (at least 8): enough to
# batch the writes, small enough that composing a chunk never leaves the connections idle. (A
# killed run's chunk costs nothing: the hand-over log says which of it went.)
CHUNK_PER_CONNECTION = 2
MIN_CHUNK = 8
COMPLETE_AFTER_DAYS = 14     # days after its last step a sequence without recycle completes
ACT_BATCH = 200              # call tasks and enrollment ends per transaction
FOLLOW_UP_SLICE = 48         # steps after sent emails done per turn (one transaction each)
FLUSH_SECONDS = 0.05         # how often accepted messages are marked sent
# CPU work between deliveries is done in small pieces with a turn of the event loop between
# them (every this many messages composed or call scripts rendered): a long stretch of it
# leaves every connection's reply waiting and then the server idle while they catch up.
PIECE = 2

Progress = Callable[[int, int, int], None]   # (sent, failed, total)
# Why a dead run's message is unknown: its payload was on the wire, or nothing here says.
STOPPED_UNKNOWN = ("the run that sent it stopped while the message may have been with the "
                   "server")
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
        }
        if self.dry_run:
            doc["messages"] = self.messages
        return doc


@dataclass
class _Due:
    enrollment: Record
    step: Step
    due: datetime
    zone: ZoneInfo
    mailbox: str = ""    # the address it goes from, chosen by `choose`


@dataclass
class _Action:
    """A due call, recycle or end-of-sequence step (no message)."""

    enrollment: Record
    step: Step | None        # None: the sequence has no steps left
    due: datetime


class _Run:
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
        self.consecutive_failures = 0
        self.pending: list[tuple[render.Envelope, Delivery]] = []
        self.hooks = has_impls(app.pm, "message_sent")
        self.sent_at: dict[int, str] = {}   # enrollment id -> when this run's email went
        # The steps right after this run's emails (a day-0 call after the day-0 email), found
        # as each batch is recorded and done while later messages are on the wire.
        self.follow_ups: list[_Action] = []
        self.followed: set[int] = set()     # enrollments whose follow-ups were looked up
        self.follow_blocked: set[int] = set()
        # Call scripts of follow-ups rendered ahead, between deliveries: (enrollment, step).
        self.scripts: dict[tuple[int, int], str | OutreachError] = {}
        self.log_path = handover.path_for(app.config.store_path)
        self.lease, self.own = lease_for(app.config)
        self.log: handover.Log | None = None   # open while delivering
        # Enrollments whose last email's fate is unknown -> that step: they wait for
        # `outreach resolve` (no follow-up threads onto a message that may never have gone).
        self.unresolved: dict[int, int] = {}
        # A dry run's view of the steps a dead run's intents will move past: enrollment ->
        # next step (a real run writes them before planning).
        self.settled: dict[int, int] = {}
        self.in_flight = 0

    # -- planning ---------------------------------------------------------------------

    def walk(self, enrollment: Record, sequence: Sequence, start: int,
             actions: list[_Action], *, held: bool = True) -> _Due | None:
        """From step `start`, collect the due non-email steps and return the due email, if any.
        An enrollment waiting for an unknown delivery to be resolved has none (unless not
        `held`)."""
        if held and enrollment["id"] in self.unresolved:
            return None
        zone = zone_for(enrollment["prospect_timezone"], self.config.sender.timezone,
                        self.config.sending.window_timezone)
        started = datetime.fromisoformat(enrollment["started_at"])
        for step in sequence.steps[start:]:
            due = due_at(started, step.day, zone)
            if due > self.now:
                return None
            if step.kind == "email":
                return _Due(enrollment, step, due, zone)
            actions.append(_Action(enrollment, step, due))
            if step.kind == "recycle":
                return None
        # Past its last step the sequence stays open a while for late replies, then completes
        # (a completed prospect may be enrolled again, so not the moment the last email goes).
        if due_at(started, sequence.steps[-1].day + COMPLETE_AFTER_DAYS, zone) <= self.now:
            actions.append(_Action(enrollment, None, self.now))
        return None

    def plan(self, rows: list[Record]) -> tuple[list[_Action], list[_Due]]:
        actions: list[_Action] = []
        emails: list[_Due] = []
        stamp = iso(self.now)
        for row in rows:
            sequence = self.config.sequences.get(row["sequence"])
            if sequence is None:
                error = (f'sequence "{row["sequence"]}" is no longer in '
                         f"{self.config.path.name}; restore it or stop the enrollment")
                self.result.errors.append({"email": row["email"], "step": row["next_step"],
                                           "error": error})
                self.result.hold(row["email"], row["next_step"], error)
                continue
            if row["suppressed"] or (row["paused_until"] and row["paused_until"] > stamp):
                continue
            start = max(row["next_step"], self.settled.get(row["id"], 0))
            if row["id"] in self.unresolved:
                due = self.walk(row, sequence, start, [], held=False)
                if due is not None:
                    self.result.hold(row["email"], due.step.number, self.waiting(row))
                continue
            due = self.walk(row, sequence, start, actions)
            if due is not None:
                emails.append(due)
        return actions, emails

    def waiting(self, row: Record) -> str:
        step = self.unresolved[row["id"]]
        return (f"waits until step {step}'s unknown delivery is resolved: look for it in your "
                f"Sent folder or the server's log, then `outreach resolve {row['email']} "
                "--delivered` (or `--not-delivered` to send it again)")

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

    # -- steps without a message ------------------------------------------------------

    def act(self, actions: list[_Action], blocked: set[int] | None = None) -> None:
        """Create due call tasks and end recycled or finished enrollments, committing in
        batches (create_tasks' own transaction nests as a savepoint). `blocked` holds the
        enrollments whose step failed to render: they go no further (shared by the calls
        that together do one list of actions)."""
        blocked = set() if blocked is None else blocked
        for start in range(0, len(actions), ACT_BATCH):
            if self.dry_run:
                self._act(actions[start:start + ACT_BATCH], blocked)
                continue
            with self.app.store.transaction():
                self._act(actions[start:start + ACT_BATCH], blocked)

    def _act(self, actions: list[_Action], blocked: set[int]) -> None:
        from .calls import NewTask, create_tasks

        store = self.app.store
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

    async def render_ahead(self, actions: list[_Action]) -> None:
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

    # -- choosing the emails ----------------------------------------------------------

    def choose(self, emails: list[_Due]) -> list[_Due]:
        """Apply windows and limits (the rep's day and run, each company's day across the
        team, each mailbox's day and ramp-up) and give each message its mailbox; the oldest
        due go first, the rest are deferred."""
        sending = self.config.sending
        ready: list[_Due] = []
        waits: list[datetime] = []
        for item in emails:
            boxes = self._boxes(item)
            if self.ignore_window or any(self._open(item, box) for box in boxes):
                ready.append(item)
                continue
            opens = min(filter(None, (next_window(self.now, windows=self._windows(box),
                                                  days=sending.days, zone=item.zone)
                                      for box in boxes)), default=None)
            self.result.defer("window", until=opens)
            if opens is not None:
                waits.append(opens)
        self.result.next_window = min(waits) if waits else None
        if ready or self.ignore_window:
            self.result.window_open = True
        elif not emails:
            self.result.window_open = window_open(
                self.now, windows=sending.windows, days=sending.days,
                zone=ZoneInfo(self.config.sender.timezone))
        store = self.app.store
        start, end = day_bounds(self.now, ZoneInfo(self.config.sender.timezone))
        room, cap = allowance(daily_limit=sending.daily_limit,
                              sent_today=store.messages_started_between(
                                  start, end, rep=self.config.team.rep),
                              per_run_limit=sending.per_run_limit, limit=self.limit)
        ready.sort(key=lambda d: (d.due, d.enrollment["id"]))
        ready = self._cap_domains(ready, start, end)
        chosen, waiting, rest = assign_mailboxes(
            ready, mailboxes=list(self.views), sticky=self._sticky,
            room=self._mailbox_room(start, end), total=room,
            is_open=lambda item, m: self.ignore_window or self._open(
                item, self.config.mailbox(m)))
        for item, reason in waiting:
            if reason == NO_MAILBOX:
                error = (f"its first email went from {self._sticky(item)}, which is no longer "
                         f"a [[mailboxes]] entry of {self.config.path.name}; restore it "
                         "(replies and the thread depend on that address)")
                self.result.errors.append({"email": item.enrollment["email"],
                                           "step": item.step.number, "error": error})
                self.result.hold(item.enrollment["email"], item.step.number, error)
            else:
                self.result.defer(reason, until=self._after_today(item, end))
        if rest:
            self.result.limited_by = cap
            until = None
            if cap == "daily_limit":  # the rest wait for a window after the sender's day
                after = [self._after_today(item, end) for item in rest]
                until = self.result.next_window = min(filter(None, after), default=None)
            self.result.defer(cap, len(rest), until=until)
        for item, box in chosen:
            item.mailbox = box
        return [item for item, _ in chosen]

    def _after_today(self, item: _Due, end: datetime) -> datetime | None:
        return next_window(end, windows=self.config.sending.windows,
                           days=self.config.sending.days, zone=item.zone)

    def _cap_domains(self, ready: list[_Due], start: datetime, end: datetime) -> list[_Due]:
        """Hold back what would pass [team] max_emails_per_domain_per_day today."""
        cap = self.config.team.max_emails_per_domain_per_day
        kept, held = domain_cap(ready, lambda d: domain_of(d.enrollment["email"]),
                                sent_today=self.app.store.domain_counts(start, end), cap=cap)
        self.result.capped_domains = dict(sorted(held.items()))
        self.result.cap_per_domain = cap
        nexts = {domain_of(d.enrollment["email"]): self._after_today(d, end)
                 for d in ready if d not in kept}
        for domain, count in held.items():
            self.result.defer("max_emails_per_domain_per_day", count, until=nexts.get(domain))
        return kept

    def _sticky(self, item: _Due) -> str | None:
        """The mailbox this prospect's mail comes from: the one that sent its first email
        (mail sent before team mode counts as the first mailbox's)."""
        e = item.enrollment
        if e["sticky_mailbox"]:
            return str(e["sticky_mailbox"])
        return self.config.mailboxes[0].email if e["mailed"] else None

    def _boxes(self, item: _Due) -> tuple[Mailbox, ...]:
        own = self._sticky(item)
        box = self.config.mailbox(own) if own else None
        return (box,) if box else self.config.mailboxes

    def _windows(self, box: Mailbox | None) -> Any:
        return box.windows if box and box.windows else self.config.sending.windows

    def _open(self, item: _Due, box: Mailbox | None) -> bool:
        return window_open(self.now, windows=self._windows(box),
                           days=self.config.sending.days, zone=item.zone)

    def _mailbox_room(self, start: datetime, end: datetime) -> dict[str, int]:
        """Mailbox -> how many more it may send today (its limit or ramp, less today's)."""
        store, zone = self.app.store, ZoneInfo(self.config.sender.timezone)
        counts = store.mailbox_counts(start, end)
        first = store.mailbox_first_used()
        today = self.now.astimezone(zone).date()
        room = {}
        for box in self.config.mailboxes:
            began = first.get(box.email)
            limit = ramp_limit(box, today=today, first_used=datetime.fromisoformat(
                began).astimezone(zone).date() if began else None)
            room[box.email] = max(limit - counts.get(box.email, 0), 0)
        return room

    def compose(self, item: _Due) -> render.Envelope | None:
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
                             mailbox=item.mailbox)
        return envelope

    # -- the ledger -------------------------------------------------------------------

    def record_intents(self, envelopes: list[render.Envelope]) -> list[render.Envelope]:
        """Commit the intents of a chunk; only those the ledger accepted may be sent."""
        intents = [{"enrollment_id": env.meta["enrollment_id"], "step": env.meta["step"].number,
                    "template": env.meta["template"], "variant": env.meta["variant"],
                    "message_id": env.message_id, "subject": env.subject,
                    "rep": self.config.team.rep, "mailbox": env.meta["mailbox"]}
                   for env in envelopes]
        if self.log is not None:   # before the commit: no intent without its mark
            self.log.queued([env.message_id for env in envelopes])
        with self.app.store.transaction():
            written = self.app.store.add_intents(intents, at=self.now)
        accepted = []
        for env in envelopes:
            if env.message_id in written:
                env.meta["ledger_id"] = written[env.message_id]
                accepted.append(env)
        if len(accepted) < len(envelopes):
            self.skip_repeats([env for env in envelopes if env.message_id not in written])
        return accepted

    def skip_repeats(self, refused: list[render.Envelope]) -> None:
        """A template this enrollment already sent at another step (the sequence's steps were
        edited since): the ledger refused it. Report it and move past the step, so it neither
        goes twice nor blocks the sequence."""
        store = self.app.store
        sent = store.ledger_templates({env.meta["enrollment_id"] for env in refused})
        with store.transaction():
            for env in refused:
                m = env.meta
                earlier = sent.get((m["enrollment_id"], m["template"]))
                if earlier is None or earlier == m["step"].number:
                    continue  # refused for another reason (ended, paused, suppressed meanwhile)
                self.result.errors.append({
                    "email": m["prospect"].email, "step": m["step"].number,
                    "error": f'template "{m["template"]}" already went to them as step {earlier} '
                             "of this enrollment (were the sequence's steps edited?); skipped"})
                store.advance_enrollment(m["enrollment_id"], past_step=m["step"].number)
                store.add_event("send_skipped", at=self.now, prospect_id=m["prospect"].id,
                                enrollment_id=m["enrollment_id"], step=m["step"].number,
                                template=m["template"], sent_as_step=earlier)

    def settle_stale(self) -> int:
        """Settle the intents a dead run left (or this one, stopped at once) from the
        hand-over log and the outbox: accepted -> sent, payload on the wire -> unknown (never
        resent), never reached DATA -> due again. A dry run only predicts it. Returns how many
        are due again."""
        store = self.app.store
        self.unresolved.update(store.unresolved_steps())
        stale = store.stale_intents(rep=self.own)
        if not stale:
            return 0
        marks = handover.read(self.log_path)
        fates: dict[handover.Fate, list[Record]] = {fate: [] for fate in handover.Fate}
        for row in stale:
            written, _ = outbox_files(self._outbox(row), row["message_id"])
            fates[handover.fate(row["message_id"], marks, written=written.exists())].append(row)
        sent, unknown = fates[handover.Fate.SENT], fates[handover.Fate.UNKNOWN]
        if not self.dry_run:
            self._write_settlement(fates)
        for row in sent + unknown:
            self.settled[row["enrollment_id"]] = row["step"] + 1
        for row in unknown:
            self.unresolved[row["enrollment_id"]] = row["step"]
            self.result.unknowns.append({
                "email": self.prospect(row["prospect_id"]).email, "step": row["step"],
                "message_id": row["message_id"], "error": STOPPED_UNKNOWN})
        self.result.unknown += len(unknown)
        self.result.recovered += len(sent)
        return len(fates[handover.Fate.UNSENT])

    def _outbox(self, row: Record) -> Any:
        """The outbox folder of the mailbox a ledger row went from."""
        return self.views.get(row.get("mailbox") or "", self.config).smtp.outbox

    def _write_settlement(self, fates: dict[handover.Fate, list[Record]]) -> None:
        store = self.app.store
        with store.transaction():
            store.mark_sent([{"ledger_id": r["id"], **dict(r)}
                             for r in fates[handover.Fate.SENT]], at=self.now)
            for row in fates[handover.Fate.UNKNOWN]:
                store.set_message_status(row["id"], "unknown", error=STOPPED_UNKNOWN)
                store.advance_enrollment(row["enrollment_id"], past_step=row["step"])
                store.add_event("send_unknown", at=self.now, prospect_id=row["prospect_id"],
                                enrollment_id=row["enrollment_id"], step=row["step"],
                                message_id=row["message_id"], template=row["template"],
                                error=STOPPED_UNKNOWN)
            for row in fates[handover.Fate.UNSENT]:
                store.drop_intent(row["id"])
        for row in fates[handover.Fate.UNSENT]:   # a partly written outbox file
            outbox_files(self._outbox(row), row["message_id"])[1].unlink(missing_ok=True)
        handover.clear(self.log_path)

    def flush(self) -> None:
        """Record what the transport reported, in one transaction; then tell plugins."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        store = self.app.store
        now = self.app.now()
        bounced: list[Prospect] = []
        sent = [self._sent(env) for env, delivery in batch if delivery.outcome is Outcome.SENT]
        with store.transaction():
            store.mark_sent(sent, at=now)
            for env, delivery in batch:
                if delivery.outcome is not Outcome.SENT:
                    self._record(env, delivery, now, bounced)
            for env, _ in batch:
                step = env.meta["step"]
                if len(step.templates) > 1:
                    store.record_variant(env.meta["enrollment_id"], step.number,
                                         env.meta["template"])
            store.renew_lock(self.lease, until=clock.wall_now() + LEASE)
        self.result.sent += len(sent)
        stamp = iso(now)
        for m in sent:
            self.sent_at[m["enrollment_id"]] = stamp
        self.find_follow_ups([(env.meta["enrollment"], env.meta["step"]) for env, _ in batch])
        for prospect in bounced:
            from .lifecycle import suppress

            suppress(self.app, prospect.email, reason="bounce", source="send")
        if self.hooks:
            for env, delivery in batch:
                if delivery.outcome is Outcome.SENT:
                    self.app.fire("message_sent", prospect=env.meta["prospect"],
                                  message=env.as_email_message())
        if self.progress:
            self.progress(self.result.sent, self.result.failed, self.total)

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
                self.walk(e, self.config.sequences[e["sequence"]], steps[e["id"]],
                          self.follow_ups)

    def _email_next(self, enrollment: Record, step: Step) -> bool:
        steps = self.config.sequences[enrollment["sequence"]].steps
        return step.number + 1 < len(steps) and steps[step.number + 1].kind == "email"

    @staticmethod
    def _sent(env: render.Envelope) -> dict[str, Any]:
        m = env.meta
        return {"ledger_id": m["ledger_id"], "prospect_id": m["prospect"].id,
                "enrollment_id": m["enrollment_id"], "step": m["step"].number,
                "template": m["template"], "variant": m["variant"],
                "message_id": env.message_id, "subject": env.subject}

    def _record(self, env: render.Envelope, delivery: Delivery, now: datetime,
                bounced: list[Prospect]) -> None:
        store, m, result = self.app.store, env.meta, self.result
        prospect: Prospect = m["prospect"]
        step: Step = m["step"]
        where = {"at": now, "prospect_id": prospect.id, "enrollment_id": m["enrollment_id"]}
        if delivery.outcome is Outcome.UNKNOWN:
            self.unresolved[m["enrollment_id"]] = step.number
            result.unknown += 1
            result.unknowns.append({"email": prospect.email, "step": step.number,
                                    "message_id": env.message_id, "error": delivery.error})
            store.set_message_status(m["ledger_id"], "unknown", error=delivery.error)
            store.add_event("send_unknown", **where, step=step.number,
                            message_id=env.message_id, template=m["template"],
                            error=delivery.error)
        else:
            result.failed += 1
            result.failures.append({"email": prospect.email, "step": step.number,
                                    "error": delivery.error,
                                    "retry": delivery.outcome is Outcome.RETRY})
            store.add_event("send_failed", **where, step=step.number, error=delivery.error,
                            template=m["template"])
            if delivery.outcome is Outcome.RETRY:
                store.drop_intent(m["ledger_id"])   # never handed over: a later run may send it
                return
            store.set_message_status(m["ledger_id"], "failed", error=delivery.error)
            if delivery.bad_recipient and store.end_enrollment(
                    m["enrollment_id"], state="bounced", reason="recipient refused", at=now):
                store.add_event("bounce", **where, status=delivery.error, permanent=True)
                bounced.append(prospect)
        store.advance_enrollment(m["enrollment_id"], past_step=step.number)

    # -- delivering -------------------------------------------------------------------

    async def deliver(self, chosen: list[_Due]) -> None:
        log = self.log = handover.Log(self.log_path)
        try:
            await self._deliver(chosen, log)
        finally:
            self.log = None
            log.close()
        if not self.app.store.has_intents():   # every mark is of a recorded message
            handover.clear(self.log_path)

    async def _deliver(self, chosen: list[_Due], log: handover.Log) -> None:
        conns = mailboxes.routed_connections(self.views, (item.mailbox for item in chosen),
                                             handover=log)
        if self.progress:
            self.progress(0, 0, self.total)   # the bar from the start, not the first reply
        await conns[0].open()   # a refused login stops the run before anything is recorded
        chunk = max(MIN_CHUNK, CHUNK_PER_CONNECTION * len(conns))
        queue: asyncio.Queue[render.Envelope | None] = asyncio.Queue(maxsize=chunk)
        stop = asyncio.Event()
        unsent: list[render.Envelope] = []
        taken = 0   # how many of `chosen` were composed (the rest were never started)
        aborting = False

        async def worker(conn: Any) -> None:
            while (env := await queue.get()) is not None:
                if stop.is_set():
                    unsent.append(env)
                    continue
                self.in_flight += 1
                try:
                    delivery = await conn.deliver(env)
                except Exception as exc:  # a bug mid-handover: assume it may have gone
                    delivery = Delivery(Outcome.UNKNOWN, f"{type(exc).__name__}: {exc}")
                finally:
                    self.in_flight -= 1
                self.pending.append((env, delivery))
                self.count(delivery, stop)
            await conn.close()

        async def feed() -> None:
            try:
                await produce()
            except Exception:
                stop.set()   # the workers finish what they hold and hand back the rest
                raise
            finally:
                if not aborting:
                    for _ in workers:
                        await queue.put(None)

        async def produce() -> None:
            nonlocal taken
            for start in range(0, len(chosen), chunk):
                if stop.is_set():
                    break
                # The chunk's prospects are read here, while earlier chunks are on the wire.
                self.load_prospects(item.enrollment["prospect_id"]
                                    for item in chosen[start:start + chunk])
                envelopes = []
                for n, item in enumerate(chosen[start:start + chunk], start=1):
                    if (env := self.compose(item)) is not None:
                        envelopes.append(env)
                    if n % PIECE == 0:
                        await asyncio.sleep(0)   # replies that came in meanwhile go on
                taken = min(len(chosen), start + chunk)
                for env in self.record_intents(envelopes):
                    if stop.is_set():
                        unsent.append(env)
                        continue
                    await queue.put(env)

        async def flusher() -> None:
            renewed = time.monotonic()
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                self.flush()
                # Follow-ups in slices, scripts rendered a few per turn of the loop first,
                # so the connections keep sending.
                while self.follow_ups:
                    await self.render_ahead(self.follow_ups[:FOLLOW_UP_SLICE])
                    self.act(self.follow_ups[:FOLLOW_UP_SLICE], self.follow_blocked)
                    del self.follow_ups[:FOLLOW_UP_SLICE]   # (if it failed, the run redoes it)
                    await asyncio.sleep(0)
                if time.monotonic() - renewed > LEASE.total_seconds() / 4:
                    # Even when nothing completes (a very slow server), keep the lease ours.
                    self.app.store.renew_lock(self.lease, until=clock.wall_now() + LEASE)
                    renewed = time.monotonic()

        def interrupted(name: str) -> None:
            # Ctrl-C or a cron timeout's SIGTERM: finish what is on the wire, send nothing
            # more. A second one stops at once: what was in DATA is settled as after a crash.
            nonlocal aborting
            if self.result.interrupted is None:
                self.result.interrupted = name
                stop.set()
                self.result.stopped = (f"stopped by {name}: the messages in flight were "
                                       "finished; the rest were not sent and stay due")
                if self.tell:
                    n = self.in_flight
                    self.tell(f"stopping: finishing {n} message{'' if n == 1 else 's'} in flight "
                              f"(up to {self.config.smtp.timeout:g} s)… "
                              "(again to stop at once)")
                return
            if aborting:
                return
            aborting = True
            self.result.stopped = (f"stopped at once by a second {name}: messages whose "
                                   "delivery was cut short are reported unknown; the rest were "
                                   "not sent and stay due")
            if self.tell:
                self.tell("stopping now")
            for task in tasks:
                task.cancel()

        loop = asyncio.get_running_loop()
        signals = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, interrupted, sig.name)
                signals.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass   # not the main thread, or no signals here: keep the default behaviour
        workers = [asyncio.create_task(worker(c)) for c in conns]
        tasks = [asyncio.create_task(feed()), *workers]
        flushing = asyncio.create_task(flusher())
        try:
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, Exception):
                    raise outcome
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            flushing.cancel()
            if aborting:
                for conn in conns:
                    conn.abort()
            self.flush()
        while not queue.empty():   # queued when the run stopped at once
            if (env := queue.get_nowait()) is not None:
                unsent.append(env)
        if unsent:
            with self.app.store.transaction():
                for env in unsent:
                    self.app.store.drop_intent(env.meta["ledger_id"])
        cut_short = self.settle_stale() if aborting else 0
        if stop.is_set():
            self.result.defer("interrupted" if self.result.interrupted else "stopped",
                              len(unsent) + len(chosen) - taken + cut_short)

    def count(self, delivery: Delivery, stop: asyncio.Event) -> None:
        if delivery.outcome is Outcome.SENT:
            self.consecutive_failures = 0
            return
        self.consecutive_failures += 1
        if self.consecutive_failures >= STOP_AFTER_FAILURES and not stop.is_set():
            stop.set()
            self.result.stopped = (
                f"stopped after {STOP_AFTER_FAILURES} failures in a row (last: {delivery.error}); "
                "the rest were not sent and stay due. Check the SMTP server, then run again.")

    def dry_report(self, chosen: list[_Due]) -> list[_Due]:
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


def lease_for(config: Config) -> tuple[str, str | None]:
    """The `send` lease and whose dead intents this run settles. On a team's PostgreSQL each
    rep has an own lease (their hand-over log is in their own folder), so the reps send at
    once and each settles only their own intents; on a SQLite file, shared or not, the
    senders take turns (one file, one log, one write lock anyway)."""
    if config.store_url:
        return f"send:{config.team.rep}", config.team.rep
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
        store.acquire_lock(run.lease, owner=iso(started), now=started, until=started + LEASE)
    try:
        with render.steady():   # a template edited during the run is read by the next one
            _send(run, dry_run=dry_run)
    finally:
        if not dry_run:
            store.release_lock(run.lease)
    return run.result


def _send(run: _Run, *, dry_run: bool) -> None:
    """Settle dead intents, create due call tasks, send due emails, then the steps after them."""
    app, store = run.app, run.app.store
    run.settle_stale()   # a dry run predicts the settlement the real run will write
    rows = store.send_candidates(rep=app.config.team.rep)
    actions, emails = run.plan(rows)
    run.load_prospects(a.enrollment["prospect_id"] for a in actions)
    run.act(actions)
    chosen = run.choose(emails)
    run.total = len(chosen)
    if dry_run:
        run.load_prospects(item.enrollment["prospect_id"] for item in chosen)
        # Only the steps after emails that render: the real run goes no further on the others.
        after = [(item.enrollment, item.step.number + 1) for item in run.dry_report(chosen)]
    else:
        if chosen:
            asyncio.run(run.deliver(chosen))
        run.act(run.follow_ups, run.follow_blocked)   # those delivery did not get to
        rest = sorted((item.enrollment for item in chosen
                       if item.enrollment["id"] not in run.followed), key=lambda e: e["id"])
        steps = store.open_next_steps([e["id"] for e in rest])
        after = [(e, steps[e["id"]]) for e in rest if e["id"] in steps]
    # Steps right after this run's emails (a day-0 call after the day-0 email) are due now.
    later: list[_Action] = []
    for row, start in after:
        run.walk(row, app.config.sequences[row["sequence"]], start, later)
    run.act(later, run.follow_blocked)


def preview(app: App, email: str, *, step: int | None = None) -> tuple[bytes, str]:
    """The exact bytes the enrollment's next step (or step `step`) would send, or a call
    step's script, and which step, template and A/B variant made them. The Message-ID and Date
    are fresh each time."""
    from .lifecycle import require_prospect

    prospect = require_prospect(app, email)
    enrollments = app.store.enrollments(prospect.id)
    open_ = [e for e in enrollments if e["state"] in ("active", "paused")]
    if prospect.suppressed:
        raise OutreachError(f"{prospect.email} is suppressed: nothing will ever be sent to it")
    if not open_:
        if enrollments:
            last = enrollments[-1]
            raise OutreachError(f"{prospect.email}: its {last['sequence']} sequence ended "
                                f"({last['state']}), so nothing would be sent")
        raise OutreachError(f"{prospect.email} is not enrolled in a sequence: run "
                            "`outreach enroll SEQUENCE` first")
    enrollment = open_[-1]
    sequence = app.config.sequences.get(enrollment["sequence"])
    if sequence is None:
        raise OutreachError(f'{prospect.email}: sequence "{enrollment["sequence"]}" is not in '
                            f"{app.config.path.name}")
    number = enrollment["next_step"] if step is None else step
    if number >= len(sequence.steps):
        raise OutreachError(f"{prospect.email}: sequence {sequence.name} has steps 0-"
                            f"{len(sequence.steps) - 1}; pass --step N")
    chosen = sequence.steps[number]
    where = f"step {number} of {sequence.name}"
    if chosen.kind == "call":
        script = render.render_call_script(app, prospect, enrollment, chosen)
        return script.encode("utf-8"), f"{where}: call script templates/{chosen.templates[0]}.txt"
    if chosen.kind == "recycle":
        raise OutreachError(f"{prospect.email}: step {number} of {sequence.name} recycles the "
                            "lead; it sends nothing")
    rendered = render.render_email(app, prospect, enrollment, chosen)
    handed = app.store.handed_over(enrollment["id"])
    previous = [m for m in handed if m["step"] < number]
    thread = render.thread_for(previous) if chosen.thread else None
    # From the mailbox this enrollment's mail went from (else the first of [[mailboxes]]).
    configs = mailboxes.views(app.config)
    box = next((m["mailbox"] for m in handed if m.get("mailbox") in configs),
               app.config.mailboxes[0].email)
    config = configs[box]
    now = app.now()
    message_id = render.new_message_id(config.sender.domain, enrollment_id=enrollment["id"],
                                       step=number, now=now)
    data = render.compose(config, prospect, rendered, message_id=message_id, now=now,
                          thread=thread,
                          unsubscribe_secret=app.store.unsubscribe_secret()).data
    variant = f", A/B variant {rendered.variant} of {len(chosen.templates)}" \
        if len(chosen.templates) > 1 else ""
    sender = f", from {box}" if len(configs) > 1 else ""
    return data, f"{where}: templates/{rendered.template}.txt{variant}{sender}"


def resolve(app: App, email: str, *, delivered: bool) -> list[dict[str, Any]]:
    """Settle a prospect's messages whose fate `send` could not learn, once the user has
    checked the Sent folder or the server's log; recorded as a `send_resolved` event.
    Delivered: recorded sent, and the sequence goes on. Not delivered: the step is due again
    (unless the enrollment has ended or moved past it since)."""
    from .lifecycle import require_prospect

    prospect = require_prospect(app, email)
    store, now = app.store, app.now()
    done: list[dict[str, Any]] = []
    with store.transaction():
        rows = store.unknown_messages(prospect.id)
        if not rows:
            raise OutreachError(f"{prospect.email}: no message with an unknown delivery, so "
                                f"nothing to resolve (see `outreach status {prospect.email}`)")
        for row in rows:
            if delivered:
                store.set_message_status(row["id"], "sent",
                                         at=datetime.fromisoformat(row["created_at"]))
                outcome = "recorded as delivered; the sequence goes on"
            elif row["state"] in ("active", "paused") and row["next_step"] == row["step"] + 1:
                store.drop_message(row["id"])
                store.rewind_enrollment(row["enrollment_id"], to_step=row["step"])
                outcome = "recorded as not delivered; the next `outreach send` sends it again"
            else:
                store.set_message_status(row["id"], "failed",
                                         error="not delivered (resolved by hand)")
                outcome = ("recorded as not delivered; its sequence has ended or moved on, "
                           "so it is not sent again")
            store.add_event("send_resolved", at=now, prospect_id=prospect.id,
                            enrollment_id=row["enrollment_id"], step=row["step"],
                            message_id=row["message_id"], delivered=delivered)
            done.append({"email": prospect.email, "step": row["step"],
                         "message_id": row["message_id"], "delivered": delivered,
                         "outcome": outcome})
    return done
