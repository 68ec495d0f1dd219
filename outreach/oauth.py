"""OAuth2 sign-in like a mail client: `outreach login` once (RFC 8628 device flow, or the
RFC 8252 loopback redirect with PKCE), then access tokens refreshed from the saved refresh
token (RFC 6749) by `send`, `poll` and `watch`, which never prompt.

Authlib's OAuth2Session does the protocol (token requests, PKCE, state check, client
authentication); this module decides which flow, says what to open, and keeps the tokens.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .config import OAuth2, secret
from .errors import OutreachError
from .tokens import TokenStore

MARGIN = 120.0       # refresh when the access token has less than this many seconds left
HTTP_TIMEOUT = 30.0
LOGIN_TIMEOUT = 300.0
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class SignInError(OutreachError):
    """No usable sign-in: never signed in, or the provider refused (revoked, expired)."""


class TokenEndpointError(OutreachError):
    """The token endpoint could not be reached: worth trying again later."""


@dataclass(frozen=True)
class Status:
    identity: str
    expires_at: float
    saved_in: str = ""   # after a login: the OS keyring, or the 0600 file's path


def store_for(oauth: OAuth2, username: str) -> TokenStore:
    return TokenStore(f"{username.lower()} {oauth.token_url}")


def _session(oauth: OAuth2, **kwargs: Any) -> Any:
    from authlib.integrations.requests_client import OAuth2Session

    client_secret = secret(oauth.client_secret_env, what=f"[oauth2] client_secret_env for "
                           f"{oauth.provider}", holds="the OAuth client secret") \
        if oauth.client_secret_env else None
    return OAuth2Session(
        oauth.client_id, client_secret, scope=" ".join(oauth.scopes),
        token_endpoint_auth_method="client_secret_post" if client_secret else "none",
        **kwargs)


def _refused(what: str, exc: Any) -> str:
    detail = getattr(exc, "error", None) or type(exc).__name__
    description = getattr(exc, "description", None)
    return f"{what} ({detail}" + (f": {description})" if description else ")")


def _request(call: Callable[[], Any], url: str) -> Any:
    """Run one call to an OAuth2 endpoint; no answer, or one that is not OAuth2 (an error
    page, a web page at a wrong URL), becomes TokenEndpointError naming the URL."""
    import requests

    try:
        return call()
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        raise TokenEndpointError(f"{url} answered HTTP {code}, not an OAuth2 answer: check "
                                 "the URL in [oauth2], or try again later") from None
    except requests.RequestException as exc:
        raise TokenEndpointError(f"cannot reach the token endpoint {url}: {exc}; check the "
                                 "network and try again") from None
    except ValueError:   # Authlib: the body is not a JSON object
        raise TokenEndpointError(f"{url} did not answer with JSON, so it is not an OAuth2 "
                                 "endpoint: check the URL in [oauth2]") from None


def _token(call: Callable[[], Any], url: str) -> dict[str, Any]:
    """A token-endpoint call whose answer must hold an access token."""
    token = _request(call, url)
    if not isinstance(token, dict) or not token.get("access_token"):
        raise TokenEndpointError(f"{url} answered without an access_token: check token_url "
                                 "in [oauth2]")
    return token


class TokenSource:
    """Access tokens for one mailbox, shared by every connection of the process."""

    def __init__(self, oauth: OAuth2, username: str) -> None:
        self.oauth = oauth
        self.username = username
        self.store = store_for(oauth, username)
        self.lock = threading.Lock()

    def _saved(self) -> dict[str, Any]:
        record = self.store.load()
        if not record or not record.get("refresh_token"):
            raise SignInError(f"{self.username}: not signed in with {self.oauth.provider} "
                              "OAuth2; run `outreach login` once (it asks in a browser)"
                              + self.store.missing_hint())
        return record

    def token(self) -> str:
        """A valid access token, refreshed first if it has less than MARGIN seconds left."""
        with self.lock, self.store.locked():
            record = self._saved()
            if record.get("access_token") and record.get("expires_at", 0) - MARGIN > time.time():
                return record["access_token"]
            return self._refresh(record)

    def refreshed(self, stale: str) -> str:
        """The server refused `stale`: refresh once, unless another connection (or process)
        already did."""
        with self.lock, self.store.locked():
            record = self._saved()
            if record.get("access_token") not in (None, stale) and \
                    record.get("expires_at", 0) - MARGIN > time.time():
                return record["access_token"]
            return self._refresh(record)

    def status(self) -> Status:
        record = self._saved()
        return Status(record.get("identity") or self.username, float(record.get("expires_at", 0)))

    def _refresh(self, record: dict[str, Any]) -> str:
        from authlib.integrations.base_client.errors import OAuthError

        session = _session(self.oauth)
        try:
            token = _token(lambda: session.refresh_token(
                self.oauth.token_url, refresh_token=record["refresh_token"],
                timeout=HTTP_TIMEOUT), self.oauth.token_url)
        except OAuthError as exc:
            raise SignInError(_refused(
                f"{self.username}: {self.oauth.provider} refused to renew the sign-in", exc)
                + "; run `outreach login` to sign in again") from None
        record = {**record, "access_token": token["access_token"],
                  "expires_at": float(token.get("expires_at") or time.time() + 3600),
                  "refresh_token": token.get("refresh_token") or record["refresh_token"]}
        self.store.save(record)
        return record["access_token"]


def signed_in_note(tokens: TokenSource, timezone: str) -> str:
    """` with OAuth2 (signed in as …; access token expires …)` for check --connect, in the
    sender's time zone."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    status = tokens.status()
    expires = datetime.fromtimestamp(status.expires_at, ZoneInfo(timezone))
    return (f" with OAuth2 (signed in as {status.identity}; access token expires "
            f"{expires:%Y-%m-%d %H:%M %Z}, renewed automatically)")


