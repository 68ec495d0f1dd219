"""Enrollments and the send ledger (`messages`): what makes "never twice" hold.

An intent row is committed before a message is handed to a transport and marked sent once the
server accepts it; `add_intents` writes one only while its enrollment is open at that step and
its prospect not suppressed, in the same statement that checks it.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from ..clock import iso
from .base import Part, domain_of
from .engine import Engine, Record, chunks, marks

_OPEN = "state IN ('active', 'paused')"
# Enrollment `e` has no message at its next step yet. A subquery per enrollment (its count by
# the (enrollment_id, step) key), not NOT EXISTS: while the statistics still say `messages` is
# empty (a new team database's first sends, before autovacuum looks) PostgreSQL would plan that
# anti-join as a scan of every message for each enrollment.
_UNSENT = ("(SELECT count(*) FROM messages m WHERE m.enrollment_id = e.id "
           "AND m.step = e.next_step) = 0")


class Enrollments(Part):
    def enroll(self, prospect_id: int, sequence: str, *, at: datetime,
               rep: str | None = None) -> int | None:
        """Start a sequence, worked by `rep`, who becomes the prospect's owner if it has none.
        None when the prospect is already in an open sequence (another rep's enroll got there
        first): the one-open-enrollment index decides, whatever the caller read before."""
        enrollment = self.value(
            "INSERT INTO enrollments (prospect_id, sequence, started_at, rep) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
            (prospect_id, sequence, iso(at), rep))
        if enrollment is not None and rep is not None:
            self.db.execute("UPDATE prospects SET owner = ? WHERE id = ? AND owner IS NULL",
                            (rep, prospect_id))
        return None if enrollment is None else int(enrollment)

    def enrollments(self, prospect_id: int) -> list[Record]:
        return self.db.records("SELECT * FROM enrollments WHERE prospect_id = ? ORDER BY id",
                               (prospect_id,))

    def enrollment(self, enrollment_id: int) -> Record | None:
        return self.one("SELECT * FROM enrollments WHERE id = ?", (enrollment_id,))

    def latest_enrollment(self, prospect_id: int) -> Record | None:
        return self.one("SELECT * FROM enrollments WHERE prospect_id = ? "
                        "ORDER BY id DESC LIMIT 1", (prospect_id,))

    def open_enrollments(self, *, sequence: str | None = None) -> list[Record]:
        sql = f"SELECT * FROM enrollments WHERE {_OPEN}"
        args: tuple[Any, ...] = ()
        if sequence:
            sql += " AND sequence = ?"
            args = (sequence,)
        return self.db.records(sql + " ORDER BY id", args)

    def enrollment_facts(self) -> dict[int, dict[str, Any]]:
        """Per prospect: has an open enrollment, when a sequence last ran out without an
        answer (recycled, or completed with no recycle step), ever replied. For enroll."""
        return {row["prospect_id"]: row for row in self.db.records(
            "SELECT prospect_id, "
            f"max(CASE WHEN {_OPEN} THEN 1 ELSE 0 END) AS open, "
            "max(CASE WHEN state IN ('recycled', 'completed') THEN ended_at END) "
            "AS recycled_at, "
            "max(CASE WHEN state IN ('replied', 'won') THEN 1 ELSE 0 END) AS replied, "
            f"max(CASE WHEN {_OPEN} THEN rep END) AS open_rep "
            "FROM enrollments GROUP BY prospect_id")}

    def open_prospects_by_domain(self) -> dict[str, list[int]]:
        """Email domain -> ids of prospects there with an active or paused enrollment."""
        out: dict[str, list[int]] = {}
        for pid, email in self.db.execute(
                "SELECT DISTINCT p.id, p.email FROM prospects p JOIN enrollments e "
                f"ON e.prospect_id = p.id WHERE e.{_OPEN}"):
            out.setdefault(domain_of(email), []).append(pid)
        return out

    def end_enrollments(self, prospect_id: int, *, state: str, reason: str,
                        at: datetime) -> list[int]:
        """End every open enrollment of a prospect; returns their ids."""
        return [r[0] for r in self.db.execute(
            "UPDATE enrollments SET state = ?, end_reason = ?, ended_at = ?, paused_until = NULL "
            f"WHERE prospect_id = ? AND {_OPEN} RETURNING id",
            (state, reason, iso(at), prospect_id)).fetchall()]

    def end_enrollment(self, enrollment_id: int, *, state: str, reason: str,
                       at: datetime) -> bool:
        cur = self.db.execute(
            "UPDATE enrollments SET state = ?, end_reason = ?, ended_at = ?, paused_until = NULL "
            f"WHERE id = ? AND {_OPEN}", (state, reason, iso(at), enrollment_id))
        return cur.rowcount == 1

    def pause_enrollments(self, prospect_id: int, *, until: datetime) -> list[int]:
        """Pause a prospect's open enrollment until `until` (an auto-reply's return)."""
        return [r[0] for r in self.db.execute(
            "UPDATE enrollments SET state = 'paused', paused_until = ? "
            f"WHERE prospect_id = ? AND {_OPEN} RETURNING id",
            (iso(until), prospect_id)).fetchall()]

    def open_next_steps(self, ids: Sequence[int]) -> dict[int, int]:
        """{enrollment id: next step} of those among `ids` still open (active or paused)."""
        out: dict[int, int] = {}
        for chunk in chunks(ids):
            out.update((r[0], r[1]) for r in self.db.execute(
                f"SELECT id, next_step FROM enrollments WHERE {_OPEN} "
                f"AND id IN ({marks(len(chunk))})", chunk))
        return out

    def advance_enrollments(self, steps: Iterable[tuple[int, int]]) -> None:
        """Move open enrollments past a step, for (enrollment id, step) pairs (never
        backwards); a paused one that was due is active again."""
        _advance(self.db, steps)

    def advance_enrollment(self, enrollment_id: int, *, past_step: int) -> None:
        self.advance_enrollments([(enrollment_id, past_step)])

    def record_variant(self, enrollment_id: int, step: int, template: str) -> None:
        self.db.execute(f"UPDATE enrollments SET variants = {self.db.json_put('variants')} "
                        "WHERE id = ?", (str(step), template, enrollment_id))


class Ledger(Part):
    def send_candidates(self, *, rep: str | None = None) -> list[Record]:
        """Open enrollments (those `rep` works, and those from before team mode) with their
        prospect's address, time zone, suppression, the mailbox it sticks to and whether the
        enrollment has mailed it."""
        where, args = "", cast(tuple[Any, ...], ())
        if rep is not None:
            where, args = " AND (e.rep = ? OR e.rep IS NULL)", (rep,)
        return self.db.records(
            f"SELECT e.*, p.email, p.timezone AS prospect_timezone, {self.suppressed} "
            "AS suppressed, p.mailbox AS sticky_mailbox, "
            "EXISTS (SELECT 1 FROM messages m WHERE m.enrollment_id = e.id) AS mailed "
            "FROM enrollments e JOIN prospects p ON p.id = e.prospect_id "
            f"WHERE e.{_OPEN}{where} ORDER BY e.id", args)

    def handed_over(self, enrollment_id: int) -> list[Record]:
        """An enrollment's messages a server accepted, oldest step first (what a follow-up
        may thread onto)."""
        return self.db.records(
            "SELECT * FROM messages WHERE enrollment_id = ? AND status = 'sent' "
            "ORDER BY step", (enrollment_id,))

    def unresolved_steps(self) -> dict[int, int]:
        """{enrollment id: step} of open enrollments whose email's fate is `unknown`."""
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT m.enrollment_id, max(m.step) FROM messages m JOIN enrollments e "
            f"ON e.id = m.enrollment_id WHERE m.status = 'unknown' AND e.{_OPEN} "
            "GROUP BY m.enrollment_id")}

    def unknown_messages(self, prospect_id: int) -> list[Record]:
        """A prospect's messages whose fate is unknown, with their enrollment's state and
        next step, oldest first."""
        return self.db.records(
            "SELECT m.*, e.state, e.next_step FROM messages m JOIN enrollments e "
            "ON e.id = m.enrollment_id WHERE e.prospect_id = ? AND m.status = 'unknown' "
            "ORDER BY m.id", (prospect_id,))

    def last_email_sent_at(self, enrollment_id: int) -> str | None:
        return self.value("SELECT max(sent_at) FROM messages WHERE enrollment_id = ? "
                          "AND status = 'sent'", (enrollment_id,))

    def day_counts(self, start: datetime, end: datetime, *,
                   rep: str | None = None) -> tuple[Quota, dict[str, str]]:
        """Messages handed over (or about to be) in [start, end) as the limits count them when
        a run plans (`rep`'s and those from before team mode, when given, for daily_limit;
        each mailbox's; the whole team's per company domain), and when each mailbox first
        sent (ISO: day 0 of its ramp-up). One statement, so one snapshot: read apart, another
        sender's intents committed in between left the rep's count and a mailbox's at odds."""
        mine = "" if rep is None else " AND (rep = ? OR rep IS NULL)"
        counted = "status != 'failed' AND created_at >= ? AND created_at < ?"
        day = (iso(start), iso(end))
        rows = self.db.execute(
            f"SELECT 'rep', '', CAST(count(*) AS TEXT) FROM messages WHERE {counted}{mine} "
            "UNION ALL SELECT 'mailbox', mailbox, CAST(count(*) AS TEXT) FROM messages "
            f"WHERE {counted} AND mailbox IS NOT NULL GROUP BY mailbox "
            "UNION ALL SELECT 'first', mailbox, min(created_at) FROM messages "
            "WHERE mailbox IS NOT NULL GROUP BY mailbox "
            "UNION ALL SELECT 'email', p.email, CAST(count(*) AS TEXT) FROM messages m "
            "JOIN enrollments e ON e.id = m.enrollment_id JOIN prospects p "
            f"ON p.id = e.prospect_id WHERE m.{counted.replace(' AND ', ' AND m.')} "
            "GROUP BY p.email",
            (*day, *([rep] if rep is not None else []), *day, *day)).fetchall()
        rep_count = 0
        mailboxes: dict[str, int] = {}
        domains: dict[str, int] = {}
        first_used: dict[str, str] = {}
        for kind, key, value in rows:
            if kind == "rep":
                rep_count = int(value)
            elif kind == "mailbox":
                mailboxes[key] = int(value)
            elif kind == "first":
                first_used[key] = value
            else:
                domain = domain_of(key)
                domains[domain] = domains.get(domain, 0) + int(value)
        return Quota(rep_count, mailboxes, domains), first_used

    def add_intents(self, intents: Sequence[Mapping[str, Any]], *, at: datetime) -> dict[str, int]:
        """Write ledger intents (keys: enrollment_id, step, template, variant, message_id,
        subject, and optionally rep, mailbox and run), each only while its enrollment is open at
        that step, not paused, and its prospect not suppressed. A prospect's first message
        fixes the mailbox it sticks to. Returns {message_id: ledger id} of those written; the
        rest were refused or are already in the ledger. Call inside a transaction."""
        stamp = iso(at)
        written = {r[0]: r[1] for r in self.db.execute_each(
            "INSERT INTO messages (enrollment_id, step, template, variant, message_id, "
            "subject, status, created_at, rep, mailbox, run) "
            "SELECT ?, ?, ?, ?, ?, ?, 'intent', ?, ?, ?, ? "
            "WHERE EXISTS (SELECT 1 FROM enrollments e JOIN prospects p ON p.id = e.prospect_id "
            "WHERE e.id = ? AND e.state IN ('active', 'paused') AND e.next_step = ? "
            f"AND (e.paused_until IS NULL OR e.paused_until <= ?) AND NOT {self.suppressed}) "
            "ON CONFLICT DO NOTHING RETURNING message_id, id",
            [(i["enrollment_id"], i["step"], i["template"], i["variant"], i["message_id"],
              i["subject"], stamp, i.get("rep"), i.get("mailbox"), i.get("run"),
              i["enrollment_id"], i["step"], stamp) for i in intents])}
        self.db.queue(   # a prospect's first message fixes its mailbox
            "UPDATE prospects SET mailbox = ? WHERE mailbox IS NULL AND id = "
            "(SELECT prospect_id FROM enrollments WHERE id = ?)",
            [(i["mailbox"], i["enrollment_id"]) for i in intents
             if i.get("mailbox") and i["message_id"] in written])
        return written

    def ledger_templates(self, enrollment_ids: Iterable[int]) -> dict[tuple[int, str], int]:
        """(enrollment id, template) -> the step it went out as, for these enrollments."""
        out: dict[tuple[int, str], int] = {}
        for chunk in chunks(list(enrollment_ids)):
            for r in self.db.execute(
                    "SELECT enrollment_id, template, step FROM messages WHERE enrollment_id IN "
                    f"({marks(len(chunk))})", chunk):
                out[(r[0], r[1])] = r[2]
        return out

    def mark_sent(self, sent: Sequence[Mapping[str, Any]], *, at: datetime) -> None:
        """Mark accepted messages sent, add their `sent` events and move their enrollments
        past the step (keys: ledger_id, prospect_id, enrollment_id, step, template, variant,
        message_id, subject), in one round trip with the COMMIT on PostgreSQL. Call inside a
        transaction."""
        stamp = iso(at)
        self.db.queue("UPDATE messages SET status = 'sent', sent_at = ? WHERE id = ?",
                      [(stamp, m["ledger_id"]) for m in sent])
        self.db.queue(
            "INSERT INTO events (prospect_id, enrollment_id, kind, detail, at) "
            "VALUES (?, ?, 'sent', ?, ?)",
            [(m["prospect_id"], m["enrollment_id"], json.dumps({
                "template": m["template"], "variant": m["variant"], "step": m["step"],
                "message_id": m["message_id"], "subject": m["subject"]}), stamp) for m in sent])
        _advance(self.db, ((m["enrollment_id"], m["step"]) for m in sent))

    def set_message_status(self, message_id: int, status: str, *, at: datetime | None = None,
                           error: str | None = None) -> None:
        self.db.execute("UPDATE messages SET status = ?, sent_at = ?, error = ? WHERE id = ?",
                        (status, iso(at) if at else None, error, message_id))

    def suppressed_intents(self, ledger_ids: Sequence[int]) -> set[int]:
        """Of these ledger rows, those whose prospect is suppressed now (its address, its
        domain or a parent domain)."""
        out: set[int] = set()
        for chunk in chunks(ledger_ids):
            out.update(r[0] for r in self.db.execute(
                "SELECT m.id FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
                f"JOIN prospects p ON p.id = e.prospect_id WHERE m.id IN ({marks(len(chunk))}) "
                f"AND {self.suppressed}", chunk))
        return out

    def drop_intent(self, message_id: int) -> None:
        """Forget an intent that was provably never handed over, so a later run may send it."""
        self.db.execute("DELETE FROM messages WHERE id = ? AND status = 'intent'", (message_id,))

    def drop_message(self, message_id: int) -> None:
        """Forget a message found never delivered (`outreach resolve --not-delivered`)."""
        self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def rewind_enrollment(self, enrollment_id: int, *, to_step: int) -> None:
        """Make `to_step` the enrollment's next step again (its email never arrived)."""
        self.db.execute("UPDATE enrollments SET next_step = ? WHERE id = ?",
                        (to_step, enrollment_id))

    def has_intents(self, *, run: str) -> bool:
        return self.one("SELECT 1 FROM messages WHERE status = 'intent' AND run = ? LIMIT 1",
                        (run,)) is not None

    def intent_runs(self, *, rep: str | None = None) -> set[str | None]:
        """The runs with intents in the ledger (only `rep`'s, and those from before team
        mode, when given); None: intents from before runs had ids."""
        where, args = "", cast(tuple[Any, ...], ())
        if rep is not None:
            where, args = " AND (rep = ? OR rep IS NULL)", (rep,)
        return {r[0] for r in self.db.execute(
            f"SELECT DISTINCT run FROM messages WHERE status = 'intent'{where}", args)}

    def intents_of(self, *, runs: Collection[str | None],
                   rep: str | None = None) -> list[Record]:
        """The intents of these runs (None: from before runs had ids; only `rep`'s, and those
        from before team mode, when given)."""
        named = [r for r in runs if r is not None]
        which = [f"m.run IN ({marks(len(named))})"] if named else []
        if None in runs:
            which.append("m.run IS NULL")
        if not which:
            return []
        where, args = f" AND ({' OR '.join(which)})", cast(tuple[Any, ...], tuple(named))
        if rep is not None:
            where, args = where + " AND (m.rep = ? OR m.rep IS NULL)", (*args, rep)
        return self.db.records(
            "SELECT m.*, e.prospect_id FROM messages m JOIN enrollments e "
            f"ON e.id = m.enrollment_id WHERE m.status = 'intent'{where} ORDER BY m.id", args)

    def unclaimed(self, steps: Sequence[tuple[int, int]]) -> set[int]:
        """Of these (enrollment id, step) pairs, the enrollments still open at that step with
        no message for it yet: what no other sender has claimed (a look, no lock)."""
        if not steps:
            return set()
        found = self.db.execute(
            f"SELECT e.id, e.next_step FROM enrollments e WHERE e.{_OPEN} "
            f"AND e.id IN ({marks(len(steps))}) AND {_UNSENT}", [e for e, _ in steps])
        return _at_step(found, steps)

    def claim_steps(self, steps: Sequence[tuple[int, int]], *, start: datetime, end: datetime,
                    rep: str | None, domains: Collection[str]) -> tuple[set[int], Quota]:
        """Inside the transaction that writes their intents, after `lock_quota`: lock the
        enrollments of these (enrollment id, step) pairs that are open at that step with no
        message for it yet, skipping (never waiting for) those another sender holds, and read
        today's counts the limits check ([start, end): `rep`'s messages, each mailbox's, and
        the team's to these company domains), in one statement. Returns the enrollments now
        this transaction's and the counts."""
        if not steps:
            return set(), Quota(0, {}, {})
        ids = [e for e, _ in steps]
        day = (iso(start), iso(end))
        # The address's domain: the expression the prospects_email_domain index holds (M006).
        at = f"substr(p.email, {self.db.position}(p.email, '@') + 1)"
        counted = "m.status != 'failed' AND m.created_at >= ? AND m.created_at < ?"
        # Today's messages are read once, for the rep's and the mailboxes' counts (grouped by
        # both); the domains' count starts from the chunk's domains' prospects (by index) and
        # reads only their enrollments' messages (by enrollment, the day tested on each row: a
        # join, or a subquery the day's range may pick the index of, starts from every one of
        # today's messages while the statistics do not know of them yet), however long the day.
        rows = self.db.execute(
            f"WITH claimed AS (SELECT e.id, e.next_step FROM enrollments e WHERE e.{_OPEN} "
            f"AND e.id IN ({marks(len(ids))}) AND {_UNSENT}{self.db.lock_rows}) "
            "SELECT 'claim', CAST(id AS TEXT), next_step, NULL FROM claimed "
            "UNION ALL SELECT 'team', m.mailbox, count(*), CASE WHEN m.rep = ? OR m.rep IS NULL "
            f"THEN 1 ELSE 0 END FROM messages m WHERE {counted} GROUP BY 2, 4 "
            f"UNION ALL SELECT 'domain', {at}, coalesce(sum((SELECT sum(CASE WHEN {counted} "
            "THEN 1 ELSE 0 END) FROM messages m WHERE m.enrollment_id = e.id)), 0), NULL "
            "FROM prospects p "
            "JOIN enrollments e ON e.prospect_id = p.id "
            f"WHERE {at} IN ({marks(len(domains)) or 'NULL'}) GROUP BY 2",
            (*ids, rep, *day, *day, *domains)).fetchall()
        claimed = _at_step(((int(r[1]), r[2]) for r in rows if r[0] == "claim"), steps)
        return claimed, _quota(rows, rep=rep)

    def add_ledger_row(self, enrollment_id: int, *, step: int, message_id: str, at: datetime,
                       template: str = "", subject: str = "", status: str = "sent") -> int:
        """Record a sent message in the ledger directly (tests, and mail sent elsewhere)."""
        return int(self.value(
            "INSERT INTO messages (enrollment_id, step, template, message_id, subject, status, "
            "created_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (enrollment_id, step, template, message_id, subject, status, iso(at), iso(at))))


class Quota(NamedTuple):
    """Today's messages as the limits count them, at the moment intents are claimed."""

    rep: int
    mailboxes: dict[str, int]
    domains: dict[str, int]


def _quota(rows: Iterable[Sequence[Any]], *, rep: str | None) -> Quota:
    """Quota from `claim_steps`'s ('team', mailbox, n, counts for the rep) and ('domain',
    domain, n) rows; without a rep (no team) every message counts for the daily limit."""
    mine, mailboxes, domains = 0, dict[str, int](), dict[str, int]()
    for kind, key, n, ours in rows:
        if kind == "team":
            if rep is None or ours:
                mine += int(n)
            if key is not None:
                mailboxes[key] = mailboxes.get(key, 0) + int(n)
        elif kind == "domain":
            domains[key] = int(n)
    return Quota(mine, mailboxes, domains)


def _at_step(found: Iterable[tuple[int, int]], steps: Sequence[tuple[int, int]]) -> set[int]:
    """The enrollments of `found` (id, next step) that are at the step `steps` pairs them with."""
    want = dict(steps)
    return {e for e, step in found if want.get(e) == step}


def _advance(db: Engine, steps: Iterable[tuple[int, int]]) -> None:
    db.queue(
        "UPDATE enrollments SET next_step = CASE WHEN next_step > ? THEN next_step "
        "ELSE ? END, state = 'active', paused_until = NULL "
        f"WHERE id = ? AND {_OPEN}",
        [(step + 1, step + 1, enrollment_id) for enrollment_id, step in steps])
