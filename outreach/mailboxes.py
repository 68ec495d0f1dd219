"""A rep's mailboxes at send time: the config each one sends as, and connections that hand
every message to the mailbox it was assigned (`outreach.team.assign_mailboxes`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from .config import Config
from .handover import Log
from .render import Envelope
from .transport import Delivery, Look, connections


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
                       handover: Log | None = None,
                       look: Look | None = None) -> list[RoutedConnection]:
    """As many workers as the busiest mailbox's `concurrency` (one for an outbox). Each
    mailbox opens its own `concurrency` connections, no more: a worker beyond that shares
    one with another worker, one message at a time (an outbox writer keeps no state)."""
    per = {m: connections(config_views[m], handover=handover, look=look)
           for m in dict.fromkeys(used)}
    count = max((len(conns) for conns in per.values()), default=1)
    shared = {m: [_Turns(conn) for conn in conns] for m, conns in per.items()}
    workers = []
    for i in range(count):
        mine = {m: turns[i % len(turns)] for m, turns in shared.items()}
        for turn in mine.values():
            turn.holders += 1
        workers.append(RoutedConnection(mine))
    return workers


class _Turns:
    """A connection several workers may hold: deliveries take turns on it, and the last
    worker to let go closes it (never one still sending on it)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()
        self.holders = 0

    async def open(self) -> None:
        await self.conn.open()

    async def deliver(self, envelope: Envelope) -> Delivery:
        async with self.lock:
            return await self.conn.deliver(envelope)   # type: ignore[no-any-return]

    async def close(self) -> None:
        self.holders -= 1
        if self.holders <= 0:
            async with self.lock:
                await self.conn.close()

    def abort(self) -> None:
        self.conn.abort()
