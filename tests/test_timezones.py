"""Human output shows times in the sender's zone (status, calls, the send hint) in one shape;
--json keeps ISO 8601 with an offset."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from outreach.clock import local, local_text
from tests.conftest import prospect_row

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"   # 13:30 UTC


def sent_once(campaign) -> None:
    campaign.now(THURSDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1)])))
    campaign.run_json("enroll", "referral")
    assert campaign.run_json("send")["sent"] == 1


def test_status_shows_the_senders_time_and_json_keeps_iso(campaign):
    sent_once(campaign)
    out = campaign.run("status", "cfo1@maker1.example").stdout.splitlines()
    assert out[3] == "times in America/Chicago (your time zone)"
    assert out[4] == "enrollment 1: referral active since Thu 05 Mar 2026 07:30 (next step 2)"
    assert out[5] == "  Thu 05 Mar 2026 07:30  enrolled         sequence=referral"
    assert out[-1] == ("  Thu 05 Mar 2026 07:30  call_task        task_id=1, step=1, "
                       "due=Thu 05 Mar 2026 07:30")
    assert "13:30" not in "\n".join(out)
    doc = campaign.run_json("status", "cfo1@maker1.example")
    assert doc["enrollments"][0]["started_at"] == "2026-03-05T13:30:00+00:00"


def test_calls_and_the_send_hint_use_the_same_shape(campaign):
    sent_once(campaign)
    calls = campaign.run("calls").stdout
    assert "  #1    Thu 05 Mar 07:30  First1 Last1, CFO, Maker 1 Inc" in calls
    assert campaign.run_json("calls")[0]["due"] == "2026-03-05T07:30:00-06:00"
    campaign.now("2026-03-05T10:30:00-06:00")   # between the windows
    campaign.run_json("import", str(campaign.write_csv([prospect_row(2)])))
    campaign.run_json("enroll", "referral")
    hint = campaign.run("send").stdout
    assert "outside the sending window; the next opens Thu 05 Mar 17:00 (or use " \
           "--ignore-window)" in hint
    assert "CST" not in hint
    assert campaign.run_json("send")["next_window"] == "2026-03-05T23:00:00+00:00"


@pytest.mark.parametrize(("value", "shown"), [
    ("2026-03-05T13:30:00+00:00", "Thu 05 Mar 2026 07:30"),
    ("2026-07-01T12:00:00Z", "Wed 01 Jul 2026 07:00"),      # daylight saving time
    ("2026-03-05", "2026-03-05"),                           # a date is not an instant
    ("referral", "referral"), (3, 3), (None, None),
])
def test_local_text(value, shown):
    assert local_text(value, ZoneInfo("America/Chicago"), year=True) == shown


def test_local_without_year():
    moment = datetime.fromisoformat("2026-03-06T13:00:00+00:00")
    assert local(moment, ZoneInfo("America/Chicago")) == "Fri 06 Mar 07:00"
