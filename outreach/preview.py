"""`outreach preview`: the exact bytes the next step of an enrollment would send (or a call
step's script), from the mailbox it would go from, without sending or recording anything."""

from __future__ import annotations

from . import mailboxes, render
from .app import App
from .errors import OutreachError


def preview(app: App, email: str, *, step: int | None = None) -> tuple[bytes, str]:
    """The exact bytes the enrollment's next step (or step `step`) would send, or a call
    step's script, and which step, template and A/B variant made them. The Message-ID and Date
    are fresh each time."""
    from .lifecycle import require_prospect

    prospect = require_prospect(app, email)
    enrollments = app.store.enrollments(prospect.id)
    open_ = [e for e in enrollments if e["state"] in ("active", "paused")]
    if prospect.suppressed:
        raise OutreachError(f"{prospect.email} is suppressed: nothing will ever be sent to it")
    if not open_:
        if enrollments:
            last = enrollments[-1]
            raise OutreachError(f"{prospect.email}: its {last['sequence']} sequence ended "
                                f"({last['state']}), so nothing would be sent")
        raise OutreachError(f"{prospect.email} is not enrolled in a sequence: run "
                            "`outreach enroll SEQUENCE` first")
    enrollment = open_[-1]
    sequence = app.config.sequences.get(enrollment["sequence"])
    if sequence is None:
        raise OutreachError(f'{prospect.email}: sequence "{enrollment["sequence"]}" is not in '
                            f"{app.config.path.name}")
    number = enrollment["next_step"] if step is None else step
    if number >= len(sequence.steps):
        raise OutreachError(f"{prospect.email}: sequence {sequence.name} has steps 0-"
                            f"{len(sequence.steps) - 1}; pass --step N")
    chosen = sequence.steps[number]
    where = f"step {number} of {sequence.name}"
    if chosen.kind == "call":
        script = render.render_call_script(app, prospect, enrollment, chosen)
        return script.encode("utf-8"), f"{where}: call script templates/{chosen.templates[0]}.txt"
    if chosen.kind == "recycle":
        raise OutreachError(f"{prospect.email}: step {number} of {sequence.name} recycles the "
                            "lead; it sends nothing")
    rendered = render.render_email(app, prospect, enrollment, chosen)
    handed = app.store.handed_over(enrollment["id"])
    previous = [m for m in handed if m["step"] < number]
    thread = render.thread_for(previous) if chosen.thread else None
    # From the mailbox this enrollment's mail went from (else the first of [[mailboxes]]).
    configs = mailboxes.views(app.config)
    box = next((m["mailbox"] for m in handed if m.get("mailbox") in configs),
               app.config.mailboxes[0].email)
    config = configs[box]
    now = app.now()
    message_id = render.new_message_id(config.sender.domain, enrollment_id=enrollment["id"],
                                       step=number, now=now)
    data = render.compose(config, prospect, rendered, message_id=message_id, now=now,
                          thread=thread,
                          unsubscribe_secret=app.store.unsubscribe_secret()).data
    variant = f", A/B variant {rendered.variant} of {len(chosen.templates)}" \
        if len(chosen.templates) > 1 else ""
    sender = f", from {box}" if len(configs) > 1 else ""
    return data, f"{where}: templates/{rendered.template}.txt{variant}{sender}"
