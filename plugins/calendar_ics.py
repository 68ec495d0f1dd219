"""calendar_ics: keep an .ics calendar of open call tasks, updated as tasks come and go.

Enable it by copying this file into your campaign's plugins/ folder. Settings (optional):

    [plugins.calendar_ics]
    path = "calls.ics"        # relative to outreach.toml; this is the default
    minutes = 5               # length of each call slot

Subscribe to the file (or re-import it) in your calendar app: each task is a short event at
its due time with the phone number and the script. The first command after you enable it
writes every open task; a task leaves the file when its call is recorded (`outreach call`),
or the prospect replies, wins, is suppressed or has a bad number. The UIDs are those of
`outreach calls --format ics` (`call-task-ID@` your sender domain), so importing both never
duplicates an event. The open tasks are kept beside it in `calls.ics.json`, so the file is
rewritten whole; every command checks them against the call list first and catches up.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from outreach import campaign_dir, clock, hookimpl, settings
from outreach.calls import calendar_item
from outreach.ics import CalendarItem, calendar

NAME = "calendar_ics"
ENDING_KINDS = {"reply", "bounce", "unsubscribe"}  # `outreach poll` closes their tasks
_campaign: dict[str, str] = {}  # the open campaign's sender `domain`, for the UIDs


def paths() -> tuple[Path, Path]:
    ics = Path(settings(NAME).get("path") or campaign_dir() / "calls.ics")
    return ics, ics.with_name(ics.name + ".json")


def load() -> dict[str, dict[str, Any]]:
    """The kept tasks; none when the file is missing or damaged (the call list rebuilds it)."""
    try:
        tasks = json.loads(paths()[1].read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return tasks if isinstance(tasks, dict) else {}


def save(tasks: dict[str, dict[str, Any]]) -> None:
    """Write the state and the calendar each through a temporary file: never half-written."""
    ics, state = paths()
    ics.parent.mkdir(parents=True, exist_ok=True)
    items = [CalendarItem(**{**{k: v for k, v in t.items() if k != "email"},
                             "start": datetime.fromisoformat(t["start"])})
             for t in sorted(tasks.values(), key=lambda t: (t["start"], t["uid"]))]
    _replace(state, json.dumps(tasks, indent=1, ensure_ascii=False))
    _replace(ics, calendar(items, now=clock.now(), name="outreach calls"))


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode("utf-8"))
    os.replace(tmp, path)


def entry(prospect: Any, task: Any) -> dict[str, Any]:
    """One task as kept in the state file: its calendar item plus whose it is."""
    item = calendar_item(task, prospect, domain=_campaign["domain"],
                         minutes=int(settings(NAME).get("minutes", 5)))
    return {**asdict(item), "start": item.start.isoformat(), "email": prospect.email}


@hookimpl
def campaign_opened(campaign: Any) -> None:
    """Catch up with the call list: all open tasks on the first run, and whatever changed
    while the plugin was not loaded."""
    _campaign["domain"] = campaign.sender.domain
    tasks = {str(task.id): entry(prospect, task)
             for prospect, task in campaign.open_call_tasks()}
    if tasks != load() or not paths()[0].exists():
        save(tasks)


@hookimpl
def plugin_status() -> str | None:
    ics = paths()[0]
    if not ics.exists():
        return f"{ics} is written by the next command that opens the campaign"
    count = len(load())
    return f"{count} open call{'s' * (count != 1)} in {ics}"


@hookimpl
def call_task_created(prospect: Any, task: Any) -> None:
    tasks = load()
    tasks[str(task.id)] = entry(prospect, task)
    save(tasks)


@hookimpl
def call_task_closed(prospect: Any, task: Any) -> None:
    tasks = load()
    if tasks.pop(str(task.id), None) is not None:
        save(tasks)


@hookimpl
def reply_received(prospect: Any, reply: Any, kind: str) -> None:
    if kind not in ENDING_KINDS:
        return
    tasks = load()
    kept = {k: t for k, t in tasks.items() if t["email"] != prospect.email}
    if len(kept) != len(tasks):
        save(kept)
