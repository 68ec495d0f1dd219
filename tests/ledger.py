"""Write sent-message ledger rows directly, for stats and guard tests that need history
without running `outreach send` for every simulated week; and read the ledger's statuses."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import datetime
from typing import Any

from outreach.clock import iso
from outreach.store import Store

_ids = itertools.count(1)


def add_sent(store: Store, prospect_id: int, *, at: datetime, sequence: str = "referral",
             step: int | None = None, template: str = "referral",
             variant: str | None = None) -> int:
    """A message accepted by the server, in the prospect's open enrollment (started if none)."""
    open_ = [e for e in store.enrollments(prospect_id) if e["state"] in ("active", "paused")]
    enrollment = open_[0]["id"] if open_ else store.enroll(prospect_id, sequence, at=at)
    if step is None:
        step = store.db.execute("SELECT count(*) FROM messages WHERE enrollment_id = ?",
                                (enrollment,)).fetchone()[0]
    n = next(_ids)
    ledger_id = store.db.execute(
        "INSERT INTO messages (enrollment_id, step, template, variant, message_id, subject, "
        "status, created_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, 'sent', ?, ?) RETURNING id",
        (enrollment, step, template, variant, f"<test-{n}-{prospect_id}@acme.example>",
         "Subject", iso(at), iso(at)),
    ).fetchall()[0][0]
    store.add_event("sent", at=at, prospect_id=prospect_id, enrollment_id=enrollment,
                    template=template, variant=variant, step=step)
    return int(ledger_id)


def statuses(campaign: Any) -> Counter[str]:
    """How many ledger rows of each status the campaign has (either engine)."""
    return Counter(s for (s,) in campaign.sql("SELECT status FROM messages"))
