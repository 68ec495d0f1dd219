"""The example plugin package (examples/outreach-hello) as a real installed distribution:
found through its `outreach` entry point, listed with its version, its hooks called."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import REPO, Campaign, prospect_row

PACKAGE = REPO / "examples" / "outreach-hello"


def install(site: Path) -> None:
    """Lay the package out in `site` the way `pip install --target` does: the module plus a
    .dist-info whose METADATA and entry_points.txt come from its pyproject.toml. (pip itself
    would need the network for build isolation; importlib.metadata reads just these files.)"""
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    shutil.copytree(PACKAGE / "src" / "outreach_hello", site / "outreach_hello")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
        f"Summary: {project['description']}\n", encoding="utf-8")
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items())
        for group, eps in groups.items()), encoding="utf-8")
    (info / "INSTALLER").write_text("tests\n", encoding="utf-8")


@pytest.fixture
def installed(tmp_path: Path, campaign: Campaign) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    install(site)
    return {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "OUTREACH_CONFIG": str(campaign.config_path),
            "OUTREACH_NOW": "2026-03-02T08:15:00-06:00"}


def outreach(campaign: Campaign, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "outreach", *args], capture_output=True,
                          text=True, cwd=campaign.root, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
def test_installed_example_package_is_listed_and_its_hooks_run(
        campaign: Campaign, installed: dict[str, str]) -> None:
    listed = json.loads(outreach(campaign, installed, "plugins", "--json").stdout)
    hello = next(p for p in listed if p["name"] == "hello")
    assert hello == {"name": "hello", "hooks": ["register_commands", "template_context"],
                     "version": "0.1.0", "builtin": False, "status": None}
    assert outreach(campaign, installed, "hello").stdout == "Good morning from outreach-hello!\n"

    template = campaign.root / "templates" / "referral.txt"
    text = template.read_text(encoding="utf-8")
    subject, _, body = text.partition("\n\n")
    template.write_text(f"{subject}\n\n{{{{ greeting }}}} {{{{ prospect.first_name }}}},\n{body}",
                        encoding="utf-8")
    csv_path = campaign.write_csv([prospect_row(1, timezone="Asia/Tokyo")])
    outreach(campaign, installed, "import", str(csv_path))
    outreach(campaign, installed, "enroll", "referral")
    preview = outreach(campaign, installed, "preview", "cfo1@maker1.example").stdout
    assert "Good evening First1," in preview  # 08:15 in Chicago is 23:15 in Tokyo

    hidden = {**installed, "OUTREACH_LOAD_PLUGINS": ""}
    names = [p["name"] for p in json.loads(outreach(campaign, hidden, "plugins",
                                                    "--json").stdout)]
    assert "hello" not in names
