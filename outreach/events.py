"""Hook arguments as JSON-ready records: what sync plugins (a JSONL file, a webhook) send on.

`record("message_sent", prospect=p, message=m)` gives one flat dict with `event`, `at`,
`email` and the prospect's columns, plus what that hook adds (subject, kind, task, ...).
"""

from __future__ import annotations

from datetime import datetime
from email.message import EmailMessage
from typing import Any

from . import clock


def record(event: str, *, prospect: Any, **details: Any) -> dict[str, Any]:
    """One event as a JSON-ready dict; `at` honours OUTREACH_NOW like every command."""
    doc: dict[str, Any] = {"event": event, "at": clock.iso(clock.now()),
                           "email": prospect.email, "prospect": prospect.as_dict()}
    for key, value in details.items():
        doc.update(_detail(key, value))
    return doc


def _detail(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, EmailMessage):
        return {key: {h.lower().replace("-", "_"): str(value.get(h, ""))
                      for h in ("Message-ID", "Subject", "From", "To", "Date", "In-Reply-To")}}
    if hasattr(value, "as_dict"):  # a call task
        return {key: value.as_dict()}
    if isinstance(value, datetime):
        return {key: value.isoformat()}
    return {key: value}
