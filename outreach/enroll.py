"""Enrollment: which ICP-matching prospects may start a sequence now, and starting them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .app import App
from .config import Sequence
from .errors import OutreachError
from .icp import in_icp
from .models import Prospect
from .team import other_rep

# Stages that mean the conversation already happened: a cold sequence would be wrong.
ENGAGED_STAGES = frozenset({"lead", "opportunity", "client", "champion", "not-interested"})


@dataclass
class EnrollResult:
    enrolled: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"enrolled": self.enrolled, "skipped": dict(sorted(self.skipped.items())),
                "dry_run": self.dry_run}


def skip_reason(prospect: Prospect, facts: dict[str, Any] | None, sequence: Sequence, *,
                now: datetime, for_referrals: bool = False, rep: str = "") -> str | None:
    """Why an ICP-matching prospect may not be enrolled now by `rep`, or None if it may.

    A sequence that is some sequence's `on_referral` speaks of the referrer ("Jane suggested
    I reach out"), so only referred prospects may start it: anyone else would be lied to.
    A prospect another rep of the team owns or is working is theirs alone.
    """
    if prospect.suppressed:
        return "suppressed"
    if for_referrals and prospect.referrer_id is None:
        return "not_referred"
    facts = facts or {}
    if rep and other_rep(prospect.owner, facts.get("open_rep"), rep):
        return "other_rep"
    if facts.get("open"):
        return "active"
    if facts.get("replied"):
        return "replied"
    if prospect.stage in ENGAGED_STAGES:
        return "stage"
    recycled = facts.get("recycled_at")
    if recycled and datetime.fromisoformat(recycled) + timedelta(
        days=sequence.recycle_cooldown_days
    ) > now:
        return "cooldown"
    return None


def enroll(app: App, sequence_name: str, *, limit: int | None = None,
           dry_run: bool = False) -> EnrollResult:
    """Enroll ICP matches into a sequence, oldest prospects first, up to `limit`."""
    sequence = app.config.sequences.get(sequence_name)
    if sequence is None:
        known = ", ".join(sorted(app.config.sequences)) or "none defined"
        raise OutreachError(f'no sequence "{sequence_name}" in {app.config.path.name} '
                            f"(known: {known})")
    icp = app.config.icps[sequence.icp]
    now = app.now()
    today = now.astimezone(app.sender_zone).date()
    result = EnrollResult(dry_run=dry_run)
    for_referrals = any(s.on_referral == sequence.name for s in app.config.sequences.values())
    with app.store.transaction():
        facts = app.store.enrollment_facts()   # under the write lock: other reps are seen
        for prospect in app.store.prospects():
            if not in_icp(prospect, icp, today=today):
                continue
            reason = skip_reason(prospect, facts.get(prospect.id), sequence, now=now,
                                 for_referrals=for_referrals, rep=app.config.team.rep)
            if reason is None and limit is not None and result.enrolled >= limit:
                reason = "limit"
            if reason:
                result.skipped[reason] += 1
                continue
            if dry_run:
                result.enrolled += 1
                continue
            enrollment = app.store.enroll(prospect.id, sequence.name, at=now,
                                          rep=app.config.team.rep)
            if enrollment is None:   # another rep's enroll took it since the facts were read
                result.skipped["other_rep"] += 1
                continue
            result.enrolled += 1
            app.store.add_event("enrolled", at=now, prospect_id=prospect.id,
                                enrollment_id=enrollment, sequence=sequence.name)
    return result
