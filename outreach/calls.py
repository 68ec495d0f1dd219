"""Call tasks and outcomes: the call list an SDR works in power hours, and what each call did.

`outreach send` creates a task when a call step comes due (`create_task`); `outreach calls`
lists the open ones grouped by persona; `outreach call ID --outcome ...` records the result.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from .app import App
from .clock import iso, local
from .config import Config, Icp, Step
from .errors import OutreachError
from .icp import matching_industry, matching_title
from .models import Prospect

if TYPE_CHECKING:
    from .ics import CalendarItem


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


def _found(row: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A task row read in the transaction that wrote or checked it: it is there."""
    assert row is not None
    return row


def to_task(row: Mapping[str, Any]) -> CallTask:
    done = row["done_at"]
    return CallTask(
        id=row["id"], enrollment_id=row["enrollment_id"], prospect_id=row["prospect_id"],
        step=row["step"], template=row["template"], due=datetime.fromisoformat(row["due_at"]),
        script=row["script"], status=row["status"], outcome=row["outcome"], note=row["note"],
        done_at=datetime.fromisoformat(done) if done else None,
    )


@dataclass(frozen=True)
class NewTask:
    """A due call step with its rendered script, for create_tasks."""

    enrollment_id: int
    prospect: Prospect
    step: Step
    due: datetime
    script: str


def create_task(app: App, *, enrollment_id: int, prospect: Prospect, step: Step, due: datetime,
                script: str) -> CallTask:
    """Record the call task of a due call step and tell plugins; idempotent per (enrollment,
    step): a task that already exists is returned unchanged and nothing fires again."""
    created = create_tasks(app, [NewTask(enrollment_id, prospect, step, due, script)])
    if created:
        return created[0]
    return to_task(_found(app.store.call_task_for(enrollment_id, step.number)))


def create_tasks(app: App, new: Sequence[NewTask]) -> list[CallTask]:
    """create_task for many due call steps in one transaction and a few statements (what
    `outreach send` does per batch); returns the tasks created. A (enrollment, step) that
    already has a task is left alone and fires nothing; a prospect with a bad number gets
    its task closed at once, and no hook."""
    store = app.store
    now = app.now()
    rows: dict[tuple[int, int], NewTask] = {}
    for t in new:
        rows.setdefault((t.enrollment_id, t.step.number), t)   # the first one wins
    created: list[CallTask] = []
    fire: list[tuple[Prospect, CallTask]] = []
    with store.transaction():
        # One statement both checks and inserts: UNIQUE (enrollment_id, step) decides.
        ids = store.insert_call_tasks([
            (t.enrollment_id, t.prospect.id, t.step.number, _template(t.step), iso(t.due),
             t.script) for t in rows.values()])
        events: list[tuple[int, int, dict[str, Any]]] = []
        for key, t in rows.items():
            task_id = ids.get(key)
            if task_id is None:
                continue
            if t.prospect.phone_bad:  # `bad-number` skips the prospect's later calls
                store.finish_call_task(task_id, status="closed", outcome=None,
                                       note="bad number", at=now)
                created.append(to_task(_found(store.call_task(task_id))))
                continue
            due_at = iso(t.due)
            events.append((t.prospect.id, t.enrollment_id,
                           {"task_id": task_id, "step": t.step.number, "due": due_at}))
            # The row as written (no read back): what to_task would make of it.
            task = CallTask(id=task_id, enrollment_id=t.enrollment_id,
                            prospect_id=t.prospect.id, step=t.step.number,
                            template=_template(t.step), due=datetime.fromisoformat(due_at),
                            script=t.script)
            created.append(task)
            fire.append((t.prospect, task))
        store.add_events("call_task", events, at=now)
    for prospect, task in fire:
        app.fire("call_task_created", prospect=prospect, task=task)
    return created


def _template(step: Step) -> str:
    return step.templates[0] if step.templates else ""


