"""Installed plugins' entry points, cached so start-up does not rescan every package.

`importlib.metadata.entry_points()` reads the metadata of every installed distribution,
and importing it pulls in the `email` package: together most of `outreach --help`'s time.
The answer only changes when packages are installed or removed, which changes the
modification time of the folders on sys.path, so that is the cache key.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUP = "outreach"


@dataclass(frozen=True)
class EntryPoint:
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


def entry_points() -> list[EntryPoint]:
    key = _fingerprint()
    cache = _cache_file()
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data["key"] == key:
            return [EntryPoint(*item) for item in data["entry_points"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    found = _scan()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "entry_points": [
            [ep.name, ep.value, ep.version] for ep in found]}), encoding="utf-8")
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs the rescan next time
    return found


def _scan() -> list[EntryPoint]:
    from importlib.metadata import entry_points as scan

    return [EntryPoint(ep.name, ep.value, ep.dist.version if ep.dist else None)
            for ep in scan(group=GROUP)]


def _fingerprint() -> str:
    parts = [sys.prefix]
    for entry in sys.path:
        try:
            parts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}:-")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tag = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return Path(base) / "outreach" / f"entry-points-{tag}.json"
