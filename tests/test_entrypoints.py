"""The entry-point cache: one answer per sys.path, refreshed when a distribution appears,
kept when the current folder only gains ordinary files (the database's -wal and -shm)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from outreach import entrypoints


@pytest.fixture
def scans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run in an empty current folder that is on sys.path (as `python -m` puts it); count
    the real scans of installed distributions."""
    folder = tmp_path / "campaign"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    counted: list[int] = []
    scan = entrypoints._scan

    def counting() -> list[entrypoints.EntryPoint]:
        counted.append(1)
        return scan()

    monkeypatch.setattr(entrypoints, "_scan", counting)
    return counted


def dist_info(folder: Path, name: str) -> None:
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[outreach]\n{name} = {name}_module\n")


def test_new_files_in_the_current_folder_keep_the_cache(scans: list[int]) -> None:
    first = entrypoints.entry_points()
    Path("outreach.db-wal").write_bytes(b"")
    Path("outreach.db-shm").write_bytes(b"")
    assert entrypoints.entry_points() == first
    assert len(scans) == 1


def test_a_distribution_in_the_current_folder_is_found(scans: list[int]) -> None:
    assert "here" not in [ep.name for ep in entrypoints.entry_points()]
    dist_info(Path.cwd(), "here")
    found = {ep.name: ep for ep in entrypoints.entry_points()}
    assert found["here"].value == "here_module" and found["here"].version == "1.0"
    assert len(scans) == 2


def test_two_sys_paths_keep_their_own_answers(scans: list[int],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    entrypoints.entry_points()                       # as `python -m outreach`
    monkeypatch.setattr(sys, "path", sys.path[1:])   # as the `outreach` script
    entrypoints.entry_points()
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    entrypoints.entry_points()
    assert len(scans) == 2