_sources: dict[str, TokenSource] = {}
_sources_lock = threading.Lock()


def token_source(oauth: OAuth2, username: str) -> TokenSource:
    """The process's one TokenSource for this mailbox (so a refresh happens once)."""
    key = store_for(oauth, username).key
    with _sources_lock:
        if key not in _sources or _sources[key].oauth != oauth:
            _sources[key] = TokenSource(oauth, username)
        return _sources[key]


# -- signing in ---------------------------------------------------------------------------


def accounts(config: Any, provider: str | None = None) -> list[tuple[OAuth2, str, str]]:
    """The servers that sign in with OAuth2, in every mailbox: (registration, username,
    "[smtp] and [imap]"), one per registration and username (one sign-in covers all the
    servers that share them)."""
    boxes = [(b.email, b.smtp, b.imap) for b in config.mailboxes] or [
        ("", config.smtp, config.imap)]
    found: dict[tuple[str, str], list[str]] = {}
    registrations: dict[tuple[str, str], OAuth2] = {}
    for email, smtp, imap in boxes:
        for name, server in (("smtp", smtp), ("imap", imap)):
            if server.auth != "oauth2" or server.oauth2 is None:
                continue
            if provider and server.provider != provider:
                continue
            key = (server.provider, server.username.lower())
            found.setdefault(key, []).append(f"{email} [{name}]" if len(boxes) > 1
                                             else f"[{name}]")
            registrations[key] = server.oauth2
    return [(registrations[key], key[1], " and ".join(where)) for key, where in found.items()]


def identity_of(token: dict[str, Any]) -> str | None:
    """Who signed in, from the OpenID id_token's claims. Not verified: it came straight from
    the token endpoint over TLS (OpenID Connect Core 3.1.3.7), and the mail servers check
    the access token themselves."""
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    for claim in ("email", "preferred_username", "upn"):
        if isinstance(claims.get(claim), str) and "@" in claims[claim]:
            return claims[claim]
    return None


def login(oauth: OAuth2, username: str, *, say: Callable[[str], None],
          open_browser: Callable[[str], Any] | None = None,
          timeout: float = LOGIN_TIMEOUT) -> Status:
    """Sign in interactively and save the tokens; refuses another account than `username`."""
    from authlib.common.errors import AuthlibBaseError
    from authlib.integrations.base_client.errors import OAuthError

    try:
        if oauth.flow == "device":
            token = _device_flow(oauth, say, timeout)
        else:
            token = _browser_flow(oauth, say, open_browser, timeout)
    except OAuthError as exc:
        raise SignInError(_refused(f"{oauth.provider} refused the sign-in", exc)) from None
    except AuthlibBaseError as exc:   # e.g. the state did not match: not our request
        raise SignInError(f"sign-in failed: {exc}; run `outreach login` again") from None
    identity = identity_of(token) or username
    if identity.lower() != username.lower():
        raise SignInError(f"signed in as {identity}, but this mailbox is {username}: run "
                          f"`outreach login` again and choose {username} (or change username "
                          "in outreach.toml)")
    if not token.get("refresh_token"):
        raise SignInError(f"{oauth.provider} gave no refresh token, so outreach could not "
                          "renew the sign-in without you: check the app registration allows "
                          "offline access (scope offline_access)")
    record = {"refresh_token": token["refresh_token"], "access_token": token["access_token"],
              "expires_at": float(token.get("expires_at") or time.time() + 3600),
              "identity": identity}
    saved_in = store_for(oauth, username).save(record)
    return Status(identity, record["expires_at"], saved_in)


