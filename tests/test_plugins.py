"""The plugins that ship in plugins/: crm_jsonl, webhook, calendar_ics; and how init offers them."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import icalendar
import pytest

from .conftest import REPO, Campaign, prospect_row
from .test_calls import NOW_DT, add_task, enrolled


def enable(campaign: Campaign, name: str, settings: str = "") -> None:
    """What the README tells a user to do: copy the example up, add its settings table."""
    shutil.copy(campaign.root / "plugins" / "examples" / f"{name}.py",
                campaign.root / "plugins" / f"{name}.py")
    if settings:
        with campaign.config_path.open("a", encoding="utf-8") as fh:
            fh.write(f"\n[plugins.{name}]\n{settings}\n")


def test_init_offers_the_shipped_plugins_without_loading_them(campaign: Campaign) -> None:
    examples = campaign.root / "plugins" / "examples"
    assert sorted(p.name for p in examples.glob("*.py")) == [
        "calendar_ics.py", "crm_jsonl.py", "webhook.py"]
    assert (examples / "webhook.py").read_bytes() == (REPO / "plugins" / "webhook.py").read_bytes()
    names = {p["name"] for p in campaign.run_json("plugins")}
    assert not names & {"calendar_ics", "crm_jsonl", "webhook"}
    enable(campaign, "crm_jsonl")
    listed = {p["name"]: p["hooks"] for p in campaign.run_json("plugins")}
    assert listed["crm_jsonl"] == ["call_task_closed", "call_task_created", "message_sent",
                                   "prospect_imported", "reply_received", "stage_changed"]
    assert campaign.run("import", str(campaign.write_csv([prospect_row(1)]))).exit_code == 0
    # by default beside outreach.toml, whatever the current directory
    [line] = (campaign.root / "events.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(line)["event"] == "prospect_imported"


# -- crm_jsonl ---------------------------------------------------------------------------


def test_crm_jsonl_appends_one_json_line_per_event(campaign: Campaign) -> None:
    enable(campaign, "crm_jsonl", 'path = "crm/events.jsonl"')
    enrolled(campaign, [prospect_row(1), prospect_row(2, first_name="Zoë")])
    with campaign.app() as app:
        task = add_task(app, "cfo2@maker2.example")
    assert campaign.run("call", str(task.id), "--outcome", "meeting").exit_code == 0
    path = campaign.root / "crm" / "events.jsonl"  # relative to outreach.toml, not the cwd
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [(d["event"], d["email"]) for d in lines] == [
        ("prospect_imported", "cfo1@maker1.example"),
        ("prospect_imported", "cfo2@maker2.example"),
        ("call_task_created", "cfo2@maker2.example"),
        ("call_task_closed", "cfo2@maker2.example"),
        ("stage_changed", "cfo2@maker2.example"),
    ]
    assert lines[1]["prospect"]["first_name"] == "Zoë"
    assert lines[1]["prospect"]["pain_point"] == "month-end close"
    assert lines[0]["at"] == "2026-03-02T14:15:00+00:00"  # OUTREACH_NOW, in UTC
    assert lines[2]["task"]["id"] == task.id and lines[2]["task"]["script"] == task.script
    assert (lines[3]["task"]["status"], lines[3]["task"]["outcome"]) == ("done", "meeting")
    assert (lines[4]["old"], lines[4]["new"]) == ("prospect", "opportunity")


# -- webhook -----------------------------------------------------------------------------


class Hook(http.server.BaseHTTPRequestHandler):
    """Records each POST; answers with the next status in `statuses` (then 200)."""

    received: list[dict[str, Any]]
    statuses: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append({"status": status, "auth": self.headers.get("Authorization"),
                              "type": self.headers.get("Content-Type"),
                              "doc": json.loads(body)})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[Hook]]]:
    handler = type("Handler", (Hook,), {"received": [], "statuses": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_webhook_posts_each_event_as_json_and_retries_server_errors(
        campaign: Campaign, hook_server: tuple[str, type[Hook]]) -> None:
    url, handler = hook_server
    handler.statuses.extend([503, 500])  # the first event needs three tries
    campaign.monkeypatch.setenv("HOOK_TOKEN", "s3cret")
    enable(campaign, "webhook",
           f'url = "{url}"\ntoken_env = "HOOK_TOKEN"\ntimeout = 2\nbackoff = 0.01')
    enrolled(campaign, [prospect_row(1), prospect_row(2)])
    assert [r["status"] for r in handler.received] == [503, 500, 200, 200]
    delivered = [r for r in handler.received if r["status"] == 200]
    assert [r["doc"]["email"] for r in delivered] == ["cfo1@maker1.example",
                                                      "cfo2@maker2.example"]
    assert {r["doc"]["event"] for r in delivered} == {"prospect_imported"}
    assert {r["auth"] for r in handler.received} == {"Bearer s3cret"}
    assert {r["type"] for r in handler.received} == {"application/json"}
    assert "s3cret" not in campaign.config_path.read_text()


def test_webhook_client_errors_are_not_retried_and_are_reported(
        campaign: Campaign, hook_server: tuple[str, type[Hook]]) -> None:
    url, handler = hook_server
    handler.statuses.append(400)
    enable(campaign, "webhook", f'url = "{url}"\nbackoff = 0.01')
    csv_path = campaign.write_csv([prospect_row(1), prospect_row(2)])
    result = campaign.run("import", str(csv_path))
    assert result.exit_code == 0
    assert [r["status"] for r in handler.received] == [400, 200]
    assert "plugin webhook failed in prospect_imported: RuntimeError: " in result.stderr
    assert "HTTP 400" in result.stderr


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
def test_unreachable_webhook_never_holds_up_a_run_for_long(campaign: Campaign,
                                                           endpoint: str) -> None:
    """A closed port refuses at once; a silent one (accepts, never answers) costs timeouts,
    once: after one event has used its attempts the endpoint is skipped for the run."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if endpoint == "silent":
        listener.listen(64)
    else:
        listener.close()
    try:
        enable(campaign, "webhook", f'url = "http://127.0.0.1:{port}/"\ntimeout = 0.3\n'
                                    "attempts = 2\nbackoff = 0.05")
        rows = [prospect_row(n) for n in range(1, 31)]
        started = time.monotonic()
        enrolled(campaign, rows)
        sent = campaign.run_json("send")
        elapsed = time.monotonic() - started
    finally:
        listener.close()
    # 30 imports, 30 messages, 30 call tasks: 90 events, at most one event's worth of waiting
    assert elapsed < 4, f"90 events took {elapsed:.1f}s with the endpoint down"
    assert len(campaign.run_json("prospects")) == 30  # the import itself went through
    assert sent["sent"] == 30
    with campaign.app() as app:
        task = add_task(app, "cfo1@maker1.example")
    assert campaign.run("call", str(task.id), "--outcome", "connected").exit_code == 0


