"""Call tasks: creation (from `send`), the call list in every format, and call outcomes."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import icalendar
import pytest

from outreach.app import App
from outreach.calls import CallTask, NewTask, create_task, create_tasks, persona
from outreach.hookspecs import hookimpl
from outreach.ics import escape, fold

from .conftest import Campaign, prospect_row

NOW = "2026-03-02T08:15:00-06:00"  # a Monday morning in the sender's Chicago
NOW_DT = datetime.fromisoformat(NOW)


def enrolled(campaign: Campaign, rows: list[dict[str, Any]]) -> None:
    csv_path = campaign.write_csv(rows)
    campaign.now(NOW)
    assert campaign.run("import", str(csv_path)).exit_code == 0
    result = campaign.run("enroll", "referral")
    assert result.exit_code == 0, result.output


def call_steps(app: App) -> list[Any]:
    return [s for s in app.config.sequences["referral"].steps if s.kind == "call"]


def add_task(app: App, email: str, *, later: int = 0, due: datetime | None = None,
             script: str | None = None) -> CallTask:
    """What `outreach send` does when a call step comes due: render, then create_task."""
    prospect = app.store.prospect(email)
    assert prospect is not None
    enrollment = app.store.enrollments(prospect.id)[-1]["id"]
    return create_task(app, enrollment_id=enrollment, prospect=prospect,
                       step=call_steps(app)[later], due=due or NOW_DT - timedelta(minutes=5),
                       script=script or f"Hi {prospect.first_name}, this is Dana.")


@pytest.mark.parametrize(("title", "industry", "expected"), [
    ("CFO", "Manufacturing", ("cfo", "manufacturing")),
    ("Chief Financial Officer", "manufacturing ", ("cfo", "manufacturing")),
    ("  cfo ", "MANUFACTURING", ("cfo", "manufacturing")),
    ("VP, Finance", "Retail", ("vp finance", "retail")),
    ("Vice President of Finance", "Retail", ("vp finance", "retail")),
    ("VP Finance & Operations", "Retail", ("vp finance and operations", "retail")),
    ("Senior Controller", "Food  Service", ("sr controller", "food service")),
    ("", "", ("", "")),
])
def test_persona_normalises_title_and_industry(title: str, industry: str,
                                               expected: tuple[str, str]) -> None:
    assert persona(title, industry) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "plain"),
    ("a, b; c", "a\\, b\\; c"),
    ("back\\slash", "back\\\\slash"),
    ("two\nlines\r\nthree", "two\\nlines\\nthree"),
])
def test_ics_escape(text: str, expected: str) -> None:
    assert escape(text) == expected


@pytest.mark.parametrize("line", ["x" * 75, "x" * 76, "DESCRIPTION:" + "é" * 100,
                                  "SUMMARY:" + "日本語" * 40])
def test_ics_fold_keeps_lines_within_75_octets_and_unfolds_back(line: str) -> None:
    folded = fold(line)
    assert all(len(part.encode()) <= 75 for part in folded.split("\r\n"))
    assert folded.replace("\r\n ", "") == line


def test_create_task_is_idempotent_and_records_an_event(campaign: Campaign) -> None:
    enrolled(campaign, [prospect_row(1)])
    due = datetime(2026, 3, 2, 14, 15, tzinfo=UTC)
    with campaign.app() as app:
        prospect = app.store.prospect("cfo1@maker1.example")
        enrollment = app.store.enrollments(prospect.id)[0]["id"]
        step = call_steps(app)[0]
        first = create_task(app, enrollment_id=enrollment, prospect=prospect, step=step,
                            due=due, script="Hi First1")
        again = create_task(app, enrollment_id=enrollment, prospect=prospect, step=step,
                            due=due, script="other text")
        assert again == first
        assert (first.due, first.script, first.template, first.status) == (
            due, "Hi First1", "voicemail", "open")
        events = [e for e in app.store.events(prospect.id) if e["kind"] == "call_task"]
        assert [(e["task_id"], e["step"]) for e in events] == [(first.id, step.number)]


def test_create_tasks_in_one_batch_skip_existing_and_close_bad_numbers(
        campaign: Campaign) -> None:
    fired: list[int] = []

    class Recorder:
        @hookimpl
        def call_task_created(self, prospect, task):
            fired.append(task.id)

    enrolled(campaign, [prospect_row(i) for i in (1, 2, 3)])
    due = datetime(2026, 3, 2, 14, 15, tzinfo=UTC)
    with campaign.app() as app:
        app.pm.register(Recorder())
        step = call_steps(app)[0]
        existing = add_task(app, "cfo1@maker1.example")
        app.store.flag_bad_phone(app.store.prospect("cfo3@maker3.example").id, at=NOW_DT)
        new = []
        for i in (1, 2, 2, 3):   # one already has its task; one is asked for twice
            prospect = app.store.prospect(f"cfo{i}@maker{i}.example")
            enrollment = app.store.enrollments(prospect.id)[-1]["id"]
            new.append(NewTask(enrollment, prospect, step, due, f"Hi First{i}"))
        created = create_tasks(app, new)
        assert [(t.prospect_id, t.script, t.status) for t in created] == [
            (new[1].prospect.id, "Hi First2", "open"), (new[3].prospect.id, "Hi First3", "closed")]
        assert fired == [existing.id, created[0].id]   # no hook for the closed one
        assert [r["script"] for r in app.store.open_call_tasks()] == [
            existing.script, "Hi First2"]
        for task in created:
            events = [e for e in app.store.events(task.prospect_id) if e["kind"] == "call_task"]
            assert [e["task_id"] for e in events] == ([task.id] if task.status == "open" else [])


def five_prospects(campaign: Campaign) -> None:
    enrolled(campaign, [
        prospect_row(1, title="CFO"),
        prospect_row(2, title="Chief Financial Officer"),
        prospect_row(3, title="cfo", first_name="Zoë", company="Maker, Inc; \"3\""),
        prospect_row(4, title="VP Finance"),
        prospect_row(5, title="CFO", phone=""),
    ])


def test_calls_groups_by_persona_largest_first_with_scripts(campaign: Campaign) -> None:
    five_prospects(campaign)
    with campaign.app() as app:
        add_task(app, "cfo4@maker4.example", due=NOW_DT - timedelta(hours=3))
        for n in (2, 1, 3, 5):
            add_task(app, f"cfo{n}@maker{n}.example", due=NOW_DT - timedelta(minutes=n))
        add_task(app, "cfo1@maker1.example", later=1, due=NOW_DT + timedelta(days=4))
    tasks = campaign.run_json("calls")
    assert [t["email"].split("@")[0] for t in tasks] == ["cfo5", "cfo3", "cfo2", "cfo1",
                                                         "cfo4"]
    first = tasks[0]
    assert set(first) >= {"id", "email", "name", "company", "title", "phone", "due", "script"}
    assert first["persona"] == "CFO · Manufacturing"
    assert tasks[-1]["persona"] == "VP Finance · Manufacturing"
    assert first["due"] == "2026-03-02T08:10:00-06:00"  # the SDR's (sender's) time zone
    assert tasks[1]["script"] == "Hi Zoë, this is Dana."

    table = campaign.run("calls")
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0] == "CFO · Manufacturing: 4 calls"
    assert lines[1].startswith("  #") and "Mon 02 Mar 08:10" in lines[1]
    assert "(no phone)" in lines[1]
    assert "        Hi First5, this is Dana." in lines
    assert "VP Finance · Manufacturing: 1 call" in lines
    assert "5 calls in 2 groups" in table.stderr

    everything = campaign.run_json("calls", "--all")
    assert len(everything) == 6
    assert [t["due"][:10] for t in everything if t["email"] == "cfo1@maker1.example"] == [
        "2026-03-02", "2026-03-06"]


def test_calls_hour_is_up_to_25_calls_of_the_largest_persona(campaign: Campaign) -> None:
    rows = [prospect_row(n) for n in range(1, 28)]
    rows += [prospect_row(n, title="VP Finance") for n in range(30, 35)]
    enrolled(campaign, rows)
    with campaign.app() as app:
        for row in rows:
            add_task(app, row["email"])
    hour = campaign.run_json("calls", "--hour")
    assert len(hour) == 25
    assert {t["persona"] for t in hour} == {"CFO · Manufacturing"}
    assert len(campaign.run_json("calls")) == 32


def test_calls_with_nothing_due_says_so(campaign: Campaign) -> None:
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        add_task(app, "cfo1@maker1.example", due=NOW_DT + timedelta(hours=1))
    result = campaign.run("calls")
    assert result.exit_code == 0 and result.stdout == ""
    assert "No calls due now" in result.stderr
    assert campaign.run_json("calls") == []


def test_calls_csv_has_a_header_and_one_row_per_call(campaign: Campaign) -> None:
    five_prospects(campaign)
    with campaign.app() as app:
        for n in range(1, 6):
            add_task(app, f"cfo{n}@maker{n}.example",
                     script=f"Line one for {n}, \"quoted\"\nLine two")
    result = campaign.run("calls", "--format", "csv")
    assert result.exit_code == 0
    assert b"\r\n" in result.stdout_bytes  # RFC 4180 line endings
    assert result.stdout.startswith("id,due,name,email,phone,company,title,industry,persona,")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 5
    by_email = {r["email"]: r for r in rows}
    assert by_email["cfo3@maker3.example"]["company"] == 'Maker, Inc; "3"'
    assert by_email["cfo3@maker3.example"]["script"] == 'Line one for 3, "quoted"\nLine two'
    assert by_email["cfo1@maker1.example"]["phone"] == "+1 555 0101"


def test_calls_ics_is_a_valid_calendar_with_stable_uids(campaign: Campaign) -> None:
    five_prospects(campaign)
    long_script = "Hi Zoë, this is Dana; about month-end close, again " * 6
    with campaign.app() as app:
        tasks = {n: add_task(app, f"cfo{n}@maker{n}.example", script=long_script)
                 for n in range(1, 6)}
    first = campaign.run("calls", "--format", "ics").stdout_bytes.decode()
    assert first.startswith("BEGIN:VCALENDAR\r\n") and first.endswith("END:VCALENDAR\r\n")
    assert all(len(line.encode()) <= 75 for line in first.split("\r\n"))
    cal = icalendar.Calendar.from_ical(first)
    events = list(cal.walk("VEVENT"))
    assert len(events) == 5
    by_uid = {str(e["UID"]): e for e in events}
    zoe = by_uid[f"call-task-{tasks[3].id}@acme.example"]
    assert str(zoe["SUMMARY"]) == 'Call Zoë Last3 (Maker, Inc; "3")'
    assert str(zoe["DESCRIPTION"]).endswith(long_script)
    assert "Phone: +1 555 0103" in str(zoe["DESCRIPTION"])
    assert zoe.decoded("DTSTART") == tasks[3].due
    assert zoe.decoded("DURATION") == timedelta(minutes=5)

    campaign.now("2026-03-02T09:00:00-06:00")
    again = icalendar.Calendar.from_ical(campaign.run("calls", "--format", "ics").stdout)
    assert {str(e["UID"]) for e in again.walk("VEVENT")} == set(by_uid)


class Recorder:
    """A plugin that keeps what it hears."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def stage_changed(self, prospect: Any, old: str, new: str) -> None:
        self.calls.append(("stage_changed", {"email": prospect.email, "old": old, "new": new}))

    @hookimpl
    def call_task_closed(self, prospect: Any, task: Any) -> None:
        self.calls.append(("call_task_closed", {"email": prospect.email, "id": task.id,
                                                "status": task.status,
                                                "outcome": task.outcome, "note": task.note}))


