"""outreach: an outbound email sequencer for SDRs. This module is the plugin author's API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import OutreachError

if TYPE_CHECKING:
    from pathlib import Path

    from .hookspecs import hookimpl, hookspec
    from .models import Prospect

__all__ = ["OutreachError", "Prospect", "campaign_dir", "event_record", "hookimpl", "hookspec",
           "settings"]
__version__ = "0.1.0"


def settings(name: str) -> dict[str, Any]:
    """Plugin NAME's `[plugins.NAME]` table from the running command's config (`*_env` keys
    resolved to their secrets, paths to the config's folder); empty when there is none."""
    from .plugins import settings as settings_

    return settings_(name)


def campaign_dir() -> Path:
    """The running campaign's folder (where outreach.toml is), for a plugin's default files."""
    from .plugins import campaign_dir as campaign_dir_

    return campaign_dir_()


def event_record(event: str, *, prospect: Any, **details: Any) -> dict[str, Any]:
    """A hook's arguments as one JSON-ready dict (`event`, `at`, `email`, the prospect's
    columns, and what the hook adds): what a CRM sync or webhook sends on."""
    from .events import record

    return record(event, prospect=prospect, **details)


def __getattr__(name: str) -> Any:
    # Imported on first use: start-up (`outreach --help`) skips dataclasses, and pluggy
    # too unless a plugin is installed.
    if name in ("hookimpl", "hookspec"):
        from . import hookspecs

        return getattr(hookspecs, name)
    if name == "Prospect":
        from .models import Prospect

        return Prospect
    raise AttributeError(f"module 'outreach' has no attribute {name!r}")
