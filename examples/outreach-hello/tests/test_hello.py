"""How to test a plugin: call the hook functions directly, they are plain functions."""

from datetime import datetime

import outreach_hello
import pytest

from outreach import Prospect


@pytest.mark.parametrize(("hour", "expected"), [
    (7, "Good morning"), (12, "Good afternoon"), (16, "Good afternoon"), (17, "Good evening"),
])
def test_greeting_by_local_hour(hour: int, expected: str) -> None:
    assert outreach_hello.greeting(datetime(2026, 3, 2, hour)) == expected


def test_template_context_uses_the_prospects_time_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_NOW", "2026-03-02T08:15:00-06:00")  # 08:15 in Chicago
    tokyo = Prospect(id=1, email="a@b.example", timezone="Asia/Tokyo")  # 23:15 there
    assert outreach_hello.template_context(prospect=tokyo, step=None) == {
        "greeting": "Good evening"}
