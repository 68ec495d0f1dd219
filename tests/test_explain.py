"""`outreach explain FILE.eml` (poll's verdict on one message, nothing kept) and the audit
trail `poll --json` prints for every message it handled."""

from __future__ import annotations

import json

import pytest

from tests.test_poll import CORPUS, RECORDER, drop, seed, state


def test_explain_says_what_poll_would_do_and_changes_nothing(campaign):
    seeded = seed(campaign)
    (seeded.root / "plugins" / "recorder.py").write_text(RECORDER, encoding="utf-8")
    result = seeded.run("explain", str(CORPUS / "bounce-postfix-hard.eml"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "kind:           bounce",
        "why:            RFC 3464 delivery report: permanent failure 5.1.1",
        "addresses:      cfo39@maker39.example",
        "prospects:      cfo39@maker39.example",
        "action:         suppressed",
        "status:         5.1.1",
        "permanent:      True",
        "message id:     <dsn-39@mx.acme.example>",
    ]
    # Nothing was kept: not suppressed, no event, no hook fired, and poll still acts on it.
    s39 = state(seeded, "cfo39@maker39.example")
    assert not s39["suppressed"] and s39["enrollments"][0]["state"] == "active"
    assert not any(e["kind"] == "bounce" for e in s39["events"])
    assert not (seeded.root / "hooks.jsonl").exists()
    drop(seeded, "bounce-postfix-hard")
    assert seeded.run_json("poll")["bounces"] == 1
    assert state(seeded, "cfo39@maker39.example")["suppressed"]


def test_explain_json_of_a_reply(campaign):
    seeded = seed(campaign)
    doc = seeded.run_json("explain", str(CORPUS / "reply-gmail-interested.eml"))
    assert {k: doc[k] for k in ("kind", "why", "addresses", "prospects", "action",
                                "not_interested")} == {
        "kind": "reply", "why": "written by a person", "addresses": ["cfo1@maker1.example"],
        "prospects": ["cfo1@maker1.example"], "action": "sequence stopped, stage lead",
        "not_interested": False}
    assert state(seeded, "cfo1@maker1.example")["stage"] == "prospect"


def test_explain_a_message_it_cannot_read(campaign):
    seed(campaign)
    path = CORPUS / "malformed-garbage.eml"
    result = campaign.run("explain", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path}: not a message outreach can read "
                             "(MalformedMessage: no sender address in From); poll would skip "
                             "it and report it as malformed\n")


def test_poll_json_lists_every_message_with_its_reason(campaign):
    seeded = seed(campaign)
    drop(seeded, "reply-gmail-interested", "auto-de", "bounce-exim-soft",
         "reply-unmatched-stranger", "malformed-garbage")
    doc = json.loads(seeded.run("poll", "--json").stdout)
    entries = {(m["kind"], m["action"]) for m in doc["messages"]}
    assert len(doc["messages"]) == doc["processed"] == 5
    assert ("reply", "sequence stopped, stage lead") in entries
    assert ("auto_reply", "paused until 2026-03-14") in entries
    assert ("bounce", "recorded temporary failure") in entries
    assert ("malformed", "skipped") in entries
    assert ("unmatched", "none") in entries
    assert all(m["why"] for m in doc["messages"])


@pytest.mark.sqlite_only
def test_explain_without_a_database_creates_none(campaign):
    """A campaign folder whose database is not there yet (a config copied from a colleague):
    explain reads the message alone, says it matched no prospects, and writes nothing."""
    for made in campaign.root.glob("outreach.db*"):
        made.unlink()
    before = sorted(p.name for p in campaign.root.iterdir())
    result = campaign.run("explain", str(CORPUS / "reply-gmail-interested.eml"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:4] == [
        "kind:           reply",
        "why:            written by a person",
        "addresses:      cfo1@maker1.example",
        "prospects:      -",
    ]
    assert (f"note:           no database at {campaign.root / 'outreach.db'} yet: explained "
            "without matching prospects") in result.output.splitlines()
    assert sorted(p.name for p in campaign.root.iterdir()) == before


@pytest.mark.sqlite_only
def test_explain_reads_the_database_without_writing_it(campaign):
    """Explain acts on a private copy: the campaign's file is read, never written."""
    seeded = seed(campaign)
    db = seeded.root / "outreach.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns,
              sorted(p.name for p in seeded.root.iterdir()))
    doc = seeded.run_json("explain", str(CORPUS / "bounce-postfix-hard.eml"))
    assert (doc["prospects"], doc["action"]) == (["cfo39@maker39.example"], "suppressed")
    assert "note" not in doc
    assert (db.read_bytes(), db.stat().st_mtime_ns,
            sorted(p.name for p in seeded.root.iterdir())) == before
