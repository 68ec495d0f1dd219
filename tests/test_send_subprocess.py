"""Never twice, across processes: a run killed with SIGKILL then rerun, and two `outreach send`
started at once. Real processes against a real aiosmtpd server."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import prospect_row
from tests.smtp_server import Slow, use_smtp

pytestmark = pytest.mark.slow


def start_send(campaign, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "outreach", "send", "--json", *args,
         "--config", str(campaign.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def statuses(campaign):
    db = sqlite3.connect(campaign.root / "outreach.db")
    try:
        return Counter(s for (s,) in db.execute("SELECT status FROM messages"))
    finally:
        db.close()


def enroll(campaign, n):
    campaign.edit_config("daily_limit = 75 ", "daily_limit = 500 ")
    campaign.edit_config("per_run_limit = 50 ", "per_run_limit = 500 ")
    campaign.now("2026-03-05T07:30:00-06:00")
    campaign.run_json("import", str(campaign.write_csv([prospect_row(i) for i in range(n)])))
    assert campaign.run_json("enroll", "referral")["enrolled"] == n


def signalled_mid_run(campaign, smtp_server, sig, *, after):
    """60 due emails to a slow server; `sig` once `after` of them arrived."""
    slow = Slow(delay=0.05)
    use_smtp(campaign, smtp_server(slow).port, concurrency=2)
    enroll(campaign, 60)
    run = start_send(campaign)
    slow.wait_for(after)
    run.send_signal(sig)
    return slow, run


def test_sigkill_mid_run_then_rerun_sends_nobody_twice(campaign, smtp_server):
    slow, first = signalled_mid_run(campaign, smtp_server, signal.SIGKILL, after=8)
    first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    killed_at = len(slow.messages)
    assert killed_at < 60

    slow.delay = 0
    second = start_send(campaign)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    summary = json.loads(out)

    received = Counter(slow.recipients())
    assert max(received.values()) == 1                 # nobody got the step twice
    ledger = statuses(campaign)
    assert set(ledger) <= {"sent", "unknown"}          # no intent is left dangling
    assert summary["unknown"] == ledger["unknown"] >= 1
    assert summary["sent"] > 0                         # the rest went out on the rerun
    assert ledger["sent"] + ledger["unknown"] == 60
    # every unknown is a message the dead run may have handed over; every sent one arrived
    assert ledger["sent"] <= len(received) <= 60
    events = campaign.run_json("status", summary["unknowns"][0]["email"])["events"]
    assert "send_unknown" in {e["kind"] for e in events}

    third = start_send(campaign, "--ignore-window")
    out, _ = third.communicate(timeout=60)
    assert json.loads(out)["sent"] == 0
    assert max(Counter(slow.recipients()).values()) == 1


def test_two_concurrent_senders_deliver_each_message_once(campaign, smtp_server):
    recorder = Slow(delay=0.01)
    server = smtp_server(recorder)
    use_smtp(campaign, server.port, concurrency=2)
    enroll(campaign, 40)

    runs = [start_send(campaign), start_send(campaign)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in runs]

    received = Counter(recorder.recipients())
    assert sorted(received) == sorted(f"cfo{i}@maker{i}.example" for i in range(40))
    assert set(received.values()) == {1}
    assert statuses(campaign) == {"sent": 40}
    sent = 0
    for code, out, err in results:
        if code == 0:
            sent += json.loads(out)["sent"]
        else:   # the loser of the race is told why, and sent nothing
            assert "another `outreach send` is running" in err
    assert sent == 40


def test_sigterm_finishes_what_is_in_flight_and_stops(campaign, smtp_server):
    slow, run = signalled_mid_run(campaign, smtp_server, signal.SIGTERM, after=6)
    out, err = run.communicate(timeout=20)
    assert run.returncode == 1, err
    summary = json.loads(out)
    assert summary["stopped"].startswith("stopped by SIGTERM")
    assert 6 <= summary["sent"] < 60 and summary["unknown"] == 0
    assert statuses(campaign) == {"sent": summary["sent"]}   # no intent left behind
    assert len(slow.recipients()) == summary["sent"]

    slow.delay = 0
    rest = start_send(campaign)
    out, err = rest.communicate(timeout=60)
    assert json.loads(out)["sent"] == 60 - summary["sent"], err
    assert sorted(Counter(slow.recipients()).values()) == [1] * 60
