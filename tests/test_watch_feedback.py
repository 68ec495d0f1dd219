"""`outreach watch` at a terminal says what it watches and a line per pass; under cron or
piped it prints only what mail did. Run as a user runs it: a real process, on a real pty."""

from __future__ import annotations

import ctypes
import dataclasses
import mailbox
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from outreach.watch import watching

from .conftest import Campaign

NOW = "2026-03-02T14:15:00+00:00"  # 08:15 in the sender's Chicago
UNMATCHED = "processed 1: 0 replies, 0 auto-replies, 0 bounces, 0 unsubscribes, 1 unmatched"


def deliver(campaign: Campaign, n: int) -> None:
    msg = EmailMessage()
    msg["From"] = f"stranger{n}@elsewhere.example"
    msg["To"] = "dana@acme.example"
    msg["Subject"] = f"hello {n}"
    msg["Message-ID"] = f"<hello-{n}@elsewhere.example>"
    msg.set_content("Not about anything you sent.")
    mailbox.Maildir(campaign.root / "mail", create=True).add(msg.as_bytes())


def spawn(campaign: Campaign, **streams: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "outreach", "watch", "--interval", "0.5"],
        stdin=subprocess.DEVNULL, cwd=campaign.root, **streams,
        env={**os.environ, "OUTREACH_CONFIG": str(campaign.config_path), "OUTREACH_NOW": NOW})


def read_until(fd: int, seen: bytearray, text: bytes, timeout: float = 20) -> None:
    """Read the terminal into `seen` until `text` shows up (or the process ends)."""
    deadline = time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"{text!r} never appeared in {bytes(seen)!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the process has gone and closed the terminal
            chunk = b""
        if not chunk:
            raise AssertionError(f"{text!r} never appeared in {bytes(seen)!r}")
        seen += chunk


class Opened:
    """The folders inside `folder` that are opened (listed), as inotify reports them: the
    event a test waits on instead of sleeping while a process works."""

    IN_OPEN = 0x20
    HEADER = struct.Struct("iIII")   # struct inotify_event: wd, mask, cookie, len; then name

    def __init__(self, folder: Path) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(self.fd, os.fsencode(folder),
                                                      self.IN_OPEN) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {folder}")

    def drain(self) -> list[str]:
        """The names opened since the last call, without waiting."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        names, at = [], 0
        while at < len(data):
            _, _, _, size = self.HEADER.unpack_from(data, at)
            at += self.HEADER.size
            names.append(data[at:at + size].rstrip(b"\0").decode())
            at += size
        return names

    def wait_for(self, name: str, times: int, timeout: float = 20) -> None:
        """Block until `name` has been opened `times` more times than before the call."""
        self.drain()
        deadline, seen = time.monotonic() + timeout, 0
        while seen < times:
            if not select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise AssertionError(f"{name} opened {seen} times, not {times}")
            seen += self.drain().count(name)

    def close(self) -> None:
        os.close(self.fd)


def test_watch_at_a_terminal_says_what_it_watches_and_a_line_per_pass(
        campaign: Campaign) -> None:
    master, slave = pty.openpty()
    proc = spawn(campaign, stdout=slave, stderr=slave)
    os.close(slave)
    seen = bytearray()
    try:
        read_until(master, seen, b"checked: no new mail")
        deliver(campaign, 1)
        read_until(master, seen, UNMATCHED.encode())
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        read_until(master, seen, b"outreach watch: stopped\r\n")
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    lines = bytes(seen).decode().split("\r\n")
    assert lines[0] == (f"watching the Maildir {campaign.root / 'mail'}, checking every 0.5 s; "
                        "Ctrl-C stops")
    assert lines[1] == "08:15 checked: no new mail"
    assert f"08:15 {UNMATCHED}" in lines
    assert set(lines[1:-2]) <= {"08:15 checked: no new mail", f"08:15 {UNMATCHED}"}
    assert lines[-2:] == ["outreach watch: stopped", ""]


def test_watch_piped_or_under_cron_prints_only_what_mail_did(campaign: Campaign) -> None:
    deliver(campaign, 1)
    opened = Opened(campaign.root / "mail")
    proc = spawn(campaign, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        # A pass lists new/: let one whole pass with nothing new go by, saying nothing.
        opened.wait_for("new", 2)
        deliver(campaign, 2)
        second = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
        opened.close()
    assert (first + second + out).decode() == f"{UNMATCHED}\n{UNMATCHED}\n"
    assert err.decode() == "outreach watch: stopped\n"


@pytest.mark.parametrize(("source", "username", "interval", "expected"), [
    ("maildir", "dana", 300, "watching the Maildir /c/mail, checking every 5 min; Ctrl-C stops"),
    ("imap", "dana@acme.example", 300,
     "watching INBOX, Replies on imap.acme.example:993 as dana@acme.example (IMAP IDLE: new "
     "mail is read as it arrives; a full check every 5 min); Ctrl-C stops"),
    ("imap", "", 90,
     "watching INBOX, Replies on imap.acme.example:993 (IMAP IDLE: new mail is read as it "
     "arrives; a full check every 90 s); Ctrl-C stops"),
])
def test_watching_names_the_mailbox_folders_host_or_maildir(
        campaign: Campaign, source: str, username: str, interval: float, expected: str) -> None:
    imap = dataclasses.replace(campaign.config().imap, source=source, maildir=Path("/c/mail"),
                               host="imap.acme.example", port=993, username=username,
                               folders=("INBOX", "Replies"))
    assert watching(imap, interval) == expected
