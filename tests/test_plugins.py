"""The plugins that ship in plugins/: crm_jsonl, webhook, calendar_ics; and how init offers them."""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import icalendar
import pytest

from .conftest import REPO, Campaign, prospect_row
from .test_calls import NOW, NOW_DT, add_task, enrolled


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
                              "key": self.headers.get("Idempotency-Key"),
                              "doc": json.loads(body)})
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(port: int = 0) -> Iterator[tuple[str, type[Hook]]]:
    """A real HTTP endpoint on 127.0.0.1 (on `port`, to bring a down one back up)."""
    handler = type("Handler", (Hook,), {"received": [], "statuses": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def hook_server() -> Iterator[tuple[str, type[Hook]]]:
    with serving() as endpoint:
        yield endpoint


def said(result: Any) -> list[str]:
    """What the webhook plugin said on stderr (an import adds its own notes there)."""
    return [line for line in result.stderr.splitlines() if line.startswith("outreach: plugin")]


def delivered(handler: type[Hook]) -> list[dict[str, Any]]:
    return [r["doc"] for r in handler.received if r["status"] == 200]


def test_webhook_posts_each_event_as_json_and_retries_server_errors(
        campaign: Campaign, hook_server: tuple[str, type[Hook]]) -> None:
    url, handler = hook_server
    handler.statuses.extend([503, 500])  # the first event needs three tries
    campaign.monkeypatch.setenv("HOOK_TOKEN", "s3cret")
    enable(campaign, "webhook",
           f'url = "{url}"\ntoken_env = "HOOK_TOKEN"\ntimeout = 2\nbackoff = 0.01')
    enrolled(campaign, [prospect_row(1), prospect_row(2)])
    assert [r["status"] for r in handler.received] == [503, 500, 200, 200]
    assert [d["email"] for d in delivered(handler)] == ["cfo1@maker1.example",
                                                        "cfo2@maker2.example"]
    assert {d["event"] for d in delivered(handler)} == {"prospect_imported"}
    # One id per event, the same on every try, in the body and as the Idempotency-Key.
    ids = [r["doc"]["id"] for r in handler.received]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert [r["key"] for r in handler.received] == ids
    assert {r["auth"] for r in handler.received} == {"Bearer s3cret"}
    assert {r["type"] for r in handler.received} == {"application/json"}
    assert "s3cret" not in campaign.config_path.read_text()
    assert "webhook: call_task_closed, call_task_created, campaign_opened, message_sent, " \
        "plugin_status, prospect_imported, reply_received, stage_changed\n  no events " \
        "waiting\n" in campaign.run("plugins").stdout


def test_webhook_down_keeps_events_in_a_spool_and_replays_them_in_order_when_back(
        campaign: Campaign) -> None:
    with socket.socket() as probe:  # a port where nothing listens: the endpoint is down
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    enable(campaign, "webhook", f'url = "{url}"\nattempts = 2\nbackoff = 0.01\ntimeout = 2')
    campaign.now(NOW)
    result = campaign.run("import", str(campaign.write_csv([prospect_row(n)
                                                            for n in (1, 2, 3)])))
    assert result.exit_code == 0
    spool = campaign.root / "webhook-spool"
    assert said(result) == [
        f"outreach: plugin webhook: {url} unreachable after 2 attempt(s) (Connection refused); "
        f"1 event kept in {spool}, and the next ones join them: sent again in order on the "
        "next command or after 300s (`outreach plugins` counts them)"]
    assert f"\n  3 events waiting in {spool}\n" in campaign.run("plugins").stdout
    kept = [json.loads(p.read_text()) for p in sorted(spool.glob("*.json"))]
    assert [d["email"] for d in kept] == [f"cfo{n}@maker{n}.example" for n in (1, 2, 3)]

    with serving(port) as (_, handler):
        handler.statuses.append(200)
        handler.statuses.append(503)  # the second is lost on the way: it goes again, same id
        listed = campaign.run("plugins")  # only reads: sends nothing
        assert handler.received == []
        status = campaign.run("status", "cfo1@maker1.example")  # a command: replays, 1 try
        assert status.exit_code == 0
        assert [r["status"] for r in handler.received] == [200, 503]
        assert f"\n  2 events waiting in {spool}\n" in campaign.run("plugins").stdout
        more = campaign.run("import", str(campaign.write_csv([prospect_row(4)], "more.csv")))
        assert more.exit_code == 0 and said(more) == []
    assert listed.exit_code == 0
    # At least once, in order; a receiver that keeps the first of each id has each event once.
    assert [r["doc"]["email"] for r in handler.received] == [
        "cfo1@maker1.example", "cfo2@maker2.example", "cfo2@maker2.example",
        "cfo3@maker3.example", "cfo4@maker4.example"]
    assert [d["id"] for d in delivered(handler)][:3] == [d["id"] for d in kept]
    assert handler.received[1]["doc"]["id"] == handler.received[2]["doc"]["id"]
    assert list(spool.glob("*.json")) == []
    assert "\n  no events waiting\n" in campaign.run("plugins").stdout


@contextlib.contextmanager
def silent_endpoint() -> Iterator[tuple[str, list[socket.socket]]]:
    """Accepts connections and never answers: each try costs its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/", accepted
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        listener.close()
        thread.join()
        for conn in accepted:
            conn.close()


@pytest.mark.parametrize("endpoint", ["failing", "silent"])
def test_a_down_webhook_endpoint_is_tried_a_bounded_number_of_times_per_run(
        campaign: Campaign, endpoint: str) -> None:
    """90 events with the endpoint down: one event's attempts in the run that finds it down,
    then one try at the start of each later command; the rest wait in the spool. (How long
    that takes is measured by bench/webhook.py, not asserted here.)"""
    with contextlib.ExitStack() as stack:
        if endpoint == "failing":
            url, handler = stack.enter_context(serving())
            handler.statuses.extend([503] * 100)
            tries: list[Any] = handler.received
        else:
            url, tries = stack.enter_context(silent_endpoint())
        enable(campaign, "webhook", f'url = "{url}"\ntimeout = 0.3\nattempts = 2\n'
                                    "backoff = 0.05")
        enrolled(campaign, [prospect_row(n) for n in range(1, 31)])  # import, enroll
        sent = campaign.run_json("send")
        assert len(tries) == 2 + 1 + 1  # import: the first event's 2 attempts; enroll, send: 1
    assert sent["sent"] == 30 and len(campaign.run_json("prospects")) == 30
    # 30 imports, 30 messages, 30 call tasks: none lost
    assert f"\n  90 events waiting in {campaign.root / 'webhook-spool'}\n" in (
        campaign.run("plugins").stdout)


def test_webhook_set_aside_what_the_endpoint_refuses_and_go_on(
        campaign: Campaign, hook_server: tuple[str, type[Hook]]) -> None:
    url, handler = hook_server
    handler.statuses.append(400)
    enable(campaign, "webhook", f'url = "{url}"\nbackoff = 0.01')
    result = campaign.run("import", str(campaign.write_csv([prospect_row(1), prospect_row(2)])))
    assert result.exit_code == 0
    assert [r["status"] for r in handler.received] == [400, 200]  # not retried
    rejected = campaign.root / "webhook-spool" / "rejected"
    first = handler.received[0]["doc"]["id"]
    assert said(result) == [
        f"outreach: plugin webhook: {url} refused event {first} (prospect_imported "
        f"cfo1@maker1.example): HTTP 400 Bad Request; set aside in {rejected} (not sent "
        "again)"]
    [kept] = rejected.glob("*.json")
    assert json.loads(kept.read_text())["id"] == first
    assert f"\n  1 refused by the endpoint in {rejected}\n" in campaign.run("plugins").stdout


def test_webhook_keeps_everything_while_the_endpoint_says_the_url_or_token_is_wrong(
        campaign: Campaign, hook_server: tuple[str, type[Hook]]) -> None:
    url, handler = hook_server
    handler.statuses.extend([401])
    enable(campaign, "webhook", f'url = "{url}"\nbackoff = 0.01')
    result = campaign.run("import", str(campaign.write_csv([prospect_row(1), prospect_row(2)])))
    assert [r["status"] for r in handler.received] == [401]  # not retried, the next not tried
    assert result.stderr.startswith(f"outreach: plugin webhook: {url} answers HTTP 401 "
                                    "Unauthorized: check url and token; 1 event kept in ")
    assert "\n  2 events waiting in " in campaign.run("plugins").stdout


# -- calendar_ics ------------------------------------------------------------------------


def events_in(path: Any) -> dict[str, Any]:
    cal = icalendar.Calendar.from_ical(path.read_bytes())
    return {str(e["UID"]): e for e in cal.walk("VEVENT")}


def test_calendar_ics_tracks_open_tasks_as_they_are_created_and_closed(
        campaign: Campaign) -> None:
    enable(campaign, "calendar_ics", 'path = "cal/calls.ics"')
    enrolled(campaign, [prospect_row(1), prospect_row(2), prospect_row(3)])
    ics = campaign.root / "cal" / "calls.ics"
    assert events_in(ics) == {}  # written from the first command on, empty while no calls
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
    (0, [503, 503, 200, 200]),    # tried again at once when down_for has passed, in order
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
    assert result.stderr.count("outreach: plugin webhook: ") == 1
    assert (f"unreachable after 2 attempt(s) (HTTP 503); 1 event kept in "
            f"{campaign.root / 'webhook-spool'}, and the next ones join them: sent again in "
            f"order on the next command or after {down_for}s") in result.stderr
    assert [d["email"] for d in delivered(handler)] == (
        ["cfo1@maker1.example", "cfo2@maker2.example"] if down_for == 0 else [])


def test_calendar_ics_writes_the_open_tasks_on_its_first_run_with_the_calls_uids(
        campaign: Campaign) -> None:
    """Enabled after calls were made: the first command writes them all, with the UIDs of
    `outreach calls --format ics`, so importing both files gives each call once."""
    enrolled(campaign, [prospect_row(1), prospect_row(2), prospect_row(3)])
    with campaign.app() as app:
        one = add_task(app, "cfo1@maker1.example")
        two = add_task(app, "cfo2@maker2.example", due=NOW_DT + timedelta(days=2))
        done = add_task(app, "cfo3@maker3.example")
    assert campaign.run("call", str(done.id), "--outcome", "voicemail").exit_code == 0
    exported = campaign.run("calls", "--all", "--format", "ics").stdout_bytes
    enable(campaign, "calendar_ics")
    ics = campaign.root / "calls.ics"
    assert f"\n  {ics} is written by the next command that opens the campaign\n" in (
        campaign.run("plugins").stdout)
    assert campaign.run("stats").exit_code == 0  # any command
    assert f"\n  2 open calls in {ics}\n" in campaign.run("plugins").stdout
    ics.with_name("calls.ics.json").write_text('{"1": {"uid"')   # damaged by hand
    rebuilt = campaign.run("stats")
    assert rebuilt.exit_code == 0 and "calendar_ics failed" not in rebuilt.stderr
    assert f"\n  2 open calls in {ics}\n" in campaign.run("plugins").stdout
    events = events_in(ics)
    assert set(events) == {f"call-task-{one.id}@acme.example", f"call-task-{two.id}@acme.example"}
    both = icalendar.Calendar()  # a calendar app that imported both files
    for raw in (exported, ics.read_bytes()):
        for event in icalendar.Calendar.from_ical(raw).walk("VEVENT"):
            both.add_component(event)
    uids = [str(e["UID"]) for e in both.walk("VEVENT")]
    assert sorted(set(uids)) == sorted(events) and len(uids) == 4  # each call twice, one UID


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
