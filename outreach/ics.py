"""A minimal RFC 5545 writer: text escaping, 75-octet line folding, one VEVENT per call.

Writing a calendar needs three rules (escape TEXT, fold long lines, CRLF endings), so it is
done here rather than with a runtime dependency; tests check the output with `icalendar`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

PRODID = "-//outreach//call list//EN"


@dataclass(frozen=True)
class CalendarItem:
    """One call as a calendar entry: a short event at its due time."""

    uid: str
    start: datetime
    minutes: int
    summary: str
    description: str
    categories: str = ""


def escape(text: str) -> str:
    """Escape a TEXT value (RFC 5545 3.3.11): backslash, semicolon, comma, newline."""
    text = text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return text.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")


def fold(line: str) -> str:
    """Fold a content line to at most 75 octets per line (RFC 5545 3.1), never inside a
    UTF-8 character; continuation lines start with one space."""
    out: list[str] = []
    current: list[str] = []
    size, limit = 0, 75
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            out.append("".join(current))
            current, size, limit = [], 0, 74  # the leading space takes one octet
        current.append(char)
        size += width
    out.append("".join(current))
    return "\r\n ".join(out)


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def calendar(items: Iterable[CalendarItem], *, now: datetime, name: str = "Calls") -> str:
    """A VCALENDAR text with one VEVENT per item, CRLF line endings."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:{PRODID}", "CALSCALE:GREGORIAN",
             "METHOD:PUBLISH", f"X-WR-CALNAME:{escape(name)}"]
    for item in items:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{item.uid}",
            f"DTSTAMP:{stamp(now)}",
            f"DTSTART:{stamp(item.start)}",
            f"DURATION:PT{item.minutes}M",
            f"SUMMARY:{escape(item.summary)}",
            f"DESCRIPTION:{escape(item.description)}",
        ]
        if item.categories:
            lines.append(f"CATEGORIES:{escape(item.categories)}")
        lines += ["STATUS:CONFIRMED", "TRANSP:TRANSPARENT", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return "".join(fold(line) + "\r\n" for line in lines)
