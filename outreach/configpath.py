"""Where outreach.toml is, without loading it: cheap to import, so start-up can look first.

`outreach.config` re-exports `find_config`; it is here so that `outreach --help` outside a
campaign folder never imports the config schema (tomllib, zoneinfo, a dozen dataclasses).
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_NAME = "outreach.toml"


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the config is: --config, else $OUTREACH_CONFIG, else ./outreach.toml. Either
    may name the campaign folder instead of the file in it."""
    given = explicit or os.environ.get("OUTREACH_CONFIG")
    if not given:
        return Path(CONFIG_NAME)
    path = Path(given)
    return path / CONFIG_NAME if path.is_dir() else path


def missing_config(explicit: str | os.PathLike[str] | None, path: Path) -> str:
    """What to say when there is no config: the folder searched, and never a bare
    `outreach init` that would make a campaign wherever the user happens to be."""
    new = "To start a new campaign: `outreach init FOLDER`, then run it there."
    if not explicit and not os.environ.get("OUTREACH_CONFIG"):
        return (f"no {CONFIG_NAME} in {Path.cwd()} (the current folder): run outreach in "
                "your campaign folder, or pass --config FOLDER (or set OUTREACH_CONFIG). " + new)
    named = "--config" if explicit else "OUTREACH_CONFIG"
    return (f"no config at {path.absolute()} (named by {named}): check the path; it may be "
            f"the {CONFIG_NAME} file or the campaign folder. " + new)
