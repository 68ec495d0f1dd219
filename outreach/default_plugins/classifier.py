"""The built-in reply classifier, on the public `classify_reply` hook.

`trylast`, so any installed or local plugin that answers wins; see `outreach.classify`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from outreach.hookspecs import hookimpl

if TYPE_CHECKING:  # loaded on every start-up: keep the email package out of `--help`
    from email.message import EmailMessage


@hookimpl(trylast=True)
def classify_reply(reply: EmailMessage) -> str | None:
    from outreach import classify  # its regexes compile on import: only when mail arrives

    return classify.verdict_for(reply).hook_kind
