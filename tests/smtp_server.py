"""Real SMTP servers for the tests: aiosmtpd on 127.0.0.1, a recording handler, and handlers
that misbehave on purpose (451 then OK, 421, 550 5.1.1 for one recipient, a connection
dropped after DATA, a slow server, one that stops answering at a chosen command).

aiosmtpd's Controller cannot take port 0, so a socket is bound to port 0 first to pick a free
port. Registered in tests/conftest.py through `pytest_plugins`.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)


@dataclass
class Recorder:
    """Accepts every message and keeps it; subclasses misbehave in one hook."""

    messages: list[Received] = field(default_factory=list)
    connections: int = 0
    tls: list[bool] = field(default_factory=list)   # per message: did it arrive over TLS?
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return self.accept(envelope)

    def accept(self, envelope: Any) -> str:
        with self.lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                          bytes(envelope.original_content or envelope.content)))
        return "250 2.0.0 OK queued"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for m in self.messages for r in m.rcpt_tos]

    def wait_for(self, count: int, timeout: float = 20) -> None:
        """Wait until `count` messages arrived (for subprocess tests)."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.messages)} of {count} messages arrived")
            time.sleep(0.01)


@dataclass
class TempFailOnce(Recorder):
    """451 for each recipient's first DATA, success after."""

    seen: set[str] = field(default_factory=set)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        key = envelope.rcpt_tos[0]
        with self.lock:
            first = key not in self.seen
            self.seen.add(key)
        return "451 4.3.0 try again later" if first else self.accept(envelope)


@dataclass
class AlwaysTempFail(Recorder):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "451 4.3.0 mailbox busy"


@dataclass
class Closing421(Recorder):
    """Answers MAIL with 421 (closing) on every connection's second message."""

    per_connection: dict[int, int] = field(default_factory=dict)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.lock:
            n = self.per_connection.get(id(session), 0) + 1
            self.per_connection[id(session)] = n
        if n == 2:
            server.transport.close()
            return "421 4.3.2 service shutting down, closing connection"
        envelope.mail_from = address
        return "250 OK"


@dataclass
class RejectRecipient(Recorder):
    """550 5.1.1 for the addresses in `bad`."""

    bad: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address.lower() in self.bad:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@dataclass
