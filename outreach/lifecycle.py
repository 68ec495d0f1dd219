"""Stages, suppression and a prospect's timeline: the moves every command shares."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from .app import App
from .errors import OutreachError
from .models import STAGES, Prospect, is_email, moved
from .score import lead_score

MARK_STAGES = (*STAGES[1:], "meeting")
# Every marked stage means the cold sequence is over; the enrollment's end state says how,
# so `status` reads as what happened.
_END_STATE = {"lead": "replied", "meeting": "won", "opportunity": "won", "client": "won",
              "champion": "won", "not-interested": "stopped"}


def require_prospect(app: App, email: str) -> Prospect:
    prospect = app.store.prospect(email)
    if prospect is None:
        raise OutreachError(f'no prospect "{email}": import them first '
                            "(`outreach import FILE`), or check the address")
    return prospect


def change_stage(app: App, prospect: Prospect, new: str, *, cause: str,
                 **written: Any) -> Prospect:
    """Move a prospect's stage, record why, and tell plugins; a no-op if already there.
    Returns `prospect` (as freshly loaded by the caller) at its new stage, with `written`
    (fields the caller has just stored, e.g. poll's last_activity) set in the same copy."""
    now = app.now()
    # Inside a caller's transaction (poll's batch) that one keeps the two writes together.
    with nullcontext() if app.store.db.in_transaction else app.store.transaction():
        old = app.store.set_stage(prospect.id, new, cause=cause, at=now, old=prospect.stage)
        if old is not None:
            app.store.add_event("stage", at=now, prospect_id=prospect.id, old=old, new=new,
                                cause=cause)
    # The stage is the only field that moved: no reload (poll moves thousands at a time).
    updated = moved(prospect, stage=new, **written)
    if old is not None:
        app.fire("stage_changed", prospect=updated, old=old, new=new)
    return updated


def mark(app: App, email: str, stage: str, *, cause: str | None = None) -> Prospect:
    """`outreach mark`: every stage ends the open sequence and its call tasks (`meeting` as
    won, with stage opportunity; `not-interested` as stopped; `lead` as replied). `cause`
    defaults to "mark STAGE" (a call outcome passes "call meeting")."""
    if stage not in MARK_STAGES:
        raise OutreachError(f'unknown stage "{stage}": use one of {", ".join(MARK_STAGES)}')
    prospect = require_prospect(app, email)
    cause = cause or f"mark {stage}"
    state = _END_STATE[stage]
    tasks = app.store.open_call_task_ids(prospect.id)
    with app.store.transaction():
        ended = app.store.end_enrollments(prospect.id, state=state, reason=cause, at=app.now())
        app.store.close_call_tasks(prospect.id, reason=cause, at=app.now())
        for enrollment in ended:
            app.store.add_event("enrollment_ended", at=app.now(), prospect_id=prospect.id,
                                enrollment_id=enrollment, state=state)
    from .calls import announce_closed  # only here: a poll of replies never needs it

    announce_closed(app, tasks)
    new = "opportunity" if stage == "meeting" else stage
    return change_stage(app, prospect, new, cause=cause)


def suppress(app: App, target: str, *, reason: str, source: str) -> tuple[int, int]:
    """Suppress an address or @domain for good and end what was under way for it.

    Returns (prospects covered, sequences stopped). Idempotent: suppressing twice changes
    nothing.
    """
    target = target.strip().lower()
    if target.startswith("@"):
        domain = target[1:]
        if not is_email("x@" + domain):
            raise OutreachError(f'"{target}" is not a domain: write it like @example.com')
        prospects = [p for p in app.store.prospects_in_domain(domain)]
    else:
        if not is_email(target):
            raise OutreachError(f'"{target}" is not an email address or @domain')
        p = app.store.prospect(target)
        prospects = [p] if p else []
    now = app.now()
    tasks = [t for p in prospects for t in app.store.open_call_task_ids(p.id)]
    state = "unsubscribed" if reason == "unsubscribe" else "stopped"
    stopped = 0
    with app.store.transaction():
        app.store.suppress(target, reason=reason, source=source, at=now)
        for p in prospects:
            for enrollment in app.store.end_enrollments(p.id, state=state,
                                                        reason=f"suppressed: {reason}", at=now):
                stopped += 1
                app.store.add_event("enrollment_ended", at=now, prospect_id=p.id,
                                    enrollment_id=enrollment, state="suppressed")
            app.store.close_call_tasks(p.id, reason=f"suppressed: {reason}", at=now)
            app.store.add_event("suppressed", at=now, prospect_id=p.id, target=target,
                                reason=reason, source=source)
    from .calls import announce_closed  # only here: a poll of replies never needs it

    announce_closed(app, tasks)
    return len(prospects), stopped


def status(app: App, email: str) -> dict[str, Any]:
    """One prospect's timeline: stage, suppression, enrollments and every event."""
    prospect = require_prospect(app, email)
    suppression = app.store.suppression(prospect.email)
    events = app.store.events(prospect.id)
    return {
        "email": prospect.email,
        "name": prospect.name,
        "company": prospect.company,
        "stage": prospect.stage,
        "owner": prospect.owner,   # the rep who enrolled it first (team mode)
        "suppressed": bool(suppression),
        "suppression": dict(suppression) if suppression else None,
        "enrollments": [dict(e) for e in app.store.enrollments(prospect.id)],
        "stages": [dict(s) for s in app.store.stage_history(prospect.id)],
        "events": events,
        "score": lead_score(events, now=app.now()),
    }
