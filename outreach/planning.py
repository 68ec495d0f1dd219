"""What a `send` run does, decided from data: which steps of the open enrollments are due
(`plan`, `walk`), and which due emails go now and from which mailbox (`choose`: windows, the
rep's daily and per-run limits, each company's day across the team, each mailbox's day and
ramp-up).

Nothing here reads the database or the clock: the run hands in the rows, `now` and today's
ledger counts (`Counts`), and gets back decisions; what waits is counted on the run's result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

from .clock import iso
from .config import Config, Mailbox, Sequence, Step
from .schedule import allowance, due_at, next_window, window_open, zone_for
from .store import Record, domain_of
from .team import MAILBOX_LIMIT, NO_MAILBOX, assign_mailboxes, domain_cap, ramp_limit

if TYPE_CHECKING:
    from .send import SendResult

COMPLETE_AFTER_DAYS = 14     # days after its last step a sequence without recycle completes
DOMAIN_CAP = "max_emails_per_domain_per_day"   # why a due email waits for its company's cap
T = TypeVar("T")


@dataclass
class Due:
    """A due email step."""

    enrollment: Record
    step: Step
    due: datetime
    zone: ZoneInfo
    mailbox: str = ""    # the address it goes from, chosen by `choose`


@dataclass
class Action:
    """A due call, recycle or end-of-sequence step (no message)."""

    enrollment: Record
    step: Step | None        # None: the sequence has no steps left
    due: datetime


@dataclass(frozen=True)
class Counts:
    """Today's ledger, as the limits read it (messages handed over or about to be)."""

    rep: int                            # the rep's (or the solo campaign's): daily_limit
    domains: Mapping[str, int]          # per company domain, the whole team's
    mailboxes: Mapping[str, int]        # per mailbox
    first_used: Mapping[str, str]       # mailbox -> when it first sent (ISO): its ramp's day 0


def walk(enrollment: Record, sequence: Sequence, start: int, actions: list[Action], *,
         config: Config, now: datetime) -> Due | None:
    """From step `start`, collect the due non-email steps and return the due email, if any."""
    zone = zone_for(enrollment["prospect_timezone"], config.sender.timezone,
                    config.sending.window_timezone)
    started = datetime.fromisoformat(enrollment["started_at"])
    for step in sequence.steps[start:]:
        due = due_at(started, step.day, zone)
        if due > now:
            return None
        if step.kind == "email":
            return Due(enrollment, step, due, zone)
        actions.append(Action(enrollment, step, due))
        if step.kind == "recycle":
            return None
    # Past its last step the sequence stays open a while for late replies, then completes
    # (a completed prospect may be enrolled again, so not the moment the last email goes).
    if due_at(started, sequence.steps[-1].day + COMPLETE_AFTER_DAYS, zone) <= now:
        actions.append(Action(enrollment, None, now))
    return None


def plan(rows: list[Record], *, config: Config, now: datetime, unresolved: Mapping[int, int],
         settled: Mapping[int, int], busy: Collection[int], result: SendResult
         ) -> tuple[list[Action], list[Due]]:
    """The due steps of these open enrollments: actions, and emails. `unresolved`: enrollment
    -> step whose delivery is unknown (held until resolved); `settled`: enrollment -> the step
    a dead run's settlement moves it to (a dry run only predicts it); `busy`: enrollments
    another live sender has a message on the wire for (theirs to go on with)."""
    actions: list[Action] = []
    emails: list[Due] = []
    stamp = iso(now)
    for row in rows:
        sequence = config.sequences.get(row["sequence"])
        if sequence is None:
            error = (f'sequence "{row["sequence"]}" is no longer in '
                     f"{config.path.name}; restore it or stop the enrollment")
            result.errors.append({"email": row["email"], "step": row["next_step"],
                                  "error": error})
            result.hold(row["email"], row["next_step"], error)
            continue
        if row["suppressed"] or (row["paused_until"] and row["paused_until"] > stamp) or \
                row["id"] in busy:
            continue
        start = max(row["next_step"], settled.get(row["id"], 0))
        if row["id"] in unresolved:
            due = walk(row, sequence, start, [], config=config, now=now)
            if due is not None:
                result.hold(row["email"], due.step.number, waiting(row, unresolved[row["id"]]))
            continue
        due = walk(row, sequence, start, actions, config=config, now=now)
        if due is not None:
            emails.append(due)
    return actions, emails


