"""Where replies come from: an IMAP mailbox or a local Maildir, each message fetched once.

A source yields batches of new messages; the state that makes them "seen" (the IMAP
UIDVALIDITY and highest UID per folder, the Maildir keys) is written only after the caller
has handled a batch, so a pass that dies half-way fetches the rest next time. Nothing is
ever marked, moved or deleted: IMAP folders are opened read-only (EXAMINE) and read with
BODY.PEEK[].
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .config import Config, Imap, secret
from .errors import MailboxError
from .store import Store

BATCH = 200


class MailboxRefused(MailboxError):
    """The server answered but said no (login refused, no such folder): retrying won't help."""


@dataclass(frozen=True)
class Inbound:
    """One new message as raw bytes, with the key that makes it seen once."""

    source: str
    key: str
    raw: bytes
    uidvalidity: int | None = None
    uid: int | None = None


class Source(Protocol):
    def batches(self, store: Store) -> Iterator[list[Inbound]]: ...

    def close(self) -> None: ...


def mail_servers(config: Config) -> list[Imap]:
    """The [imap] of each mailbox ([[mailboxes]]), each account once."""
    out: list[Imap] = []
    for box in config.mailboxes:
        if box.imap not in out:
            out.append(box.imap)
    return out


def open_source(config: Config) -> Source:
    """What `poll` reads: the one mailbox, or every mailbox of [[mailboxes]] in turn."""
    sources = [_source(imap) for imap in mail_servers(config)]
    return sources[0] if len(sources) == 1 else Sources(sources)


def _source(imap: Imap) -> Source:
    if imap.source == "maildir":
        return MaildirSource(imap.maildir, imap.folders)
    return ImapSource(imap)


