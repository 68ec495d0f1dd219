"""Four reps' `outreach send` at once over one team PostgreSQL, each to an own aiosmtpd sink:
every prospect gets exactly one message per step across the four sinks, and `kill -9` of one
sender mid-run (its sink stops answering inside DATA: no sleep) loses nothing and sends
nothing twice. Real processes, a real server (tests/postgres.py), real SMTP."""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from outreach.scaffold import init_campaign
from tests.conftest import Campaign, engine_under_test, prospect_row
from tests.ledger import statuses
from tests.smtp_server import Recorder, Stall, use_smtp
from tests.test_send_subprocess import start_send

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(engine_under_test() != "postgresql",
                                 reason="a team database is PostgreSQL's (the PG pass runs it)")]

REPS = 4
PER_REP = 50
PROSPECTS = REPS * PER_REP
EVERYONE = {f"cfo{i}@maker{i}.example" for i in range(PROSPECTS)}
THURSDAY = "2026-03-05T07:30:00-06:00"   # step 0 (day 0) is due, inside the window
MONDAY = "2026-03-09T07:30:00-06:00"     # day 4: step 2, the threaded bump


def team(campaign: Campaign, tmp_path, smtp_server,
         sinks: list[Recorder]) -> list[tuple[Campaign, Recorder]]:
    """Four reps (the `campaign` fixture and three more folders) on the campaign's database,
    each with an own outreach.toml and sink, and 50 of the 200 prospects enrolled each."""
    reps = [campaign]
    for n in range(1, REPS):
        rep = Campaign(root=tmp_path / f"rep{n}", monkeypatch=campaign.monkeypatch,
                       store_url=campaign.store_url)
        list(init_campaign(rep.root))
        rep.edit_config('path = "outreach.db"', f'url = "{campaign.store_url}"')
        rep.edit_config('email = "dana@acme.example"', f'email = "rep{n}@acme.example"')
        reps.append(rep)
    for rep, sink in zip(reps, sinks, strict=True):
        use_smtp(rep, smtp_server(sink).port, concurrency=2)
        rep.edit_config("daily_limit = 75 ", "daily_limit = 500 ")
        rep.edit_config("per_run_limit = 50 ", "per_run_limit = 500 ")
    campaign.now(THURSDAY)
    campaign.run_json("import", str(campaign.write_csv(
        [prospect_row(i) for i in range(PROSPECTS)])))
    for rep in reps:
        assert rep.run_json("enroll", "referral", "--limit", str(PER_REP))["enrolled"] == PER_REP
    return list(zip(reps, sinks, strict=True))


def send_all(reps: list[Campaign]) -> list[dict]:
    """Start every rep's `outreach send` at once; their summaries once all exit 0."""
    runs = [start_send(rep) for rep in reps]
    results = [(run.wait(timeout=60), *run.communicate()) for run in runs]
    assert [code for code, _, _ in results] == [0] * len(runs), [e for _, _, e in results]
    return [json.loads(out) for _, out, _ in results]


def received(sinks: list[Recorder]) -> Counter[str]:
    return Counter(r for sink in sinks for r in sink.recipients())


def ledger_steps(campaign: Campaign) -> Counter[tuple[str, int, str]]:
    """(prospect, step, status) of every ledger row, across the team."""
    return Counter(campaign.sql(
        "SELECT p.email, m.step, m.status FROM messages m "
        "JOIN enrollments e ON e.id = m.enrollment_id JOIN prospects p ON p.id = e.prospect_id"))


def test_four_senders_at_once_send_each_step_exactly_once(campaign, smtp_server, tmp_path):
    sinks = [Recorder() for _ in range(REPS)]
    reps = team(campaign, tmp_path, smtp_server, sinks)
    assert [s["sent"] for s in send_all([rep for rep, _ in reps])] == [PER_REP] * REPS
    assert received(sinks) == Counter(dict.fromkeys(EVERYONE, 1))
    # Each rep's sink got exactly the 50 that rep works, from that rep's address.
    owners = {p["email"]: p["owner"] for p in campaign.run_json("prospects")}
    for n, (_, sink) in enumerate(reps):
        froms = {m.mail_from for m in sink.messages}
        assert froms == {"dana@acme.example" if n == 0 else f"rep{n}@acme.example"}
        assert {owners[r] for r in sink.recipients()} == froms
    assert ledger_steps(campaign) == Counter({(e, 0, "sent"): 1 for e in EVERYONE})

    campaign.now(MONDAY)   # the bump: a reply in the thread of each prospect's first email
    assert [s["sent"] for s in send_all([rep for rep, _ in reps])] == [PER_REP] * REPS
    assert received(sinks) == Counter(dict.fromkeys(EVERYONE, 2))
    bumps = [m.message for sink in sinks for m in sink.messages[PER_REP:]]
    assert all(m["Subject"].startswith("Re: ") and m["In-Reply-To"] for m in bumps)
    assert ledger_steps(campaign) == Counter(
        {(e, step, "sent"): 1 for e in EVERYONE for step in (0, 2)})
    assert statuses(campaign) == {"sent": 2 * PROSPECTS}


def test_one_of_four_senders_killed_mid_run_loses_nothing(campaign, smtp_server, tmp_path):
    """Rep 3's sink stops answering inside DATA of its 10th message; rep 3's sender is killed
    there while the other three send on. Rep 3's next run sends the rest: everyone has exactly
    one message, except at most one per connection of the killed sender, held as unknown."""
    stall = Stall(point="DATA", nth=10)
    sinks = [Recorder(), Recorder(), Recorder(), stall]
    reps = team(campaign, tmp_path, smtp_server, sinks)
    runs = [start_send(rep) for rep, _ in reps]
    assert stall.reached.wait(30), runs[3].communicate()
    runs[3].kill()
    assert runs[3].wait(10) == -signal.SIGKILL
    for run in runs[:3]:
        assert run.wait(60) == 0, run.communicate()
        assert json.loads(run.communicate()[0])["sent"] == PER_REP
    stall.release.set()

    killed = reps[3][0]
    summary = killed.run_json("send")
    unknown = {u["email"] for u in summary["unknowns"]}
    assert stall.stalled_on in unknown and len(unknown) <= 2   # concurrency = 2
    got = received(sinks)
    assert set(got.values()) == {1}                          # nobody twice
    assert EVERYONE - set(got) <= unknown                    # only an unknown one missed out
    assert statuses(campaign) == Counter(sent=PROSPECTS - len(unknown), unknown=len(unknown))
    assert ledger_steps(campaign) == Counter(
        {(e, 0, "unknown" if e in unknown else "sent"): 1 for e in EVERYONE})
    # At the next step the unknown ones wait for `outreach resolve`; the others get the bump.
    campaign.now(MONDAY)
    bump = killed.run_json("send")
    assert (bump["sent"], bump["held"]) == (PER_REP - len(unknown), len(unknown))
    assert received(sinks) - got == Counter(set(stall.recipients()) - unknown)