def waiting(row: Record, step: int) -> str:
    return (f"waits until step {step}'s unknown delivery is resolved: look for it in your "
            f"Sent folder or the server's log, then `outreach resolve {row['email']} "
            "--delivered` (or `--not-delivered` to send it again)")


def choose(emails: list[Due], *, config: Config, now: datetime, counts: Counts,
           day: tuple[datetime, datetime], ignore_window: bool, limit: int | None,
           result: SendResult) -> list[Due]:
    """Apply windows and limits (the rep's day and run, each company's day across the team,
    each mailbox's day and ramp-up) and give each message its mailbox; the oldest due go
    first, the rest are deferred. `day` is the sender's day, [start, end)."""
    sending = config.sending
    ready: list[Due] = []
    waits: list[datetime] = []
    for item in emails:
        boxes = _boxes(item, config)
        if ignore_window or any(_open(item, box, config, now) for box in boxes):
            ready.append(item)
            continue
        opens = min(filter(None, (next_window(now, windows=_windows(box, config),
                                              days=sending.days, zone=item.zone)
                                  for box in boxes)), default=None)
        result.defer("window", until=opens)
        if opens is not None:
            waits.append(opens)
    result.next_window = min(waits) if waits else None
    if ready or ignore_window:
        result.window_open = True
    elif not emails:
        result.window_open = window_open(now, windows=sending.windows, days=sending.days,
                                         zone=ZoneInfo(config.sender.timezone))
    end = day[1]
    room, cap = allowance(daily_limit=sending.daily_limit, sent_today=counts.rep,
                          per_run_limit=sending.per_run_limit, limit=limit)
    ready.sort(key=lambda d: (d.due, d.enrollment["id"]))
    ready = cap_domains(ready, config=config, end=end, sent_today=counts.domains,
                        result=result)
    chosen, waits_for_box, rest = assign_mailboxes(
        ready, mailboxes=[box.email for box in config.mailboxes],
        sticky=lambda item: sticky(item, config),
        room=mailbox_room(config, now, counts), total=room,
        is_open=lambda item, m: ignore_window or _open(item, config.mailbox(m), config, now))
    for item, reason in waits_for_box:
        if reason == NO_MAILBOX:
            error = (f"its first email went from {sticky(item, config)}, which is no longer "
                     f"a [[mailboxes]] entry of {config.path.name}; restore it "
                     "(replies and the thread depend on that address)")
            result.errors.append({"email": item.enrollment["email"],
                                  "step": item.step.number, "error": error})
            result.hold(item.enrollment["email"], item.step.number, error)
        else:
            result.defer(reason, until=after_today(item, end, config))
    if rest:
        result.limited_by = cap
        until = None
        if cap == "daily_limit":  # the rest wait for a window after the sender's day
            after = [after_today(item, end, config) for item in rest]
            until = result.next_window = min(filter(None, after), default=None)
        result.defer(cap, len(rest), until=until)
    for item, box in chosen:
        item.mailbox = box
    return [item for item, _ in chosen]


