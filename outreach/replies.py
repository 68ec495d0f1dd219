"""`outreach poll`: read new mail once, match it to a prospect, classify it and act.

A bounce suppresses (hard) or counts toward suppression (soft); an auto-reply pauses the
sequence until the sender is back; an unsubscribe suppresses for good; a reply stops the
sequence and makes a lead, and the people it names at the same company become referral
prospects. Every action is idempotent, so a message handled twice changes nothing twice.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from zoneinfo import ZoneInfo

from . import classify
from .app import App
from .clock import iso
from .config import valid_timezone
from .inbox import Inbound, Source, open_source
from .lifecycle import change_stage, suppress
from .models import Prospect
from .plugins import first_result, has_impls
from .store import domain_of

AUTO_REPLY_PAUSE_DAYS = 3
SOFT_BOUNCE_LIMIT = 3
_PARSER = BytesParser(policy=policy.default)
_MSGID = re.compile(r"<[^<>\s]+>")


@dataclass
class PollResult:
    processed: int = 0
    replies: int = 0
    auto_replies: int = 0
    bounces: int = 0
    unsubscribes: int = 0
    referrals: int = 0
    unmatched: int = 0
    duplicates: int = 0
    malformed: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed, "replies": self.replies,
            "auto_replies": self.auto_replies, "bounces": self.bounces,
            "unsubscribes": self.unsubscribes, "referrals": self.referrals,
            "unmatched": self.unmatched, "duplicates": self.duplicates,
            "malformed": self.malformed,
        }

    def add(self, other: PollResult) -> None:
        for name in ("processed", "replies", "auto_replies", "bounces", "unsubscribes",
                     "referrals", "unmatched", "duplicates"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.malformed.extend(other.malformed)


def context_for(app: App) -> classify.Context:
    """Our addresses and the footer we send, so quoted copies of it are not read as new."""
    cfg = app.config
    footer = ""
    try:
        import jinja2

        env = jinja2.Environment(undefined=jinja2.ChainableUndefined, autoescape=False)
        footer = env.from_string(cfg.compliance.footer.read_text(encoding="utf-8")).render(
            sender=cfg.sender, unsubscribe_mailto=cfg.compliance.unsubscribe_mailto,
            unsubscribe_url=cfg.compliance.unsubscribe_url, prospect={})
    except Exception:  # a footer that needs more than the sender to render: match less of it
        footer = ""
    return classify.Context.make(
        own=(cfg.sender.email, cfg.imap.username, cfg.smtp.username),
        unsubscribe=cfg.compliance.unsubscribe_mailto, footer=footer,
        today=app.now().astimezone(app.sender_zone).date())


def poll(app: App, *, source: Source | None = None) -> PollResult:
    """One pass over the new mail of every configured folder."""
    own = source is None
    source = source or open_source(app.config)
    result = PollResult()
    context = context_for(app)
    try:
        with classify.using(context):
            for batch in source.batches(app.store):
                for inbound in batch:
                    handle(app, inbound, result, context)
    finally:
        if own:
            source.close()
    return result


def parse(raw: bytes) -> EmailMessage:
    return _PARSER.parsebytes(raw)  # type: ignore[return-value]


def handle(app: App, inbound: Inbound, result: PollResult, context: classify.Context) -> None:
    """Handle one message; a malformed one is recorded and reported, never fatal."""
    result.processed += 1
    now = app.now()
    message_id = None
    try:
        message = parse(inbound.raw)
        message_id = _first_id(str(message.get("Message-ID", "") or ""))
        if message_id and app.store.inbound_has_message_id(message_id):
            # Seen before (another folder, or a UIDVALIDITY rescan): never act twice.
            result.duplicates += 1
            _record(app, inbound, now, message_id, None, "duplicate")
            return
        verdict = classify.verdict_for(message, context)
        kind = first_result(app.pm, "classify_reply", reply=message) \
            if has_impls(app.pm, "classify_reply") else verdict.hook_kind
        if kind not in classify.KINDS:
            if kind is not None:
                print(f"outreach: classify_reply answered {kind!r}, not one of "
                      f"{', '.join(classify.KINDS)}; using the built-in answer", file=sys.stderr)
            kind = verdict.hook_kind
        prospect, enrollment_id = match(app, message, verdict, kind)
        prospect_id = _act(app, message, verdict, kind, prospect, enrollment_id, result, now)
        _record(app, inbound, now, message_id, prospect_id,
                kind if prospect_id or kind == "unsubscribe" else "unmatched")
    except Exception as exc:
        result.malformed.append({"key": f"{inbound.source} {inbound.key}",
                                 "error": f"{type(exc).__name__}: {exc}"})
        _record(app, inbound, now, message_id, None, "malformed", error=str(exc)[:500])


def _record(app: App, inbound: Inbound, now: datetime, message_id: str | None,
            prospect_id: int | None, kind: str, **detail: Any) -> None:
    app.store.add_inbound(inbound.source, inbound.key, at=now, uidvalidity=inbound.uidvalidity,
                          uid=inbound.uid, message_id=message_id or f"<{inbound.key}@inbound>",
                          prospect_id=prospect_id, kind=kind, **detail)


def _first_id(value: str) -> str | None:
    m = _MSGID.search(value)
    return m.group(0) if m else None


# -- matching -----------------------------------------------------------------------------


def match(app: App, message: EmailMessage, verdict: classify.Verdict,
          kind: str) -> tuple[Prospect | None, int | None]:
    """In-Reply-To/References against our ledger, then the address, then a lone domain."""
    ids = _MSGID.findall(f"{message.get('In-Reply-To', '')} {message.get('References', '')}")
    ids.reverse()  # the newest reference is the most specific
    if kind == "bounce":
        ids = verdict.original_ids + ids
    row = app.store.ledger_match(ids)
    if row is not None:
        return app.store.prospect_by_id(row["prospect_id"]), row["enrollment_id"]
    addresses = verdict.recipients if kind == "bounce" else [verdict.sender]
    for address in addresses:
        if address and (prospect := app.store.prospect(address)):
            return prospect, None
    if kind != "bounce" and verdict.sender:
        candidates = app.store.open_prospect_ids_in_domain(domain_of(verdict.sender))
        if len(candidates) == 1:
            return app.store.prospect_by_id(candidates[0]), None
    return None, None


# -- actions ------------------------------------------------------------------------------


def _act(app: App, message: EmailMessage, verdict: classify.Verdict, kind: str,
         prospect: Prospect | None, enrollment_id: int | None, result: PollResult,
         now: datetime) -> int | None:
    store = app.store
    sequence: str | None = None
    detail = {"subject": str(message.get("Subject", "") or "")[:200],
              "message_id": _first_id(str(message.get("Message-ID", "") or "")),
              "from": verdict.sender}
    if prospect is None:
        if kind == "unsubscribe" and verdict.sender:
            # Mail to the unsubscribe address (or "remove me") from anyone: honoured anyway.
            suppress(app, verdict.sender, reason="unsubscribe", source="poll")
            result.unsubscribes += 1
            return None
        result.unmatched += 1
        return None

    if kind == "bounce":
        result.bounces += 1
        permanent = verdict.permanent
        with store.transaction():
            store.add_event("bounce", at=now, prospect_id=prospect.id,
                            enrollment_id=enrollment_id, status=verdict.status or "5.0.0",
                            permanent=permanent, **detail)
        if not permanent and store.soft_bounce_streak(prospect.id) >= SOFT_BOUNCE_LIMIT:
            permanent = True
        if permanent:
            _end(app, prospect, "bounced", "bounce", now)
            suppress(app, prospect.email, reason="bounce", source="poll")
    elif kind == "auto_reply":
        result.auto_replies += 1
        until = _pause_until(app, prospect, verdict, now)
        with store.transaction():
            store.add_event("auto_reply", at=now, prospect_id=prospect.id,
                            enrollment_id=enrollment_id,
                            return_date=verdict.return_date.isoformat()
                            if verdict.return_date else None, **detail)
            for paused in store.pause_enrollments(prospect.id, until=until):
                store.add_event("paused", at=now, prospect_id=prospect.id,
                                enrollment_id=paused, until=iso(until))
    elif kind == "unsubscribe":
        result.unsubscribes += 1
        with store.transaction():
            store.add_event("unsubscribe", at=now, prospect_id=prospect.id,
                            enrollment_id=enrollment_id, **detail)
        for address in dict.fromkeys((prospect.email, verdict.sender)):
            if address:
                suppress(app, address, reason="unsubscribe", source="poll")
    else:  # reply, referral
        result.replies += 1
        sequence = _sequence_of(app, prospect, enrollment_id)
        with store.transaction():
            store.add_event("reply", at=now, prospect_id=prospect.id, enrollment_id=enrollment_id,
                            not_interested=verdict.not_interested, text=verdict.text[:500],
                            **detail)
        _end(app, prospect, "replied", "reply", now)
        if verdict.not_interested and prospect.stage in ("prospect", "lead"):
            change_stage(app, prospect, "not-interested", cause="reply")
        elif prospect.stage == "prospect":
            change_stage(app, prospect, "lead", cause="reply")
    updated = store.prospect_by_id(prospect.id) or prospect
    app.fire("reply_received", prospect=updated, reply=message,
             kind="reply" if kind == "referral" else kind)
    if kind in ("reply", "referral"):
        _referrals(app, updated, message, verdict, sequence, result, now)
    return prospect.id


def _end(app: App, prospect: Prospect, state: str, reason: str, now: datetime) -> None:
    with app.store.transaction():
        for ended in app.store.end_enrollments(prospect.id, state=state, reason=reason, at=now):
            app.store.add_event("enrollment_ended", at=now, prospect_id=prospect.id,
                                enrollment_id=ended, state=state)
        app.store.close_call_tasks(prospect.id, reason=reason, at=now)


def _pause_until(app: App, prospect: Prospect, verdict: classify.Verdict,
                 now: datetime) -> datetime:
    """The day after the named return date (prospect's time), or a few days from now."""
    if verdict.return_date is None:
        return now + timedelta(days=AUTO_REPLY_PAUSE_DAYS)
    zone = ZoneInfo(prospect.timezone) if valid_timezone(prospect.timezone) else app.sender_zone
    return datetime.combine(verdict.return_date + timedelta(days=1), time(0), zone)


def _sequence_of(app: App, prospect: Prospect, enrollment_id: int | None) -> str | None:
    row = app.store.enrollment(enrollment_id) if enrollment_id else None
    row = row or app.store.latest_enrollment(prospect.id)
    return row["sequence"] if row else None


def _referrals(app: App, referrer: Prospect, message: EmailMessage, verdict: classify.Verdict,
               sequence_name: str | None, result: PollResult, now: datetime) -> None:
    """People named at the referrer's company become prospects, enrolled in on_referral."""
    store = app.store
    domains = {d for d in (domain_of(referrer.email), referrer.domain.lower().lstrip("@")) if d}
    sequence = app.config.sequences.get(sequence_name or "")
    target = sequence.on_referral if sequence else None
    for address, name in verdict.referrals:
        domain = domain_of(address)
        if address == referrer.email or not any(
                domain == d or domain.endswith("." + d) for d in domains):
            continue
        if store.is_suppressed(address) or store.prospect(address) is not None:
            with store.transaction():
                store.add_event("referral", at=now, prospect_id=referrer.id, referred=address,
                                created=False)
            continue
        first, last = classify.split_name(name)
        with store.transaction():
            store.insert_prospects([{
                "email": address, "first_name": first, "last_name": last, "title": "",
                "phone": "", "last_activity": None, "company": referrer.company,
                "domain": referrer.domain,
                "industry": referrer.industry, "employees": referrer.employees,
                "country": referrer.country, "timezone": referrer.timezone,
                "custom": json.dumps({}), "referrer_id": referrer.id,
            }], at=now)
            new = store.prospect(address)
            assert new is not None
            store.add_event("referral", at=now, prospect_id=referrer.id, referred=address,
                            created=True)
            store.add_event("referral", at=now, prospect_id=new.id, referrer=referrer.email)
            if target:
                enrollment = store.enroll(new.id, target, at=now)
                store.add_event("enrolled", at=now, prospect_id=new.id,
                                enrollment_id=enrollment, sequence=target)
        result.referrals += 1
        app.fire("prospect_imported", prospect=new)
        app.fire("reply_received", prospect=new, reply=message, kind="referral")
