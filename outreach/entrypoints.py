"""Installed plugins' entry points, cached so start-up does not rescan every package.

`importlib.metadata.entry_points()` reads the metadata of every installed distribution,
and importing it pulls in the `email` package: together most of `outreach --help`'s time.
The answer only changes when packages are installed or removed, which changes the
modification time of the folders on sys.path, so that is the cache key (for the current
folder, its own distributions' names and times).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

GROUP = "outreach"


class EntryPoint(NamedTuple):  # not a dataclass: start-up need not import dataclasses
    name: str
    value: str
    version: str | None

    def load(self) -> Any:
        """Import `module:attr` the way importlib.metadata.EntryPoint.load does."""
        module, _, attrs = self.value.partition(":")
        target: Any = importlib.import_module(module.strip())
        for attr in filter(None, attrs.strip().split(".")):
            target = getattr(target, attr)
        return target


# Answers kept per key: `outreach` and `python -m outreach` (from any folder) have different
# sys.path[0], and must not evict each other's answer on every start.
KEEP = 8


def entry_points() -> list[EntryPoint]:
    key = _fingerprint()
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))["keys"]
        if key in known:
            return [EntryPoint(*item) for item in known[key]]
        known = {k: v for k, v in known.items() if isinstance(v, list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = {}
    found = _scan()
    known.pop(key, None)
    kept = dict(list(known.items())[-(KEEP - 1):])  # oldest first: drop the oldest
    kept[key] = [[ep.name, ep.value, ep.version] for ep in found]
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"keys": kept}), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs the rescan next time
    return found


def any_plugins(folders: Iterable[Path] = ()) -> bool:
    """Whether an installed plugin (entry point) or a module in a plugin folder exists: if
    not, start-up needs no plugin manager (the built-in plugins add no commands)."""
    if entry_points():
        return True
    return any(not p.stem.startswith("_") for folder in folders if folder.is_dir()
               for p in folder.glob("*.py"))


def _scan() -> list[EntryPoint]:
    from importlib.metadata import entry_points as scan

    return [EntryPoint(ep.name, ep.value, ep.dist.version if ep.dist else None)
            for ep in scan(group=GROUP)]


def _fingerprint() -> str:
    # The text itself is the key (hashlib's import alone costs ~2 ms of every start-up).
    parts = [sys.prefix]
    cwd = os.getcwd()
    for entry in sys.path:
        try:
            if entry in ("", cwd):
                # `python -m outreach` in a campaign folder: the database's -wal and -shm
                # files change the folder's time on every run, so only its own distributions
                # count.
                parts.append(f"{entry}:{_distributions(entry or '.')}")
            else:
                parts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}:-")
    return "\n".join(parts)


def _distributions(folder: str) -> str:
    """The *.dist-info and *.egg-info entries of a folder, each with its modification time."""
    with os.scandir(folder) as entries:
        return ",".join(sorted(f"{e.name}@{e.stat().st_mtime_ns}" for e in entries
                               if e.name.lower().endswith((".dist-info", ".egg-info"))))


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = f"{zlib.crc32(sys.prefix.encode()):08x}"
    return Path(base) / "outreach" / f"entry-points-{tag}.json"