def within_caps(items: Seq[T], *, counts: Counts, config: Config, now: datetime,
                domain: Callable[[T], str], mailbox: Callable[[T], str]
                ) -> tuple[list[T], list[tuple[T, str]]]:
    """Keep items, in order, while the rep's daily limit, their mailbox's limit or ramp and
    their company's cap across the team have room, given today's `counts` as the ledger has
    them when the intents are written (other senders' included); the others come back with
    the limit they hit."""
    rep_room = config.sending.daily_limit - counts.rep
    box_room = mailbox_room(config, now, counts)
    domains = Counter(counts.domains)
    cap = config.team.max_emails_per_domain_per_day
    kept: list[T] = []
    held: list[tuple[T, str]] = []
    for item in items:
        d, box = domain(item), mailbox(item)
        if rep_room <= 0:
            held.append((item, "daily_limit"))
        elif domains[d] >= cap:
            held.append((item, DOMAIN_CAP))
        elif box and box_room.get(box, 0) <= 0:
            held.append((item, MAILBOX_LIMIT))
        else:
            rep_room -= 1
            domains[d] += 1
            if box:
                box_room[box] -= 1
            kept.append(item)
    return kept, held


def defer_capped(held: Seq[tuple[Due, str]], *, config: Config, end: datetime,
                 result: SendResult) -> None:
    """Count on the result the due emails `within_caps` held back."""
    for item, why in held:
        until = after_today(item, end, config)
        result.defer(why, until=until)
        if why == "daily_limit":
            result.limited_by = why
        elif why == DOMAIN_CAP:
            d = domain_of(item.enrollment["email"])
            result.capped_domains[d] = result.capped_domains.get(d, 0) + 1
            result.cap_per_domain = config.team.max_emails_per_domain_per_day


def after_today(item: Due, end: datetime, config: Config) -> datetime | None:
    """The first window after the sender's day that ends at `end`."""
    return next_window(end, windows=config.sending.windows, days=config.sending.days,
                       zone=item.zone)


def cap_domains(ready: list[Due], *, config: Config, end: datetime,
                sent_today: Mapping[str, int], result: SendResult) -> list[Due]:
    """Hold back what would pass [team] max_emails_per_domain_per_day today."""
    cap = config.team.max_emails_per_domain_per_day
    kept, held = domain_cap(ready, lambda d: domain_of(d.enrollment["email"]),
                            sent_today=sent_today, cap=cap)
    result.capped_domains = dict(sorted(held.items()))
    result.cap_per_domain = cap
    kept_ids = {id(d) for d in kept}   # by identity: `in kept` compared whole Dues, n² of them
    nexts = {domain_of(d.enrollment["email"]): after_today(d, end, config)
             for d in ready if id(d) not in kept_ids}
    for domain, count in held.items():
        result.defer(DOMAIN_CAP, count, until=nexts.get(domain))
    return kept


def sticky(item: Due, config: Config) -> str | None:
    """The mailbox this prospect's mail comes from: the one that sent its first email
    (mail sent before team mode counts as the first mailbox's)."""
    e = item.enrollment
    if e["sticky_mailbox"]:
        return str(e["sticky_mailbox"])
    return config.mailboxes[0].email if e["mailed"] else None


def _boxes(item: Due, config: Config) -> tuple[Mailbox, ...]:
    own = sticky(item, config)
    box = config.mailbox(own) if own else None
    return (box,) if box else config.mailboxes


def _windows(box: Mailbox | None, config: Config) -> Any:
    return box.windows if box and box.windows else config.sending.windows


def _open(item: Due, box: Mailbox | None, config: Config, now: datetime) -> bool:
    return window_open(now, windows=_windows(box, config), days=config.sending.days,
                       zone=item.zone)


def mailbox_room(config: Config, now: datetime, counts: Counts) -> dict[str, int]:
    """Mailbox -> how many more it may send today (its limit or ramp, less today's)."""
    zone = ZoneInfo(config.sender.timezone)
    today = now.astimezone(zone).date()
    room = {}
    for box in config.mailboxes:
        began = counts.first_used.get(box.email)
        limit = ramp_limit(box, today=today, first_used=datetime.fromisoformat(
            began).astimezone(zone).date() if began else None)
        room[box.email] = max(limit - counts.mailboxes.get(box.email, 0), 0)
    return room
