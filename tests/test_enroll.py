"""`outreach enroll`: ICP matches that are free to start, with a count per skip reason."""

from __future__ import annotations

import pytest

from tests.conftest import prospect_row


def seed(campaign, n=6):
    rows = [prospect_row(i) for i in range(1, n + 1)]
    rows.append(prospect_row(99, title="Plant Manager"))  # not in the ICP: never counted
    campaign.run_json("import", str(campaign.write_csv(rows)))


def test_enrolls_matches_and_reports_skips(campaign):
    seed(campaign)
    campaign.run("suppress", "cfo1@maker1.example")
    campaign.run("suppress", "@maker2.example")
    campaign.run("mark", "cfo3@maker3.example", "lead")
    assert campaign.run_json("enroll", "referral") == {
        "enrolled": 3, "skipped": {"stage": 1, "suppressed": 2}, "dry_run": False}
    # Everyone left is now active: a second run enrolls nobody.
    assert campaign.run_json("enroll", "referral") == {
        "enrolled": 0, "skipped": {"active": 3, "stage": 1, "suppressed": 2}, "dry_run": False}
    status = campaign.run_json("status", "cfo4@maker4.example")
    assert [(e["sequence"], e["state"]) for e in status["enrollments"]] == [("referral", "active")]
    assert [e["kind"] for e in status["events"]] == ["enrolled"]


def test_dry_run_writes_nothing_and_limit_caps(campaign):
    seed(campaign)
    assert campaign.run_json("enroll", "referral", "--dry-run", "--limit", "2") == {
        "enrolled": 2, "skipped": {"limit": 4}, "dry_run": True}
    assert campaign.run_json("status", "cfo1@maker1.example")["enrollments"] == []
    assert campaign.run_json("enroll", "referral", "--limit", "2")["enrolled"] == 2
    assert campaign.run_json("status", "cfo1@maker1.example")["enrollments"] != []
    assert campaign.run_json("status", "cfo3@maker3.example")["enrollments"] == []


@pytest.mark.parametrize("ended_as", ["recycled", "completed"])
def test_recycled_prospects_wait_for_the_cooldown(campaign, ended_as):
    seed(campaign, n=1)
    campaign.now("2026-01-05T08:00:00+00:00")
    campaign.run_json("enroll", "referral")
    with campaign.app() as app:
        pid = app.store.prospect("cfo1@maker1.example").id
        app.store.end_enrollments(pid, state=ended_as, reason="day 21",
                                  at=app.now().replace(day=26))
    campaign.now("2026-04-25T08:00:00+00:00")  # 89 days after recycling
    assert campaign.run_json("enroll", "referral")["skipped"] == {"cooldown": 1}
    campaign.now("2026-04-26T08:00:00+00:00")  # 90 days
    assert campaign.run_json("enroll", "referral")["enrolled"] == 1


def test_prospects_who_replied_are_not_enrolled_again(campaign):
    seed(campaign, n=1)
    campaign.run_json("enroll", "referral")
    with campaign.app() as app:
        pid = app.store.prospect("cfo1@maker1.example").id
        app.store.end_enrollments(pid, state="replied", reason="reply", at=app.now())
    assert campaign.run_json("enroll", "referral")["skipped"] == {"replied": 1}


def test_unknown_sequence_is_a_clear_error(campaign):
    result = campaign.run("enroll", "referal")
    assert result.exit_code == 1
    assert 'no sequence "referal" in outreach.toml (known: referral, referred)' in result.stderr


def test_a_referral_sequence_takes_only_referred_prospects(campaign):
    seed(campaign, n=2)
    # `referred` is the on_referral of `referral`: its first email names the referrer.
    assert campaign.run_json("enroll", "referred") == {
        "enrolled": 0, "skipped": {"not_referred": 3}, "dry_run": False}
    with campaign.app() as app:
        ann = app.store.prospect("cfo1@maker1.example")
        app.store.db.execute("UPDATE prospects SET referrer_id = ? WHERE email = ?",
                             (ann.id, "cfo2@maker2.example"))
    assert campaign.run_json("enroll", "referred") == {
        "enrolled": 1, "skipped": {"not_referred": 2}, "dry_run": False}
