"""Shared fixtures: a fresh campaign folder per test, and the CLI run the way users run it."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
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
pytest_plugins = ["tests.dovecot", "tests.smtp_server", "tests.oauth_server", "tests.postgres"]

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CSV = REPO / "examples" / "prospects.csv"
# The instant every command runs at unless a test says otherwise (`campaign.now(...)`), so no
# result depends on the day the suite runs: a Sunday evening in the sample prospects' Chicago,
# before any date a test pins. A test that needs the real clock takes the `real_clock` fixture.
PINNED_NOW = "2026-03-01T18:00:00-06:00"

COLUMNS = ("email", "first_name", "last_name", "title", "company", "domain", "industry",
           "employees", "country", "timezone", "phone", "last_activity", "pain_point")


def engine_under_test() -> str:
    """The engine the suite runs on: OUTREACH_TEST_STORE=postgresql, else SQLite."""
    return os.environ.get("OUTREACH_TEST_STORE", "sqlite")


@dataclass
class Campaign:
    """A campaign folder made by `outreach init`, and helpers to drive it."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    store_url: str = ""   # the campaign's PostgreSQL database on the PostgreSQL pass

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

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """One statement on the campaign's database, whichever engine, committed; its rows."""
        from outreach.store import open_engine

        db = open_engine(self.config().store_target)
        try:
            with db.transaction():
                cur: Any = db.execute(query, args)
                return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            db.close()

    def records(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """A query's rows by column name, on the campaign's database."""
        from outreach.store import open_engine

        db = open_engine(self.config().store_target)
        try:
            return db.records(query, args)
        finally:
            db.close()

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
def campaign(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             request: pytest.FixtureRequest) -> Campaign:
    """A fresh campaign; on the PostgreSQL pass its [store] is a fresh database."""
    root = tmp_path / "campaign"
    list(init_campaign(root))
    url = ""
    if engine_under_test() == "postgresql":
        url = request.getfixturevalue("postgres_url")
        config = root / "outreach.toml"
        config.write_text(config.read_text(encoding="utf-8").replace(
            'path = "outreach.db"', f'url = "{url}"', 1), encoding="utf-8")
    monkeypatch.delenv("OUTREACH_CONFIG", raising=False)
    monkeypatch.delenv("OUTREACH_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("OUTREACH_TRACE_PLUGINS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # entry-point cache
    return Campaign(root=root, monkeypatch=monkeypatch, store_url=url)


@pytest.fixture
def fresh_store(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], dict[str, Any]]:
    """Config fields (`dataclasses.replace`) of another empty database, named `name`, on the
    engine under test."""
    def make(name: str) -> dict[str, Any]:
        if engine_under_test() == "postgresql":
            server = request.getfixturevalue("postgres_server")
            url = server.create_database()
            request.addfinalizer(lambda: server.drop_database(url))
            return {"store_url": url}
        return {"store_path": tmp_path / f"{name}.db", "store_url": ""}
    return make


@pytest.fixture(autouse=True)
def _engine_only(request: pytest.FixtureRequest) -> None:
    """`@pytest.mark.sqlite_only`: a test about the SQLite file itself, skipped on the
    PostgreSQL pass (its PostgreSQL counterpart is in test_store_postgres.py)."""
    if request.node.get_closest_marker("sqlite_only") and engine_under_test() != "sqlite":
        pytest.skip("about the SQLite engine")


def until(done: Callable[[], Any], state: Callable[[], Any], timeout: float = 20) -> None:
    """Poll `done` (a ledger's or a log's state: nothing notifies) until true; on timeout
    fail with `state()`."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, state()
        time.sleep(0.01)
