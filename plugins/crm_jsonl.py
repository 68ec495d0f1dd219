"""crm_jsonl: append every event as one JSON line to a file, the simplest CRM sync.

Enable it by copying this file into your campaign's plugins/ folder. Settings (optional):

    [plugins.crm_jsonl]
    path = "events.jsonl"     # relative to outreach.toml; this is the default

Each line is {"event": ..., "at": ..., "email": ..., "prospect": {...}, ...}: `tail -f` it,
or load it into a spreadsheet or a CRM import job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from outreach import campaign_dir, hookimpl, settings
from outreach import event_record as record

NAME = "crm_jsonl"


def target() -> Path:
    return Path(settings(NAME).get("path") or campaign_dir() / "events.jsonl")


def append(doc: dict[str, Any]) -> None:
    """One write per line with O_APPEND, so lines from concurrent runs never interleave."""
    path = target()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(doc, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@hookimpl
def prospect_imported(prospect: Any) -> None:
    append(record("prospect_imported", prospect=prospect))


@hookimpl
def message_sent(prospect: Any, message: Any) -> None:
    append(record("message_sent", prospect=prospect, message=message))


@hookimpl
def reply_received(prospect: Any, reply: Any, kind: str) -> None:
    append(record("reply_received", prospect=prospect, kind=kind, reply=reply))


@hookimpl
def call_task_created(prospect: Any, task: Any) -> None:
    append(record("call_task_created", prospect=prospect, task=task))


@hookimpl
def call_task_closed(prospect: Any, task: Any) -> None:
    append(record("call_task_closed", prospect=prospect, task=task))


@hookimpl
def stage_changed(prospect: Any, old: str, new: str) -> None:
    append(record("stage_changed", prospect=prospect, old=old, new=new))
