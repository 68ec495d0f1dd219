"""outreach: an outbound email sequencer for SDRs. This module is the plugin author's API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import OutreachError
from .hookspecs import hookimpl, hookspec

if TYPE_CHECKING:
    from .models import Prospect

__all__ = ["OutreachError", "Prospect", "hookimpl", "hookspec"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `outreach.Prospect` on first use: start-up (`outreach --help`) skips dataclasses.
    if name == "Prospect":
        from .models import Prospect

        return Prospect
    raise AttributeError(f"module 'outreach' has no attribute {name!r}")
