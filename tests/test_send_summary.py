"""`outreach send`'s summary accounts for every due email: sent, failed, unknown, held (with
why) and deferred (with why and when); the dry run promises only what the real run does."""

from __future__ import annotations

import json

from outreach.send import send
from tests.conftest import prospect_row

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"   # inside Chicago's 07:00-09:00 window


def enrolled(campaign, rows):
    campaign.now(THURSDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv(rows)))
    assert campaign.run_json("enroll", "referral")["enrolled"] == len(rows)


def test_a_message_that_cannot_render_is_held_and_promises_no_call(campaign):
    template = campaign.root / "templates" / "referral.txt"
    template.write_text(template.read_text().replace("Thanks,", "Thanks, {{ prospect.last_name }}"))
    enrolled(campaign, [prospect_row(1), prospect_row(2, last_name="")])
    dry = campaign.run("send", "--dry-run")
    assert dry.stdout.splitlines()[0] == (
        "would send 1, failed 0, unknown 0, held 1, deferred 0; 1 call task")
    real = campaign.run("send")
    assert real.exit_code == 1   # cron notices: a template needs a fix
    assert real.stdout == "sent 1, failed 0, unknown 0, held 1, deferred 0; 1 call task\n"
    assert real.stderr.startswith("not sent: cfo2@maker2.example step 0: ")
    summary = json.loads(campaign.run("send", "--dry-run", "--json").stdout)
    assert summary["held"] == 1 and summary["calls"] == 0
    assert summary["holds"][0]["email"] == "cfo2@maker2.example"
    assert "last_name" in summary["holds"][0]["reason"]


def test_a_run_that_sends_some_says_when_the_rest_may_go(campaign):
    enrolled(campaign, [prospect_row(1), prospect_row(2, timezone="Europe/Berlin")])
    told = campaign.run("send")   # 07:30 in Chicago, 14:30 in Berlin
    assert told.stdout == (
        "sent 1, failed 0, unknown 0, held 0, deferred 1; 1 call task\n"
        "deferred 1: outside the sending window; the next opens Thu 05 Mar 10:00 "
        "(or use --ignore-window)\n")
    doc = campaign.run_json("send", "--dry-run")
    assert doc["deferred_by"] == {"window": {"count": 1, "next": "2026-03-05T16:00:00+00:00"}}


def test_limits_are_named_with_the_count_they_held(campaign):
    campaign.edit_config("per_run_limit = 50 ", "per_run_limit = 1 ")
    enrolled(campaign, [prospect_row(1), prospect_row(2), prospect_row(3)])
    told = campaign.run("send")
    assert told.stdout == (
        "sent 1, failed 0, unknown 0, held 0, deferred 2; 1 call task\n"
        "deferred 2: held back by per_run_limit; they stay due: run again to send more\n")


def test_the_progress_starts_before_the_first_message(campaign):
    enrolled(campaign, [prospect_row(1), prospect_row(2)])
    seen: list[tuple[int, int, int]] = []
    app = campaign.app()
    try:
        send(app, progress=lambda sent, failed, total: seen.append((sent, failed, total)))
    finally:
        app.close()
    assert seen[0] == (0, 0, 2)   # the bar is drawn before anything went
    assert seen[-1] == (2, 0, 2)
