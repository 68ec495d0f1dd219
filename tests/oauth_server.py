"""A local OAuth2 authorization server on 127.0.0.1 (http.server), so `outreach login`, refresh,
expiry and revocation run for real, with no internet:

- POST /token: refresh_token (RFC 6749 6), authorization_code with PKCE S256 (RFC 7636), and
  device_code (RFC 8628) grants; a revoked refresh token gets `invalid_grant`.
- POST /device: the device authorization endpoint (interval 0: the tests do not wait).
- GET /authorize: the consent screen, already clicked: redirects to the loopback redirect_uri
  with a code and the state (or a tampered state, on request).

Access tokens are JWTs signed with HS256 under `key`, which the private Dovecot also holds
(its oauth2 passdb validates them locally), padded to 1,500 characters like real ones (they
exceed aiosmtpd's default line limits, which the XOAUTH2 SMTP server in tests/smtp_server.py
raises). Also a keyring backend that keeps passwords in a JSON file, for the test that the
keyring is used.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from keyring.backend import KeyringBackend

USER = "dana@acme.example"
CLIENT_ID = "outreach-test"
ISSUER = "https://idp.outreach.test"


@dataclass
class AuthServer:
    """The provider: who signs in at its consent screen is `user`."""

    user: str = USER
    lifetime: int = 3600
    id_tokens: bool = True            # answer with an OpenID id_token naming the user
    tamper_state: bool = False
    single_use: bool = False          # a used refresh token is refused (rotation + reuse check)
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    issued: list[str] = field(default_factory=list)
    withdrawn: set[str] = field(default_factory=set)
    refresh: dict[str, str] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    codes: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    devices: dict[str, str | None] = field(default_factory=dict)
    grants: Counter[str] = field(default_factory=Counter)
    authorize_queries: list[dict[str, str]] = field(default_factory=list)
    token_forms: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def start(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()

    def reset(self) -> None:
        with self.lock:
            self.user, self.lifetime, self.id_tokens, self.tamper_state = USER, 3600, True, False
            self.single_use = False
            for table in (self.refresh, self.codes, self.devices):
                table.clear()
            self.issued.clear()
            self.withdrawn.clear()
            self.revoked.clear()
            self.grants.clear()
            self.authorize_queries.clear()
            self.token_forms.clear()

    # -- what the tests do to the provider ------------------------------------------------

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops working at the SMTP server (the client is
        not told; for Dovecot, which validates JWTs alone, store an `expired()` token)."""
        with self.lock:
            self.withdrawn.update(self.issued)

    def revoke_refresh_tokens(self) -> None:
        """The user changed the password or withdrew consent."""
        with self.lock:
            self.revoked.update(self.refresh)

    def mint(self, user: str, ttl: float) -> str:
        """A signed access token for `user`, valid for `ttl` seconds (negative: expired)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "email": user, "iat": min(now, now + int(ttl)),
                  "exp": now + int(ttl), "jti": secrets.token_hex(8), "pad": "x" * 1100}
        head = _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(claims)
        signature = hmac.new(self.key, head.encode(), hashlib.sha256).digest()
        return head + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()

    def valid(self, user: str, token: str) -> bool:
        """What a provider's SMTP server checks: signature, expiry, user, not withdrawn."""
        head, _, signature = token.rpartition(".")
        expected = hmac.new(self.key, head.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.urlsafe_b64encode(expected).rstrip(b"=").decode(),
                                   signature):
            return False
        claims = json.loads(base64.urlsafe_b64decode(head.split(".")[1] + "=="))
        with self.lock:
            withdrawn = token in self.withdrawn
        return (not withdrawn and claims["exp"] > time.time()
                and claims["email"].lower() == user.lower())

    # -- the endpoints --------------------------------------------------------------------

    def issue(self, user: str, refresh: str | None = None) -> dict[str, Any]:
        access = self.mint(user, self.lifetime)
        with self.lock:
            self.issued.append(access)
            refresh = refresh or secrets.token_urlsafe(48)
            self.refresh[refresh] = user
        token = {"access_token": access, "token_type": "Bearer", "expires_in": self.lifetime,
                 "refresh_token": refresh, "scope": "mail offline_access"}
        if self.id_tokens:
            token["id_token"] = _unsigned_jwt({"iss": ISSUER, "aud": CLIENT_ID,
                                               "email": user, "sub": user})
        return token

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.token_forms.append(form)
        if form.get("client_id") != CLIENT_ID:
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type", "")
        self.grants[grant] += 1
        if grant == "refresh_token":
            old = form.get("refresh_token", "")
            with self.lock:
                refused = old not in self.refresh or old in self.revoked
                if self.single_use:
                    self.revoked.add(old)
            if refused:
                return 400, {"error": "invalid_grant",
                             "error_description": "the refresh token was revoked"}
            return 200, self.issue(self.refresh[old])   # rotated: a new refresh token
        if grant == "authorization_code":
            user, challenge, redirect = self.codes.pop(form.get("code", ""), ("", "", ""))
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if not user or redirect != form.get("redirect_uri") or \
                    digest.rstrip(b"=").decode() != challenge:
                return 400, {"error": "invalid_grant", "error_description": "bad code/PKCE"}
            return 200, self.issue(user)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            code = form.get("device_code", "")
            if code not in self.devices:
                return 400, {"error": "expired_token"}
            if self.devices[code] is None:   # the user approves while the client waits
                self.devices[code] = self.user
                return 400, {"error": "authorization_pending"}
            return 200, self.issue(self.devices.pop(code) or "")
        return 400, {"error": "unsupported_grant_type"}

    def device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != CLIENT_ID:
            return 400, {"error": "invalid_client"}
        code = secrets.token_urlsafe(16)
        self.devices[code] = None
        return 200, {"device_code": code, "user_code": "WDJB-MJHT",
                     "verification_uri": f"{self.url}/activate", "expires_in": 600,
                     "interval": 0}

    def authorize(self, query: dict[str, str]) -> tuple[int, str]:
        """The consent screen: returns (status, Location or error text)."""
        self.authorize_queries.append(query)
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") != CLIENT_ID or not redirect.startswith("http://127.0.0.1:"):
            return 400, "bad client or redirect_uri"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, "PKCE S256 required"
        code = secrets.token_urlsafe(16)
        self.codes[code] = (self.user, query["code_challenge"], redirect)
        state = "forged" if self.tamper_state else query.get("state", "")
        return 302, f"{redirect}?{urlencode({'code': code, 'state': state})}"


