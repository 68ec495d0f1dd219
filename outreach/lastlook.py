"""The last look before a message's SMTP transaction: was its prospect suppressed since its
intent was written?

`send` writes a chunk's intents in one statement that checks suppression; the messages then
wait their turn on a connection. Meanwhile another process (a rep's `poll` reading an
unsubscribe, `outreach suppress`) may suppress one of them. Asking the database before every
message would cost a round trip each, so the store first says, without one, whether a
suppression may have been written since the last look (PostgreSQL: a notification on the
connection; SQLite: another connection committed), and only then are the waiting messages'
prospects read again, all in one query. The connections ask right before each SMTP
transaction (after any wait for a connection, a turn on a shared one or a retry's backoff); a
message whose transaction has started goes on.
"""

from __future__ import annotations

from collections.abc import Iterable

from .store import Store


class LastLook:
    """The intents of one delivery that have not reached a connection yet, and those of them
    found suppressed."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.waiting: set[int] = set()   # ledger ids claimed whose delivery is not recorded
        self.stopped: set[int] = set()   # ... found suppressed: never handed over
        store.watch_suppressions()   # before the first intent: nothing falls between

    def queued(self, ledger_ids: Iterable[int]) -> None:
        """Intents just committed (told before the event loop turns, so no look misses them)."""
        self.waiting.update(ledger_ids)

    def may_send(self, ledger_id: int) -> bool:
        """Right before each SMTP transaction of the message (a retry's too): False if its
        prospect was suppressed since its intent was written."""
        if self.store.suppressions_changed() and self.waiting:
            self.stopped |= self.store.suppressed_intents(sorted(self.waiting))
        return ledger_id not in self.stopped

    def settled(self, ledger_ids: Iterable[int]) -> None:
        """Deliveries recorded: those messages need no more looks."""
        self.waiting.difference_update(ledger_ids)
