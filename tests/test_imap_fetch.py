"""Reading bodies off an IMAP FETCH response in whatever order the server gives its items
(RFC 3501 leaves it to the server: Dovecot sends the UID first, others after the body), from
a small scripted server on 127.0.0.1 that answers as such a server does."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient

from outreach.inbox import fetch_bodies

FIRST = b"From: a@example.com\r\nSubject: one\r\n\r\nHello (UID 9) there\r\n"
THIRD = b"From: c@example.com\r\nSubject: three\r\n\r\nBODY[] NIL, said nobody\r\n"


def _answer(tag: bytes, command: bytes, *, refuse: bool = False) -> bytes:
    verb = command.split(b" ")[0].upper()
    if verb == b"CAPABILITY":
        return b"* CAPABILITY IMAP4rev1\r\n" + tag + b" OK done\r\n"
    if verb in (b"EXAMINE", b"SELECT"):
        return (b"* 3 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n* OK [UIDNEXT 4] ok\r\n"
                + tag + b" OK [READ-ONLY] done\r\n")
    if verb == b"UID" and b"SEARCH" in command.upper():
        return b"* SEARCH 1 2 3\r\n" + tag + b" OK done\r\n"
    if verb == b"UID" and b"FETCH" in command.upper() and refuse:   # as Gmail does at times
        return (b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(FIRST) + FIRST + b")\r\n"
                + tag + b" NO Some messages could not be FETCHed (Failure)\r\n")
    if verb == b"UID" and b"FETCH" in command.upper():
        return (b"* 1 FETCH (BODY[] {%d}\r\n" % len(FIRST) + FIRST + b" UID 1)\r\n"
                b"* 2 FETCH (UID 2 BODY[] NIL)\r\n"
                b"* 3 FETCH (FLAGS (\\Seen) UID 3 BODY[] {%d}\r\n" % len(THIRD) + THIRD
                + b")\r\n* 2 FETCH (FLAGS (\\Seen))\r\n" + tag + b" OK done\r\n")
    if verb == b"LOGOUT":
        return b"* BYE bye\r\n" + tag + b" OK done\r\n"
    return tag + b" OK done\r\n"


def _serve(listener: socket.socket, refuse: bool = False) -> None:
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as lines:
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        for line in lines:
            tag, _, command = line.rstrip(b"\r\n").partition(b" ")
            conn.sendall(_answer(tag, command, refuse=refuse))
            if command.upper().startswith(b"LOGOUT"):
                return


def _serving(refuse: bool) -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    thread = threading.Thread(target=_serve, args=(listener, refuse), daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture
def server() -> Iterator[int]:
    yield from _serving(refuse=False)


@pytest.fixture
def refusing() -> Iterator[int]:
    """A server whose FETCH ends in NO, after the bodies it could read."""
    yield from _serving(refuse=True)


def test_bodies_are_read_whatever_the_order_of_uid_and_body(server: int) -> None:
    client = IMAPClient("127.0.0.1", port=server, ssl=False, timeout=5)
    client.login("dana", "secret")
    client.select_folder("INBOX", readonly=True)
    # UID after the body, a message with no body (kept, as b""), flags before the UID, and
    # an unsolicited flag update: each body under its own UID, nothing read from the bodies.
    assert fetch_bodies(client, [1, 2, 3]) == {1: FIRST, 2: b"", 3: THIRD}
    client.logout()


def test_a_refused_fetch_is_a_clear_error_and_nothing_is_skipped(campaign, refusing):
    """A FETCH the server ends with NO (Gmail's "Some messages could not be FETCHed"): poll
    says so without a traceback, and the folder's place is not moved past what it could not
    read, so the next poll reads those messages (a skipped reply would be mailed again)."""
    text = campaign.config_path.read_text(encoding="utf-8")
    start = text.index("[imap]")
    end = text.index("\n[", start + 1)
    campaign.config_path.write_text(
        text[:start] + f'[imap]\nsource = "imap"\nhost = "127.0.0.1"\nport = {refusing}\n'
        'security = "none"\nusername = "dana"\npassword_env = "OUTREACH_IMAP_PASSWORD"\n'
        'folders = ["INBOX"]\n' + text[end:], encoding="utf-8")
    campaign.monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", "secret")

    result = campaign.run("poll")

    assert result.exit_code == 1
    assert (f"imap 127.0.0.1:{refusing}: the server refused to hand over messages (NO Some "
            "messages could not be FETCHed (Failure)); what was read is kept, the next poll "
            "tries the rest again") in result.stderr
    assert campaign.sql("SELECT last_uid FROM mailbox_state") in ([], [(0,)])
