"""A private Dovecot IMAP server for the tests: its own generated config, temp folders and a
free 127.0.0.1 port; never the system's. One per test session (stopping takes seconds).

Outside CI the tests that need it are skipped when Dovecot is not installed; in CI
(`CI` set) they run and fail, because `.ci/run` installs it.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
USER = "dana@acme.example"
# A second account on the same server: a second mailbox of a rep, or a second rep.
SECOND_USER = "dana@acme-reach.example"
PASSWORD = "imap-secret"


def available() -> bool:
    return os.access(DOVECOT, os.X_OK)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dovecot:
    """A running private server; `client()` logs in as the test user."""

    def __init__(self, root: Path, oauth2: tuple[bytes, str] | None = None) -> None:
        self.root = root
        self.oauth2 = oauth2   # (HS256 key, issuer): also accept XOAUTH2 with such JWTs
        self.port = _free_port()
        self.mail = root / "mail"
        self.conf = root / "dovecot.conf"
        self.log = root / "dovecot.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- life -----------------------------------------------------------------------------

    def write_config(self) -> None:
        uid, gid = os.getuid(), os.getgid()
        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir(exist_ok=True)
        if uid == 0:
            # Dovecot refuses to run mail processes as root: the mail belongs to nobody.
            import pwd

            nobody = pwd.getpwnam("nobody")
            uid, gid = nobody.pw_uid, nobody.pw_gid
            for sub in ("mail", "home"):
                os.chown(self.root / sub, uid, gid)
        self.mail_uid, self.mail_gid = uid, gid
        (self.root / "passwd").write_text(
            "".join(f"{u}:{{PLAIN}}{PASSWORD}\n" for u in (USER, SECOND_USER)), encoding="utf-8")
        if os.getuid() == 0:
            # As root Dovecot wants unprivileged users for its login and internal processes.
            users = "default_login_user = dovenull\ndefault_internal_user = dovecot\n"
            os.chmod(self.root, 0o755)
        else:
            # Unprivileged, every Dovecot process runs as us.
            import pwd

            me = pwd.getpwuid(os.getuid()).pw_name
            users = f"default_login_user = {me}\ndefault_internal_user = {me}\n"
        mechanisms, oauth_passdb = "plain login", ""
        if self.oauth2:
            # The oauth2 passdb validates the JWTs locally: the key is the file
            # keys/<azp or default>/<alg>/<kid or default>, base64 without a newline, readable
            # by Dovecot's own users.
            key, issuer = self.oauth2
            folder = self.root / "keys" / "default" / "HS256"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "default").write_bytes(base64.b64encode(key))
            for path in (folder / "default", folder, folder.parent, folder.parent.parent):
                os.chmod(path, 0o644 if path.is_file() else 0o755)
            (self.root / "oauth2.conf.ext").write_text(
                "introspection_mode = local\n"
                f"local_validation_key_dict = fs:posix:prefix={self.root}/keys/\n"
                f"username_attribute = email\nissuers = {issuer}\n", encoding="utf-8")
            mechanisms = "plain login xoauth2 oauthbearer"
            oauth_passdb = (f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                            f"  args = {self.root}/oauth2.conf.ext\n}}\n")
            # The master clears its children's environment: under CI's moved clock
            # (datefudge) the auth process must see the same time as the tokens' iat and exp.
            moved = [f"{k}={os.environ[k]}" for k in ("LD_PRELOAD", "LD_LIBRARY_PATH",
                                                       "DATEFUDGE") if k in os.environ]
            if moved:
                oauth_passdb += "import_environment = TZ " + " ".join(moved) + "\n"
        self.conf.write_text(f"""\
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:{self.mail}/%u
mail_max_userip_connections = 50
imap_idle_notify_interval = 1 secs
{users}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = {self.root}/passwd
}}
{oauth_passdb}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""", encoding="utf-8")

    def start(self) -> None:
        self.write_config()
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not start: {self.log_text()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    # -- helpers --------------------------------------------------------------------------

    def client(self, password: str = PASSWORD, user: str = USER) -> Any:  # an IMAPClient
        from imapclient import IMAPClient

        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=10)
        client.login(user, password)
        return client

    def reset(self) -> None:
        """Empty the test users' mailboxes (between tests): delete every folder but INBOX."""
        for user in (USER, SECOND_USER):
            with self.client(user=user) as c:
                for _flags, _delim, name in c.list_folders():
                    if name != "INBOX":
                        c.delete_folder(name)
                c.select_folder("INBOX")
                uids = c.search(["ALL"])
                if uids:
                    c.delete_messages(uids)
                    c.expunge()

    def append(self, raw: bytes, folder: str = "INBOX", flags: tuple[bytes, ...] = (),
               user: str = USER) -> None:
        with self.client(user=user) as c:
            if not c.folder_exists(folder):
                c.create_folder(folder)
            c.append(folder, raw, flags=flags)

    def flags(self, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        with self.client() as c:
            c.select_folder(folder, readonly=True)
            uids = c.search(["ALL"])
            return {uid: d[b"FLAGS"] for uid, d in c.fetch(uids, ["FLAGS"]).items()}

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.client() as c:
            return c.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"]

    def kick(self) -> None:
        """Drop every connection of the test user (as a server restart would)."""
        subprocess.run([DOVEADM, "-c", str(self.conf), "kick", USER], check=False,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=20)

    def imap_toml(self, folders: tuple[str, ...] = ("INBOX",)) -> str:
        names = ", ".join(f'"{f}"' for f in folders)
        return (f'[imap]\nsource = "imap"\nhost = "127.0.0.1"\nport = {self.port}\n'
                f'security = "none"\nusername = "{USER}"\npassword_env = '
                f'"OUTREACH_IMAP_PASSWORD"\nfolders = [{names}]\n')


def _running(oauth2: tuple[bytes, str] | None = None) -> Iterator[Dovecot]:
    if not available():
        if os.environ.get("CI"):
            pytest.fail("dovecot is not installed; .ci/run installs dovecot-imapd")
        pytest.skip("dovecot is not installed (apt-get install dovecot-imapd); runs in CI")
    # A short folder: Dovecot's unix sockets must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="dv", dir="/tmp"))
    server = Dovecot(root, oauth2)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    yield from _running()


@pytest.fixture(scope="session")
def dovecot_oauth2_server(auth_server_session: Any) -> Iterator[Dovecot]:
    """A second private Dovecot that also accepts XOAUTH2 with the JWTs the local
    authorization server (tests/oauth_server.py) signs, validated locally by its oauth2 passdb."""
    from tests.oauth_server import ISSUER

    yield from _running((auth_server_session.key, ISSUER))


@pytest.fixture
def dovecot_oauth2(dovecot_oauth2_server: Dovecot) -> Dovecot:
    dovecot_oauth2_server.reset()
    return dovecot_oauth2_server


@pytest.fixture
def dovecot(dovecot_server: Dovecot, monkeypatch: pytest.MonkeyPatch) -> Dovecot:
    """The session's server with an empty mailbox and the password in the environment."""
    dovecot_server.reset()
    monkeypatch.setenv("OUTREACH_IMAP_PASSWORD", PASSWORD)
    return dovecot_server