# -- the call list -----------------------------------------------------------------------

OUTCOMES = ("no-answer", "voicemail", "connected", "meeting", "not-interested", "bad-number")
POWER_HOUR = 25  # dials in one focused hour (Predictable Revenue: 20-25)
_TITLE_WORDS = {
    "chief financial officer": "cfo", "chief executive officer": "ceo",
    "chief operating officer": "coo", "chief technology officer": "cto",
    "chief information officer": "cio", "chief marketing officer": "cmo",
    "chief revenue officer": "cro", "vice president": "vp", "vice-president": "vp",
    "senior": "sr", "sr.": "sr", "&": "and",
}



def persona(title: str, industry: str, icp: Icp | None = None) -> tuple[str, str]:
    """The power-hour group of a prospect: normalised (title, industry), lower-case.

    "Chief Financial Officer" and "CFO" are one persona; so are "VP, Finance" and "vp finance".
    With the prospect's ICP, a title is grouped the way the ICP reads it: "Acting CFO, EMEA"
    matches its "CFO", so it is a CFO.
    """
    matched = matching_title(title, icp.titles) if icp else None
    return _normalised(matched or title), " ".join(industry.lower().split())


def _normalised(title: str) -> str:
    text = " ".join(title.lower().replace(",", " ").split())
    for long, short in _TITLE_WORDS.items():
        text = f" {text} ".replace(f" {long} ", f" {short} ").strip()
    return " ".join(w for w in text.split() if w not in ("of", "the"))


def persona_label(title: str, industry: str, icp: Icp | None = None) -> str:
    """How a persona is shown: the ICP's own words where it names the title or industry, else
    as the prospect's data writes them ("Acting CFO, EMEA", never "Acting Cfo Emea")."""
    shown_title = " ".join(title.split())
    shown_industry = " ".join(industry.split())
    if icp:
        matched = matching_title(title, icp.titles)
        if matched:
            key = _normalised(matched)
            shown_title = next(t for t in icp.titles if _normalised(t) == key)
        shown_industry = matching_industry(industry, icp.industries) or shown_industry
    return f"{shown_title or '(no title)'} · {shown_industry or '(no industry)'}"


def sequence_icp(config: Config, sequence: str) -> Icp | None:
    """The ICP a sequence enrolls from, if the config still has both."""
    found = config.sequences.get(sequence)
    return config.icps.get(found.icp) if found and found.icp else None


@dataclass(frozen=True)
class CallItem:
    """An open task with its prospect, as `outreach calls` lists it."""

    task: CallTask
    prospect: Prospect
    persona: tuple[str, str]
    sequence: str
    label: str = ""          # the persona as shown (persona_label)

    def as_dict(self, zone: tzinfo) -> dict[str, Any]:
        p = self.prospect
        return {
            "id": self.task.id, "email": p.email, "name": p.name, "company": p.company,
            "title": p.title, "industry": p.industry, "phone": p.phone,
            "due": self.task.due.astimezone(zone).isoformat(), "script": self.task.script,
            "persona": self.label, "sequence": self.sequence,
            "step": self.task.step, "template": self.task.template,
        }


def call_list(app: App, *, include_later: bool = False) -> list[list[CallItem]]:
    """Open call tasks due by now (every open one with `include_later`), grouped by persona:
    largest group first, each group by due time. Tasks whose prospect has since replied, been
    suppressed or flagged with a bad number are closed first."""
    sweep(app)
    now = app.now()
    groups: dict[tuple[str, str], list[CallItem]] = {}
    for row in app.store.open_call_tasks(due_by=None if include_later else now):
        task = to_task(row)
        prospect = app.store.prospect_by_id(task.prospect_id)
        enrollment = app.store.enrollment(task.enrollment_id)
        if prospect is None or enrollment is None:
            continue
        if enrollment.get("rep") not in (None, app.config.team.rep):
            continue  # another rep's call (team mode): on their list
        paused = enrollment["paused_until"]
        if enrollment["state"] == "paused" and paused and paused > iso(now):
            continue  # out of office: call when they are back
        icp = sequence_icp(app.config, enrollment["sequence"])
        key = persona(prospect.title, prospect.industry, icp)
        group = groups.setdefault(key, [])
        # A group is shown as its first member reads it (one label per group).
        label = group[0].label if group else persona_label(prospect.title, prospect.industry, icp)
        group.append(CallItem(task, prospect, key, enrollment["sequence"], label))
    return sorted(groups.values(), key=lambda g: (-len(g), g[0].task.due, g[0].persona))


