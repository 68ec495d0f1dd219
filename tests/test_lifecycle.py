"""suppress, mark, status: the moves an SDR makes by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import prospect_row


@pytest.fixture
def seeded(campaign):
    rows = [prospect_row(1), prospect_row(2), prospect_row(3, email="cfo3@maker1.example")]
    campaign.run_json("import", str(campaign.write_csv(rows)))
    campaign.run_json("enroll", "referral")
    return campaign


def test_suppressing_a_domain_stops_everyone_there_for_good(seeded):
    result = seeded.run("suppress", "@Maker1.example")
    assert result.stdout == "suppressed @maker1.example (2 prospects, 2 sequences stopped)\n"
    for email in ("cfo1@maker1.example", "cfo3@maker1.example"):
        status = seeded.run_json("status", email)
        assert status["suppressed"] is True
        assert [e["state"] for e in status["enrollments"]] == ["stopped"]
    assert seeded.run_json("status", "cfo2@maker2.example")["suppressed"] is False
    # Suppressing again is harmless.
    assert seeded.run("suppress", "@maker1.example").exit_code == 0


@pytest.mark.parametrize(("target", "message"), [
    ("@", '"@" is not a domain: write it like @example.com'),
    ("@nodot", '"@nodot" is not a domain: write it like @example.com'),
    ("not an email", '"not an email" is not an email address or @domain'),
    ("a@b@c", '"a@b@c" is not an email address or @domain'),
])
def test_suppress_refuses_what_is_not_an_address(seeded, target, message):
    result = seeded.run("suppress", target)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {message}\n"
    assert seeded.run_json("prospects")[0]["suppressed"] is False


def test_mark_meeting_ends_the_sequence_as_won(seeded):
    assert seeded.run("mark", "CFO2@maker2.example", "meeting").stdout == (
        "cfo2@maker2.example: opportunity\n")
    status = seeded.run_json("status", "cfo2@maker2.example")
    assert status["stage"] == "opportunity"
    assert [e["state"] for e in status["enrollments"]] == ["won"]
    assert [(s["old"], s["new"], s["cause"]) for s in status["stages"]] == [
        ("prospect", "opportunity", "mark meeting")]


def test_mark_fires_stage_changed_once_per_move(seeded):
    log = seeded.root / "stages.txt"
    (seeded.root / "plugins" / "stages.py").write_text(
        "from outreach import hookimpl\n"
        "@hookimpl\ndef stage_changed(prospect, old, new):\n"
        f"    open({str(log)!r}, 'a').write(f'{{prospect.email}} {{old}}->{{new}}\\n')\n",
        encoding="utf-8")
    seeded.run("mark", "cfo1@maker1.example", "lead")
    seeded.run("mark", "cfo1@maker1.example", "lead")
    seeded.run("mark", "cfo1@maker1.example", "client")
    assert log.read_text() == ("cfo1@maker1.example prospect->lead\n"
                               "cfo1@maker1.example lead->client\n")


def test_unknown_prospect_and_stage(seeded):
    result = seeded.run("status", "nobody@x.example")
    assert result.exit_code == 1
    assert 'no prospect "nobody@x.example": import them first' in result.stderr
    result = seeded.run("mark", "cfo1@maker1.example", "hot")
    assert result.exit_code == 2
    assert "'hot' is not one of" in result.stderr


def test_status_human_output(seeded):
    out = seeded.run("status", "cfo1@maker1.example").stdout
    assert out.splitlines()[:3] == [
        "cfo1@maker1.example  First1 Last1  Maker 1 Inc",
        "stage: prospect",
        out.splitlines()[2],
    ]
    assert "referral active since" in out and "enrolled" in out


def test_user_errors_never_print_a_traceback(seeded):
    proc = subprocess.run(
        [sys.executable, "-m", "outreach", "enroll", "referral", "--config",
         str(seeded.config_path)],
        capture_output=True, text=True, env={"PATH": "", "OUTREACH_NOW": "tomorrow"},
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith('Error: OUTREACH_NOW "tomorrow" is not an ISO 8601 timestamp')
    assert "Traceback" not in proc.stderr


def test_a_suppressed_domain_covers_its_subdomains_everywhere(campaign):
    rows = [prospect_row(1, email="ann@eu.bigco.example"),
            prospect_row(2, email="bo@bigco.example"),
            prospect_row(3, email="cy@notbigco.example"),
            prospect_row(4, email="di@a.b.c.d.e.f.g.h.i.bigco.example")]
    campaign.run_json("import", str(campaign.write_csv(rows)))
    assert campaign.run("suppress", "@bigco.example").stdout == (
        "suppressed @bigco.example (3 prospects)\n")
    listed = {p["email"]: p["suppressed"] for p in campaign.run_json("prospects")}
    assert listed == {"ann@eu.bigco.example": True, "bo@bigco.example": True,
                      "cy@notbigco.example": False, "di@a.b.c.d.e.f.g.h.i.bigco.example": True}
    assert campaign.run_json("status", "ann@eu.bigco.example")["suppressed"] is True
    assert campaign.run_json("enroll", "referral") == {
        "enrolled": 1, "skipped": {"suppressed": 3}, "dry_run": False}


@pytest.mark.parametrize(("stage", "state"), [
    ("lead", "replied"), ("opportunity", "won"), ("client", "won"), ("champion", "won"),
    ("not-interested", "stopped"), ("meeting", "won"),
])
def test_every_mark_ends_the_cold_sequence(seeded, stage, state):
    seeded.run("mark", "cfo1@maker1.example", stage)
    status = seeded.run_json("status", "cfo1@maker1.example")
    assert [e["state"] for e in status["enrollments"]] == [state]
    # Nothing is due for them any more: a send on day 4 writes to the others only.
    seeded.now("2026-12-01T07:30:00-06:00")
    sent = seeded.run_json("send", "--ignore-window", "--dry-run")
    assert "cfo1@maker1.example" not in [m["email"] for m in sent["messages"]]
    assert sent["sent"] == 2


@pytest.mark.sqlite_only  # the folder of the SQLite file
def test_folders_that_cannot_be_made_are_clear_errors(campaign, tmp_path):
    from click.testing import CliRunner

    from outreach.cli import cli

    blocker = tmp_path / "afile"
    blocker.write_text("x", encoding="utf-8")
    result = CliRunner().invoke(cli, ["init", str(blocker / "campaign")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {blocker / 'campaign'}: ")
    campaign.edit_config('path = "outreach.db"', f'path = "{blocker}/o.db"')
    result = campaign.run("status", "x@y.example")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert str(blocker) in result.stderr


@pytest.mark.sqlite_only  # SQLite's whole-file write lock; PostgreSQL locks rows
def test_a_busy_database_is_a_clear_error(seeded):
    import sqlite3

    holder = sqlite3.connect(seeded.root / "outreach.db")
    holder.execute("BEGIN IMMEDIATE")
    try:
        from outreach.store import Store

        original = Store.__init__

        def impatient(self, path, **kw):  # the real wait is 30 s; the message is what is tested
            original(self, path, **kw)
            self.db.execute("PRAGMA busy_timeout = 50")

        seeded.monkeypatch.setattr(Store, "__init__", impatient)
        result = seeded.run("suppress", "cfo1@maker1.example")
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the database is busy")
