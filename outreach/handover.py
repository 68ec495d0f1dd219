"""The hand-over log: which messages reached SMTP `DATA`, and which the server then accepted.

A run commits its intents to the ledger in chunks, so after a crash the ledger alone cannot
tell a message that was on the wire from one still waiting in the queue. Each connection
therefore appends one line to this log just before it writes a message's payload (`D`) and
one as soon as the server's 250 arrives (`S`). A `write(2)` to an `O_APPEND` file is in the
kernel's page cache when it returns: it survives the process being killed (not a power cut),
and costs a few microseconds, where a database commit per message would cost a transaction.

The next run (holding the `send` lease, so the writer is dead) reads the log to settle the
dead run's intents with `fate`, then empties it.
"""

from __future__ import annotations

import contextlib
import enum
import os
from pathlib import Path


class Fate(enum.Enum):
    SENT = "sent"          # the server accepted it (250 seen), or its outbox file is complete
    UNKNOWN = "unknown"    # its payload was on the wire when the run died
    UNSENT = "unsent"      # it never reached DATA: due again, safe to send


def path_for(database: Path) -> Path:
    """The log lives next to the SQLite state database it belongs to (with a team database,
    beside the path `[store] path` names: on the machine that sends)."""
    return database.with_name(database.name + "-handover")


class Log:
    """Appends marks; one per connection event, unbuffered, in one system call each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def reached_data(self, message_id: str) -> None:
        os.write(self._fd, b"D " + message_id.encode("ascii", "replace") + b"\n")

    def accepted(self, message_id: str) -> None:
        os.write(self._fd, b"S " + message_id.encode("ascii", "replace") + b"\n")

    def close(self) -> None:
        os.close(self._fd)


def clear(path: Path) -> None:
    """Forget every mark: only once the intents they describe are settled."""
    with contextlib.suppress(FileNotFoundError):
        os.truncate(path, 0)


def read(path: Path) -> tuple[set[str], set[str]]:
    """(message ids that reached DATA, message ids the server accepted) from a log."""
    reached: set[str] = set()
    accepted: set[str] = set()
    try:
        text = path.read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        return reached, accepted
    for line in text.splitlines():
        kind, _, message_id = line.partition(" ")
        if kind == "D":
            reached.add(message_id)
        elif kind == "S":
            accepted.add(message_id)
    return reached, accepted


def fate(message_id: str, *, reached: set[str], accepted: set[str], written: bool) -> Fate:
    """What became of a dead run's intent: `written` is whether its outbox file is complete."""
    if written or message_id in accepted:
        return Fate.SENT
    if message_id in reached:
        return Fate.UNKNOWN
    return Fate.UNSENT
