"""On a team's PostgreSQL each `send` run holds only its own run's lease: two reps send at once,
and every prospect still gets one message (the ledger's unique steps hold across processes)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from outreach.scaffold import init_campaign
from tests.conftest import Campaign, engine_under_test, prospect_row
from tests.ledger import statuses
from tests.smtp_server import Slow, use_smtp
from tests.test_send_subprocess import start_send

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(engine_under_test() != "postgresql",
                                 reason="senders at once are PostgreSQL's (the PG pass runs it)")]


def test_two_reps_send_at_once_and_nobody_gets_two(campaign, smtp_server, tmp_path):
    recorder = Slow(delay=0.01)
    port = smtp_server(recorder).port
    sam = Campaign(root=tmp_path / "sam", monkeypatch=campaign.monkeypatch,
                   store_url=campaign.store_url)
    list(init_campaign(sam.root))
    sam.edit_config('path = "outreach.db"', f'url = "{campaign.store_url}"')
    sam.edit_config('email = "dana@acme.example"', 'email = "sam@acme.example"')
    for rep in (campaign, sam):
        use_smtp(rep, port, concurrency=2)
        rep.edit_config("daily_limit = 75 ", "daily_limit = 500 ")
        rep.edit_config("per_run_limit = 50 ", "per_run_limit = 500 ")
    campaign.now("2026-03-05T07:30:00-06:00")
    campaign.run_json("import", str(campaign.write_csv([prospect_row(i) for i in range(40)])))
    assert campaign.run_json("enroll", "referral", "--limit", "20")["enrolled"] == 20
    assert sam.run_json("enroll", "referral")["enrolled"] == 20   # the 20 Dana does not own

    runs = [start_send(campaign), start_send(sam)]
    results = [(p.wait(timeout=60), *p.communicate()) for p in runs]

    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    assert [json.loads(out)["sent"] for _, out, _ in results] == [20, 20]
    received = Counter(recorder.recipients())
    assert sorted(received) == sorted(f"cfo{i}@maker{i}.example" for i in range(40))
    assert set(received.values()) == {1}
    assert statuses(campaign) == {"sent": 40}

