"""OAuth2 sign-in end to end, with no internet: `outreach login` against the local authorization
server (device flow, and the loopback redirect with PKCE), then `send` over XOAUTH2 to aiosmtpd
and `poll` over XOAUTH2 to a private Dovecot; expiry, renewal, revocation and the wrong user."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest

from outreach import oauth
from outreach.tokens import TokenStore
from tests.conftest import prospect_row
from tests.oauth_server import USER, AuthServer, browse, oauth_toml
from tests.smtp_server import Recorder, use_smtp
from tests.test_send import enrolled, ledger

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def use_oauth(campaign, auth: AuthServer, smtp_port: int | None = None, *,
              flow: str = "device") -> None:
    """[smtp] (when a port is given) signs in with OAuth2 at the local authorization server."""
    if smtp_port is not None:
        use_smtp(campaign, smtp_port, username=USER)
        campaign.edit_config(f'username = "{USER}"', f'username = "{USER}"\nauth = "oauth2"')
    campaign.edit_config("[sending]", oauth_toml(auth, flow=flow) + "\n[sending]")


def xoauth2_server(smtp_server, auth: AuthServer, handler: Recorder | None = None):
    return smtp_server(handler, xoauth2=auth.valid)


def saved(campaign) -> dict:
    config = campaign.config()
    return oauth.store_for(config.smtp.oauth2 or config.imap.oauth2, USER).load() or {}


@pytest.fixture
def signed_in(campaign, smtp_server, auth_server):
    """A campaign whose [smtp] uses XOAUTH2, signed in with the device flow, 3 prospects due."""
    server = xoauth2_server(smtp_server, auth_server)
    use_oauth(campaign, auth_server, server.port)
    login = campaign.run("login")
    assert login.exit_code == 0, login.output
    enrolled(campaign, [prospect_row(i) for i in range(3)])
    return server


def test_device_login_then_send_over_xoauth2(campaign, smtp_server, auth_server, tmp_path):
    server = xoauth2_server(smtp_server, auth_server)
    use_oauth(campaign, auth_server, server.port)
    enrolled(campaign, [prospect_row(1)])
    before = campaign.run("send")
    assert before.exit_code == 1
    assert f"{USER}: not signed in with custom OAuth2; run `outreach login` once" in before.stderr
    login = campaign.run("login")
    assert login.exit_code == 0, login.output
    assert (f"To sign in, open {auth_server.url}/activate and enter the code WDJB-MJHT"
            in login.stderr)
    assert login.stdout == f"signed in as {USER}; token refreshes automatically\n"
    assert auth_server.grants["urn:ietf:params:oauth:grant-type:device_code"] == 2  # 1 pending
    # No OS keyring here: a file only the user can read, under the user's config folder.
    files = list((tmp_path / "user-config" / "outreach" / "tokens").glob("*.json"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert f"tokens saved in {files[0]}" in login.stderr
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    doc = campaign.run_json("send")
    assert doc["sent"] == 1
    assert server.handler.recipients() == ["cfo1@maker1.example"]
    assert auth_server.grants["refresh_token"] == 0   # the login's access token was fresh
    check = campaign.run("check", "--connect")
    assert (f"smtp 127.0.0.1:{server.port}: logged in as {USER} with OAuth2 (signed in as "
            f"{USER}; access token expires ") in check.stdout
    assert "renewed automatically" in check.stdout


def test_tokens_never_reach_config_database_or_json(signed_in, campaign, auth_server):
    record = saved(campaign)
    doc = campaign.run("send", "--json").stdout
    check = campaign.run("check", "--connect", "--json").stdout
    stored = b"".join(p.read_bytes() for p in campaign.root.rglob("*") if p.is_file())
    for secret in (record["refresh_token"], record["access_token"]):
        assert secret not in doc and secret not in check
        assert secret.encode() not in stored


def test_expired_access_token_is_renewed_before_sending(signed_in, campaign, auth_server):
    store = oauth.store_for(campaign.config().smtp.oauth2, USER)
    store.save({**store.load(), "expires_at": time.time() - 10})
    auth_server.expire_access_tokens()
    assert campaign.run_json("send")["sent"] == 3
    assert auth_server.grants["refresh_token"] == 1
    assert saved(campaign)["expires_at"] > time.time() + 3000


def test_token_refused_by_the_server_is_renewed_once(signed_in, campaign, auth_server):
    auth_server.expire_access_tokens()    # the client still thinks its token is good
    assert campaign.run_json("send")["sent"] == 3
    assert auth_server.grants["refresh_token"] == 1
    assert len(signed_in.handler.messages) == 3


def test_revoked_sign_in_stops_with_login_advice_and_sends_nothing(signed_in, campaign,
                                                                   auth_server):
    auth_server.expire_access_tokens()
    auth_server.revoke_refresh_tokens()
    result = campaign.run("send")
    assert result.exit_code == 1
    assert (f"{USER}: custom refused to renew the sign-in (invalid_grant: the refresh token "
            "was revoked); run `outreach login` to sign in again") in result.stderr
    assert "Traceback" not in result.output
    assert ledger(campaign) == [] and signed_in.handler.messages == []
    check = campaign.run("check", "--connect")
    assert check.exit_code == 1 and "run `outreach login`" in check.stderr
    assert campaign.run("login").exit_code == 0     # signing in again fixes it
    assert campaign.run_json("send")["sent"] == 3


def test_another_account_is_refused_at_login(campaign, smtp_server, auth_server):
    server = xoauth2_server(smtp_server, auth_server)
    use_oauth(campaign, auth_server, server.port)
    auth_server.user = "mallory@acme.example"
    result = campaign.run("login")
    assert result.exit_code == 1
    assert (f"signed in as mallory@acme.example, but this mailbox is {USER}: run "
            f"`outreach login` again and choose {USER}") in result.stderr
    assert saved(campaign) == {}


def test_a_token_for_another_user_is_refused_by_the_server(campaign, smtp_server, auth_server):
    server = xoauth2_server(smtp_server, auth_server)
    use_oauth(campaign, auth_server, server.port)
    auth_server.user, auth_server.id_tokens = "mallory@acme.example", False   # no identity
    assert campaign.run("login").exit_code == 0
    enrolled(campaign, [prospect_row(1)])
    result = campaign.run("send")
    assert result.exit_code == 1
    assert (f"XOAUTH2 login as {USER} refused (535 5.7.8 Username and Password not accepted) "
            f"with a freshly renewed token: sign in as {USER} with `outreach login`"
            in result.stderr)
    assert auth_server.grants["refresh_token"] == 1   # renewed once, not in a loop
    assert ledger(campaign) == [] and server.handler.messages == []


class ExpiresMidRun(Recorder):
    """After the 4th message every access token stops working and the server closes that
    connection (421), so the client must log in again with a renewed token."""

    def __init__(self, auth: AuthServer) -> None:
        super().__init__()
        self.auth = auth

    async def handle_DATA(self, server, session, envelope):
        reply = self.accept(envelope)
        if len(self.messages) == 4:
            self.auth.expire_access_tokens()
            server.transport.close()
            return "421 4.3.2 closing"
        return reply


def test_a_token_expiring_mid_send_is_renewed_and_the_run_goes_on(campaign, smtp_server,
                                                                   auth_server):
    server = xoauth2_server(smtp_server, auth_server, ExpiresMidRun(auth_server))
    use_oauth(campaign, auth_server, server.port)
    assert campaign.run("login").exit_code == 0
    enrolled(campaign, [prospect_row(i) for i in range(10)])
    doc = campaign.run_json("send")
    recipients = server.handler.recipients()
    # The 4th message was accepted but its 250 never came: unknown, and never resent.
    assert doc["sent"] == 9 and doc["unknown"] == 1, doc
    assert len(recipients) == len(set(recipients)) == 10
    assert auth_server.grants["refresh_token"] == 1
    assert campaign.run_json("send", "--ignore-window")["sent"] == 0
    assert len(server.handler.messages) == 10


def test_browser_login_with_pkce_and_state(campaign, smtp_server, auth_server, monkeypatch):
    server = xoauth2_server(smtp_server, auth_server)
    use_oauth(campaign, auth_server, server.port, flow="browser")
    monkeypatch.setattr("webbrowser.open", browse)
    result = campaign.run("login")
    assert result.exit_code == 0, result.output
    assert f"To sign in, open this page in your browser (opening it now):\n  {auth_server.url}" \
        "/authorize?" in result.stderr
    assert result.stdout == f"signed in as {USER}; token refreshes automatically\n"
    query = auth_server.authorize_queries[-1]
    assert query["code_challenge_method"] == "S256" and query["redirect_uri"].startswith(
        "http://127.0.0.1:")
    enrolled(campaign, [prospect_row(1)])
    assert campaign.run_json("send")["sent"] == 1


def test_browser_login_refuses_a_forged_state(campaign, smtp_server, auth_server, monkeypatch):
    use_oauth(campaign, auth_server, xoauth2_server(smtp_server, auth_server).port,
              flow="browser")
    monkeypatch.setattr("webbrowser.open", browse)
    auth_server.tamper_state = True
    result = campaign.run("login")
    assert result.exit_code == 1
    assert "sign-in failed" in result.stderr and "state" in result.stderr.lower()
    assert auth_server.grants["authorization_code"] == 0 and saved(campaign) == {}


def test_logout_forgets_the_tokens(signed_in, campaign):
    assert campaign.run("logout").stdout == f"{USER}: signed out; the saved tokens are deleted\n"
    assert saved(campaign) == {}
    result = campaign.run("send")
    assert result.exit_code == 1 and "run `outreach login` once" in result.stderr
    assert campaign.run("logout").stdout == f"{USER}: was not signed in\n"


def test_login_without_oauth2_says_what_to_set(campaign):
    result = campaign.run("login")
    assert result.exit_code == 1
    assert 'outreach.toml: no [smtp] or [imap] has auth = "oauth2"' in result.stderr


def test_the_os_keyring_is_used_where_there_is_one(signed_in, campaign, tmp_path, monkeypatch):
    import keyring

    from tests.oauth_server import FileKeyring

    monkeypatch.setenv("OUTREACH_TEST_KEYRING", str(tmp_path / "keyring.json"))
    before = keyring.get_keyring()
    keyring.set_keyring(FileKeyring())
    try:
        login = campaign.run("login")
        assert "tokens saved in the OS keyring (FileKeyring)" in login.stderr
        assert not list((tmp_path / "user-config" / "outreach" / "tokens").iterdir())
        entries = json.loads((tmp_path / "keyring.json").read_text())
        assert [json.loads(v)["identity"] for v in entries.values()] == [USER]
        assert campaign.run_json("send")["sent"] == 3
        assert campaign.run("logout").exit_code == 0
        assert json.loads((tmp_path / "keyring.json").read_text()) == {}
    finally:
        keyring.set_keyring(before)


def test_identity_comes_from_the_id_token_claims():
    from tests.oauth_server import _unsigned_jwt

    assert oauth.identity_of({"id_token": _unsigned_jwt({"preferred_username": "a@b.example"})}
                             ) == "a@b.example"
    assert oauth.identity_of({"id_token": "garbage"}) is None
    assert oauth.identity_of({}) is None


def test_token_file_is_private_from_the_first_byte():
    store = TokenStore("dana@acme.example https://idp.example/token")
    assert store.save({"refresh_token": "r"}) == str(store.file)
    assert stat.S_IMODE(store.file.stat().st_mode) == 0o600
    assert store.load() == {"refresh_token": "r"}
    assert store.delete() and store.load() is None


# -- IMAP: poll and watch over XOAUTH2 against a private Dovecot ----------------------------


@pytest.fixture
def oauth_imap(campaign, auth_server, dovecot_oauth2):
    from tests.test_poll import seed

    seed(campaign)
    text = campaign.config_path.read_text(encoding="utf-8")
    start = text.index("[imap]")
    end = text.index("\n[", start + 1)
    imap = dovecot_oauth2.imap_toml().replace('password_env = "OUTREACH_IMAP_PASSWORD"',
                                              'auth = "oauth2"')
    campaign.config_path.write_text(text[:start] + imap + text[end:], encoding="utf-8")
    use_oauth(campaign, auth_server)
    assert campaign.run("login").exit_code == 0
    return campaign


def stale(campaign, auth: AuthServer) -> None:
    """The saved access token has expired, though outreach's record says it is good (a
    clock that drifted): Dovecot refuses it, and outreach must renew it."""
    store = oauth.store_for(campaign.config().imap.oauth2, USER)
    store.save({**store.load(), "access_token": auth.mint(USER, ttl=-60)})


@pytest.mark.dovecot
def test_poll_over_xoauth2_renews_an_expired_token(oauth_imap, dovecot_oauth2, auth_server):
    from tests.test_inbox_imap import eml
    from tests.test_poll import NOW

    dovecot_oauth2.append(eml("reply-gmail-interested"))
    oauth_imap.now(NOW)
    check = oauth_imap.run("check", "--connect")
    assert (f"imap 127.0.0.1:{dovecot_oauth2.port}: logged in as {USER} with OAuth2 (signed in "
            f"as {USER}; access token expires") in check.stdout
    stale(oauth_imap, auth_server)
    doc = oauth_imap.run_json("poll")
    assert doc["processed"] == 1 and doc["replies"] == 1
    assert auth_server.grants["refresh_token"] == 1
    stale(oauth_imap, auth_server)
    auth_server.revoke_refresh_tokens()
    dovecot_oauth2.append(eml("auto-de"))
    result = oauth_imap.run("poll")
    assert result.exit_code == 1
    assert "refused to renew the sign-in (invalid_grant" in result.stderr
    assert "run `outreach login`" in result.stderr


@pytest.mark.dovecot
def test_watch_logs_in_again_with_a_renewed_token_when_it_reconnects(oauth_imap, dovecot_oauth2,
                                                                     auth_server):
    import threading

    from outreach.watch import watch
    from tests.test_inbox_imap import eml
    from tests.test_poll import NOW

    oauth_imap.now(NOW)
    stop = threading.Event()
    passes = []

    def on_pass(result):
        passes.append(result.processed)
        if len(passes) == 1:
            # The token stops working and the server drops every connection: watch must
            # reconnect and log in with a renewed token to see the next message.
            stale(oauth_imap, auth_server)
            dovecot_oauth2.kick()
            dovecot_oauth2.append(eml("reply-gmail-interested"))
        elif sum(passes) or len(passes) > 40:   # (a bound, should it never arrive)
            stop.set()

    with oauth_imap.app() as app:
        watch(app, interval=0.5, stop=stop, on_pass=on_pass, max_backoff=0.5)
    assert sum(passes) == 1
    assert auth_server.grants["refresh_token"] >= 1


# -- the provider presets' glue, against the local server ----------------------------------


def _preset(campaign, auth: AuthServer, provider: str, extra: str = "") -> None:
    """[smtp] provider = PROVIDER with auth = "oauth2"; its endpoints moved to the local
    server (login never talks to the SMTP host, so the preset host can stay)."""
    campaign.edit_config('transport = "outbox"', 'transport = "smtp"')
    campaign.edit_config('host = "smtp.acme.example"', f'provider = "{provider}"\nauth = "oauth2"')
    campaign.edit_config("port = 587\n", "")
    campaign.edit_config('security = "starttls"', "")
    campaign.edit_config("[sending]", f'[oauth2]\nclient_id = "outreach-test"\n'
                         f'token_url = "{auth.url}/token"\n'
                         f'device_authorization_url = "{auth.url}/device"\n'
                         f'authorization_url = "{auth.url}/authorize"\n{extra}\n[sending]')


def test_microsoft_signs_in_with_the_device_flow(campaign, auth_server):
    _preset(campaign, auth_server, "microsoft")
    result = campaign.run("login", "--provider", "microsoft")
    assert result.exit_code == 0, result.output
    assert "enter the code WDJB-MJHT" in result.stderr
    assert auth_server.authorize_queries == []


def test_google_signs_in_in_the_browser_asking_for_offline_access(campaign, auth_server,
                                                                   monkeypatch):
    _preset(campaign, auth_server, "google", 'client_secret_env = "OUTREACH_GOOGLE_SECRET"')
    monkeypatch.setattr("webbrowser.open", browse)
    missing = campaign.run("login")
    assert missing.exit_code == 1
    assert ("environment variable OUTREACH_GOOGLE_SECRET is not set; export it with the OAuth "
            "client secret") in missing.stderr
    monkeypatch.setenv("OUTREACH_GOOGLE_SECRET", "not-so-secret")
    result = campaign.run("login")
    assert result.exit_code == 0, result.output
    query = auth_server.authorize_queries[-1]
    # Google gives a refresh token only with access_type=offline (prompt=consent: every time).
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert auth_server.token_forms[-1]["client_secret"] == "not-so-secret"   # Desktop client
    assert auth_server.grants["urn:ietf:params:oauth:grant-type:device_code"] == 0
    assert campaign.run("login", "--provider", "microsoft").exit_code == 1


class RevokedMidRun(ExpiresMidRun):
    """As ExpiresMidRun, and the user withdraws consent at the same moment."""

    async def handle_DATA(self, server, session, envelope):
        if len(self.messages) == 3:
            self.auth.revoke_refresh_tokens()
        return await super().handle_DATA(server, session, envelope)


def test_a_sign_in_revoked_mid_send_leaves_the_rest_due(campaign, smtp_server, auth_server):
    server = xoauth2_server(smtp_server, auth_server, RevokedMidRun(auth_server))
    use_oauth(campaign, auth_server, server.port)
    campaign.edit_config("concurrency = 2 ", "concurrency = 1 ")
    assert campaign.run("login").exit_code == 0
    enrolled(campaign, [prospect_row(i) for i in range(10)])
    result = campaign.run("send")
    assert result.exit_code == 1
    assert "run `outreach login` to sign in again" in result.stderr
    statuses = [r["status"] for r in ledger(campaign)]
    assert statuses == ["sent"] * 3 + ["unknown"]      # nothing after the refusal
    assert len(server.handler.messages) == 4


@pytest.mark.slow
def test_cron_never_waits_for_a_sign_in(campaign, smtp_server, auth_server):
    """`send` from cron (no terminal, no stdin) stops at once with the advice, never prompts."""
    import subprocess
    import sys

    server = xoauth2_server(smtp_server, auth_server)
    use_oauth(campaign, auth_server, server.port)
    enrolled(campaign, [prospect_row(1)])
    for command in ("send", "poll"):
        if command == "poll":
            campaign.edit_config('source = "maildir"', 'source = "imap"')
            campaign.edit_config('password_env = "OUTREACH_IMAP_PASSWORD"', 'auth = "oauth2"')
        proc = subprocess.run([sys.executable, "-m", "outreach", command, "--config",
                               str(campaign.config_path)], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60, env=os.environ)
        assert proc.returncode == 1
        assert f"{USER}: not signed in with custom OAuth2; run `outreach login` once" \
            in proc.stderr
        assert "Traceback" not in proc.stderr
    assert server.handler.messages == []


# -- a token endpoint that does not answer like one ------------------------------------------


@pytest.fixture
def wrong_endpoint():
    """An HTTP endpoint answering every POST with the (status, content type, body) set in
    `answer`: a web page at a mistyped token_url, an outage, a half-OAuth2 server."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    answer: list[tuple[int, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            status, ctype, body = answer[0]
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", answer
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "ctype", "body", "says"), [
    (200, "text/html", b"<html>Sign in</html>",
     "/token did not answer with JSON, so it is not an OAuth2 endpoint: check the URL in "
     "[oauth2]"),
    (200, "application/json", b"{}",
     "/token answered without an access_token: check token_url in [oauth2]"),
    (404, "text/html", b"<html>Not found</html>",
     "/token answered HTTP 404, not an OAuth2 answer: check the URL in [oauth2], or try again "
     "later"),
    (503, "text/plain", b"down", "/token answered HTTP 503, not an OAuth2 answer"),
])
def test_a_token_endpoint_that_is_not_one_is_named_not_a_traceback(wrong_endpoint, status,
                                                                   ctype, body, says):
    from outreach.config import OAuth2

    url, answer = wrong_endpoint
    answer.append((status, ctype, body))
    registration = OAuth2(provider="custom", client_id="c", client_secret_env="", tenant="",
                          token_url=f"{url}/token", device_authorization_url=f"{url}/device",
                          authorization_url="", scopes=("mail",))
    source = oauth.TokenSource(registration, USER)
    source.store.save({"refresh_token": "r", "access_token": "a", "expires_at": 0})
    with pytest.raises(oauth.TokenEndpointError) as info:
        source.token()
    assert str(info.value).startswith(f"{url}{says}")
    assert source.store.load()["refresh_token"] == "r"   # the sign-in is kept for next time


