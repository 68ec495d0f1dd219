"""Where outreach.toml is, without loading it: cheap to import, so start-up can look first.

`outreach.config` re-exports `find_config`; it is here so that `outreach --help` outside a
campaign folder never imports the config schema (tomllib, zoneinfo, a dozen dataclasses).
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_NAME = "outreach.toml"


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the config is: --config, else $OUTREACH_CONFIG, else ./outreach.toml."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("OUTREACH_CONFIG"):
        return Path(env)
    return Path(CONFIG_NAME)
