"""Small things a user noticed: the demo says where its campaign and report are, `init` inside
outreach's own source tree warns, and the HTML report is as readable as any new file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from outreach import scaffold
from outreach.cli import cli
from tests.conftest import REPO


def test_the_demo_ends_saying_where_its_campaign_and_report_are(tmp_path):
    campaign = tmp_path / "campaign"
    env = {**os.environ, "OUTREACH": str(Path(sys.executable).parent / "outreach")}
    env.pop("OUTREACH_NOW", None)   # the demo runs on the real clock, as a user's would
    done = subprocess.run(["bash", str(REPO / "examples" / "demo.sh"), str(campaign)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    last = done.stdout.rstrip("\n").splitlines()[-3:]
    assert last == [
        f"campaign:  {campaign}/outreach.toml (templates/, outbox/, mail/, outreach.db beside it)",
        f"report:    {campaign}/report.html (open it in a browser)",
        f"try more:  cd {campaign} && {env['OUTREACH']} status "
        "ava.nguyen@northwind-castings.example",
    ]
    assert (campaign / "report.html").is_file()


def test_init_inside_the_source_tree_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(scaffold, "source_tree", lambda: tmp_path)
    result = CliRunner().invoke(cli, ["init", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stderr == (
        f"warning: {tmp_path} is inside outreach's source tree ({tmp_path}): commands run "
        "there would load the repo's own plugins/ (the shipped examples) as yours. Make the "
        "campaign folder elsewhere, e.g. `outreach init ~/campaigns/q3`\n")
    assert (tmp_path / "outreach.toml").is_file()   # a warning, not a refusal
    sub = tmp_path / "mine"
    result = CliRunner().invoke(cli, ["init", str(sub)])
    assert "your prospects and database would sit inside a git checkout" in result.stderr


def test_init_elsewhere_says_nothing_extra(tmp_path):
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "c")])
    assert result.exit_code == 0 and result.stderr == ""
    assert scaffold.source_tree() in (REPO, None)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_report_gets_the_mode_the_umask_gives(campaign, umask, mode):
    out = campaign.root / "report.html"
    old = os.umask(umask)
    try:
        result = campaign.run("stats", "--html", str(out))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == mode
