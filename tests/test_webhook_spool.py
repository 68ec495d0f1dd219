"""The webhook's spool under the worst timing: a command killed (SIGKILL) while its POST is
in flight, and a clock set back between two events. Nothing is lost, nothing reordered."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO, Campaign, prospect_row
from .test_plugins import delivered, enable, serving


@contextlib.contextmanager
def hanging_endpoint() -> Iterator[tuple[str, list[bytes], threading.Event]]:
    """Reads each request in full, records it, and never answers (a POST stays in flight)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    requests: list[bytes] = []
    arrived = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                held.append(conn)
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(65536)
                requests.append(body)
                arrived.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook", requests, arrived
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join()
        for conn in held:
            conn.close()


@pytest.mark.slow
def test_a_command_killed_mid_post_loses_no_event(campaign: Campaign) -> None:
    with hanging_endpoint() as (url, requests, arrived):
        enable(campaign, "webhook", f'url = "{url}"\ntimeout = 60\nattempts = 1')
        csv = campaign.write_csv([prospect_row(1)])
        proc = subprocess.Popen(
            [sys.executable, "-m", "outreach", "import", str(csv), "--config",
             str(campaign.config_path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=os.environ)
        try:
            assert arrived.wait(timeout=30), "the POST never arrived"
            proc.send_signal(signal.SIGKILL)   # the endpoint has the event but never answered
            proc.wait(timeout=30)
        finally:
            proc.kill()
            proc.wait()
    [in_flight] = [json.loads(body) for body in requests]
    assert in_flight["event"] == "prospect_imported"
    assert f"\n  1 event waiting in {campaign.root / 'webhook-spool'}\n" in (
        campaign.run("plugins").stdout)
    with serving() as (back, handler):
        campaign.edit_config(f'url = "{url}"', f'url = "{back}"')
        assert campaign.run("status", "cfo1@maker1.example").exit_code == 0
    assert [d["id"] for d in delivered(handler)] == [in_flight["id"]]   # the same event, again
    assert "\n  no events waiting\n" in campaign.run("plugins").stdout


def webhook_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("webhook_under_test",
                                                  REPO / "plugins" / "webhook.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_clock_set_back_never_puts_a_new_event_before_older_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    webhook = webhook_module()
    clock = iter([5_000, 4_000, 4_000, 3_000])   # NTP steps back, twice the same reading
    monkeypatch.setattr(webhook.time, "time_ns", lambda: next(clock))
    for n in range(3):
        webhook.keep(tmp_path, {"id": f"first-run-{n}"})
    webhook._last.clear()   # a later command: it starts from what the spool holds
    webhook.keep(tmp_path, {"id": "next-command"})
    kept = [json.loads(p.read_text())["id"] for p in webhook.waiting(tmp_path)]
    assert kept == ["first-run-0", "first-run-1", "first-run-2", "next-command"]
