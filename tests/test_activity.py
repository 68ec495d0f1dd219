"""A reply or a conversation on the phone moves `last_activity`, which `dormant_days` reads."""

from __future__ import annotations

import pytest

from tests.conftest import prospect_row
from tests.test_calls import add_task, enrolled
from tests.test_poll import NOW, drop, seed


def last_activity(campaign, email):
    [row] = [p for p in campaign.run_json("prospects") if p["email"] == email]
    return row["last_activity"]


def test_a_reply_moves_last_activity_to_that_day(campaign):
    seed(campaign)
    drop(campaign, "reply-gmail-interested")
    before = {p["email"]: p["last_activity"] for p in campaign.run_json("prospects")}
    assert campaign.run_json("poll")["replies"] == 1
    after = {p["email"]: p["last_activity"] for p in campaign.run_json("prospects")}
    moved = {e for e in after if after[e] != before[e]}
    assert len(moved) == 1
    assert after[moved.pop()] == NOW[:10]


@pytest.mark.parametrize(("outcome", "moves"), [
    ("connected", True), ("meeting", True), ("voicemail", False), ("no-answer", False),
])
def test_a_conversation_moves_last_activity(campaign, outcome, moves):
    campaign.now("2026-03-02T15:00:00+00:00")
    enrolled(campaign, [prospect_row(1, last_activity="2025-01-05")])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
    campaign.run_json("call", str(task.id), "--outcome", outcome)
    expected = "2026-03-02" if moves else "2025-01-05"
    assert last_activity(campaign, "cfo1@maker1.example") == expected
