"""Transports: hand one message to the outbox folder or an SMTP server and say what happened.

The one question a transport must answer precisely is whether the message may have been
handed over. Before the DATA payload is written, any failure is safe to retry; once the
payload is on the wire, a dropped connection or a timeout leaves the fate `unknown`, and the
message is never sent again automatically. SMTP connections are opened once and reused.

The `timeout` bounds each wait for a server reply. It is kept by one watchdog per connection
that aborts a connection whose reply is overdue, not by a timer per command: asyncio.wait_for
around every MAIL, RCPT, DATA and end of data costs more CPU than the rest of a delivery.
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiosmtplib

from .config import Config, Smtp, secret
from .errors import TransportError
from .handover import Log
from .render import Envelope

# Backoff for temporary failures: 4 attempts, 0.5 s, 1 s, 2 s (+ jitter) apart.
RETRY_ATTEMPTS = 4
RETRY_INITIAL = 0.5
RETRY_MAX = 8.0


NO_AUTH = 'server offers no AUTH: set auth = none (or username = "") if it needs no login'
NOT_TLS = "this port does not speak TLS: 587 usually wants starttls, 465 tls"


SILENT = ('a port that speaks TLS from the first byte waits for it in silence: 465 usually '
          'wants security = "tls"')


def _no_greeting(exc: BaseException) -> bool:
    """Connected, but the server said nothing (security = "starttls" on port 465)."""
    return isinstance(exc, aiosmtplib.SMTPConnectTimeoutError) and "ready" in str(exc)


def _wrong_tls(exc: BaseException) -> bool:
    """A TLS handshake that met a plaintext greeting (security = "tls" on port 587 or 25)."""
    cause = exc.__cause__ or exc.__context__
    return any(isinstance(e, ssl.SSLError) and "WRONG_VERSION_NUMBER" in str(e)
               for e in (exc, cause))


class Outcome(enum.Enum):
    SENT = "sent"            # the server accepted it (250 after DATA)
    FAILED = "failed"        # refused for good (5xx): not sent
    RETRY = "retry"          # temporary trouble outlasted the retries; provably not handed over
    UNKNOWN = "unknown"      # the connection died after the payload went out
    WITHHELD = "withheld"    # the look before its SMTP transaction said no: never handed over


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    error: str | None = None
    bad_recipient: bool = False   # a 5.1.x recipient error: suppress the address


_SENT = Delivery(Outcome.SENT)   # frozen: one shared value for every accepted message
_WITHHELD = Delivery(Outcome.WITHHELD, "suppressed since its intent was written")
# The look right before each SMTP transaction (a retry's too): may this message still go?
Look = Callable[[Envelope], bool]


class _Temporary(Exception):
    pass


class _Permanent(Exception):
    def __init__(self, message: str, *, bad_recipient: bool = False) -> None:
        super().__init__(message)
        self.bad_recipient = bad_recipient


class _Unknown(Exception):
    pass


class _Withheld(Exception):
    pass


_DOT = re.compile(rb"(?m)^\.")
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_NETWORK = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPConnectError, ConnectionError, TimeoutError, OSError)


def _address(address: str) -> bytes:
    encoded = address.encode("ascii")
    if _CONTROL.search(encoded):
        raise _Permanent(f"{address!r}: an address with a control character is never sent")
    return b"<" + encoded + b">"


async def _command(smtp: aiosmtplib.SMTP, line: bytes) -> Any:
    """Write one command line and await its reply: what SMTP.execute_command does, without
    its per-command lock, argument scan and wrappers (one connection here sends one command
    at a time, and the addresses are checked by `_address`)."""
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("connection lost")
    protocol.write(line)
    return await protocol.read_response(timeout=None)


def _describe(code: int, message: str) -> str:
    return f"{code} {' '.join(message.split())}"


def _refusal(code: int, message: str, *, recipient: bool = False) -> Exception:
    text = _describe(code, message)
    if 400 <= code < 500:
        return _Temporary(text)
    # RFC 3463: 5.1.x is an addressing status (no such user, bad domain).
    return _Permanent(text, bad_recipient=recipient and message.lstrip().startswith("5.1."))


def outbox_files(folder: Path, message_id: str) -> tuple[Path, Path]:
    """(the finished `.eml`, the temp file it is written as) of a message in the outbox:
    the rename from one to the other is the hand-over."""
    local = re.sub(r"[^A-Za-z0-9.]", "_", message_id.strip("<>").split("@")[0])
    return folder / f"{local}.eml", folder / f".{local}.tmp"


class OutboxConnection:
    """Writes each message as `<folder>/<stamp>-<id>.eml`, atomically (temp file + rename)."""

    def __init__(self, folder: Path, look: Look | None = None) -> None:
        self.folder = folder
        self.look = look

    async def open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransportError(f"[smtp] outbox {self.folder}: cannot create the folder "
                                 f"({exc.strerror}); fix the path or its permissions") from None

    async def deliver(self, envelope: Envelope) -> Delivery:
        if self.look is not None and not self.look(envelope):
            return _WITHHELD
        target, temp = outbox_files(self.folder, envelope.message_id)
        try:
            temp.write_bytes(envelope.data)
            os.replace(temp, target)
        except OSError as exc:
            return Delivery(Outcome.RETRY, f"outbox {self.folder}: {exc.strerror}")
        return _SENT

    async def close(self) -> None:
        return None

    def abort(self) -> None:
        return None


class SmtpConnection:
    """One reusable SMTP connection; MAIL, RCPT and DATA issued by hand to know the handover."""

    def __init__(self, settings: Smtp, password: str | None, tokens: Any = None,
                 handover: Log | None = None, look: Look | None = None) -> None:
        self.settings = settings
        self.password = password
        self.tokens = tokens   # an oauth.TokenSource for auth = "oauth2"
        self.handover = handover   # marks each payload written and each one accepted
        self.look = look
        self.smtp: aiosmtplib.SMTP | None = None
        self._asked_at: float | None = None   # loop time of the command awaiting its reply
        self._timed_out = False
        self._watchdog: asyncio.Task[None] | None = None

    def _ask(self) -> None:
        """A command is about to wait for its reply: the watchdog times it from now."""
        self._asked_at = asyncio.get_running_loop().time()
        self._timed_out = False

    async def _watch(self) -> None:
        """Abort the connection when a reply is more than `timeout` seconds late; the
        pending read then fails as a lost connection (retried before DATA, unknown after)."""
        loop = asyncio.get_running_loop()
        timeout = self.settings.timeout
        while True:
            await asyncio.sleep(min(1.0, timeout / 4))
            asked = self._asked_at
            if asked is not None and loop.time() - asked > timeout and self.smtp is not None:
                self._timed_out = True
                self._asked_at = None
                if self.smtp.transport is not None:
                    # connection_lost fails the pending read
                    cast(asyncio.Transport, self.smtp.transport).abort()
                self._drop()

    def _lost(self, exc: BaseException) -> str:
        if self._timed_out:
            return f"no reply within the {self.settings.timeout:g} s timeout"
        return str(exc) or type(exc).__name__

    async def open(self) -> None:
        """Connect and log in now; a refused login is a TransportError that stops the run."""
        try:
            await self._connected()
        except _Temporary as exc:
            raise TransportError(f"[smtp] {self.settings.host}:{self.settings.port}: {exc}; "
                                 "check host, port and security, or try later") from None

    async def _connected(self) -> aiosmtplib.SMTP:
        if self.smtp is not None and self.smtp.is_connected:
            return self.smtp
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout, use_tls=s.security == "tls",
            start_tls=s.security == "starttls", tls_context=ssl.create_default_context()
            if s.security != "none" else None,
        )
        try:
            await smtp.connect()
            if smtp.is_ehlo_or_helo_needed:   # MAIL and RCPT are issued by hand below
                await smtp.ehlo()
            await self._authenticate(smtp)
            if self._watchdog is None:
                self._watchdog = asyncio.create_task(self._watch())
        except TransportError:
            smtp.close()
            raise
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise _Temporary(_describe(exc.code, exc.message)) from None
        except (*_NETWORK, aiosmtplib.SMTPException) as exc:
            smtp.close()
            if s.security == "tls" and _wrong_tls(exc):
                raise TransportError(f"[smtp] {s.host}:{s.port}: {NOT_TLS}") from None
            if s.security != "tls" and _no_greeting(exc):
                raise _Temporary(f"cannot connect: no greeting within {s.timeout:g} s; {SILENT}"
                                 ) from None
            raise _Temporary(f"cannot connect: {exc}") from None
        self.smtp = smtp
        return smtp

    async def _authenticate(self, smtp: aiosmtplib.SMTP) -> None:
        """Log in as [smtp] auth says; a refusal is a TransportError that names the fix."""
        s = self.settings
        if s.auth == "none":
            return
        if not smtp.supports_extension("auth"):
            raise TransportError(f"[smtp] {s.host}:{s.port}: {NO_AUTH}")
        if s.auth == "oauth2":
            await self._xoauth2(smtp)
            return
        try:
            await smtp.login(s.username, self.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TransportError(f"[smtp] username {s.username}: login refused "
                                 f"({_describe(exc.code, exc.message)}); check the username "
                                 f"and the password in ${s.password_env}") from None

    async def _xoauth2(self, smtp: aiosmtplib.SMTP) -> None:
        """XOAUTH2 with a current access token; a refusal refreshes it once and tries again
        (the token may have been revoked or have expired early)."""
        from .oauth import SignInError, TokenEndpointError

        s = self.settings
        try:
            token = await asyncio.to_thread(self.tokens.token)
            for attempt in range(2):
                try:
                    await smtp.auth_xoauth2(s.username, token)
                    return
                except aiosmtplib.SMTPAuthenticationError as exc:
                    if attempt:
                        raise TransportError(
                            f"[smtp] {s.host}:{s.port}: XOAUTH2 login as {s.username} refused "
                            f"({_describe(exc.code, exc.message)}) with a freshly renewed "
                            f"token: sign in as {s.username} with `outreach login`, and check "
                            "the mailbox may send with SMTP AUTH") from None
                    token = await asyncio.to_thread(self.tokens.refreshed, token)
        except (SignInError, TokenEndpointError) as exc:
            raise TransportError(f"[smtp] {exc}") from None

    def _drop(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp = None

    async def _reset(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.rset()
        except Exception:  # a connection that cannot reset is not worth keeping
            self._drop()

    async def deliver(self, envelope: Envelope) -> Delivery:
        try:
            try:
                await self._once(envelope)
            except _Temporary:
                # Only a failed first try pays for the retry machinery (and its import).
                # tenacity waits only between its own attempts, so the first backoff is here.
                from tenacity import (
                    AsyncRetrying,
                    retry_if_exception_type,
                    stop_after_attempt,
                    wait_exponential,
                    wait_random,
                )

                await asyncio.sleep(RETRY_INITIAL + random.uniform(0, RETRY_INITIAL))
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(RETRY_ATTEMPTS - 1),
                    wait=wait_exponential(multiplier=RETRY_INITIAL, max=RETRY_MAX)
                    + wait_random(0, RETRY_INITIAL),
                    retry=retry_if_exception_type(_Temporary), reraise=True,
                ):
                    with attempt:
                        await self._once(envelope)
        except _Temporary as exc:
            return Delivery(Outcome.RETRY, str(exc))
        except _Permanent as exc:
            return Delivery(Outcome.FAILED, str(exc), bad_recipient=exc.bad_recipient)
        except _Unknown as exc:
            return Delivery(Outcome.UNKNOWN, str(exc))
        except _Withheld:
            return _WITHHELD
        except TransportError as exc:   # a new connection's login failed: before MAIL
            return Delivery(Outcome.RETRY, str(exc))
        return _SENT

    async def _once(self, envelope: Envelope) -> None:
        try:
            await self._exchange(envelope)
        finally:
            self._asked_at = None   # no reply awaited: the watchdog leaves the connection be

    async def _exchange(self, envelope: Envelope) -> None:
        smtp = await self._connected()
        # Last, after any wait (for the connection, a turn on it, a retry's backoff).
        if self.look is not None and not self.look(envelope):
            raise _Withheld
        try:
            sender, recipient = _address(envelope.mail_from), _address(envelope.rcpt_to)
        except UnicodeEncodeError:
            raise _Permanent(f"{envelope.rcpt_to}: a non-ASCII address needs SMTPUTF8, which "
                             "outreach does not speak") from None
        try:
            # MAIL and RCPT by hand: aiosmtplib's helpers re-parse each address with
            # email.utils, which costs as much as building the message. No timeout on the
            # read: the watchdog keeps it (see the module docstring).
            self._ask()
            response = await _command(smtp, b"MAIL FROM:" + sender + b"\r\n")
            if response.code != 250:
                await self._after_refusal(smtp, response.code)
                raise _refusal(response.code, response.message)
            self._ask()
            response = await _command(smtp, b"RCPT TO:" + recipient + b"\r\n")
            if response.code not in (250, 251):
                await self._after_refusal(smtp, response.code)
                raise _refusal(response.code, response.message, recipient=True)
            self._ask()
            response = await _command(smtp, b"DATA\r\n")
            if response.code != 354:
                await self._after_refusal(smtp, response.code)
                raise _refusal(response.code, response.message)
        except _NETWORK as exc:
            self._drop()
            raise _Temporary("connection lost before the message was sent: "
                             f"{self._lost(exc)}") from None
        # From here the payload is on the wire: a lost connection leaves its fate unknown.
        protocol = smtp.protocol
        if self.handover is not None:   # before the payload: a crash now leaves it unknown
            try:
                self.handover.reached_data(envelope.message_id)
            except OSError as exc:   # a full disk: without its mark the payload must not go
                self._drop()   # the server, inside DATA, discards a message cut off like this
                raise _Temporary("not sent: the hand-over log could not be written "
                                 f"({exc.strerror or exc})") from None
        try:
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            payload = _DOT.sub(b"..", envelope.data)
            self._ask()
            protocol.write(payload + b".\r\n")
            response = await protocol.read_response(timeout=None)
        except _NETWORK as exc:
            self._drop()
            raise _Unknown(f"connection lost after the message was sent, before the server "
                           f"confirmed it: {self._lost(exc)}") from None
        if response.code == 250:
            if self.handover is not None:   # a crash before it is recorded: still sent
                self.handover.accepted(envelope.message_id)
            return
        if response.code == 421:
            self._drop()
        raise _refusal(response.code, response.message)

    async def _after_refusal(self, smtp: aiosmtplib.SMTP, code: int) -> None:
        self._asked_at = None   # RSET keeps aiosmtplib's own timeout
        if code == 421:  # the server is closing this connection: open another
            self._drop()
        else:
            await self._reset(smtp)

    async def close(self) -> None:
        if self.smtp is not None:
            try:
                await self.smtp.quit()
            except Exception:  # quitting politely is best effort
                self._drop()
            self.smtp = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def abort(self) -> None:
        """Drop the connection now (a second Ctrl-C), without a polite QUIT."""
        if self.smtp is not None and self.smtp.transport is not None:
            cast(asyncio.Transport, self.smtp.transport).abort()
        self._drop()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


Connection = OutboxConnection | SmtpConnection


def connections(config: Config, count: int | None = None, *,
                handover: Log | None = None, look: Look | None = None) -> list[Any]:
    """The connections a run uses: one outbox writer, or `concurrency` SMTP connections
    (marking their hand-overs in `handover`; asking `look` before each transaction)."""
    s = config.smtp
    if s.transport == "outbox":
        return [OutboxConnection(s.outbox, look)]
    password = secret(s.password_env, what=f"[smtp] password_env ({s.username})") \
        if s.auth == "password" and s.password_env else None
    tokens = None
    if s.auth == "oauth2" and s.oauth2 is not None:
        from .oauth import token_source

        tokens = token_source(s.oauth2, s.username)
    return [SmtpConnection(s, password, tokens, handover, look)
            for _ in range(count or s.concurrency)]


async def login_check(config: Config) -> str:
    """`outreach check --connect`: connect, log in and quit; returns what was reached."""
    conn = connections(config, 1)[0]
    await conn.open()
    await conn.close()
    if config.smtp.transport == "outbox":
        return f"outbox {config.smtp.outbox}: writable"
    s = config.smtp
    if s.auth == "none":
        return f"smtp {s.host}:{s.port}: connected (no login)"
    if s.auth == "oauth2":
        from .oauth import signed_in_note

        return (f"smtp {s.host}:{s.port}: logged in as {s.username}"
                + signed_in_note(conn.tokens, config.sender.timezone))
    return f"smtp {s.host}:{s.port}: logged in as {s.username}"