@pytest.fixture
def recorder(campaign: Campaign) -> Any:
    """A Recorder registered on every plugin manager the commands build."""
    import outreach.app
    from outreach.plugins import make_manager

    rec = Recorder()

    def manager(*args: Any, **kwargs: Any) -> Any:
        pm = make_manager(*args, **kwargs)
        pm.register(rec, name="recorder")
        return pm

    campaign.monkeypatch.setattr(outreach.app, "make_manager", manager)
    return rec


def test_call_meeting_ends_the_sequence_as_won(campaign: Campaign, recorder: Recorder) -> None:
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
        later = add_task(app, "cfo1@maker1.example", later=1, due=NOW_DT + timedelta(days=4))
    result = campaign.run("call", str(task.id), "--outcome", "meeting", "--note", "Tue 10am")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"call {task.id} (cfo1@maker1.example): meeting, stage opportunity\n"
    status = campaign.run_json("status", "cfo1@maker1.example")
    assert status["stage"] == "opportunity"
    assert [e["state"] for e in status["enrollments"]] == ["won"]
    calls = [e for e in status["events"] if e["kind"] == "call"]
    assert [(c["outcome"], c["note"], c["task_id"]) for c in calls] == [
        ("meeting", "Tue 10am", task.id)]
    assert campaign.run_json("calls", "--all") == []
    assert recorder.calls == [
        ("call_task_closed", {"email": "cfo1@maker1.example", "id": task.id, "status": "done",
                              "outcome": "meeting", "note": "Tue 10am"}),
        ("call_task_closed", {"email": "cfo1@maker1.example", "id": later.id,
                              "status": "closed", "outcome": None, "note": "call meeting"}),
        ("stage_changed", {"email": "cfo1@maker1.example", "old": "prospect",
                           "new": "opportunity"}),
    ]


