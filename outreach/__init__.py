"""outreach: an outbound email sequencer for SDRs. This module is the plugin author's API."""

from .errors import OutreachError
from .hookspecs import hookimpl, hookspec
from .models import Prospect

__all__ = ["OutreachError", "Prospect", "hookimpl", "hookspec"]
__version__ = "0.1.0"
