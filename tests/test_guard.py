from datetime import UTC, datetime, timedelta

import pytest

from outreach.guard import DeliverabilityError, assess, check_before_send, health
from tests.conftest import prospect_row
from tests.ledger import add_sent

LIMITS = {"max_bounce_rate": 0.02, "max_unsubscribe_rate": 0.003, "min_sent": 100}


@pytest.mark.parametrize(
    ("sent", "bounced", "unsubscribed", "judged", "problems"),
    [
        (0, 0, 0, False, []),
        (99, 50, 50, False, []),              # below the minimum sample: never judged
        (100, 2, 0, True, []),                # exactly 2.0% is at the limit, not above
        (100, 3, 0, True, ["bounce"]),
        (1000, 3, 0, True, []),               # 0.3% unsubscribes at the limit
        (1000, 0, 3, True, []),
        (1000, 0, 4, True, ["unsubscribe"]),
        (200, 5, 1, True, ["bounce", "unsubscribe"]),
    ],
)
def test_assess_table(sent, bounced, unsubscribed, judged, problems):
    h = assess(sent=sent, bounced=bounced, unsubscribed=unsubscribed, **LIMITS)
    assert h.judged is judged
    assert [p.split()[0] for p in h.problems] == problems
    assert h.ok is (not problems)


@pytest.mark.parametrize(
    ("sent", "complained", "judged", "problems", "warnings"),
    [
        (99, 5, False, [], []),               # the same sample floor as the other rates
        (1000, 1, True, [], []),              # 0.1% is at the warning level, not above
        (1000, 2, True, [], ["spam-complaint"]),
        (1000, 3, True, [], ["spam-complaint"]),  # 0.3% at the limit: a warning
        (1000, 4, True, ["spam-complaint"], []),  # above 0.3%: stop
    ],
)
def test_complaint_rate_warns_then_stops(sent, complained, judged, problems, warnings):
    h = assess(sent=sent, bounced=0, unsubscribed=0, complained=complained, **LIMITS)
    assert h.judged is judged
    assert [p.split()[0] for p in h.problems] == problems
    assert [w.split()[0] for w in h.warnings] == warnings
    assert h.ok is (not problems)


def test_complaint_rate_words():
    h = assess(sent=1000, bounced=0, unsubscribed=0, complained=2, **LIMITS)
    assert h.warnings == ("spam-complaint rate 0.20% (2 of 1000 sent in the last 7 days) is "
                          "above the 0.1% warning level: sending stops at 0.3%; tighten the ICP "
                          "and lower daily_limit",)
    h = assess(sent=1000, bounced=0, unsubscribed=0, complained=4, **LIMITS)
    assert h.problems[0].startswith("spam-complaint rate 0.40% (4 of 1000 sent in the last 7 "
                                    "days) is above the 0.3% limit: ")


def test_problem_names_rate_value_and_what_to_do():
    h = assess(sent=130, bounced=4, unsubscribed=0, **LIMITS)
    assert h.problems == (
        "bounce rate 3.1% (4 of 130 sent in the last 7 days) is above the 2.0% limit: clean the "
        "list (verify addresses, drop old or guessed ones) and lower daily_limit before sending "
        "more",
    )
    h = assess(sent=500, bounced=0, unsubscribed=2, **LIMITS)
    assert h.problems[0].startswith("unsubscribe rate 0.4% (2 of 500 sent in the last 7 days) "
                                    "is above the 0.3% limit: ")
    assert "slow down" in h.problems[0]


