"""Where OAuth2 tokens live: the OS keyring where one exists, else a file only the user can
read (0600) under the user's config folder. Never outreach.toml, the database, logs or --json.

One record per mailbox and token endpoint: the refresh token, the current access token and
its expiry (so a cron run does not refresh on every start), and the signed-in identity.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SERVICE = "outreach-oauth2"


def config_home() -> Path:
    """The user's config folder: $XDG_CONFIG_HOME, else ~/.config."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def _usable_keyring() -> Any:
    """The keyring backend, or None when this machine has none (headless Linux, CI, tests
    with PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring)."""
    try:
        import keyring
        from keyring.backends import fail, null
    except ImportError:
        return None
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring | null.Keyring) or backend.priority <= 0:
        return None
    return backend


class TokenStore:
    """The saved tokens of one mailbox (`key` names mailbox and token endpoint)."""

    def __init__(self, key: str) -> None:
        self.key = key

    @property
    def file(self) -> Path:
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:24]
        return config_home() / "outreach" / "tokens" / f"{digest}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold this mailbox's tokens against the user's other outreach processes (`watch`
        and a cron `send`): one renews at a time and the next reads what it saved, since a
        server may take each refresh token once (rotation with reuse detection)."""
        lock = self.file.with_suffix(".lock")
        lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with lock.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def load(self) -> dict[str, Any] | None:
        text = None
        backend = _usable_keyring()
        if backend is not None:
            with contextlib.suppress(Exception):   # a locked or broken keyring: try the file
                text = backend.get_password(SERVICE, self.key)
        if text is None:
            try:
                text = self.file.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
        try:
            record = json.loads(text)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def save(self, record: dict[str, Any]) -> str:
        """Keep the record; returns where it went."""
        text = json.dumps(record)
        backend = _usable_keyring()
        if backend is not None:
            try:
                backend.set_password(SERVICE, self.key, text)
            except Exception:  # no usable keyring after all (locked, no D-Bus): the file
                pass
            else:
                self.file.unlink(missing_ok=True)
                return f"the OS keyring ({type(backend).__name__})"
        self._write_private(text)
        return str(self.file)

    def missing_hint(self) -> str:
        """Why `load` may find nothing though `outreach login` ran: the tokens went to a
        keyring this process cannot reach (a desktop session's, from cron)."""
        if _usable_keyring() is not None:
            return ""
        return (f" (no OS keyring is reachable here, so outreach looked in {self.file}; if you "
                "signed in at a desktop for a cron job, sign in with "
                "PYTHON_KEYRING_BACKEND=keyring.backends.null.Keyring to keep the tokens in "
                "that file)")

    def delete(self) -> bool:
        """Forget the tokens; True when there were any."""
        found = False
        backend = _usable_keyring()
        if backend is not None:
            with contextlib.suppress(Exception):
                if backend.get_password(SERVICE, self.key) is not None:
                    backend.delete_password(SERVICE, self.key)
                    found = True
        if self.file.exists():
            self.file.unlink()
            found = True
        return found

    def _write_private(self, text: str) -> None:
        """Write atomically, readable by the user alone from the first byte."""
        folder = self.file.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        temp = folder / f".{self.file.name}.{os.getpid()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(temp, self.file)
