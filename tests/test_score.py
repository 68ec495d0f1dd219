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
        ([ev("reply", 1), ev("referral", 1, referred="jane@maker1.example")], 15.0),
        ([ev("referral", 1, referrer="bob@maker1.example")], 0.0),      # being named: no points
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


def test_prospects_sort_score_and_status(campaign):
    from tests.conftest import prospect_row

    campaign.write_csv([prospect_row(n) for n in (1, 2, 3)])
    campaign.run_json("import", str(campaign.root / "prospects.csv"))
    campaign.now(NOW.isoformat())
    with campaign.app() as app:
        s = app.store
        p2 = s.prospect("cfo2@maker2.example").id
        p3 = s.prospect("cfo3@maker3.example").id
        s.add_event("reply", at=NOW - timedelta(days=2), prospect_id=p2)
        s.add_event("stage", at=NOW - timedelta(days=2), prospect_id=p2, old="prospect",
                    new="lead")
        s.add_event("stage", at=NOW - timedelta(days=90), prospect_id=p3, old="prospect",
                    new="opportunity")
    ranked = campaign.run_json("prospects", "--sort", "score")
    assert [(p["email"], p["score"]) for p in ranked] == [
        ("cfo2@maker2.example", 20.0), ("cfo3@maker3.example", 10.0),
        ("cfo1@maker1.example", 0.0)]
    table = campaign.run("prospects", "--sort", "score").output.splitlines()
    assert table[0].split()[-1] == "SCORE"
    assert [line.split()[0] for line in table[1:]] == [
        "cfo2@maker2.example", "cfo3@maker3.example", "cfo1@maker1.example"]
    assert "score" not in campaign.run_json("prospects")[0]
    assert campaign.run_json("status", "cfo3@maker3.example")["score"] == 10.0
    assert "lead score: 20\n" in campaign.run("status", "cfo2@maker2.example").output
