"""`outreach watch`: poll forever. IMAP IDLE on each folder wakes a pass as soon as mail
arrives; a full pass also runs every `interval` seconds as a safety net. Dropped connections
are re-opened with backoff; SIGTERM or SIGINT ends the loop cleanly after the current pass.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential

from .app import App
from .config import Imap
from .errors import MailboxError
from .inbox import MailboxRefused, connect, mail_servers, open_source
from .replies import PollResult, poll

IDLE_RENEW = 540.0  # re-issue IDLE well before the 29-minute timeout servers may apply


def watching(imap: Imap, interval: float) -> str:
    """What `outreach watch` says it watches, at a terminal, before it first connects."""
    every = f"{interval / 60:g} min" if interval >= 60 and interval % 60 == 0 else f"{interval:g} s"
    if imap.source == "maildir":
        return f"watching the Maildir {imap.maildir}, checking every {every}; Ctrl-C stops"
    who = f" as {imap.username}" if imap.username else ""
    return (f"watching {', '.join(imap.folders)} on {imap.host}:{imap.port}{who} (IMAP IDLE: "
            f"new mail is read as it arrives; a full check every {every}); Ctrl-C stops")


def _transient(exc: BaseException) -> bool:
    """Connection trouble (the mail server's, or the team database's) is retried; a refused
    login, a missing folder or a config error is not (it needs the user)."""
    from imapclient.exceptions import IMAPClientError

    from .store import connection_lost

    if isinstance(exc, MailboxRefused):
        return False
    return isinstance(exc, MailboxError | OSError | EOFError | IMAPClientError) \
        or connection_lost(exc)


def _retrying(stop: threading.Event, max_backoff: float, **kwargs: Any) -> Retrying:
    """Exponential backoff (0.5 s doubling up to `max_backoff`) that a stop cuts short."""
    def nap(seconds: float) -> None:
        stop.wait(seconds)

    return Retrying(retry=retry_if_exception(_transient),
                    wait=wait_exponential(multiplier=0.5, max=max_backoff),
                    stop=lambda state: stop.is_set(), sleep=nap, reraise=True, **kwargs)


def watch(app: App, *, interval: float = 300, stop: threading.Event | None = None,
          on_pass: Callable[[PollResult], None] | None = None,
          idle_renew: float = IDLE_RENEW, max_backoff: float = 60) -> PollResult:
    """Run poll passes until `stop` is set (or a signal arrives); returns the totals."""
    stop = stop or threading.Event()
    restore = _install_signals(stop)
    total = PollResult()
    wake = threading.Event()
    servers = mail_servers(app.config)
    source: Any = open_source(app.config)
    idlers: list[threading.Thread] = []
    try:
        def one_pass() -> PollResult:
            try:
                return poll(app, source=source)
            except BaseException:
                source.close()  # reconnect on the next try
                raise

        retrying = _retrying(stop, max_backoff, before_sleep=_report_retry)
        first = True
        while not stop.is_set():
            wake.clear()
            try:
                result = retrying(one_pass)
            except Exception:
                if stop.is_set():  # interrupted while retrying: a clean stop, not an error
                    break
                raise
            total.add(result)
            if on_pass:
                on_pass(result)
            if first:   # one IDLE connection per folder of every IMAP mailbox
                first = False
                for imap in (s for s in servers if s.source == "imap"):
                    for folder in imap.folders:
                        thread = threading.Thread(
                            target=_idle,
                            args=(imap, folder, wake, stop, idle_renew, max_backoff),
                            name=f"idle {imap.username} {folder}", daemon=True)
                        thread.start()
                        idlers.append(thread)
            # Wake on new mail (IDLE), on a signal, or when the safety-net interval is up.
            deadline = interval
            while deadline > 0 and not stop.is_set() and not wake.is_set():
                wake.wait(min(deadline, 0.5))
                deadline -= 0.5
    finally:
        stop.set()
        source.close()
        for thread in idlers:
            thread.join(timeout=5)
        restore()
    return total


def _idle(imap: Imap, folder: str, wake: threading.Event, stop: threading.Event,
          renew: float, max_backoff: float) -> None:
    """Keep one IDLE connection on `folder`; set `wake` when anything arrives."""
    import time

    retrying = _retrying(stop, max_backoff, before_sleep=_report_retry)

    def session() -> None:
        client = connect(imap, timeout=30)
        try:
            client.select_folder(folder, readonly=True)
            wake.set()  # mail may have arrived while we were away
            while not stop.is_set():
                client.idle()
                started = time.monotonic()
                empty_wakeups = 0
                while not stop.is_set() and time.monotonic() - started < renew:
                    checked = time.monotonic()
                    responses = client.idle_check(timeout=0.5)
                    if any(r and r[0] == b"BYE" for r in responses):
                        raise ConnectionError(f"{folder}: the server closed the connection")
                    # imapclient swallows EOF: a socket that is "readable" with nothing to
                    # read, again and again, is a closed one.
                    if not responses and time.monotonic() - checked < 0.25:
                        empty_wakeups += 1
                        if empty_wakeups >= 3:
                            raise ConnectionError(f"{folder}: the connection was closed")
                    else:
                        empty_wakeups = 0
                    if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                        wake.set()
                client.idle_done()
        finally:
            with contextlib.suppress(Exception):  # the connection may already be gone
                client.logout()

    while not stop.is_set():
        try:
            retrying(session)
        except Exception as exc:  # not transient (login refused): say so, try again later
            if stop.is_set():
                return
            print(f"outreach watch: {folder}: {exc}", file=sys.stderr)
            stop.wait(max_backoff)


def _report_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0
    print(f"outreach watch: {exc}; reconnecting in {wait:.1f}s", file=sys.stderr)


def _install_signals(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM and SIGINT set `stop` (only possible from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
