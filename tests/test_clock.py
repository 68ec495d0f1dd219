from datetime import UTC, datetime, timedelta, timezone

import pytest

from outreach import clock
from outreach.errors import OutreachError


def test_outreach_now_is_the_only_clock(monkeypatch):
    monkeypatch.setenv("OUTREACH_NOW", "2026-03-02T08:15:00-06:00")
    assert clock.now() == datetime(2026, 3, 2, 8, 15, tzinfo=timezone(timedelta(hours=-6)))


def test_without_outreach_now_the_real_clock_is_read(real_clock):
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)


def test_the_harness_pins_every_test_to_one_instant():
    from tests.conftest import PINNED_NOW
    assert clock.now() == datetime.fromisoformat(PINNED_NOW)


@pytest.mark.parametrize(("raw", "message"), [
    ("yesterday", "is not an ISO 8601 timestamp"),
    ("2026-03-02T08:15:00", "has no UTC offset"),
    ("9999-12-31T23:59:59+00:00", "is out of range"),
    ("0001-01-01T00:00:00+05:00", "is out of range"),
])
def test_bad_values_are_clear_errors(monkeypatch, raw, message):
    monkeypatch.setenv("OUTREACH_NOW", raw)
    with pytest.raises(OutreachError, match=message):
        clock.now()


def test_iso_is_utc_text():
    moment = datetime(2026, 3, 2, 8, 15, 30, 999, tzinfo=timezone(timedelta(hours=-6)))
    assert clock.iso(moment) == "2026-03-02T14:15:30+00:00"