def test_login_and_send_at_endpoints_that_are_not_oauth2_say_so(campaign, smtp_server,
                                                                 wrong_endpoint):
    url, answer = wrong_endpoint
    answer.append((200, "application/json", b'{"device_code": "d"}'))   # no user_code
    server = smtp_server(xoauth2=lambda user, token: True)
    use_smtp(campaign, server.port, username=USER)
    campaign.edit_config(f'username = "{USER}"', f'username = "{USER}"\nauth = "oauth2"')
    campaign.edit_config("[sending]", f'[oauth2]\nclient_id = "c"\ntoken_url = "{url}/token"\n'
                         f'device_authorization_url = "{url}/device"\nscopes = ["mail"]\n'
                         "[sending]")
    result = campaign.run("login")
    assert result.exit_code == 1
    assert result.stderr.endswith(f"Error: {url}/device refused the sign-in request (HTTP 200); "
                                  "check [oauth2] client_id and tenant\n")
    answer[0] = (200, "text/html", b"<html>Sign in</html>")
    enrolled(campaign, [prospect_row(1)])
    oauth.store_for(campaign.config().smtp.oauth2, USER).save(
        {"refresh_token": "r", "access_token": "a", "expires_at": 0})
    send = campaign.run("send")
    assert send.exit_code == 1 and "Traceback" not in send.output
    assert (f"{url}/token did not answer with JSON, so it is not an OAuth2 endpoint"
            in send.stderr)
    assert ledger(campaign) == [] and server.handler.messages == []