def logout(oauth: OAuth2, username: str) -> bool:
    with _sources_lock:
        _sources.pop(store_for(oauth, username).key, None)
    return store_for(oauth, username).delete()


def _device_flow(oauth: OAuth2, say: Callable[[str], None], timeout: float) -> dict[str, Any]:
    from authlib.integrations.base_client.errors import OAuthError

    session = _session(oauth)
    url = oauth.device_authorization_url
    response = _request(lambda: session.post(
        url, data={"client_id": oauth.client_id, "scope": " ".join(oauth.scopes)},
        withhold_token=True, timeout=HTTP_TIMEOUT), url)
    try:
        grant = response.json()
    except ValueError:
        grant = {}
    if response.status_code != 200 or not {"device_code", "user_code"} <= grant.keys():
        why = " ".join(str(grant.get(k, "")) for k in ("error", "error_description")).strip()
        raise SignInError(f"{url} refused the sign-in request (HTTP {response.status_code}"
                          + (f": {why}" if why else "") + "); check [oauth2] client_id and "
                          "tenant")
    say(f"To sign in, open {grant.get('verification_uri') or grant.get('verification_url')} "
        f"and enter the code {grant['user_code']}")
    say("Waiting for you to finish signing in…")
    interval = float(grant.get("interval", 5))
    deadline = time.monotonic() + min(timeout, float(grant.get("expires_in", timeout)))
    while time.monotonic() < deadline:
        time.sleep(interval)
        try:
            return _token(lambda: session.fetch_token(
                oauth.token_url, grant_type=DEVICE_GRANT, device_code=grant["device_code"],
                timeout=HTTP_TIMEOUT), oauth.token_url)
        except OAuthError as exc:
            if exc.error == "authorization_pending":
                continue
            if exc.error == "slow_down":
                interval += 5
                continue
            raise
    raise SignInError("the code expired before the sign-in finished; run `outreach login` "
                      "again")


def _browser_flow(oauth: OAuth2, say: Callable[[str], None],
                  open_browser: Callable[[str], Any] | None, timeout: float) -> dict[str, Any]:
    from authlib.common.security import generate_token

    server = _RedirectCatcher()
    redirect_uri = f"http://127.0.0.1:{server.server_port}/"
    session = _session(oauth, redirect_uri=redirect_uri, code_challenge_method="S256")
    verifier = generate_token(64)
    extra = {"access_type": "offline", "prompt": "consent"} if oauth.provider == "google" else {}
    url, state = session.create_authorization_url(oauth.authorization_url,
                                                  code_verifier=verifier, **extra)
    say(f"To sign in, open this page in your browser (opening it now):\n  {url}")
    say("Waiting for you to finish signing in…")
    try:
        if open_browser is None:
            import webbrowser

            open_browser = webbrowser.open
        open_browser(url)
        path = server.wait(timeout)
    finally:
        server.server_close()
    if path is None:
        raise SignInError(f"no answer from the browser within {timeout:g} s; run "
                          "`outreach login` again")
    query = parse_qs(urlsplit(path).query)
    if "error" in query:
        raise SignInError(f"{oauth.provider} refused the sign-in ({query['error'][0]}"
                          + (f": {query['error_description'][0]}" if "error_description" in
                             query else "") + ")")
    return _token(lambda: session.fetch_token(
        oauth.token_url, authorization_response=redirect_uri.rstrip("/") + path, state=state,
        code_verifier=verifier, timeout=HTTP_TIMEOUT), oauth.token_url)


class _RedirectCatcher(HTTPServer):
    """A one-shot HTTP server on 127.0.0.1 that receives the provider's redirect."""

    def __init__(self) -> None:
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if "code" not in query and "error" not in query:
                    self.send_error(404)
                    return
                catcher.result = self.path
                body = b"outreach: signed in. You can close this tab.\n" if "code" in query \
                    else b"outreach: the sign-in was refused. See the terminal.\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass   # no access log on the user's terminal

        super().__init__(("127.0.0.1", 0), Handler)
        self.result: str | None = None

    def wait(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        self.timeout = 0.5
        while self.result is None and time.monotonic() < deadline:
            self.handle_request()
        return self.result
