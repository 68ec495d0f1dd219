"""webhook: POST every event as JSON to a URL, with retries, backoff and a timeout.

Enable it by copying this file into your campaign's plugins/ folder, then:

    [plugins.webhook]
    url = "https://hooks.example.com/outreach"
    token_env = "OUTREACH_WEBHOOK_TOKEN"   # optional: sent as "Authorization: Bearer ..."
    timeout = 5                            # seconds per attempt
    attempts = 3                           # tries per event (5xx, 429, network errors)
    backoff = 0.5                          # seconds before the 2nd try, doubling after
    down_for = 300                         # seconds to skip an endpoint that stayed down

An endpoint that cannot be reached never holds up sending for long: once an event has used
up its attempts, the endpoint counts as down for `down_for` seconds (the rest of a `send` run;
a long-lived `outreach watch` tries it again after that) and events meanwhile are skipped
instead of each waiting out its own timeouts (stderr says so, once).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from outreach import event_record as record
from outreach import hookimpl, settings

NAME = "webhook"
_down: dict[str, float] = {}  # endpoint -> time.monotonic() until which it is skipped


class Transient(Exception):
    """A failure worth retrying: network error, timeout, 429 or 5xx."""


def post(doc: dict[str, Any]) -> None:
    conf = settings(NAME)
    url = str(conf.get("url", ""))
    if not url:
        return
    if _down.get(url, 0.0) > time.monotonic():
        return
    body = json.dumps(doc, ensure_ascii=False, default=str).encode("utf-8")
    headers = {"Content-Type": "application/json", "User-Agent": "outreach-webhook"}
    if conf.get("token"):
        headers["Authorization"] = f"Bearer {conf['token']}"
    timeout = float(conf.get("timeout", 5))
    attempts = int(conf.get("attempts", 3))
    backoff = float(conf.get("backoff", 0.5))
    retrying = Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=backoff, min=backoff, max=max(backoff, 8)),
        retry=retry_if_exception(lambda exc: isinstance(exc, Transient)),
        reraise=True,
    )
    try:
        retrying(_send, url, body, headers, timeout)
    except Transient as exc:
        down_for = float(conf.get("down_for", 300))
        _down[url] = time.monotonic() + down_for
        raise RuntimeError(f"{url} unreachable after {attempts} attempt(s) ({exc}); "
                           f"skipping it for {down_for:g}s") from None


def _send(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 429 or exc.code >= 500:
            raise Transient(f"HTTP {exc.code}") from None
        raise RuntimeError(f"{url} refused the event: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise Transient(str(getattr(exc, "reason", exc))) from None


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