def power_hour(groups: list[list[CallItem]], *, size: int = POWER_HOUR) -> list[list[CallItem]]:
    """The next power hour: up to `size` calls of the largest persona group."""
    return [groups[0][:size]] if groups else []


def sweep(app: App) -> list[CallTask]:
    """Close open tasks that no longer make sense: the prospect replied, was suppressed, won,
    or has a bad number, or the sequence ended. Plugins hear `call_task_closed`."""
    now = app.now()
    closed: list[tuple[CallTask, Prospect]] = []
    with app.store.transaction():
        for row in app.store.open_call_tasks():
            prospect = app.store.prospect_by_id(row["prospect_id"])
            enrollment = app.store.enrollment(row["enrollment_id"])
            if prospect is None or enrollment is None:
                continue
            reason = _close_reason(prospect, enrollment["state"])
            if reason and app.store.finish_call_task(row["id"], status="closed", outcome=None,
                                                     note=reason, at=now):
                closed.append((to_task(_found(app.store.call_task(row["id"]))), prospect))
    for task, prospect in closed:
        app.fire("call_task_closed", prospect=prospect, task=task)
    return [task for task, _ in closed]


def _close_reason(prospect: Prospect, state: str) -> str | None:
    if prospect.suppressed:
        return "suppressed"
    if prospect.phone_bad:
        return "bad number"
    if state not in ("active", "paused", "completed"):  # a finished sequence's last call
        return f"sequence {state}"                      # is still worth making
    return None


def announce_closed(app: App, task_ids: list[int]) -> None:
    """Tell plugins about tasks closed elsewhere (`mark`, `suppress`), after the commit."""
    for task_id in task_ids:
        row = app.store.call_task(task_id)
        prospect = app.store.prospect_by_id(row["prospect_id"]) if row else None
        if row is not None and prospect is not None and row["status"] != "open":
            app.fire("call_task_closed", prospect=prospect, task=to_task(row))


# -- output formats ----------------------------------------------------------------------

CSV_COLUMNS = ("id", "due", "name", "email", "phone", "company", "title", "industry",
               "persona", "sequence", "step", "script")


