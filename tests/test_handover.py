"""The hand-over log's verdict on a dead run's intent, as a table; and the log's own format."""

from __future__ import annotations

import pytest

from outreach import handover
from outreach.handover import Fate, Marks

ID = "<m1@acme.example>"


@pytest.mark.parametrize(("queued", "reached", "accepted", "written", "expected"), [
    (True, False, False, False, Fate.UNSENT),    # still in the queue: send it
    (True, True, False, False, Fate.UNKNOWN),    # payload on the wire, no answer
    (True, True, True, False, Fate.SENT),        # the 250 came before the ledger heard of it
    (False, False, False, False, Fate.UNKNOWN),  # a run this log knows nothing of
    (False, False, False, True, Fate.SENT),      # a complete outbox file
    (True, False, False, True, Fate.SENT),
])
def test_fate(queued, reached, accepted, written, expected):
    marks = Marks(frozenset({ID} if queued else ()), frozenset({ID} if reached else ()),
                  frozenset({ID} if accepted else ()))
    assert handover.fate(ID, marks, written=written) is expected


def test_the_log_reads_back_what_was_written_and_clears(tmp_path):
    assert handover.path_for(tmp_path / "outreach.db").name == "outreach.db-handover"
    path = handover.path_for(tmp_path / "outreach.db", "a1b2")
    assert path.name == "outreach.db-handover-a1b2"
    assert handover.read(path) == Marks(frozenset(), frozenset(), frozenset())
    log = handover.Log(path)
    log.queued(["<a@x>", "<b@x>"])
    log.reached_data("<a@x>")
    log.accepted("<a@x>")
    log.close()
    assert handover.read(path) == Marks(frozenset({"<a@x>", "<b@x>"}), frozenset({"<a@x>"}),
                                        frozenset({"<a@x>"}))
    handover.remove(path)
    assert not path.exists()


def test_a_mark_cut_short_is_an_error(tmp_path, monkeypatch):
    """A short write (a full disk) leaves part of a line that names no message: the write
    must fail before the payload goes out, not let a crash later resend the message."""
    log = handover.Log(handover.path_for(tmp_path / "outreach.db"))
    real = handover.os.write
    monkeypatch.setattr(handover.os, "write", lambda fd, data: real(fd, data[:5]))
    with pytest.raises(OSError, match="only 5 of 20 bytes of a hand-over mark were written"):
        log.reached_data("<m1@acme.example>")
    monkeypatch.undo()
    log.close()