def test_call_not_interested_stops_the_sequence(campaign: Campaign, recorder: Recorder) -> None:
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
    assert campaign.run("call", str(task.id), "--outcome", "not-interested").exit_code == 0
    status = campaign.run_json("status", "cfo1@maker1.example")
    assert status["stage"] == "not-interested"
    assert [e["state"] for e in status["enrollments"]] == ["stopped"]
    assert ("stage_changed", {"email": "cfo1@maker1.example", "old": "prospect",
                              "new": "not-interested"}) in recorder.calls


@pytest.mark.parametrize("outcome", ["connected", "voicemail", "no-answer"])
def test_call_plain_outcomes_are_recorded_and_keep_the_sequence(
        campaign: Campaign, recorder: Recorder, outcome: str) -> None:
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
    doc = campaign.run_json("call", str(task.id), "--outcome", outcome)
    assert doc == {"id": task.id, "email": "cfo1@maker1.example", "outcome": outcome,
                   "note": None, "stage": "prospect", "closed_tasks": []}
    status = campaign.run_json("status", "cfo1@maker1.example")
    assert [e["state"] for e in status["enrollments"]] == ["active"]
    assert [e["outcome"] for e in status["events"] if e["kind"] == "call"] == [outcome]
    assert [c[0] for c in recorder.calls] == ["call_task_closed"]
    assert campaign.run_json("calls") == []
    text = campaign.run("status", "cfo1@maker1.example").stdout
    assert f"outcome={outcome}" in text


