"""A rep's mailboxes at send time: the config each one sends as, and connections that hand
every message to the mailbox it was assigned (`outreach.team.assign_mailboxes`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .config import Config
from .handover import Log
from .render import Envelope
from .transport import Delivery, connections


def views(config: Config) -> dict[str, Config]:
    """Mailbox address -> the config as that mailbox sends (From, servers, unsubscribe
    address). Without [[mailboxes]] the one view equals the config."""
    return {box.email: config.for_mailbox(box) for box in config.mailboxes}


class RoutedConnection:
    """One sending worker's connections, one per mailbox in use; each message goes through
    the one of `envelope.meta["mailbox"]`."""

    def __init__(self, conns: Mapping[str, Any]) -> None:
        self.conns = dict(conns)

    async def open(self) -> None:
        """Log in to every mailbox, so a refused one stops the run before anything goes."""
        for conn in self.conns.values():
            await conn.open()

    async def deliver(self, envelope: Envelope) -> Delivery:
        return await self.conns[envelope.meta["mailbox"]].deliver(envelope)

    async def close(self) -> None:
        for conn in self.conns.values():
            await conn.close()

    def abort(self) -> None:
        """Drop every connection now (a second Ctrl-C)."""
        for conn in self.conns.values():
            conn.abort()


def routed_connections(config_views: Mapping[str, Config], used: Iterable[str], *,
                       handover: Log | None = None) -> list[RoutedConnection]:
    """As many workers as the busiest SMTP mailbox's `concurrency` (one for outboxes); each
    worker has its own SMTP connection to every mailbox in `used` (an outbox writer is
    shared: it keeps no state)."""
    wanted = list(dict.fromkeys(used))
    count = max((config_views[m].smtp.concurrency if config_views[m].smtp.transport == "smtp"
                 else 1 for m in wanted), default=1)
    per = {m: connections(config_views[m], count, handover=handover) for m in wanted}
    return [RoutedConnection({m: conns[i % len(conns)] for m, conns in per.items()})
            for i in range(count)]