def to_csv(items: list[CallItem], zone: tzinfo) -> str:
    """One row per call with a header row; CRLF line endings (RFC 4180), as spreadsheets like."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for item in items:
        writer.writerow(item.as_dict(zone))
    return out.getvalue()


def to_ics(items: list[CallItem], *, domain: str, now: datetime, minutes: int = 5) -> str:
    """An RFC 5545 calendar with one short VEVENT per call at its due time; the UID is stable
    per task, so re-importing updates an entry instead of duplicating it."""
    from .ics import calendar

    return calendar((calendar_item(item.task, item.prospect, domain=domain, minutes=minutes,
                                   persona=item.label)
                     for item in items), now=now, name="outreach calls")


def calendar_item(task: CallTask, prospect: Prospect, *, domain: str,
                  minutes: int = 5, persona: str | None = None) -> CalendarItem:
    """A call as a calendar entry: who, phone, how to record it, then the script."""
    from .ics import CalendarItem

    facts = [f"Phone: {prospect.phone or '(none)'}", f"Email: {prospect.email}"]
    if prospect.title:
        facts.append(f"Title: {prospect.title}")
    facts.append(f"Record it: outreach call {task.id} --outcome OUTCOME")
    return CalendarItem(
        uid=task_uid(task.id, domain),
        start=task.due,
        minutes=minutes,
        summary=f"Call {prospect.name or prospect.email}"
                + (f" ({prospect.company})" if prospect.company else ""),
        description="\n".join([*facts, "", task.script]),
        categories=persona or persona_label(prospect.title, prospect.industry),
    )


def task_uid(task_id: int, domain: str) -> str:
    return f"call-task-{task_id}@{domain}"


def table_lines(groups: list[list[CallItem]], zone: tzinfo) -> list[str]:
    """The call list for a terminal: a heading per persona, then each call and its script."""
    lines: list[str] = []
    for group in groups:
        count = len(group)
        lines.append(f"{group[0].label}: {count} call{'s' * (count != 1)}")
        for item in group:
            p = item.prospect
            due = local(item.task.due, zone)
            who = ", ".join(x for x in (p.name or p.email, p.title, p.company) if x)
            lines.append(f"  #{item.task.id:<4} {due}  {who}  {p.phone or '(no phone)'}")
            lines += [f"        {line}" for line in item.task.script.splitlines()]
        lines.append("")
    return lines


# -- outcomes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallResult:
    task: CallTask
    prospect: Prospect
    outcome: str
    closed: tuple[int, ...] = ()  # other tasks of this prospect closed by the outcome

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.task.id, "email": self.prospect.email, "outcome": self.outcome,
                "note": self.task.note, "stage": self.prospect.stage,
                "closed_tasks": list(self.closed)}


def record_call(app: App, task_id: int, *, outcome: str, note: str | None = None) -> CallResult:
    """`outreach call ID --outcome ...`: record what the call did and apply its stage rules.

    `meeting` ends the sequence as won (stage opportunity); `not-interested` stops it;
    `bad-number` flags the phone and closes the prospect's other call tasks; the others are
    recorded on the timeline.
    """
    from .lifecycle import mark  # lifecycle imports this module: import at call time

    if outcome not in OUTCOMES:
        raise OutreachError(f'unknown outcome "{outcome}": use one of {", ".join(OUTCOMES)}')
    row = app.store.call_task(task_id)
    if row is None:
        raise OutreachError(f"call task {task_id}: no such task; list them with "
                            "`outreach calls --all`")
    if row["status"] == "done":
        raise OutreachError(f"call task {task_id}: already recorded as {row['outcome']}; "
                            "to move the prospect, use `outreach mark EMAIL STAGE`")
    now = app.now()
    others: list[int] = []
    with app.store.transaction():
        # A task closed automatically (they replied meanwhile) can still record a real call.
        app.store.record_call_outcome(task_id, outcome=outcome, note=note, at=now)
        app.store.add_event("call", at=now, prospect_id=row["prospect_id"],
                            enrollment_id=row["enrollment_id"], task_id=task_id,
                            outcome=outcome, note=note or "")
        if outcome in ("connected", "meeting"):  # a conversation: the account is not dormant
            app.store.touch_activity(row["prospect_id"], at=now)
        if outcome == "bad-number":
            app.store.flag_bad_phone(row["prospect_id"], at=now)
            others = [r["id"] for r in app.store.open_call_tasks()
                      if r["prospect_id"] == row["prospect_id"]]
            for other in others:
                app.store.finish_call_task(other, status="closed", outcome=None,
                                           note="bad number", at=now)
    prospect = app.store.prospect_by_id(row["prospect_id"])
    assert prospect is not None
    task = to_task(_found(app.store.call_task(task_id)))
    app.fire("call_task_closed", prospect=prospect, task=task)
    announce_closed(app, others)
    if outcome in ("meeting", "not-interested"):
        prospect = mark(app, prospect.email, outcome, cause=f"call {outcome}")
    return CallResult(task=task, prospect=prospect, outcome=outcome, closed=tuple(others))