class DropAfterData(Recorder):
    """Takes the message, then drops the connection instead of answering: fate unknown."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.accept(envelope)
        server.transport.abort()
        return "250 OK (never seen by the client)"


@dataclass
class Slow(Recorder):
    """Waits `delay` seconds before answering the end of DATA."""

    delay: float = 0.05

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return self.accept(envelope)


@dataclass
class Stall(Recorder):
    """Answers like Recorder, except at `point` of the `nth` time it is reached: there it
    sets `reached` and answers nothing until `release` is set. Points: "EHLO", "MAIL",
    "RCPT", "DATA" (the payload has arrived and is kept; the reply to its end is withheld).
    A test kills a client at a known moment with it, without sleeping."""

    point: str = "DATA"
    nth: int = 1
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    counts: dict[str, int] = field(default_factory=dict)
    stalled_on: str | None = None   # the recipient whose message it stalled on (MAIL: None)

    async def _point(self, point: str, envelope: Any) -> None:
        with self.lock:
            n = self.counts[point] = self.counts.get(point, 0) + 1
        if point == self.point and n == self.nth:
            self.stalled_on = envelope.rcpt_tos[0] if envelope.rcpt_tos else None
            self.reached.set()
            await asyncio.to_thread(self.release.wait)

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        await self._point("EHLO", envelope)
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        await self._point("MAIL", envelope)
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        await self._point("RCPT", envelope)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        # The payload is here: kept (and so delivered) even if the client never hears back.
        reply = await super().handle_DATA(server, session, envelope)
        await self._point("DATA", envelope)
        return reply


@dataclass
class StallThenHold(Stall):
    """A Stall that, once let go, holds every later message at `point` until `rest`: the
    sender cannot race past the message the test is about (a local sink answers in
    microseconds, faster than a test can kill or a notification can travel)."""

    rest: threading.Event = field(default_factory=threading.Event)

    async def _point(self, point: str, envelope: Any) -> None:
        await super()._point(point, envelope)
        if point == self.point and self.counts[point] > self.nth:
            await asyncio.to_thread(self.rest.wait)


@dataclass
class Server:
    handler: Recorder
    port: int
    controller: Controller


class XOAuth2SMTP(SMTP):
    """aiosmtpd with AUTH XOAUTH2 (Gmail's and Exchange Online's mechanism). Real tokens are
    1-2.5 kB: the line limits are raised (RFC 4954 allows 12,288 octets for AUTH)."""

    line_length_limit = 16384

    def __init__(self, *args: Any, validate: Callable[[str, str], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: 512, {"AUTH": 12288})
        self.validate = validate

    async def auth_XOAUTH2(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            blob = base64.b64decode(args[1])
        fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if "=" in part)
        user, bearer = fields.get("user", ""), fields.get("auth", "")
        token = bearer[7:] if bearer.lower().startswith("bearer ") else ""
        if user and token and self.validate(user, token):
            return AuthResult(success=True, auth_data=user)
        # Gmail's error challenge; the client answers with an empty line.
        await self.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")


class _XOAuth2Controller(Controller):
    def __init__(self, *args: Any, validate: Callable[[str, str], bool], **kwargs: Any) -> None:
        self.validate = validate
        super().__init__(*args, **kwargs)

    def factory(self) -> SMTP:
        return XOAuth2SMTP(self.handler, validate=self.validate, **self.SMTP_kwargs)


def _authenticator(username: str, password: str) -> Callable[..., AuthResult]:
    def check(server: Any, session: Any, envelope: Any, mechanism: str,
              auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == username.encode()
              and auth_data.password == password.encode())
        return AuthResult(success=ok, handled=False)

    return check


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for "localhost" (skips the test when openssl is missing)."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return cert, key


def start_server(handler: Recorder | None = None, *, auth: tuple[str, str] | None = None,
                 certificate: tuple[Path, Path] | None = None, implicit_tls: bool = False,
                 xoauth2: Callable[[str, str], bool] | None = None) -> Server:
    """Start a server; with `certificate` it offers STARTTLS, or speaks TLS from the first
    byte with `implicit_tls`; with `xoauth2(user, token)` it requires AUTH XOAUTH2 only."""
    handler = handler or Recorder()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if certificate:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        kwargs["ssl_context" if implicit_tls else "tls_context"] = context
    if auth:
        kwargs.update(authenticator=_authenticator(*auth), auth_require_tls=False,
                      auth_required=True)
    if xoauth2:
        kwargs.update(auth_require_tls=False, auth_required=True,
                      auth_exclude_mechanism=["LOGIN", "PLAIN"])
        controller: Controller = _XOAuth2Controller(handler, hostname="127.0.0.1", port=port,
                                                    validate=xoauth2, **kwargs)
    else:
        controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    return Server(handler=handler, port=port, controller=controller)


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., Server]]:
    """Start aiosmtpd servers on free loopback ports: `smtp_server(handler)`; all stop after."""
    started: list[Server] = []

    def start(handler: Recorder | None = None, **kwargs: Any) -> Server:
        server = start_server(handler, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        if isinstance(server.handler, Stall):
            server.handler.release.set()   # a stalled handler would keep the server waiting
        server.controller.stop()


def use_smtp(campaign: Any, port: int, *, concurrency: int = 2, timeout: float = 5,
             username: str = "") -> None:
    """Point a campaign's [smtp] at a loopback test server."""
    campaign.edit_config('transport = "outbox"', 'transport = "smtp"')
    campaign.edit_config('host = "smtp.acme.example"', 'host = "127.0.0.1"')
    campaign.edit_config("port = 587", f"port = {port}")
    campaign.edit_config('security = "starttls"', 'security = "none"')
    campaign.edit_config('username = "dana@acme.example"', f'username = "{username}"')
    campaign.edit_config("concurrency = 4 ", f"concurrency = {concurrency} ")
    campaign.edit_config("timeout = 30 ", f"timeout = {timeout} ")
