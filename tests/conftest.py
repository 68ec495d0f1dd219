"""Shared fixtures: a fresh campaign folder per test, and the CLI run the way users run it."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from outreach.app import App
from outreach.cli import cli
from outreach.config import Config, load_config
from outreach.scaffold import init_campaign

# The private Dovecot fixtures (`dovecot`, `dovecot_server`) for the IMAP tests, and the
# aiosmtpd servers (`smtp_server`) for the sending tests.
pytest_plugins = ["tests.dovecot", "tests.smtp_server", "tests.oauth_server"]

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "examples" / "prospects.csv"
# The instant every command runs at unless a test says otherwise (`campaign.now(...)`), so no
# result depends on the day the suite runs: a Sunday evening in the sample prospects' Chicago,
# before any date a test pins. A test that needs the real clock takes the `real_clock` fixture.
PINNED_NOW = "2026-03-01T18:00:00-06:00"

COLUMNS = ("email", "first_name", "last_name", "title", "company", "domain", "industry",
           "employees", "country", "timezone", "phone", "last_activity", "pain_point")


@dataclass
class Campaign:
    """A campaign folder made by `outreach init`, and helpers to drive it."""

    root: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def config_path(self) -> Path:
        return self.root / "outreach.toml"

    def config(self) -> Config:
        return load_config(self.config_path)

    def app(self) -> App:
        return App.open(self.config())

    def run(self, *args: str, input: str | None = None) -> Result:
        """`outreach ARGS --config <this campaign>` through click's CliRunner."""
        return CliRunner().invoke(cli, [*args, "--config", str(self.config_path)], input=input,
                                  catch_exceptions=False)

    def run_json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.stderr or result.output
        return json.loads(result.stdout)

    def edit_config(self, old: str, new: str) -> None:
        text = self.config_path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in config"
        self.config_path.write_text(text.replace(old, new, 1), encoding="utf-8")

    def write_csv(self, rows: Iterable[Mapping[str, Any]], name: str = "prospects.csv",
                  columns: Iterable[str] = COLUMNS) -> Path:
        path = self.root / name
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), restval="")
            writer.writeheader()
            writer.writerows(rows)
        return path

    def now(self, iso: str) -> None:
        """Make every command act as if it were `iso` (OUTREACH_NOW)."""
        self.monkeypatch.setenv("OUTREACH_NOW", iso)


def prospect_row(n: int, **overrides: Any) -> dict[str, Any]:
    """A prospect that matches the example `cfo-manufacturing` ICP unless overridden."""
    row = {
        "email": f"cfo{n}@maker{n}.example", "first_name": f"First{n}", "last_name": f"Last{n}",
        "title": "CFO", "company": f"Maker {n} Inc", "domain": f"maker{n}.example",
        "industry": "Manufacturing", "employees": 1000, "country": "US",
        "timezone": "America/Chicago", "phone": f"+1 555 01{n:02d}", "last_activity": "",
        "pain_point": "month-end close",
    }
    row.update(overrides)
    return row


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test, every command and every subprocess sees PINNED_NOW as "now"."""
    monkeypatch.setenv("OUTREACH_NOW", PINNED_NOW)
    return PINNED_NOW


@pytest.fixture
def real_clock(pinned_clock: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """For the few tests about the real clock itself: OUTREACH_NOW unset."""
    monkeypatch.delenv("OUTREACH_NOW", raising=False)


@pytest.fixture(autouse=True)
def no_os_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OAuth2 tokens never reach the real OS keyring or ~/.config: no keyring backend (so
    tokens.py uses its 0600 file) and a private config folder."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "user-config"))


@pytest.fixture
def campaign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Campaign:
    root = tmp_path / "campaign"
    list(init_campaign(root))
    monkeypatch.delenv("OUTREACH_CONFIG", raising=False)
    monkeypatch.delenv("OUTREACH_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("OUTREACH_TRACE_PLUGINS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # entry-point cache
    return Campaign(root=root, monkeypatch=monkeypatch)
