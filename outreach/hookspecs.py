"""The hooks a plugin can implement. Each function's docstring is its documentation.

Every hook is called with keyword arguments; implement only the arguments you need.
`prospect` is always a read-only `outreach.Prospect`. A plugin that raises is reported with
its name and does not stop the run or hide the event from other plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # annotations only: keeps `outreach --help` from importing email and click
    from email.message import EmailMessage

    import click

    from .models import Prospect

hookspec = pluggy.HookspecMarker("outreach")
hookimpl = pluggy.HookimplMarker("outreach")


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the `outreach` CLI. Called once at start-up with the click group."""


@hookspec
def campaign_opened(campaign: Any) -> None:
    """A command opened the campaign, before doing its work: a plugin catches up here (send
    what it kept, write its first state). `campaign` has `root` (the folder of outreach.toml),
    `sender` (the `[sender]` settings) and `open_call_tasks()`: (prospect, task) pairs."""


@hookspec
def plugin_status() -> str | None:
    """One line about the plugin's own state for `outreach plugins` (events waiting to be
    delivered, the file it keeps), or None to say nothing."""


@hookspec
def template_context(prospect: Prospect, step: Any) -> dict[str, Any] | None:
    """Return extra template variables for rendering `step` for `prospect`.

    Called before every render (send, preview, check, call scripts). `step` has `number`,
    `day`, `kind`, `templates`. The dicts of all plugins are merged; later-loaded plugins
    win on clashes, and built-in variables (`prospect`, `sender`, ...) cannot be replaced.
    """


@hookspec
def prospect_imported(prospect: Prospect) -> None:
    """A prospect was added or changed by `outreach import` (or created from a referral)."""


@hookspec
def message_sent(prospect: Prospect, message: EmailMessage) -> None:
    """The server (or outbox) accepted `message`, exactly as sent, for `prospect`.

    A message a `send` that died (killed, a crash) had handed over is reported by the run
    that settles it: from the outbox, the file as written; over SMTP, what the ledger keeps
    of it (Message-ID, From, To, Subject; no body), as its bytes were never stored.
    """


@hookspec
def reply_received(prospect: Prospect, reply: EmailMessage, kind: str) -> None:
    """`outreach poll` classified an inbound message from or about `prospect`.

    `kind` is one of `reply`, `auto_reply`, `bounce`, `unsubscribe`, `referral`,
    `complaint` (a spam-complaint report: `prospect` is now suppressed); for a referral,
    `prospect` is the new prospect named in the reply. A bounce or complaint naming several
    prospects fires once for each. Machine mail that is no reply (`other`) fires nothing.
    """


@hookspec
def call_task_created(prospect: Prospect, task: Any) -> None:
    """A call step came due; `task` has `id`, `due` (aware datetime) and `script` (text)."""


@hookspec
def call_task_closed(prospect: Prospect, task: Any) -> None:
    """A call task left the call list: `task.status` is `done` (an outcome was recorded with
    `outreach call`: `task.outcome`, `task.note`) or `closed` (the prospect replied, won, was
    suppressed or has a bad number: `task.note` says which)."""


@hookspec
def stage_changed(prospect: Prospect, old: str, new: str) -> None:
    """`prospect` moved from stage `old` to `new` (a reply, `outreach mark`, a call outcome)."""


@hookspec(firstresult=True)
def classify_reply(reply: EmailMessage) -> str | None:
    """Classify an inbound message before the built-in rules run.

    Return `reply`, `auto_reply`, `bounce`, `unsubscribe`, `referral`, `complaint` or
    `other` (machine mail: recorded, nothing done), or None to let the next plugin (and
    finally the built-in classifier) decide. Stops at first non-None result.
    """