# -- calendar_ics ------------------------------------------------------------------------


def events_in(path: Any) -> dict[str, Any]:
    cal = icalendar.Calendar.from_ical(path.read_bytes())
    return {str(e["UID"]): e for e in cal.walk("VEVENT")}


def test_calendar_ics_tracks_open_tasks_as_they_are_created_and_closed(
        campaign: Campaign) -> None:
    enable(campaign, "calendar_ics", 'path = "cal/calls.ics"\ndomain = "acme.example"')
    enrolled(campaign, [prospect_row(1), prospect_row(2), prospect_row(3)])
    ics = campaign.root / "cal" / "calls.ics"
    assert not ics.exists()
    with campaign.app() as app:
        one = add_task(app, "cfo1@maker1.example", script="Hi, about month-end close; again, "
                                                          "Dana at +1 312 555 0100 " * 3)
        two = add_task(app, "cfo2@maker2.example")
        three = add_task(app, "cfo3@maker3.example", due=NOW_DT + timedelta(days=1))
    events = events_in(ics)
    assert set(events) == {f"call-task-{t.id}@acme.example" for t in (one, two, three)}
    first = events[f"call-task-{one.id}@acme.example"]
    assert str(first["SUMMARY"]) == "Call First1 Last1 (Maker 1 Inc)"
    assert str(first["DESCRIPTION"]).endswith(one.script)
    assert first.decoded("DTSTART") == one.due
    # The same UIDs as `outreach calls --format ics`, so importing both never duplicates.
    listed = icalendar.Calendar.from_ical(
        campaign.run("calls", "--all", "--format", "ics").stdout_bytes)
    assert {str(e["UID"]) for e in listed.walk("VEVENT")} == set(events)

    assert campaign.run("call", str(one.id), "--outcome", "voicemail").exit_code == 0
    assert campaign.run("suppress", "cfo3@maker3.example").exit_code == 0
    assert set(events_in(ics)) == {f"call-task-{two.id}@acme.example"}
    assert campaign.run("call", str(two.id), "--outcome", "meeting").exit_code == 0
    assert events_in(ics) == {}


@pytest.mark.parametrize(("down_for", "statuses"), [
    (300, [503, 503]),            # down: the second event is not even tried
    (0, [503, 503, 200]),         # tried again at once when down_for has passed
])
def test_webhook_skips_a_down_endpoint_for_down_for_seconds(
        campaign: Campaign, hook_server: tuple[str, type[Hook]], down_for: int,
        statuses: list[int]) -> None:
    url, handler = hook_server
    handler.statuses.extend([503, 503])
    enable(campaign, "webhook", f'url = "{url}"\nattempts = 2\nbackoff = 0.01\n'
                                f"down_for = {down_for}")
    result = campaign.run("import", str(campaign.write_csv([prospect_row(1), prospect_row(2)])))
    assert result.exit_code == 0
    assert [r["status"] for r in handler.received] == statuses
    assert result.stderr.count("plugin webhook failed in prospect_imported") == 1
    assert f"unreachable after 2 attempt(s) (HTTP 503); skipping it for {down_for}s" in (
        result.stderr)


def test_calendar_ics_drops_a_prospects_calls_when_they_reply(campaign: Campaign) -> None:
    from .test_hooks import deliver, sent_message, started

    enable(campaign, "calendar_ics")
    started(campaign, 2)
    assert campaign.run("send").exit_code == 0  # creates the day-0 call tasks
    ics = campaign.root / "calls.ics"  # the default, next to outreach.toml
    assert len(events_in(ics)) == 2
    first = sent_message(campaign, "cfo1@maker1.example")
    deliver(campaign, sender="cfo1@maker1.example", subject=f"Re: {first['Subject']}",
            body="Happy to talk.", in_reply_to=first["Message-ID"])
    assert campaign.run("poll").exit_code == 0
    [left] = events_in(ics).values()
    assert "cfo2@maker2.example" in str(left["DESCRIPTION"])