def test_login_signs_in_every_mailbox_that_uses_oauth2(campaign, smtp_server, auth_server):
    """With [[mailboxes]], each mailbox's own account signs in (not only the first one's),
    and `send` then goes out from both over XOAUTH2."""
    from tests.test_team import without_servers

    # The local server mints every token for its one consenting user, USER: the SMTP servers
    # take any genuine, current token from it, whichever mailbox logs in.
    servers = [smtp_server(xoauth2=lambda user, token: auth_server.valid(USER, token))
               for _ in range(2)]
    users = ["dana@acme-mail.example", "dana@acme-reach.example"]
    without_servers(campaign)
    boxes = "".join(
        f'\n[[mailboxes]]\nemail = "{user}"\n[mailboxes.smtp]\ntransport = "smtp"\n'
        f'host = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\nusername = "{user}"\n'
        'auth = "oauth2"\n' for user, server in zip(users, servers, strict=True))
    campaign.config_path.write_text(campaign.config_path.read_text() + boxes + "\n"
                                    + oauth_toml(auth_server))
    auth_server.id_tokens = False   # the server does not say who: each username is taken
    login = campaign.run("login")
    assert login.exit_code == 0, login.output
    assert login.stdout == "".join(f"signed in as {user}; token refreshes automatically\n"
                                   for user in users)
    assert f"{users[1]} [smtp]: signing in to custom as {users[1]}" in login.stderr
    enrolled(campaign, [prospect_row(i) for i in range(4)])
    assert campaign.run_json("send")["sent"] == 4
    assert all(server.handler.messages for server in servers)
    assert campaign.run("logout").stdout == "".join(
        f"{user}: signed out; the saved tokens are deleted\n" for user in users)


