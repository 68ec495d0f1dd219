"""webhook: POST every event as JSON to a URL; what the endpoint does not take waits in a
spool and is sent again, oldest first, once it is back.

Enable it by copying this file into your campaign's plugins/ folder, then:

    [plugins.webhook]
    url = "https://hooks.example.com/outreach"
    token_env = "OUTREACH_WEBHOOK_TOKEN"   # optional: sent as "Authorization: Bearer ..."
    timeout = 5                            # seconds per attempt
    attempts = 3                           # tries per event (5xx, 408, 429, network errors)
    backoff = 0.5                          # seconds before the 2nd try, doubling after
    down_for = 300                         # seconds before a down endpoint is tried again
    spool_path = "webhook-spool"           # undelivered events, relative to outreach.toml

Delivery is at least once. Every event has an `id` (also sent as the `Idempotency-Key`
header) that stays the same on every attempt, so the receiver can drop a duplicate.

Every event is written to the spool before it is sent and removed once the endpoint took it,
so a command killed after that (even `kill -9` in the middle of a POST) loses nothing: the
event goes again, with its id, from the next command. (Hooks fire once outreach has recorded
what happened, so a kill in the instant between that and the spool write can still lose it.)

An event the endpoint does not take (down, timing out, 5xx, or 401/403/404: check the url and
token) stays in the spool, flushed to disk, and everything after it joins the queue, so the
endpoint always gets events in order. The queue is sent at the start of the next command and
with the next event, once `down_for` has passed; `outreach plugins` says how many wait. An
event the endpoint refuses for itself (another 4xx) is set aside in `rejected/` inside the
spool and reported, so it cannot hold up the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from outreach import campaign_dir, hookimpl, settings
from outreach import event_record as record

NAME = "webhook"
ENDPOINT_WRONG = {401, 403, 404, 405, 410}  # every event would fail: keep them all
_down: dict[str, float] = {}  # endpoint -> time.monotonic() until which it is not tried


class Transient(Exception):
    """Worth retrying: network error, timeout, 408, 429 or 5xx."""


class EndpointWrong(Exception):
    """The endpoint refuses every event (bad url or token): keep them, tell the user."""


class Refused(Exception):
    """The endpoint refused this one event (a 4xx about its content)."""


def spool_dir() -> Path:
    return Path(settings(NAME).get("spool_path") or campaign_dir() / "webhook-spool")


def waiting(spool: Path) -> list[Path]:
    """The spooled events, oldest first (names start with a number that only grows)."""
    return sorted(spool.glob("*.json")) if spool.is_dir() else []


_last: dict[Path, int] = {}  # spool -> the newest number this process gave an event


def _next_number(spool: Path) -> int:
    """The time in ns, but never at or below the spool's newest event: a clock set back
    (NTP, a resumed laptop) must not put a new event before older ones."""
    if spool not in _last:
        newest = waiting(spool)[-1:]
        head = newest[0].name.split("-", 1)[0] if newest else ""
        _last[spool] = int(head) if head.isdigit() else 0
    _last[spool] = max(time.time_ns(), _last[spool] + 1)
    return _last[spool]


def keep(spool: Path, doc: dict[str, Any]) -> Path:
    """Add one event to the spool (write, rename): from here a killed command loses nothing,
    and a reader never sees half an event."""
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"{_next_number(spool):020d}-{doc['id']}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(json.dumps(doc, ensure_ascii=False, default=str).encode("utf-8"))
    os.replace(tmp, path)
    return path


def flush(spool: Path, path: Path) -> None:
    """Make a waiting event survive a power cut too (fsync the file and the folder): paid
    only by events that must wait, not on every delivery."""
    with contextlib.suppress(FileNotFoundError):  # delivered by another run meanwhile
        for target in (path, spool):
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def spool_lock(spool: Path) -> Iterator[bool]:
    """Whether this process may send the spool: one sender at a time keeps the order."""
    spool.mkdir(parents=True, exist_ok=True)
    with (spool / ".lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def post(doc: dict[str, Any]) -> None:
    """Spool one new event, then send the spool in order (unless the endpoint is down)."""
    conf = settings(NAME)
    url = str(conf.get("url", ""))
    if not url:
        return
    spool = spool_dir()
    path = keep(spool, {"id": uuid.uuid4().hex, **doc})
    if _down.get(url, 0.0) <= time.monotonic():
        replay(conf, spool)
    if path.exists():  # it waits: down, refused for now, or another run is sending
        flush(spool, path)


def replay(conf: dict[str, Any], spool: Path, *, attempts: int | None = None) -> None:
    """Send the spooled events oldest first, each removed once the endpoint took it; stop
    at the first that cannot go (it and the rest wait for the next try)."""
    with spool_lock(spool) as mine:
        if not mine:
            return  # another run is sending them, in order
        while batch := waiting(spool):
            for path in batch:
                try:
                    doc = json.loads(path.read_text(encoding="utf-8"))
                    deliver(conf, doc, attempts=attempts)
                except (Transient, EndpointWrong) as exc:
                    went_down(conf, spool, exc)
                    return
                except (Refused, ValueError) as exc:  # ValueError: a damaged file
                    (spool / "rejected").mkdir(exist_ok=True)
                    os.replace(path, spool / "rejected" / path.name)
                    set_aside(spool, str(exc) if isinstance(exc, Refused)
                              else f"{path.name} cannot be read ({exc})")
                    continue
                path.unlink()


def went_down(conf: dict[str, Any], spool: Path, exc: Exception) -> None:
    """Remember the endpoint is down for `down_for` seconds, and say so once."""
    down_for = float(conf.get("down_for", 300))
    _down[str(conf["url"])] = time.monotonic() + down_for
    count = len(waiting(spool))
    report(f"{conf['url']} {exc}; {count} event{'s' * (count != 1)} kept in {spool}, and the "
           "next ones join them: sent again in order on the next command or after "
           f"{down_for:g}s (`outreach plugins` counts them)")


def set_aside(spool: Path, why: str) -> None:
    report(f"{why}; set aside in {spool / 'rejected'} (not sent again)")


def report(text: str) -> None:
    print(f"outreach: plugin {NAME}: {text}", file=sys.stderr)


def deliver(conf: dict[str, Any], doc: dict[str, Any], *, attempts: int | None = None) -> None:
    """POST one event, retrying what is worth retrying with exponential backoff."""
    url = str(conf["url"])
    body = json.dumps(doc, ensure_ascii=False, default=str).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "outreach-webhook",
               "Idempotency-Key": str(doc["id"])}
    if conf.get("token"):
        headers["Authorization"] = f"Bearer {conf['token']}"
    tries = max(1, attempts or int(conf.get("attempts", 3)))
    backoff = float(conf.get("backoff", 0.5))
    retrying = Retrying(
        stop=stop_after_attempt(tries),
        wait=wait_exponential(multiplier=backoff, min=backoff, max=max(backoff, 8)),
        retry=retry_if_exception(lambda exc: isinstance(exc, Transient)),
        reraise=True,
    )
    try:
        retrying(_send, url, body, headers, float(conf.get("timeout", 5)))
    except Transient as exc:
        raise Transient(f"unreachable after {tries} attempt(s) ({exc})") from None
    except Refused as exc:
        raise Refused(f"{url} refused event {doc['id']} ({doc.get('event')} "
                      f"{doc.get('email')}): {exc}") from None


def _send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (408, 429) or exc.code >= 500:
            raise Transient(f"HTTP {exc.code}") from None
        if exc.code in ENDPOINT_WRONG:
            raise EndpointWrong(f"answers HTTP {exc.code} {exc.reason}: check url and "
                                "token") from None
        raise Refused(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Transient(getattr(reason, "strerror", None) or str(reason)) from None


@hookimpl
def campaign_opened() -> None:
    """Send what waits, if anything: one attempt, so a still-down endpoint costs little."""
    conf = settings(NAME)
    spool = spool_dir()
    if conf.get("url") and waiting(spool) and _down.get(str(conf["url"]), 0.0) <= time.monotonic():
        replay(conf, spool, attempts=1)


@hookimpl
def plugin_status() -> str | None:
    if not settings(NAME).get("url"):
        return f"not sending: no url in [plugins.{NAME}]"
    spool = spool_dir()
    pending = len(waiting(spool))
    rejected = len(waiting(spool / "rejected"))
    if not pending and not rejected:
        return "no events waiting"
    parts = [f"{pending} event{'s' * (pending != 1)} waiting in {spool}"] if pending else []
    if rejected:
        parts.append(f"{rejected} refused by the endpoint in {spool / 'rejected'}")
    return "; ".join(parts)


@hookimpl
def prospect_imported(prospect: Any) -> None:
    post(record("prospect_imported", prospect=prospect))


@hookimpl
def message_sent(prospect: Any, message: Any) -> None:
    post(record("message_sent", prospect=prospect, message=message))


@hookimpl
def reply_received(prospect: Any, reply: Any, kind: str) -> None:
    post(record("reply_received", prospect=prospect, kind=kind, reply=reply))


@hookimpl
def call_task_created(prospect: Any, task: Any) -> None:
    post(record("call_task_created", prospect=prospect, task=task))


@hookimpl
def call_task_closed(prospect: Any, task: Any) -> None:
    post(record("call_task_closed", prospect=prospect, task=task))


@hookimpl
def stage_changed(prospect: Any, old: str, new: str) -> None:
    post(record("stage_changed", prospect=prospect, old=old, new=new))
