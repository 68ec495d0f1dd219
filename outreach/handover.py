"""The hand-over log: which messages reached SMTP `DATA`, and which the server then accepted.

A run commits its intents to the ledger in chunks, so after a crash the ledger alone cannot
tell a message that was on the wire from one still waiting in the queue. The run appends the
message ids of each chunk before committing its intents (`Q`), and each connection one line
just before it writes a message's payload (`D`) and one as soon as the server's 250 arrives
(`S`). A `write(2)` to an `O_APPEND` file is in the
kernel's page cache when it returns: it survives the process being killed (not a power cut),
and costs a few microseconds, where a database commit per message would cost a transaction.

Each run writes its own log, named by the run's id, so several runs of one rep on one machine
never share one. The run that settles a dead run's intents (it holds that run's lease, so the
writer is gone) reads the dead run's log to settle them with `fate`, then removes it. An
intent with no `Q` line was left by a run this machine has no log of (another machine on a
shared database, or a deleted log): nothing says how far it got, so it is `unknown`.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass
from pathlib import Path


class Fate(enum.Enum):
    SENT = "sent"          # the server accepted it (250 seen), or its outbox file is complete
    UNKNOWN = "unknown"    # its payload was on the wire when the run died
    UNSENT = "unsent"      # it never reached DATA: due again, safe to send


@dataclass(frozen=True)
class Marks:
    """What a log says: message ids queued, whose payload went out, and accepted."""

    queued: frozenset[str]
    reached: frozenset[str]
    accepted: frozenset[str]


def path_for(database: Path, run: str = "") -> Path:
    """A run's log lives next to the SQLite state database it belongs to (with a team
    database, beside the path `[store] path` names: on the machine that sends). No run: the
    one log of the runs before runs had ids."""
    return database.with_name(database.name + "-handover" + (f"-{run}" if run else ""))


class Log:
    """Appends marks; one per connection event, unbuffered, in one system call each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def queued(self, message_ids: list[str]) -> None:
        """A chunk's messages, before their intents are committed (one write for all)."""
        if message_ids:
            self._append(b"".join(b"Q " + m.encode("ascii", "replace") + b"\n"
                                  for m in message_ids))

    def reached_data(self, message_id: str) -> None:
        self._append(b"D " + message_id.encode("ascii", "replace") + b"\n")

    def accepted(self, message_id: str) -> None:
        self._append(b"S " + message_id.encode("ascii", "replace") + b"\n")

    def _append(self, line: bytes) -> None:
        """One write, or an error: a mark cut short (a full disk) names no message, so a
        `D` lost that way would let its message be sent again after a crash. Raising stops
        the payload going out (or the chunk being committed) instead."""
        written = os.write(self._fd, line)
        if written != len(line):
            raise OSError(errno.ENOSPC, f"{self.path}: only {written} of {len(line)} bytes of "
                          "a hand-over mark were written (is the disk full?)")

    def close(self) -> None:
        os.close(self._fd)


def logs(database: Path) -> dict[str, Path]:
    """The logs of runs with ids beside `database`, by run id."""
    prefix = database.name + "-handover-"
    return {path.name[len(prefix):]: path for path in database.parent.glob(prefix + "*")}


def remove(path: Path) -> None:
    """Forget every mark: only once the intents they describe are settled."""
    path.unlink(missing_ok=True)


def read(path: Path) -> Marks:
    """The marks in a log (none when it does not exist)."""
    found: dict[str, set[str]] = {"Q": set(), "D": set(), "S": set()}
    try:
        text = path.read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        text = ""
    for line in text.splitlines():
        kind, _, message_id = line.partition(" ")
        if kind in found:
            found[kind].add(message_id)
    return Marks(frozenset(found["Q"]), frozenset(found["D"]), frozenset(found["S"]))


def fate(message_id: str, marks: Marks, *, written: bool) -> Fate:
    """What became of a dead run's intent: `written` is whether its outbox file is complete."""
    if written or message_id in marks.accepted:
        return Fate.SENT
    if message_id in marks.reached or message_id not in marks.queued:
        return Fate.UNKNOWN
    return Fate.UNSENT