def test_call_bad_number_flags_the_phone_and_skips_later_calls(campaign: Campaign) -> None:
    enrolled(campaign, [prospect_row(1), prospect_row(2)])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
        add_task(app, "cfo2@maker2.example")
    doc = campaign.run_json("call", str(task.id), "--outcome", "bad-number")
    assert doc["closed_tasks"] == []
    with campaign.app() as app:
        assert app.store.prospect("cfo1@maker1.example").phone_bad
        later = add_task(app, "cfo1@maker1.example", later=1)
    assert (later.status, later.note) == ("closed", "bad number")
    assert [t["email"] for t in campaign.run_json("calls", "--all")] == ["cfo2@maker2.example"]


def test_call_errors_name_the_task_and_what_to_do(campaign: Campaign) -> None:
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
    missing = campaign.run("call", "999", "--outcome", "voicemail")
    assert missing.exit_code == 1
    assert "call task 999: no such task; list them with `outreach calls --all`" in missing.stderr
    assert campaign.run("call", str(task.id), "--outcome", "voicemail").exit_code == 0
    twice = campaign.run("call", str(task.id), "--outcome", "meeting")
    assert twice.exit_code == 1
    assert f"call task {task.id}: already recorded as voicemail" in twice.stderr
    bad = campaign.run("call", str(task.id), "--outcome", "maybe")
    assert bad.exit_code == 2


