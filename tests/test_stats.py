from datetime import UTC, datetime, timedelta

import pytest

from outreach.stats import compare, fisher_exact, sends_needed
from tests.conftest import prospect_row
from tests.ledger import add_sent

T0 = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


# -- the statistics, checked against published values (scipy.stats.fisher_exact, G*Power) --


@pytest.mark.parametrize(
    ("table", "p"),
    [
        ((8, 2, 1, 5), 0.034965),
        ((1, 9, 11, 3), 0.002759),
        ((0, 10, 0, 10), 1.0),
        ((3, 47, 3, 47), 1.0),
        ((60, 340, 30, 370), 0.001082),
    ],
)
def test_fisher_exact(table, p):
    assert fisher_exact(*table) == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize(("p1", "p2", "n"),
                         [(0.05, 0.10, 435), (0.10, 0.05, 435), (0.2, 0.3, 294), (0.1, 0.1, 0)])
def test_sends_needed(p1, p2, n):
    assert sends_needed(p1, p2) == n


@pytest.mark.parametrize(
    ("a", "b", "significant", "needed", "verdict"),
    [
        (("meeting-b", 400, 60), ("meeting-a", 400, 30), True, 0,
         "meeting-b wins: 15.0% vs 7.5% replies (p = 0.001); send meeting-b"),
        (("meeting-b", 60, 9), ("meeting-a", 60, 3), False, 81,
         "not enough data yet: ~81 more sends per variant needed (meeting-b 15.0% vs "
         "meeting-a 5.0%, p = 0.13)"),
        (("meeting-a", 40, 2), ("meeting-b", 40, 2), False, 1440,
         "not enough data yet: ~1,440 more sends per variant needed to see a 50% lift "
         "(both 5.0% so far)"),
        (("meeting-a", 40, 0), ("meeting-b", 40, 0), False, None,
         "no replies to either yet (40 and 40 sent): keep sending both"),
        (("meeting-a", 2000, 101), ("meeting-b", 2000, 100), False, 2994700,
         "no meaningful difference: meeting-a 5.1% vs meeting-b 5.0% (p = 1.00); a gap this "
         "small would take ~2,994,700 more sends per variant to confirm, so either is fine"),
        (("meeting-a", 500, 40), ("meeting-b", 500, 30), False, 2060,
         "not enough data yet: ~2,060 more sends per variant needed (meeting-a 8.0% vs "
         "meeting-b 6.0%, p = 0.26)"),
    ],
)
def test_compare_verdicts(a, b, significant, needed, verdict):
    doc = compare(*a, *b)
    assert (doc["significant"], doc["needed_per_variant"], doc["verdict"]) == (
        significant, needed, verdict)


# -- the funnel over a store ----------------------------------------------------------------


def email_of(n):
    return f"cfo{n}@maker{n}.example"


def stage(store, pid, new, at):
    old = store.set_stage(pid, new, cause="test", at=at)
    store.add_event("stage", at=at, prospect_id=pid, old=old, new=new, cause="test")


@pytest.fixture
def world(campaign):
    return build_world(campaign)


def build_world(campaign):
    """Ten prospects, a first email to all, an A/B step, and what came of it."""
    campaign.write_csv([prospect_row(n, **({"title": "VP Finance"} if n > 5 else {}))
                        for n in range(1, 11)])
    campaign.run_json("import", str(campaign.root / "prospects.csv"))
    with campaign.app() as app:
        s = app.store
        pid = {n: s.prospect(f"cfo{n}@maker{n}.example").id for n in range(1, 11)}
        for n in range(1, 11):
            add_sent(s, pid[n], at=day(0), step=0, template="referral")
        s.add_event("reply", at=day(1), prospect_id=pid[1])
        stage(s, pid[1], "lead", day(1))
        s.add_event("bounce", at=day(0.05), prospect_id=pid[2], status="5.1.1", permanent=True)
        s.add_event("unsubscribe", at=day(2), prospect_id=pid[3])
        s.add_event("auto_reply", at=day(1), prospect_id=pid[4])
        s.add_event("call", at=day(5), prospect_id=pid[5], outcome="connected")
        s.add_event("call", at=day(5), prospect_id=pid[6], outcome="no-answer")
        for n in range(4, 11):
            variant = "meeting-a" if n <= 6 else "meeting-b"
            add_sent(s, pid[n], at=day(9), step=4, template=variant, variant=variant)
        s.add_event("complaint", at=day(9.5), prospect_id=pid[10])  # marked as spam
        s.add_event("reply", at=day(10), prospect_id=pid[7])
        stage(s, pid[7], "lead", day(10))
        stage(s, pid[7], "opportunity", day(12))
        s.add_event("reply", at=day(10), prospect_id=pid[8])
        stage(s, pid[8], "not-interested", day(10))
        # Being named in someone's referral is not a reply (the referrer's reply is).
        s.add_event("referral", at=day(10), prospect_id=pid[9], referrer=email_of(1))
        s.add_event("call", at=day(11), prospect_id=pid[9], outcome="meeting")
        stage(s, pid[9], "opportunity", day(11))
    return campaign