def test_a_cron_job_that_cannot_reach_the_desktop_keyring_says_how_to_keep_a_file(
        signed_in, campaign, tmp_path, monkeypatch):
    """`login` at a desktop saved to its keyring; cron has no session, so no keyring: the
    error says so and how to sign in to the file instead, which then works from cron."""
    import keyring
    from keyring.backends import fail, null

    from tests.oauth_server import FileKeyring

    monkeypatch.setenv("OUTREACH_TEST_KEYRING", str(tmp_path / "keyring.json"))
    before = keyring.get_keyring()
    try:
        keyring.set_keyring(FileKeyring())            # the desktop session
        assert campaign.run("logout").exit_code == 0
        assert "tokens saved in the OS keyring" in campaign.run("login").stderr
        keyring.set_keyring(fail.Keyring())           # cron: no keyring reachable
        store = oauth.store_for(campaign.config().smtp.oauth2, USER)
        result = campaign.run("send")
        assert result.exit_code == 1
        assert (f"{USER}: not signed in with custom OAuth2; run `outreach login` once (it asks "
                f"in a browser) (no OS keyring is reachable here, so outreach looked in "
                f"{store.file}; if you signed in at a desktop for a cron job, sign in with "
                "PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring to keep the tokens in "
                "that file)") in result.stderr
        keyring.set_keyring(null.Keyring())           # what that variable selects
        assert f"tokens saved in {store.file}" in campaign.run("login").stderr
        keyring.set_keyring(fail.Keyring())
        assert campaign.run_json("send")["sent"] == 3
    finally:
        keyring.set_keyring(before)


def test_two_processes_renewing_at_once_use_the_refresh_token_once(signed_in, campaign,
                                                                   auth_server):
    """`watch` and a cron `send` find the access token expired at the same moment. The server
    takes each refresh token once (rotation with reuse detection, as Auth0 or Keycloak can):
    the second process must wait for the first's renewal and use it, not renew with the
    refresh token the first just spent (which would be refused, or revoke the sign-in)."""
    import threading

    auth_server.single_use = True
    registration = campaign.config().smtp.oauth2
    store = oauth.store_for(registration, USER)
    store.save({**store.load(), "expires_at": time.time() - 10})
    other = oauth.TokenSource(registration, USER)   # the cron `send`'s own view
    answers: list[str] = []
    with store.locked():   # the `watch` process is renewing right now
        late = threading.Thread(target=lambda: answers.append(other.token()))
        late.start()
        renewed = oauth.TokenSource(registration, USER)._refresh(store.load())
    late.join(timeout=30)
    assert answers == [renewed]                      # it waited and took the new token
    assert auth_server.grants["refresh_token"] == 1  # one renewal, one refresh token spent
    assert campaign.run_json("send")["sent"] == 3
