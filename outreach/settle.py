"""The ledger side of a `send` run: intents committed before a message is handed over, what the
transport reported recorded in batches, and the intents a dead run left settled.

The ledger (`messages`) makes "never twice" hold: an intent row is committed before a message
is handed to the transport and marked sent once the server accepts it. Ledger writes are
batched into one transaction per chunk so the safety costs little throughput; what happened to
each message between two commits is in the run's hand-over log (`handover.py`).

Several senders at once (a team's PostgreSQL; on a SQLite file they take turns): a chunk's
intents are written in one transaction that first takes the team's quota lock, then locks
the chunk's enrollments that are still open at that step with no message for it, skipping
those another sender holds (`FOR UPDATE SKIP LOCKED`: that one sends them, nobody waits),
and re-reads today's counts, so the daily limits, the mailboxes' ramps and the per-company
cap hold across every process; what no longer fits waits, `deferred` with the limit's name.

Each run has an id, its intents carry it, and it holds a lease on it while alive. A run that
dies leaves intents behind; the next run of the same rep that can take the dead run's lease
settles them from the dead run's log and the outbox: accepted ones are recorded sent, those
whose payload was on the wire become `unknown` (reported, never resent, and their enrollment
held until `outreach resolve`), and the rest are simply due again. A live run's intents are
never touched, and another rep's dead run is left to that rep (its log is on their machine).
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Any

from . import clock, handover
from .app import App
from .config import Config, Step
from .errors import LockedError, OutreachError
from .lastlook import LastLook
from .models import Prospect
from .planning import Counts, defer_capped, within_caps
from .render import Envelope
from .store import Record, domain_of
from .transport import Delivery, Outcome, outbox_files

if TYPE_CHECKING:
    from .send import SendResult
    from .store.ledger import Quota

LEASE = timedelta(minutes=10)
# Why a dead run's message is unknown: its payload was on the wire, or nothing here says.
STOPPED_UNKNOWN = ("the run that sent it stopped while the message may have been with the "
                   "server")


class RunLedger:
    """One run's writes to the ledger, and what it knows of unknown deliveries: `unresolved`
    (enrollment -> step whose fate is unknown: it waits for `outreach resolve`) and `settled`
    (enrollment -> the step a dead run's settlement moves it to; a dry run only predicts)."""

    def __init__(self, app: App, *, now: datetime, day: tuple[datetime, datetime],
                 result: SendResult, views: Mapping[str, Config], lease: str | None,
                 own: str | None, dry_run: bool, prospect: Callable[[int], Prospect]) -> None:
        self.store, self.config, self.now, self.result = app.store, app.config, now, result
        self.views, self.lease, self.own, self.dry_run = views, lease, own, dry_run
        self.day, self.prospect = day, prospect
        self.run = secrets.token_hex(6)
        self.log_path = self.log_of(self.run)
        self.log: handover.Log | None = None   # open while delivering
        self.look: LastLook | None = None      # from the first claim on
        self.unresolved: dict[int, int] = {}
        self.settled: dict[int, int] = {}
        self.first_used: Mapping[str, str] = {}
        self.recovered: list[Record] = []   # a dead run's messages settled as sent now
        self.contested = 0   # due messages another sender claimed first
        self.busy: set[int] = set()   # enrollments a live run of this rep is sending to

    def log_of(self, run: str | None) -> Any:
        """A run's hand-over log on this machine (None: the runs before runs had ids)."""
        return handover.path_for(self.config.store_path, run or "")

    def counts(self) -> Counts:
        """Today's counts the limits read when the run plans."""
        quota, self.first_used = self.store.day_counts(*self.day, rep=self.config.team.rep)
        return self._counts(quota)

    def _counts(self, quota: Quota) -> Counts:
        return Counts(rep=quota.rep, domains=quota.domains, mailboxes=quota.mailboxes,
                      first_used=self.first_used)

    # -- intents ----------------------------------------------------------------------

    def unclaimed(self, items: list[Any]) -> list[Any]:
        """The due emails no other sender has claimed meanwhile (a look, before composing)."""
        left = self.store.unclaimed([(i.enrollment["id"], i.step.number) for i in items])
        self.contested += len(items) - len(left)
        return [i for i in items if i.enrollment["id"] in left]

    def claim(self, envelopes: list[Envelope]) -> list[Envelope]:
        """Commit the intents of a chunk, those this run holds and the limits have room for;
        only those the ledger accepted may be sent."""
        store, config = self.store, self.config
        if self.log is not None:   # before the commit: no intent without its mark
            self.log.queued([env.message_id for env in envelopes])
        if self.look is None:   # watching before the first intent: no suppression slips by
            self.look = LastLook(self.store)
        with store.transaction():
            store.lock_quota()
            mine, quota = store.claim_steps(
                [(env.meta["enrollment_id"], env.meta["step"].number) for env in envelopes],
                start=self.day[0], end=self.day[1], rep=config.team.rep,
                domains={domain_of(env.meta["prospect"].email) for env in envelopes})
            kept, held = within_caps(
                [env for env in envelopes if env.meta["enrollment_id"] in mine],
                counts=self._counts(quota),
                config=config, now=self.now, domain=lambda env: domain_of(
                    env.meta["prospect"].email), mailbox=lambda env: env.meta["mailbox"])
            written = store.add_intents([{
                "enrollment_id": env.meta["enrollment_id"], "step": env.meta["step"].number,
                "template": env.meta["template"], "variant": env.meta["variant"],
                "message_id": env.message_id, "subject": env.subject, "rep": config.team.rep,
                "mailbox": env.meta["mailbox"], "run": self.run} for env in kept], at=self.now)
        self.look.queued(written.values())
        self.contested += len(envelopes) - len(mine)
        defer_capped([(env.meta["due"], why) for env, why in held], config=config,
                     end=self.day[1], result=self.result)
        accepted = []
        for env in kept:
            if env.message_id in written:
                env.meta["ledger_id"] = written[env.message_id]
                accepted.append(env)
        if len(accepted) < len(kept):
            self.skip_repeats([env for env in kept if env.message_id not in written])
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
        """The look right before each SMTP transaction of a claimed message (`lastlook.py`;
        the connections ask it): one whose prospect another process suppressed since is
        counted, and withheld."""
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
            if self.lease:
                store.renew_lock(self.lease, until=clock.wall_now() + LEASE)
        self.result.sent += len(sent)
        if self.look is not None:
            self.look.settled(env.meta["ledger_id"] for env, _ in batch)
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

    def settle_stale(self, *, own: bool = False) -> int:
        """Settle the intents dead runs of this rep left (or this run's, stopped at once:
        `own`) from their hand-over logs and the outbox: accepted -> sent, payload on the
        wire -> unknown (never resent), never reached DATA -> due again. A dry run only
        predicts it. Returns how many are due again."""
        store = self.store
        self.unresolved.update(store.unresolved_steps())
        with ExitStack() as held:
            if own:
                runs: set[str | None] = {self.run}
            else:
                found = store.intent_runs(rep=self.own)
                # Held while settling, so no other process settles the same run meanwhile.
                taken = store.take_runs(sorted(r for r in found if r is not None))
                for run in taken:
                    held.callback(store.release_run, run)
                runs = {*taken, *([None] if None in found and self._older(held) else [])}
                live = found - runs
                if live:   # another sender has these on the wire now: not this run's to plan
                    self.busy = {r["enrollment_id"] for r in store.intents_of(runs=live)}
                if not self.dry_run:
                    self._sweep(skip={self.run, *(r for r in found if r is not None)})
            return self._settle(runs) if runs else 0

    def _sweep(self, *, skip: set[str]) -> None:
        """Remove this machine's logs of dead runs that left no intents (killed before their
        first was committed, or after their last was recorded): nothing would ever settle
        them. A live run's log (its lease held) stays, and so does one whose run has intents."""
        store = self.store
        for run, path in handover.logs(self.config.store_path).items():
            if run in skip or not store.take_runs([run]):
                continue
            try:
                if not store.has_intents(run=run):
                    handover.remove(path)
            finally:
                store.release_run(run)

    def _older(self, held: ExitStack) -> bool:
        """May the intents with no run id (an outreach from before runs had ids wrote them)
        be settled now? Its senders held the rep's `send:REP` lease on PostgreSQL (on SQLite,
        the `send` one this run holds): held here while settling, so one of them still
        sending keeps its intents, and two runs never both settle (and record) them."""
        if self.own is None:
            return True
        try:
            held.enter_context(self.store.exclusive(f"send:{self.own}", "an older sender"))
        except LockedError:
            return False
        return True

    def _settle(self, runs: set[str | None]) -> int:
        stale = self.store.intents_of(runs=runs, rep=self.own)
        by_run: dict[str | None, list[Record]] = defaultdict(list)
        for row in stale:
            by_run[row["run"]].append(row)
        fates: dict[handover.Fate, list[Record]] = {fate: [] for fate in handover.Fate}
        for run, rows in by_run.items():
            marks = handover.read(self.log_of(run))
            for row in rows:
                written, _ = outbox_files(self._outbox(row), row["message_id"])
                fates[handover.fate(row["message_id"], marks,
                                    written=written.exists())].append(row)
        sent, unknown = fates[handover.Fate.SENT], fates[handover.Fate.UNKNOWN]
        if not self.dry_run:
            self._write_settlement(fates)
            self.recovered = sent
            for run in runs - {self.run}:   # this run's own log goes when it ends
                handover.remove(self.log_of(run))
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

    def recovered_messages(self) -> list[tuple[Prospect, EmailMessage]]:
        """The dead runs' messages the server had accepted, settled sent by this run, for
        `message_sent`: the outbox file's exact bytes, or (SMTP) what the ledger keeps of
        the message: Message-ID, From, To and Subject, with no body."""
        out = []
        for row in self.recovered:
            prospect = self.prospect(row["prospect_id"])
            written, _ = outbox_files(self._outbox(row), row["message_id"])
            if written.exists():
                message = BytesParser(policy=default_policy).parsebytes(written.read_bytes())
                assert isinstance(message, EmailMessage)
            else:
                message = EmailMessage()
                message["Message-ID"] = row["message_id"]
                message["From"] = self.views.get(row["mailbox"] or "",
                                                 self.config).sender.email
                message["To"] = prospect.email
                message["Subject"] = row["subject"]
            out.append((prospect, message))
        return out

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
