"""Call tasks: creation (from `send`), the call list in every format, and call outcomes."""

from __future__ import annotations

from datetime import UTC, datetime

from outreach.calls import create_task

from .conftest import Campaign, prospect_row

NOW = "2026-03-02T08:15:00-06:00"


def enrolled(campaign: Campaign, n: int = 1, **overrides: object) -> None:
    csv = campaign.write_csv([prospect_row(i, **overrides) for i in range(1, n + 1)])
    campaign.now(NOW)
    assert campaign.run("import", str(csv)).exit_code == 0
    assert campaign.run("enroll", "referral").exit_code == 0


def call_step(app):  # the example sequence's first call step
    return next(s for s in app.config.sequences["referral"].steps if s.kind == "call")


def test_create_task_is_idempotent_and_records_an_event(campaign: Campaign) -> None:
    enrolled(campaign)
    due = datetime(2026, 3, 2, 14, 15, tzinfo=UTC)
    with campaign.app() as app:
        prospect = app.store.prospect("cfo1@maker1.example")
        enrollment = app.store.enrollments(prospect.id)[0]["id"]
        step = call_step(app)
        first = create_task(app, enrollment_id=enrollment, prospect=prospect, step=step,
                            due=due, script="Hi First1")
        again = create_task(app, enrollment_id=enrollment, prospect=prospect, step=step,
                            due=due, script="other text")
        assert again == first
        assert (first.due, first.script, first.template) == (due, "Hi First1", "voicemail")
        assert first.due.tzinfo is not None
        events = [e for e in app.store.events(prospect.id) if e["kind"] == "call_task"]
        assert [(e["task_id"], e["step"]) for e in events] == [(first.id, step.number)]