def test_totals(world):
    t = world.run_json("stats")["totals"]
    assert {k: t[k] for k in ("sent", "delivered", "bounced", "replied", "positive", "meetings",
                              "unsubscribed", "auto_replies", "complained", "calls",
                              "connects", "call_meetings")} == {
        "sent": 17, "delivered": 16, "bounced": 1, "replied": 3, "positive": 2, "meetings": 2,
        "unsubscribed": 1, "auto_replies": 1, "complained": 1, "calls": 3, "connects": 2,
        "call_meetings": 1}
    assert t["complaint_rate"] == round(1 / 17, 4)
    assert t["reply_rate"] == round(3 / 17, 4)
    assert t["meetings_per_100_sent"] == 11.76
    assert t["meetings_per_call"] == round(1 / 3, 4)
    assert t["positive_rate"] == round(2 / 3, 4)


def test_text_shows_denominators(world):
    result = world.run("stats")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[:14] == [
        "all time",
        "",
        "sent               17",
        "delivered          16   17 sent − 1 bounced",
        "replied             3   17.6% of 17 sent",
        "positive            2   66.7% of 3 replies",
        "meetings            2   11.8 per 100 sent",
        "bounced             1   5.9% of 17 sent",
        "unsubscribed        1   5.9% of 17 sent",
        "complaints          1   5.9% of 17 sent",
        "auto-replies        1   5.9% of 17 sent",
        "calls made          3",
        "connects            2   66.7% of 3 calls",
        "call meetings       1   0.33 meetings per call",
    ]


def pick(groups, *keys):
    return {g["key"]: tuple(g[k] for k in keys) for g in groups}


def test_by_template(world):
    doc = world.run_json("stats", "--by", "template")
    assert pick(doc["groups"], "sent", "replied", "positive", "meetings", "bounced", "calls") == {
        "referral": (10, 1, 1, 0, 1, 2),
        "meeting-a": (3, 0, 0, 0, 0, 0),
        "meeting-b": (4, 2, 1, 2, 0, 1),
    }


def test_by_persona_and_sequence(world):
    doc = world.run_json("stats", "--by", "persona")
    assert pick(doc["groups"], "sent", "replied", "meetings", "calls") == {
        "CFO · Manufacturing": (7, 1, 0, 1),
        "VP Finance · Manufacturing": (10, 2, 2, 2),
    }
    doc = world.run_json("stats", "--by", "sequence")
    assert pick(doc["groups"], "sent", "replied", "meetings") == {"referral": (17, 3, 2)}


def test_by_variant_answers_the_ab_question(world):
    doc = world.run_json("stats", "--by", "variant")
    assert pick(doc["groups"], "sent", "replied", "positive", "meetings") == {
        "referral step 4: meeting-a": (3, 0, 0, 0),
        "referral step 4: meeting-b": (4, 2, 1, 2),
    }
    [test] = doc["ab_tests"]
    assert test["variants"] == [
        {"variant": "meeting-a", "sent": 3, "replied": 0, "reply_rate": 0.0},
        {"variant": "meeting-b", "sent": 4, "replied": 2, "reply_rate": 0.5},
    ]
    assert (test["leader"], test["difference"], test["significant"]) == ("meeting-b", 0.5, False)
    assert test["verdict"] == ("not enough data yet: ~8 more sends per variant needed "
                               "(meeting-b 50.0% vs meeting-a 0.0%, p = 0.43)")
    text = world.run("stats", "--by", "variant").output
    assert ("A/B referral step 4 (meeting-a 0/3, meeting-b 2/4): not enough data yet: ~8 more "
            "sends per variant needed") in text


def test_since_takes_the_cohort_sent_from_that_day(world):
    doc = world.run_json("stats", "--since", "2026-03-07")
    t = doc["totals"]
    assert (t["sent"], t["replied"], t["positive"], t["meetings"], t["bounced"], t["calls"]) == (
        7, 2, 1, 2, 0, 3)
    assert doc["since"] == "2026-03-07T00:00:00-06:00"
    t = world.run_json("stats", "--since", "2026-03-14")["totals"]
    assert (t["sent"], t["replied"], t["calls"]) == (0, 0, 0)


def test_bad_since_is_a_clear_error(world):
    result = world.run("stats", "--since", "last week")
    assert result.exit_code == 1
    assert 'Error: --since "last week": expected a date like 2026-03-01' in result.stderr


def test_empty_database(campaign):
    doc = campaign.run_json("stats", "--by", "variant")
    assert doc["totals"]["sent"] == 0 and doc["totals"]["reply_rate"] is None
    assert doc["groups"] == [] and doc["ab_tests"] == []
    assert "(nothing to group by variant yet)" in campaign.run("stats", "--by", "variant").output