def _b64(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    """An id_token: outreach reads its claims only (they came from the token endpoint)."""
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}.c2lnbmF0dXJl"


def _handler(server: AuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            path = urlsplit(self.path).path
            if path == "/token":
                self._answer(*server.token(form))
            elif path == "/device":
                self._answer(*server.device(form))
            else:
                self._answer(404, {"error": "not_found"})

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/authorize":
                self.send_error(404)
                return
            status, where = server.authorize({k: v[0] for k, v in parse_qs(parts.query).items()})
            if status == 302:
                self.send_response(302)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_error(status, where)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def browse(url: str) -> bool:
    """The user's browser: opens the consent page (which redirects to outreach's loopback
    listener) from another thread, as a real browser would while `login` waits."""
    import urllib.request

    threading.Thread(target=lambda: urllib.request.urlopen(url, timeout=10).read(),
                     daemon=True).start()
    return True


@pytest.fixture(scope="session")
def auth_server_session() -> Iterator[AuthServer]:
    server = AuthServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def auth_server(auth_server_session: AuthServer) -> AuthServer:
    auth_server_session.reset()
    return auth_server_session


def oauth_toml(auth: AuthServer, *, flow: str = "device") -> str:
    """An [oauth2] table for provider = "custom" pointing at the local server."""
    endpoint = (f'device_authorization_url = "{auth.url}/device"' if flow == "device"
                else f'authorization_url = "{auth.url}/authorize"')
    return (f'[oauth2]\nclient_id = "{CLIENT_ID}"\ntoken_url = "{auth.url}/token"\n'
            f'{endpoint}\nscopes = ["mail", "offline_access"]\n')


class FileKeyring(KeyringBackend):
    """A keyring that keeps its passwords in the JSON file $OUTREACH_TEST_KEYRING."""

    priority = 1  # type: ignore[assignment]

    def _load(self) -> dict[str, str]:
        path = Path(os.environ["OUTREACH_TEST_KEYRING"])
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, data: dict[str, str]) -> None:
        Path(os.environ["OUTREACH_TEST_KEYRING"]).write_text(json.dumps(data))

    def get_password(self, service: str, username: str) -> str | None:
        return self._load().get(f"{service}/{username}")

    def set_password(self, service: str, username: str, password: str) -> None:
        self._save({**self._load(), f"{service}/{username}": password})

    def delete_password(self, service: str, username: str) -> None:
        data = self._load()
        data.pop(f"{service}/{username}", None)
        self._save(data)