class Sources:
    """Several mailboxes read one after the other as one source (each remembers its own
    folders' state: the inbound keys name the account)."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources

    def batches(self, store: Store) -> Iterator[list[Inbound]]:
        for source in self.sources:
            yield from source.batches(store)

    def close(self) -> None:
        for source in self.sources:
            source.close()


# -- Maildir ------------------------------------------------------------------------------


class MaildirSource:
    """A local Maildir (new/ and cur/ of each folder); file keys are remembered once handled.

    INBOX is the Maildir itself; another folder NAME is its Maildir++ subfolder `.NAME`.
    """

    def __init__(self, path: Path, folders: tuple[str, ...] = ("INBOX",)) -> None:
        self.path = Path(path)
        self.folders = folders

    def folder_path(self, folder: str) -> Path:
        return self.path if folder.upper() == "INBOX" else self.path / f".{folder}"

    def batches(self, store: Store) -> Iterator[list[Inbound]]:
        for folder in self.folders:
            yield from self._folder(store, self.folder_path(folder))

    def _folder(self, store: Store, path: Path) -> Iterator[list[Inbound]]:
        name = f"maildir:{path}"
        try:
            import mailbox  # only for this source: an IMAP poll never loads it

            box = mailbox.Maildir(path, factory=None, create=True)
            keys = sorted(box.keys())
        except OSError as exc:
            raise MailboxError(f"{path}: cannot read the Maildir: {exc.strerror or exc}; "
                               "check [imap] maildir and folders") from None
        seen = store.inbound_keys(name)
        new = [k for k in keys if k not in seen]
        for start in range(0, len(new), BATCH):
            batch = []
            for key in new[start:start + BATCH]:
                try:
                    raw = box.get_bytes(key)
                except (KeyError, FileNotFoundError):  # moved or deleted by the mail client
                    continue
                batch.append(Inbound(name, key, raw))
            yield batch

    def close(self) -> None:
        pass


# -- IMAP ---------------------------------------------------------------------------------


class ImapSource:
    """An IMAP account: each folder of `folders`, read-only, from the last UID seen."""

    def __init__(self, imap: Imap, *, timeout: float = 60) -> None:
        self.imap = imap
        self.timeout = timeout
        self.client: Any = None

    @property
    def where(self) -> str:
        return f"imap {self.imap.host}:{self.imap.port}"

    def source_name(self, folder: str) -> str:
        return f"imap:{self.imap.username}@{self.imap.host}:{self.imap.port}/{folder}"

    def connect(self) -> Any:
        """Log in, or raise MailboxError saying what to fix."""
        if self.client is not None:
            return self.client
        self.client = connect(self.imap, timeout=self.timeout)
        return self.client

    def close(self) -> None:
        if self.client is None:
            return
        client, self.client = self.client, None
        _quietly_close(client)

    def batches(self, store: Store) -> Iterator[list[Inbound]]:
        from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

        client = self.connect()
        try:
            for folder in self.imap.folders:
                yield from self._folder(client, store, folder)
        except (OSError, EOFError, IMAPClientAbortError) as exc:
            self.close()
            raise MailboxError(f"{self.where}: connection lost ({_text(exc)}); what was read "
                               "is kept, the next poll continues from there") from None
        except IMAPClientError as exc:   # a NO or BAD to SEARCH or FETCH (Gmail has its days)
            self.close()
            raise MailboxError(f"{self.where}: the server refused to hand over messages "
                               f"({_text(exc)}); what was read is kept, the next poll tries "
                               "the rest again") from None

    def _folder(self, client: Any, store: Store, folder: str) -> Iterator[list[Inbound]]:
        from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

        name = self.source_name(folder)
        try:
            info = client.select_folder(folder, readonly=True)
        except IMAPClientAbortError:
            raise  # the connection dropped: `watch` reconnects, `poll` reports it
        except IMAPClientError as exc:
            raise MailboxRefused(f"{self.where}: cannot open folder \"{folder}\": {_text(exc)}; "
                               "check [imap] folders") from None
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        uidnext = info.get(b"UIDNEXT")
        state = store.mailbox_state(name)
        rescan = state is not None and state["uidvalidity"] != uidvalidity
        start = 1 if state is None or rescan else state["last_uid"] + 1
        if not rescan and uidnext is not None and int(uidnext) <= start:
            if state is None:
                store.set_mailbox_state(name, uidvalidity=uidvalidity, last_uid=0)
            return
        # `UID SEARCH UID n:*` always includes the newest message, even below n.
        uids = sorted(u for u in client.search(["UID", f"{start}:*"]) if u >= start)
        # A batch keeps the UID list in the command short (imapclient fails past ~64 kB).
        chunks = [uids[first:first + BATCH] for first in range(0, len(uids), BATCH)]
        for chunk, data in _prefetched(client, chunks):
            batch = [Inbound(name, f"{uidvalidity}:{uid}", data[uid], uidvalidity, uid)
                     for uid in chunk if uid in data]
            yield batch
            store.set_mailbox_state(name, uidvalidity=uidvalidity, last_uid=chunk[-1])
        if not uids:
            store.set_mailbox_state(name, uidvalidity=uidvalidity, last_uid=start - 1)


def _prefetched(client: Any, chunks: list[list[int]]) -> Iterator[tuple[list[int], Any]]:
    """Each chunk's bodies, the next chunk fetched by a helper thread while the caller acts
    on this one: the server prepares and sends it while we classify, instead of after.

    Only one thread uses the connection at a time: the caller touches it again only after
    the last fetch is collected (leaving the `with` waits for one still under way)."""
    if len(chunks) < 2:
        for chunk in chunks:
            yield chunk, fetch_bodies(client, chunk)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-fetch") as pool:
        pending = pool.submit(fetch_bodies, client, chunks[0])
        for i, chunk in enumerate(chunks):
            data = pending.result()
            if i + 1 < len(chunks):
                pending = pool.submit(fetch_bodies, client, chunks[i + 1])
            yield chunk, data


_UID = re.compile(rb"[( ]UID (\d+)[ )]")
_NO_BODY = re.compile(rb"[( ]BODY\[\] NIL[ )]")


def fetch_bodies(client: Any, uids: list[int]) -> dict[int, bytes]:
    """UID -> the whole message (b"" when the server has no body for it), for `uids`.

    The command imapclient's `fetch(uids, ["BODY.PEEK[]"])` sends, through its imaplib
    connection, read without imapclient's general response parser: imaplib already splits
    each body literal out, and the parser would tokenize every response again, costing
    as much CPU as receiving the bytes. The UID may come before the body or after it."""
    from imapclient.exceptions import IMAPClientError

    typ, data = client._imap.uid("FETCH", ",".join(map(str, uids)), "(BODY.PEEK[])")
    if typ != "OK":
        said = data[0] if data and isinstance(data[0], bytes) else b""
        raise IMAPClientError(f"{typ} {said.decode('utf-8', 'replace')}".strip())
    out: dict[int, bytes] = {}
    for i, item in enumerate(data):
        if isinstance(item, tuple):   # (b"12 (UID 345 BODY[] {size}", body), then the rest
            head, body = item
            tail = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
            found = _UID.search(head) or _UID.search(tail)
            if found:
                out[int(found[1])] = body
        elif isinstance(item, bytes) and _NO_BODY.search(item) and (found := _UID.search(item)):
            out.setdefault(int(found[1]), b"")
    return out


def connect(imap: Imap, *, timeout: float = 60) -> Any:
    """An IMAPClient logged in per [imap], or MailboxError naming what failed."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError, LoginError

    where = f"imap {imap.host}:{imap.port}"
    password = secret(imap.password_env, what=f"[imap] password_env for {where}") \
        if imap.auth == "password" and imap.password_env else ""
    tokens: Any = None
    if imap.auth == "oauth2":   # not signed in (or refused): say so before connecting
        from .oauth import TokenEndpointError, token_source

        assert imap.oauth2 is not None   # the config sets it for auth = "oauth2"
        tokens = token_source(imap.oauth2, imap.username)
        try:
            token = tokens.token()
        except TokenEndpointError as exc:
            raise MailboxError(f"{where}: {exc}") from None
    # Building a TLS context loads the system's CA store: only when TLS is used.
    context = ssl.create_default_context() if imap.security != "none" else None
    try:
        client = IMAPClient(imap.host, port=imap.port, ssl=imap.security == "tls",
                            ssl_context=context if imap.security == "tls" else None,
                            timeout=timeout)
        if imap.security == "starttls":
            client.starttls(context)
    except (OSError, IMAPClientError) as exc:
        if imap.security == "tls" and "WRONG_VERSION_NUMBER" in str(exc):
            raise MailboxRefused(f"{where}: this port does not speak TLS: 143 usually wants "
                                 "starttls, 993 tls") from None
        raise MailboxError(f"{where}: cannot connect ({_text(exc)}); check [imap] host, port "
                           "and security") from None
    if imap.auth == "none":
        return client
    try:
        if tokens is not None:
            _xoauth2(client, imap, where, tokens, token)
        else:
            client.login(imap.username, password)
    except LoginError as exc:
        _quietly_close(client)
        raise MailboxRefused(f"{where}: login as \"{imap.username}\" refused ({_text(exc)}); "
                           f"check [imap] username and the password in ${imap.password_env}"
                           ) from None
    except (OSError, IMAPClientError) as exc:
        _quietly_close(client)
        raise MailboxError(f"{where}: login failed ({_text(exc)})") from None
    except BaseException:
        _quietly_close(client)
        raise
    return client


