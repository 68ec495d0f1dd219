"""The one place that reads the clock. OUTREACH_NOW makes every command act as if it were then."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, tzinfo
from functools import lru_cache

from .errors import OutreachError


def now() -> datetime:
    """The current moment as an aware datetime, or OUTREACH_NOW when it is set."""
    raw = os.environ.get("OUTREACH_NOW", "").strip()
    if not raw:
        return datetime.now(UTC)
    return parse_now(raw)


def wall_now() -> datetime:
    """The real time, whatever OUTREACH_NOW says: for leases between live processes only.
    A run planned "as of" another day must not make a running sender's lease look expired."""
    return datetime.now(UTC)


def parse_now(raw: str) -> datetime:
    """Parse an OUTREACH_NOW value; it must carry an offset so it names one instant."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise OutreachError(
            f'OUTREACH_NOW "{raw}" is not an ISO 8601 timestamp: '
            'write it like "2026-03-02T08:15:00-06:00"'
        ) from None
    if value.tzinfo is None:
        raise OutreachError(
            f'OUTREACH_NOW "{raw}" has no UTC offset: add one, e.g. "{raw}+00:00" or "{raw}-06:00"'
        )
    if not 1970 <= value.year <= 2999:  # date arithmetic (windows, cooldowns) must not overflow
        raise OutreachError(f'OUTREACH_NOW "{raw}" is out of range: use a year from 1970 to 2999')
    return value


@lru_cache(maxsize=256)  # a poll or send writes the same few instants thousands of times
def iso(moment: datetime) -> str:
    """How instants are stored: UTC, seconds precision, sortable as text."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


_ISO_INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)$")


def local(moment: datetime, zone: tzinfo, *, year: bool = False) -> str:
    """How every human-facing line shows an instant: in the sender's zone, `Thu 05 Mar 07:30`
    (`Thu 05 Mar 2026 07:30` where a timeline spans years). --json keeps ISO with offset."""
    return moment.astimezone(zone).strftime("%a %d %b %Y %H:%M" if year else "%a %d %b %H:%M")


def local_text(value: object, zone: tzinfo, *, year: bool = False) -> object:
    """A stored ISO instant (text with an offset) as `local`; anything else unchanged."""
    if isinstance(value, str) and _ISO_INSTANT.match(value):
        return local(datetime.fromisoformat(value), zone, year=year)
    return value
