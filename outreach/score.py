"""Pure: a prospect's lead score from its timeline events.

Points per event (a meeting counts once, through its stage change to `opportunity`):

    reply                       +10   any answer that is not an auto-reply or a bounce
    stage -> lead               +10   the reply was a positive one (poll or `mark lead`)
    referral                     +5   they named a colleague (not: they were named)
    call connected / meeting    +15   a live conversation
    stage -> opportunity        +40   a meeting was booked
    stage -> client / champion  +20
    stage -> not-interested     -40

The sum decays once the prospect goes quiet: for the first 30 days after the last scored event it
holds, then it halves every 30 days (a half-life of 30 days), so a lead that replied last quarter
ranks below one that replied last week, and an old "not interested" fades back towards zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

GRACE_DAYS = 30.0
HALF_LIFE_DAYS = 30.0

REPLY_POINTS = 10
REFERRAL_POINTS = 5
CONNECT_POINTS = 15
STAGE_POINTS = {"lead": 10, "opportunity": 40, "client": 20, "champion": 20,
                "not-interested": -40}
CONNECT_OUTCOMES = frozenset({"connected", "meeting"})
# Event kinds that can carry points: what the store fetches for a whole-list ranking.
SCORED_KINDS = ("reply", "referral", "call", "stage")


def event_points(event: Mapping[str, Any]) -> int:
    """The points one timeline event is worth (0 for events that say nothing about interest)."""
    kind = event.get("kind")
    if kind == "reply":
        return REPLY_POINTS
    if kind == "referral":
        # Recorded on both sides: only the prospect who named a colleague earns points.
        return REFERRAL_POINTS if event.get("referred") else 0
    if kind == "call":
        return CONNECT_POINTS if event.get("outcome") in CONNECT_OUTCOMES else 0
    if kind == "stage":
        return STAGE_POINTS.get(str(event.get("new")), 0)
    return 0


def decay(days_quiet: float) -> float:
    """The factor applied after `days_quiet` days without a scored event."""
    if days_quiet <= GRACE_DAYS:
        return 1.0
    return 0.5 ** ((days_quiet - GRACE_DAYS) / HALF_LIFE_DAYS)


def lead_score(events: Iterable[Mapping[str, Any]], *, now: datetime) -> float:
    """The score of one prospect's events (dicts with `kind`, `at` and their detail) at `now`."""
    total = 0
    last: datetime | None = None
    for event in events:
        points = event_points(event)
        if not points:
            continue
        total += points
        at = event["at"]
        moment = at if isinstance(at, datetime) else datetime.fromisoformat(at)
        if last is None or moment > last:
            last = moment
    if last is None:
        return 0.0
    days_quiet = max(0.0, (now - last).total_seconds() / 86400)
    return round(total * decay(days_quiet), 1)