def test_tasks_close_when_the_prospect_is_suppressed_or_replied(
        campaign: Campaign, recorder: Recorder) -> None:
    enrolled(campaign, [prospect_row(1), prospect_row(2), prospect_row(3)])
    with campaign.app() as app:
        one = add_task(app, "cfo1@maker1.example")
        two = add_task(app, "cfo2@maker2.example")
        add_task(app, "cfo3@maker3.example")
        # a reply, as `outreach poll` records it: the enrollment ends as replied
        with app.store.transaction():
            app.store.end_enrollments(app.store.prospect("cfo2@maker2.example").id,
                                      state="replied", reason="reply", at=NOW_DT)
    assert campaign.run("suppress", "cfo1@maker1.example").exit_code == 0
    assert [t["email"] for t in campaign.run_json("calls")] == ["cfo3@maker3.example"]
    closed = {c[1]["id"]: c[1]["note"] for c in recorder.calls if c[0] == "call_task_closed"}
    assert closed == {one.id: "suppressed: manual", two.id: "sequence replied"}
    with campaign.app() as app:
        row = app.store.call_task(two.id)
        assert (row["status"], row["note"]) == ("closed", "sequence replied")
    assert json.loads(campaign.run("calls", "--json").stdout)[0]["id"] not in closed


def test_calls_wait_while_the_prospect_is_out_of_office(campaign: Campaign) -> None:
    enrolled(campaign, [prospect_row(1), prospect_row(2)])
    with campaign.app() as app:
        away = add_task(app, "cfo1@maker1.example")
        add_task(app, "cfo2@maker2.example")
        with app.store.transaction():  # what `outreach poll` does with an out-of-office
            app.store.pause_enrollments(away.prospect_id, until=NOW_DT + timedelta(days=7))
    assert [t["email"] for t in campaign.run_json("calls")] == ["cfo2@maker2.example"]
    campaign.now("2026-03-09T09:00:00-06:00")  # back
    assert [t["email"] for t in campaign.run_json("calls")] == ["cfo1@maker1.example",
                                                                "cfo2@maker2.example"]


@pytest.mark.parametrize(("state", "listed"), [
    ("active", True), ("completed", True), ("replied", False), ("won", False),
    ("stopped", False), ("bounced", False), ("unsubscribed", False), ("recycled", False),
])
def test_a_task_stays_on_the_list_while_its_sequence_allows(campaign: Campaign, state: str,
                                                            listed: bool) -> None:
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
        with app.store.transaction():
            app.store.db.execute("UPDATE enrollments SET state = ?", (state,))
    assert [t["id"] for t in campaign.run_json("calls")] == ([task.id] if listed else [])
    with campaign.app() as app:
        row = app.store.call_task(task.id)
    assert (row["status"], row["note"]) == (("open", None) if listed
                                            else ("closed", f"sequence {state}"))


def test_a_call_made_before_the_list_caught_up_is_still_recorded(campaign: Campaign) -> None:
    """The SDR dialled from a list printed before the prospect replied: the call happened."""
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
        with app.store.transaction():
            app.store.end_enrollments(task.prospect_id, state="replied", reason="reply",
                                      at=NOW_DT)
    assert campaign.run_json("calls") == []  # closed automatically
    doc = campaign.run_json("call", str(task.id), "--outcome", "connected", "--note", "chat")
    assert (doc["outcome"], doc["note"]) == ("connected", "chat")
    with campaign.app() as app:
        row = app.store.call_task(task.id)
    assert (row["status"], row["outcome"]) == ("done", "connected")


def test_a_new_phone_number_clears_the_bad_number_flag(campaign: Campaign) -> None:
    enrolled(campaign, [prospect_row(1), prospect_row(2)])
    with campaign.app() as app:
        one, two = add_task(app, "cfo1@maker1.example"), add_task(app, "cfo2@maker2.example")
    for task in (one, two):
        campaign.run_json("call", str(task.id), "--outcome", "bad-number")
    fixed = campaign.write_csv([prospect_row(1, phone="+1 555 9999"), prospect_row(2)],
                               name="fixed.csv")
    assert campaign.run("import", str(fixed)).exit_code == 0
    with campaign.app() as app:
        assert not app.store.prospect("cfo1@maker1.example").phone_bad
        assert app.store.prospect("cfo2@maker2.example").phone_bad  # same number: still bad
        assert add_task(app, "cfo1@maker1.example", later=1).status == "open"
