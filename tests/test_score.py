from datetime import UTC, datetime, timedelta

import pytest

from outreach.score import decay, lead_score

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def ev(kind: str, days_ago: float, **detail):
    return {"kind": kind, "at": (NOW - timedelta(days=days_ago)).isoformat(), **detail}


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], 0.0),
        ([ev("enrolled", 1), ev("sent", 1)], 0.0),                       # activity, not interest
        ([ev("auto_reply", 1), ev("bounce", 1)], 0.0),
        ([ev("reply", 1)], 10.0),
        ([ev("reply", 1), ev("stage", 1, old="prospect", new="lead")], 20.0),  # positive reply
        ([ev("reply", 1), ev("referral", 1)], 15.0),
        ([ev("call", 2, outcome="no-answer"), ev("call", 1, outcome="voicemail")], 0.0),
        ([ev("call", 1, outcome="connected")], 15.0),
        # A meeting booked on a call: the connect plus the stage change, counted once each.
        ([ev("call", 1, outcome="meeting"), ev("stage", 1, old="prospect", new="opportunity")],
         55.0),
        ([ev("stage", 1, old="opportunity", new="client")], 20.0),
        ([ev("reply", 1), ev("stage", 1, old="prospect", new="not-interested")], -30.0),
        # Quiet for exactly 30 days: no decay yet; then one half-life (30 more days) halves it.
        ([ev("reply", 30), ev("stage", 30, new="lead")], 20.0),
        ([ev("reply", 60), ev("stage", 60, new="lead")], 10.0),
        ([ev("reply", 90), ev("stage", 90, new="lead")], 5.0),
        ([ev("reply", 45)], 7.1),                                         # 10 * 0.5 ** 0.5
        # Decay runs from the LAST scored event: a fresh connect revives an old reply.
        ([ev("reply", 120), ev("call", 2, outcome="connected")], 25.0),
        # An unscored event does not count as activity.
        ([ev("reply", 60), ev("sent", 1)], 5.0),
        ([ev("stage", 90, new="not-interested")], -10.0),                # negatives fade too
    ],
)
def test_lead_score_table(events, expected):
    assert lead_score(events, now=NOW) == expected


def test_score_accepts_datetimes_and_unordered_events():
    events = [{"kind": "reply", "at": NOW - timedelta(days=1)},
              {"kind": "reply", "at": NOW - timedelta(days=90)}]
    assert lead_score(events, now=NOW) == 20.0


@pytest.mark.parametrize(("days", "factor"),
                         [(0, 1.0), (30, 1.0), (60, 0.5), (90, 0.25), (150, 0.0625)])
def test_decay_half_life(days, factor):
    assert decay(days) == factor