def _xoauth2(client: Any, imap: Imap, where: str, tokens: Any, token: str) -> None:
    """XOAUTH2 with a current access token (a fresh one on every connect, so `watch`
    re-authenticates when it reconnects); a refusal renews the token once and tries again."""
    from imapclient.exceptions import LoginError

    from .oauth import TokenEndpointError

    try:
        try:
            client.oauth2_login(imap.username, token)
        except LoginError:
            client.oauth2_login(imap.username, tokens.refreshed(token))
    except LoginError as exc:
        raise MailboxRefused(f"{where}: XOAUTH2 login as \"{imap.username}\" refused "
                             f"({_text(exc)}) with a freshly renewed token: sign in as "
                             f"{imap.username} with `outreach login`") from None
    except TokenEndpointError as exc:
        raise MailboxError(f"{where}: {exc}") from None


def check_mailbox(config: Config) -> str:
    """`check --connect`: log in and open every folder read-only (or look at the Maildir)."""
    imap = config.imap
    if imap.source == "maildir":
        where = imap.maildir
        if not where.exists():
            return f"maildir {where}: not there yet (created on the first poll)"
        count = sum(1 for sub in ("new", "cur") if (where / sub).is_dir()
                    for _ in (where / sub).iterdir())
        return f"maildir {where}: readable, {count} messages"
    folders = check_login(imap)
    who = "connected (no login)" if imap.auth == "none" else f"logged in as {imap.username}"
    if imap.auth == "oauth2" and imap.oauth2 is not None:
        from .oauth import signed_in_note, token_source

        who += signed_in_note(token_source(imap.oauth2, imap.username), config.sender.timezone)
    return f"imap {imap.host}:{imap.port}: {who}; {', '.join(folders)} readable"


def check_login(imap: Imap, *, timeout: float = 15) -> list[str]:
    """`check --connect`: log in and open each folder read-only; returns the folders' names."""
    from imapclient.exceptions import IMAPClientError

    client = connect(imap, timeout=timeout)
    try:
        for folder in imap.folders:
            try:
                client.select_folder(folder, readonly=True)
            except IMAPClientError as exc:
                raise MailboxRefused(f"imap {imap.host}:{imap.port}: cannot open folder "
                                   f"\"{folder}\": {_text(exc)}; check [imap] folders") from None
    finally:
        _quietly_close(client)
    return list(imap.folders)


def _quietly_close(client: Any) -> None:
    try:
        client.logout()
    except Exception:  # already dropped: nothing left to close politely
        with contextlib.suppress(Exception):
            client.shutdown()


def _text(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__
