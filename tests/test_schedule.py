"""Sending windows, due dates, limits and A/B choice: pure functions, tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from outreach.config import Window
from outreach.schedule import (
    allowance,
    choose_variant,
    day_bounds,
    due_at,
    next_window,
    window_open,
    zone_for,
)

CHICAGO = ZoneInfo("America/Chicago")
BERLIN = ZoneInfo("Europe/Berlin")
WINDOWS = (Window(time(7), time(9)), Window(time(17), time(19)))
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("moment", "zone", "expected"), [
    # Thursday 2026-03-05, Chicago on CST (UTC-6)
    ("2026-03-05T13:30", CHICAGO, True),    # 07:30 local
    ("2026-03-05T12:30", CHICAGO, False),   # 06:30 local
    ("2026-03-05T15:00", CHICAGO, False),   # 09:00 local: the end is exclusive
    ("2026-03-05T23:59", CHICAGO, True),    # 17:59 local
    # the same instants in Berlin (CET, UTC+1) read differently
    ("2026-03-05T06:30", BERLIN, True),     # 07:30 local
    ("2026-03-05T13:30", BERLIN, False),    # 14:30 local
    # Monday 2026-03-09, after the March change: Chicago is on CDT (UTC-5)
    ("2026-03-09T12:30", CHICAGO, True),    # 07:30 CDT (was 06:30 before the change)
    ("2026-03-09T14:30", CHICAGO, False),   # 09:30 CDT
    # Monday 2026-11-02, after the November change: back to CST
    ("2026-11-02T12:30", CHICAGO, False),   # 06:30 CST
    ("2026-11-02T13:30", CHICAGO, True),    # 07:30 CST
    # weekend: Saturday 2026-03-07 07:30 local is closed
    ("2026-03-07T13:30", CHICAGO, False),
    # a UTC moment that is Friday evening in Chicago but Saturday in UTC
    ("2026-03-07T00:30", CHICAGO, True),    # Fri 18:30 CST
])
def test_window_open(moment, zone, expected):
    assert window_open(utc(moment), windows=WINDOWS, days=WEEKDAYS, zone=zone) is expected


@pytest.mark.parametrize(("moment", "zone", "days", "expected"), [
    # open now: now
    ("2026-03-05T13:30", CHICAGO, WEEKDAYS, "2026-03-05T13:30"),
    # Thursday 10:00 CST: the evening window at 17:00 CST
    ("2026-03-05T16:00", CHICAGO, WEEKDAYS, "2026-03-05T23:00"),
    # Friday 20:00 CST, across the weekend and the March change: Monday 07:00 CDT
    ("2026-03-07T02:00", CHICAGO, WEEKDAYS, "2026-03-09T12:00"),
    # Friday 20:00 CDT, across the weekend and the November change: Monday 07:00 CST
    ("2026-10-31T01:00", CHICAGO, WEEKDAYS, "2026-11-02T13:00"),
    # Berlin changes on 2026-03-29: Friday evening CET -> Monday 07:00 CEST (UTC+2)
    ("2026-03-27T20:00", BERLIN, WEEKDAYS, "2026-03-30T05:00"),
    # with weekends allowed, Saturday morning
    ("2026-03-07T02:00", CHICAGO, (*WEEKDAYS, "sat"), "2026-03-07T13:00"),
])
def test_next_window(moment, zone, days, expected):
    assert next_window(utc(moment), windows=WINDOWS, days=days, zone=zone) == utc(expected)


def test_next_window_without_days_is_none():
    assert next_window(utc("2026-03-05T16:00"), windows=WINDOWS, days=(), zone=CHICAGO) is None


def test_window_ending_at_midnight_covers_the_rest_of_the_day():
    late = (Window(time(22), time(0)),)
    assert window_open(utc("2026-03-06T05:59"), windows=late, days=WEEKDAYS, zone=CHICAGO)
    assert not window_open(utc("2026-03-06T03:59"), windows=late, days=WEEKDAYS, zone=CHICAGO)


@pytest.mark.parametrize(("started", "day", "zone", "expected"), [
    # enrolled Thursday 10:00 CST; day 0 is due from that local midnight
    ("2026-03-05T16:00", 0, CHICAGO, "2026-03-05T06:00"),
    # day 4 spans the March change: local midnight is now UTC-5
    ("2026-03-05T16:00", 4, CHICAGO, "2026-03-09T05:00"),
    # an enrollment at 23:00 CST is still that local day, though UTC says tomorrow
    ("2026-03-06T05:00", 1, CHICAGO, "2026-03-06T06:00"),
    ("2026-03-06T05:00", 1, BERLIN, "2026-03-06T23:00"),
])
def test_due_at(started, day, zone, expected):
    assert due_at(utc(started), day, zone) == utc(expected)


@pytest.mark.parametrize(("moment", "hours"), [
    ("2026-03-05T18:00", 24),
    ("2026-03-08T18:00", 23),   # spring forward
    ("2026-11-01T18:00", 25),   # fall back
])
def test_day_bounds_follow_the_sender_calendar_day(moment, hours):
    start, end = day_bounds(utc(moment), CHICAGO)
    assert start.astimezone(CHICAGO).time() == time(0)
    assert end - start == timedelta(hours=hours)
    assert start <= utc(moment) < end


@pytest.mark.parametrize(("daily", "sent_today", "per_run", "limit", "expected"), [
    (75, 0, 50, None, (50, "per_run_limit")),
    (75, 40, 50, None, (35, "daily_limit")),
    (75, 75, 50, None, (0, "daily_limit")),
    (75, 90, 50, None, (0, "daily_limit")),
    (75, 0, 50, 10, (10, "--limit")),
    (75, 70, 50, 10, (5, "daily_limit")),
    (75, 0, 50, 0, (0, "--limit")),
])
def test_allowance(daily, sent_today, per_run, limit, expected):
    assert allowance(daily_limit=daily, sent_today=sent_today, per_run_limit=per_run,
                     limit=limit) == expected


@pytest.mark.parametrize(("prospect_tz", "mode", "expected"), [
    ("Europe/Berlin", "prospect", "Europe/Berlin"),
    ("", "prospect", "America/Chicago"),
    ("Not/AZone", "prospect", "America/Chicago"),
    ("Europe/Berlin", "sender", "America/Chicago"),
])
def test_zone_for(prospect_tz, mode, expected):
    assert zone_for(prospect_tz, "America/Chicago", mode) == ZoneInfo(expected)


def test_variant_choice_is_stable_and_spreads():
    templates = ("meeting-a", "meeting-b")
    picks = [choose_variant(templates, email=f"p{i}@x.example", sequence="referral", step=4)
             for i in range(200)]
    again = [choose_variant(templates, email=f"P{i}@X.example", sequence="referral", step=4)
             for i in range(200)]
    assert picks == again                      # case-insensitive, no state: any database agrees
    assert 70 < picks.count("meeting-a") < 130  # both variants are used
    assert choose_variant(("only",), email="a@b.example", sequence="s", step=0) == "only"
    # known values pin the hash so a refactor cannot silently reshuffle live campaigns
    pinned = {"ava@x.example": "meeting-b", "dee@x.example": "meeting-a",
              "eve@x.example": "meeting-a", "fay@x.example": "meeting-b"}
    assert {e: choose_variant(templates, email=e, sequence="referral", step=4)
            for e in pinned} == pinned
