"""Never twice, across processes: two `outreach send` started at once, and SIGTERM mid-run.
Real processes against a real aiosmtpd server (kill -9 at chosen points: test_send_crash.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import prospect_row
from tests.ledger import statuses
from tests.smtp_server import Slow, use_smtp

pytestmark = pytest.mark.slow


def start_send(campaign, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "outreach", "send", "--json", *args,
         "--config", str(campaign.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


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
            assert "another `outreach send`" in err
    assert sent == 40


def test_sigterm_finishes_what_is_in_flight_and_stops(campaign, smtp_server):
    slow, run = signalled_mid_run(campaign, smtp_server, signal.SIGTERM, after=6)
    out, err = run.communicate(timeout=20)
    assert run.returncode == 128 + signal.SIGTERM, err
    summary = json.loads(out)
    assert summary["stopped"].startswith("stopped by SIGTERM")
    assert 6 <= summary["sent"] < 60 and summary["unknown"] == 0
    assert summary["deferred"] == summary["deferred_by"]["interrupted"]["count"] \
        == 60 - summary["sent"]
    assert statuses(campaign) == {"sent": summary["sent"]}   # no intent left behind
    assert len(slow.recipients()) == summary["sent"]

    slow.delay = 0
    rest = start_send(campaign)
    out, err = rest.communicate(timeout=60)
    assert json.loads(out)["sent"] == 60 - summary["sent"], err
    assert sorted(Counter(slow.recipients()).values()) == [1] * 60
