"""Pure scheduling decisions: is a window open, when does the next one open, when is a step due,
how many may go now, which A/B variant a prospect gets. Values in, values out.

All moments are aware datetimes; local wall-clock reasoning happens in a `ZoneInfo`, so the
March and November daylight-saving changes fall out of `zoneinfo` rather than arithmetic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from .config import WEEKDAYS, Window, valid_timezone

MIDNIGHT = time(0, 0)


@lru_cache(maxsize=1024)
def zone_for(prospect_timezone: str, sender_timezone: str, mode: str) -> ZoneInfo:
    """The zone a prospect's windows are read in: theirs (else the sender's), or the sender's."""
    if mode == "prospect" and valid_timezone(prospect_timezone):
        return ZoneInfo(prospect_timezone)
    return ZoneInfo(sender_timezone)


def _in_window(t: time, window: Window) -> bool:
    # An end of 24:00 is stored as 00:00: the window runs to the end of the day.
    return window.start <= t and (window.end == MIDNIGHT or t < window.end)


def window_open(moment: datetime, *, windows: Sequence[Window], days: Sequence[str],
                zone: ZoneInfo) -> bool:
    """True when `moment`, read as local time in `zone`, is on a sending day inside a window."""
    local = moment.astimezone(zone)
    if WEEKDAYS[local.weekday()] not in days:
        return False
    wall = local.time().replace(tzinfo=None)
    return any(_in_window(wall, w) for w in windows)


def next_window(moment: datetime, *, windows: Sequence[Window], days: Sequence[str],
                zone: ZoneInfo) -> datetime | None:
    """When sending may next happen: `moment` itself if a window is open, else the next
    window's start (in UTC). None when no day or window is configured."""
    if window_open(moment, windows=windows, days=days, zone=zone):
        return moment.astimezone(UTC)
    local_day = moment.astimezone(zone).date()
    starts = sorted(w.start for w in windows)
    for offset in range(8):
        day = local_day + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in days:
            continue
        for start in starts:
            opens = local_moment(day, start, zone)
            if opens > moment:
                return opens
    return None


def local_moment(day: date, wall: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time; a time skipped by a DST jump maps forward."""
    naive = datetime.combine(day, wall)
    aware = naive.replace(tzinfo=zone)
    # A wall time in the spring-forward gap does not exist; round-tripping through UTC moves
    # it past the gap, which is when a person there would see that time "arrive".
    return aware.astimezone(UTC)


@lru_cache(maxsize=4096)   # a run asks for the same few (enrollment moment, day, zone) a lot
def due_at(started_at: datetime, day: int, zone: ZoneInfo) -> datetime:
    """A step `day` days after enrollment is due from the start of that local calendar day, so
    a day-4 email can go in day 4's morning window whatever the hour of enrollment."""
    start_day = started_at.astimezone(zone).date()
    return local_moment(start_day + timedelta(days=day), MIDNIGHT, zone)


def day_bounds(moment: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC start and end of `moment`'s calendar day in `zone` (23 or 25 hours around DST)."""
    today = moment.astimezone(zone).date()
    return local_moment(today, MIDNIGHT, zone), local_moment(today + timedelta(days=1),
                                                             MIDNIGHT, zone)


def allowance(*, daily_limit: int, sent_today: int, per_run_limit: int,
              limit: int | None = None) -> tuple[int, str]:
    """How many messages this run may send (the day's remainder, capped per run and by
    --limit), and which of those limits it is, to tell the SDR why the rest wait."""
    caps = [(max(daily_limit - sent_today, 0), "daily_limit"), (per_run_limit, "per_run_limit")]
    if limit is not None:
        caps.append((limit, "--limit"))
    return min(caps, key=lambda cap: cap[0])


def choose_variant(templates: Sequence[str], *, email: str, sequence: str, step: int) -> str:
    """A/B choice, stable for a prospect in any database: a hash of address, sequence and step."""
    if len(templates) == 1:
        return templates[0]
    key = f"{sequence}\x00{step}\x00{email.strip().lower()}".encode()
    digest = int.from_bytes(hashlib.sha256(key).digest()[:8], "big")
    return templates[digest % len(templates)]