def _campaign_with_mail(campaign, *, sent_days_ago, bounce_days_ago):
    campaign.write_csv([prospect_row(n) for n in range(1, 11)])
    campaign.run_json("import", str(campaign.root / "prospects.csv"))
    campaign.edit_config("guard_min_sent = 100", "guard_min_sent = 10")
    now = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)
    campaign.now(now.isoformat())
    with campaign.app() as app:
        for n in range(1, 11):
            p = app.store.prospect(f"cfo{n}@maker{n}.example")
            add_sent(app.store, p.id, at=now - timedelta(days=sent_days_ago))
        for n in (1, 2):
            p = app.store.prospect(f"cfo{n}@maker{n}.example")
            app.store.add_event("bounce", at=now - timedelta(days=bounce_days_ago),
                                prospect_id=p.id, status="5.1.1", permanent=True)
            # A second notice for the same address counts once.
            app.store.add_event("bounce", at=now - timedelta(days=bounce_days_ago),
                                prospect_id=p.id, status="5.1.1", permanent=True)
    return now


def test_health_counts_the_last_seven_days(campaign):
    _campaign_with_mail(campaign, sent_days_ago=2, bounce_days_ago=1)
    with campaign.app() as app:
        h = health(app)
        assert (h.sent, h.bounced, h.unsubscribed) == (10, 2, 0)
        with pytest.raises(DeliverabilityError) as caught:
            check_before_send(app)
        assert str(caught.value).startswith("bounce rate 20.0% (2 of 10 sent in the last 7 days)")
        assert str(caught.value).endswith("`outreach send --force` sends anyway.")
        assert check_before_send(app, force=True).bounced == 2


def test_health_forgets_older_than_seven_days(campaign):
    _campaign_with_mail(campaign, sent_days_ago=8, bounce_days_ago=8)
    with campaign.app() as app:
        h = health(app)
        assert (h.sent, h.bounced, h.judged, h.ok) == (0, 0, False, True)


def test_check_reports_health(campaign):
    _campaign_with_mail(campaign, sent_days_ago=2, bounce_days_ago=1)
    doc = campaign.run_json("check")
    assert doc["deliverability"]["bounce_rate"] == 0.2
    assert doc["deliverability"]["ok"] is False
    assert doc["warnings"][0].startswith("bounce rate 20.0%")
    result = campaign.run("check")
    assert result.exit_code == 0
    assert ("deliverability: AT RISK, bounce rate 20.0% (2/10), unsubscribe rate 0.0% (0/10), "
            "complaint rate 0.00% (0/10) over the last 7 days") in result.output


def test_send_refuses_before_anything_and_force_overrides(campaign):
    _campaign_with_mail(campaign, sent_days_ago=2, bounce_days_ago=1)
    refused = campaign.run("send", "--dry-run")
    assert refused.exit_code == 1
    assert refused.stderr.startswith("Error: bounce rate 20.0% (2 of 10 sent in the last 7 "
                                     "days) is above the 2.0% limit")
    assert refused.stdout == ""
    assert campaign.run("send", "--dry-run", "--force").exit_code == 0


def test_send_warns_between_the_complaint_levels_and_sends(campaign):
    """1 complaint in 500 sends (0.2%): above the 0.1% warning level, below the 0.3% stop."""
    campaign.write_csv([prospect_row(n) for n in range(1, 3)])
    campaign.run_json("import", str(campaign.root / "prospects.csv"))
    now = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)
    campaign.now(now.isoformat())
    with campaign.app() as app:
        p = app.store.prospect("cfo1@maker1.example")
        for i in range(500):
            add_sent(app.store, p.id, at=now - timedelta(days=1), template=f"t{i}")
        app.store.add_event("complaint", at=now - timedelta(hours=1), prospect_id=p.id)
    result = campaign.run("send", "--dry-run")
    assert result.exit_code == 0
    assert result.stderr.startswith(
        "warning: spam-complaint rate 0.20% (1 of 500 sent in the last 7 days) is above the 0.1% "
        "warning level: sending stops at 0.3%; tighten the ICP and lower daily_limit\n")
    check = campaign.run_json("check")
    assert check["deliverability"]["ok"] is True
    assert any(w.startswith("spam-complaint rate 0.20%") for w in check["warnings"])
