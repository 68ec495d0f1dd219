"""The ledger side of a `send` run: intents committed before a message is handed over, what the
transport reported recorded in batches, and the intents a dead run left settled.

The ledger (`messages`) makes "never twice" hold: an intent row is committed before a message
is handed to the transport and marked sent once the server accepts it. Ledger writes are
batched into one transaction per chunk so the safety costs little throughput; what happened to
each message between two commits is in the hand-over log (`handover.py`). A run that dies
leaves intents behind; the next run (holding the `send` lease, so no other sender is alive)
settles them from that log and the outbox: accepted ones are recorded sent, those whose payload
was on the wire become `unknown` (reported, never resent, and their enrollment held until
`outreach resolve`), and the rest are simply due again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import clock, handover
from .app import App
from .config import Config, Step
from .errors import OutreachError
from .lastlook import LastLook
from .models import Prospect
from .planning import Counts
from .render import Envelope
from .store import Record
from .transport import Delivery, Outcome, outbox_files

if TYPE_CHECKING:
    from .send import SendResult

LEASE = timedelta(minutes=10)
# Why a dead run's message is unknown: its payload was on the wire, or nothing here says.
STOPPED_UNKNOWN = ("the run that sent it stopped while the message may have been with the "
                   "server")


class RunLedger:
    """One run's writes to the ledger, and what it knows of unknown deliveries: `unresolved`
    (enrollment -> step whose fate is unknown: it waits for `outreach resolve`) and `settled`
    (enrollment -> the step a dead run's settlement moves it to; a dry run only predicts)."""

    def __init__(self, app: App, *, now: datetime, result: SendResult,
                 views: Mapping[str, Config], lease: str, own: str | None, dry_run: bool,
                 prospect: Callable[[int], Prospect]) -> None:
        self.store, self.config, self.now, self.result = app.store, app.config, now, result
        self.views, self.lease, self.own, self.dry_run = views, lease, own, dry_run
        self.prospect = prospect
        self.log_path = handover.path_for(app.config.store_path)
        self.log: handover.Log | None = None   # open while delivering
        self.look: LastLook | None = None      # from the first claim on
        self.unresolved: dict[int, int] = {}
        self.settled: dict[int, int] = {}

    def counts(self, start: datetime, end: datetime) -> Counts:
        """Today's counts the limits read (the sender's day is [start, end))."""
        store = self.store
        return Counts(rep=store.messages_started_between(start, end, rep=self.config.team.rep),
                      domains=store.domain_counts(start, end),
                      mailboxes=store.mailbox_counts(start, end),
                      first_used=store.mailbox_first_used())

    # -- intents ----------------------------------------------------------------------

    def claim(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Commit the intents of a chunk; only those the ledger accepted may be sent."""
        intents = [{"enrollment_id": env.meta["enrollment_id"], "step": env.meta["step"].number,
                    "template": env.meta["template"], "variant": env.meta["variant"],
                    "message_id": env.message_id, "subject": env.subject,
                    "rep": self.config.team.rep, "mailbox": env.meta["mailbox"]}
                   for env in envelopes]
        if self.log is not None:   # before the commit: no intent without its mark
            self.log.queued([env.message_id for env in envelopes])
        if self.look is None:   # watching before the first intent: no suppression slips by
            self.look = LastLook(self.store)
        with self.store.transaction():
            written = self.store.add_intents(intents, at=self.now)
        self.look.queued(written.values())
        accepted = []
        for env in envelopes:
            if env.message_id in written:
                env.meta["ledger_id"] = written[env.message_id]
                accepted.append(env)
        if len(accepted) < len(envelopes):
            self.skip_repeats([env for env in envelopes if env.message_id not in written])
        return accepted

    def skip_repeats(self, refused: list[Envelope]) -> None:
        """A template this enrollment already sent at another step (the sequence's steps were
        edited since): the ledger refused it. Report it and move past the step, so it neither
        goes twice nor blocks the sequence."""
        store = self.store
        sent = store.ledger_templates({env.meta["enrollment_id"] for env in refused})
        with store.transaction():
            for env in refused:
                m = env.meta
                earlier = sent.get((m["enrollment_id"], m["template"]))
                if earlier is None or earlier == m["step"].number:
                    continue  # refused for another reason (ended, paused, suppressed meanwhile)
                self.result.errors.append({
                    "email": m["prospect"].email, "step": m["step"].number,
                    "error": f'template "{m["template"]}" already went to them as step {earlier} '
                             "of this enrollment (were the sequence's steps edited?); skipped"})
                store.advance_enrollment(m["enrollment_id"], past_step=m["step"].number)
                store.add_event("send_skipped", at=self.now, prospect_id=m["prospect"].id,
                                enrollment_id=m["enrollment_id"], step=m["step"].number,
                                template=m["template"], sent_as_step=earlier)

    def may_send(self, env: Envelope) -> bool:
        """The last look before a claimed message's SMTP transaction (`lastlook.py`): a
        message whose prospect another process suppressed since is counted, never sent."""
        if self.look is None or self.look.may_send(env.meta["ledger_id"]):
            return True
        self.result.suppressed_mid_run.append({"email": env.rcpt_to,
                                               "step": env.meta["step"].number})
        return False

    def release(self, unsent: list[Envelope]) -> None:
        """Forget the intents of claimed messages never handed over: they stay due."""
        with self.store.transaction():
            for env in unsent:
                self.store.drop_intent(env.meta["ledger_id"])

    # -- what the transport reported --------------------------------------------------

    def record(self, batch: list[tuple[Envelope, Delivery]], *, now: datetime
               ) -> tuple[list[dict[str, Any]], list[Prospect]]:
        """Record a batch of deliveries in one transaction; returns the sent (as ledger rows)
        and the prospects whose address the server refused (to be suppressed)."""
        store = self.store
        bounced: list[Prospect] = []
        sent = [_sent(env) for env, delivery in batch if delivery.outcome is Outcome.SENT]
        with store.transaction():
            store.mark_sent(sent, at=now)
            for env, delivery in batch:
                if delivery.outcome is not Outcome.SENT:
                    self._record(env, delivery, now, bounced)
            for env, _ in batch:
                step = env.meta["step"]
                if len(step.templates) > 1:
                    store.record_variant(env.meta["enrollment_id"], step.number,
                                         env.meta["template"])
            store.renew_lock(self.lease, until=clock.wall_now() + LEASE)
        self.result.sent += len(sent)
        return sent, bounced

    def _record(self, env: Envelope, delivery: Delivery, now: datetime,
                bounced: list[Prospect]) -> None:
        store, m, result = self.store, env.meta, self.result
        prospect: Prospect = m["prospect"]
        step: Step = m["step"]
        where = {"at": now, "prospect_id": prospect.id, "enrollment_id": m["enrollment_id"]}
        if delivery.outcome is Outcome.UNKNOWN:
            self.unresolved[m["enrollment_id"]] = step.number
            result.unknown += 1
            result.unknowns.append({"email": prospect.email, "step": step.number,
                                    "message_id": env.message_id, "error": delivery.error})
            store.set_message_status(m["ledger_id"], "unknown", error=delivery.error)
            store.add_event("send_unknown", **where, step=step.number,
                            message_id=env.message_id, template=m["template"],
                            error=delivery.error)
        else:
            result.failed += 1
            result.failures.append({"email": prospect.email, "step": step.number,
                                    "error": delivery.error,
                                    "retry": delivery.outcome is Outcome.RETRY})
            store.add_event("send_failed", **where, step=step.number, error=delivery.error,
                            template=m["template"])
            if delivery.outcome is Outcome.RETRY:
                store.drop_intent(m["ledger_id"])   # never handed over: a later run may send it
                return
            store.set_message_status(m["ledger_id"], "failed", error=delivery.error)
            if delivery.bad_recipient and store.end_enrollment(
                    m["enrollment_id"], state="bounced", reason="recipient refused", at=now):
                store.add_event("bounce", **where, status=delivery.error, permanent=True)
                bounced.append(prospect)
        store.advance_enrollment(m["enrollment_id"], past_step=step.number)

    # -- a dead run's intents ---------------------------------------------------------

    def settle_stale(self) -> int:
        """Settle the intents a dead run left (or this one, stopped at once) from the
        hand-over log and the outbox: accepted -> sent, payload on the wire -> unknown (never
        resent), never reached DATA -> due again. A dry run only predicts it. Returns how many
        are due again."""
        store = self.store
        self.unresolved.update(store.unresolved_steps())
        stale = store.stale_intents(rep=self.own)
        if not stale:
            return 0
        marks = handover.read(self.log_path)
        fates: dict[handover.Fate, list[Record]] = {fate: [] for fate in handover.Fate}
        for row in stale:
            written, _ = outbox_files(self._outbox(row), row["message_id"])
            fates[handover.fate(row["message_id"], marks, written=written.exists())].append(row)
        sent, unknown = fates[handover.Fate.SENT], fates[handover.Fate.UNKNOWN]
        if not self.dry_run:
            self._write_settlement(fates)
        for row in sent + unknown:
            self.settled[row["enrollment_id"]] = row["step"] + 1
        for row in unknown:
            self.unresolved[row["enrollment_id"]] = row["step"]
            self.result.unknowns.append({
                "email": self.prospect(row["prospect_id"]).email, "step": row["step"],
                "message_id": row["message_id"], "error": STOPPED_UNKNOWN})
        self.result.unknown += len(unknown)
        self.result.recovered += len(sent)
        return len(fates[handover.Fate.UNSENT])

    def _outbox(self, row: Record) -> Any:
        """The outbox folder of the mailbox a ledger row went from."""
        return self.views.get(row.get("mailbox") or "", self.config).smtp.outbox

    def _write_settlement(self, fates: dict[handover.Fate, list[Record]]) -> None:
        store = self.store
        with store.transaction():
            store.mark_sent([{"ledger_id": r["id"], **dict(r)}
                             for r in fates[handover.Fate.SENT]], at=self.now)
            for row in fates[handover.Fate.UNKNOWN]:
                store.set_message_status(row["id"], "unknown", error=STOPPED_UNKNOWN)
                store.advance_enrollment(row["enrollment_id"], past_step=row["step"])
                store.add_event("send_unknown", at=self.now, prospect_id=row["prospect_id"],
                                enrollment_id=row["enrollment_id"], step=row["step"],
                                message_id=row["message_id"], template=row["template"],
                                error=STOPPED_UNKNOWN)
            for row in fates[handover.Fate.UNSENT]:
                store.drop_intent(row["id"])
        for row in fates[handover.Fate.UNSENT]:   # a partly written outbox file
            outbox_files(self._outbox(row), row["message_id"])[1].unlink(missing_ok=True)
        handover.clear(self.log_path)


def _sent(env: Envelope) -> dict[str, Any]:
    m = env.meta
    return {"ledger_id": m["ledger_id"], "prospect_id": m["prospect"].id,
            "enrollment_id": m["enrollment_id"], "step": m["step"].number,
            "template": m["template"], "variant": m["variant"],
            "message_id": env.message_id, "subject": env.subject}


def resolve(app: App, email: str, *, delivered: bool) -> list[dict[str, Any]]:
    """Settle a prospect's messages whose fate `send` could not learn, once the user has
    checked the Sent folder or the server's log; recorded as a `send_resolved` event.
    Delivered: recorded sent, and the sequence goes on. Not delivered: the step is due again
    (unless the enrollment has ended or moved past it since)."""
    from .lifecycle import require_prospect

    prospect = require_prospect(app, email)
    store, now = app.store, app.now()
    done: list[dict[str, Any]] = []
    with store.transaction():
        rows = store.unknown_messages(prospect.id)
        if not rows:
            raise OutreachError(f"{prospect.email}: no message with an unknown delivery, so "
                                f"nothing to resolve (see `outreach status {prospect.email}`)")
        for row in rows:
            if delivered:
                store.set_message_status(row["id"], "sent",
                                         at=datetime.fromisoformat(row["created_at"]))
                outcome = "recorded as delivered; the sequence goes on"
            elif row["state"] in ("active", "paused") and row["next_step"] == row["step"] + 1:
                store.drop_message(row["id"])
                store.rewind_enrollment(row["enrollment_id"], to_step=row["step"])
                outcome = "recorded as not delivered; the next `outreach send` sends it again"
            else:
                store.set_message_status(row["id"], "failed",
                                         error="not delivered (resolved by hand)")
                outcome = ("recorded as not delivered; its sequence has ended or moved on, "
                           "so it is not sent again")
            store.add_event("send_resolved", at=now, prospect_id=prospect.id,
                            enrollment_id=row["enrollment_id"], step=row["step"],
                            message_id=row["message_id"], delivered=delivered)
            done.append({"email": prospect.email, "step": row["step"],
                         "message_id": row["message_id"], "delivered": delivered,
                         "outcome": outcome})
    return done
