"""The funnel: what was sent and what came of it, overall and per sequence, template, variant or
persona, and an honest answer to "which variant wins?".

Every outcome (reply, bounce, unsubscribe, spam complaint, auto-reply, meeting) is credited to
the last email sent to that prospect before it happened, so each email counts at most once per
outcome and a rate never passes 100%. `--since` picks the emails sent from then on (a cohort)
and the calls made from then on; outcomes that follow no email count when they happened after
`since`. A reply is positive unless it said "not interested" or the prospect is now
`not-interested`; a meeting is a move to stage `opportunity` (`mark ... meeting`, a call
outcome, or by hand).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from .config import Icp
from .errors import OutreachError

GROUPINGS = ("sequence", "template", "variant", "persona", "rep", "mailbox")
# A referral is also recorded as the referrer's reply, so "referral" events are not counted.
EVENT_KINDS = ("reply", "auto_reply", "bounce", "unsubscribe", "complaint", "stage", "call")
NO_EMAIL = "(no email)"
BEFORE_TEAM = "(before team mode)"   # messages sent before reps and mailboxes were recorded
ALPHA = 0.05
POWER = 0.8
Z_ALPHA = 1.959964  # two-sided 5%
Z_POWER = 0.841621  # 80% power
# With no difference observed yet, size the test to detect this relative lift.
ASSUMED_LIFT = 0.5
# Beyond this many more sends per variant, the gap is too small to matter for an SDR.
HOPELESS = 100_000


@dataclass
class Counts:
    sent: int = 0
    bounced: int = 0
    replied: int = 0
    positive: int = 0
    meetings: int = 0
    unsubscribed: int = 0
    auto_replies: int = 0
    complained: int = 0
    calls: int = 0
    connects: int = 0
    call_meetings: int = 0

    @property
    def delivered(self) -> int:
        return self.sent - self.bounced

    def add(self, other: Counts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent, "delivered": self.delivered, "bounced": self.bounced,
            "replied": self.replied, "positive": self.positive, "meetings": self.meetings,
            "unsubscribed": self.unsubscribed, "auto_replies": self.auto_replies,
            "complained": self.complained,
            "calls": self.calls, "connects": self.connects, "call_meetings": self.call_meetings,
            "reply_rate": ratio(self.replied, self.sent),
            "positive_rate": ratio(self.positive, self.replied),
            "meetings_per_100_sent": _per100(self.meetings, self.sent),
            "bounce_rate": ratio(self.bounced, self.sent),
            "unsubscribe_rate": ratio(self.unsubscribed, self.sent),
            "complaint_rate": ratio(self.complained, self.sent),
            "auto_reply_rate": ratio(self.auto_replies, self.sent),
            "connect_rate": ratio(self.connects, self.calls),
            "meetings_per_call": ratio(self.call_meetings, self.calls),
        }


def ratio(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


def _per100(n: int, d: int) -> float | None:
    return round(100 * n / d, 2) if d else None


def persona(title: str | None, industry: str | None, icp: Icp | None = None) -> str:
    """The call list's persona ("CFO · Manufacturing"): "Chief Financial Officer" is a CFO, and
    with the sequence's ICP "Acting CFO, EMEA" is one too."""
    from .calls import persona_label

    return persona_label(title or "", industry or "", icp)


def parse_since(text: str, zone: ZoneInfo) -> datetime:
    """A date (midnight in the sender's zone) or an ISO timestamp with an offset."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OutreachError(f'--since "{text}": expected a date like 2026-03-01 or a '
                            "timestamp like 2026-03-01T08:00:00-06:00") from None
    if len(text.strip()) == 10:
        return datetime.combine(value.date(), time(0), tzinfo=zone)
    return value if value.tzinfo else value.replace(tzinfo=zone)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _identity(message: Mapping[str, Any]) -> str:
    """Which variant a message is: an A/B step's variants are its templates."""
    return str(message["template"])


def group_key(by: str, message: Mapping[str, Any] | None, row: Mapping[str, Any],
              icps: Mapping[str, Icp | None] | None = None) -> str:
    """The group an outcome belongs to; `row` carries the prospect's persona and sequence
    (`icps`: each sequence's ICP, which reads the persona's title)."""
    if by == "persona":
        sequence = (message or row).get("sequence")
        icp = (icps or {}).get(sequence) if sequence else None
        return persona(row.get("title"), row.get("industry"), icp)
    if by == "sequence":
        return str(message["sequence"] if message else row.get("sequence") or NO_EMAIL)
    if by in ("rep", "mailbox"):   # a call is its enrollment's rep's
        if message is not None:
            return str(message[by] or BEFORE_TEAM)
        return str(row.get(by) or NO_EMAIL)
    if message is None:
        return NO_EMAIL
    if by == "template":
        return str(message["template"])
    return f"{message['sequence']} step {message['step']}: {_identity(message)}"


def compute(messages: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]], *,
            since: datetime | None = None, by: str | None = None,
            icps: Mapping[str, Icp | None] | None = None) -> dict[str, Any]:
    """The stats document from sent-message rows and event rows (as the store returns them)."""
    if by is not None and by not in GROUPINGS:
        raise OutreachError(f'--by "{by}": use one of {", ".join(GROUPINGS)}')
    since_iso = since.astimezone(ZoneInfo("UTC")).isoformat(timespec="seconds") if since else ""
    msgs = [dict(m) for m in messages]
    by_prospect: dict[int, list[dict[str, Any]]] = {}
    for m in msgs:
        by_prospect.setdefault(m["prospect_id"], []).append(m)
    for lst in by_prospect.values():
        lst.sort(key=lambda m: (m["sent_at"], m["id"]))
    stamps = {pid: [_at(m["sent_at"]) for m in lst] for pid, lst in by_prospect.items()}

    def last_before(row: Mapping[str, Any]) -> dict[str, Any] | None:
        pid = row.get("prospect_id")
        if pid not in by_prospect:
            return None
        i = bisect.bisect_right(stamps[pid], _at(row["at"]))
        return by_prospect[pid][i - 1] if i else None

    flags: dict[int, set[str]] = {m["id"]: set() for m in msgs}
    loose: list[tuple[dict[str, Any], str]] = []  # outcomes after no email, and calls
    for row in events:
        kind = row["kind"]
        flag = {"reply": "replied", "auto_reply": "auto_replies",
                "bounce": "bounced", "unsubscribe": "unsubscribed",
                "complaint": "complained"}.get(kind)
        if kind == "stage":
            flag = "meetings" if row.get("new") == "opportunity" else None
        if kind == "call":
            if not since_iso or row["at"] >= since_iso:
                loose.append((dict(row), "call"))
            continue
        if flag is None:
            continue
        message = last_before(row)
        flags_here = {flag}
        if (flag == "replied" and not row.get("not_interested")
                and row.get("stage") != "not-interested"):
            flags_here.add("positive")
        if message is not None:
            flags[message["id"]].update(flags_here)
        elif not since_iso or row["at"] >= since_iso:
            for f in flags_here:
                loose.append((dict(row), f))

    groups: dict[str, Counts] = {}
    totals = Counts()

    def bump(key: str | None, **delta: int) -> None:
        c = Counts(**delta)
        totals.add(c)
        if key is not None:
            groups.setdefault(key, Counts()).add(c)

    ab_keys = _ab_steps(msgs)
    for m in msgs:
        if since_iso and m["sent_at"] < since_iso:
            continue
        key = group_key(by, m, m, icps) if by else None
        if by == "variant" and (m["sequence"], m["step"]) not in ab_keys:
            key = None
        bump(key, sent=1, **{f: 1 for f in flags[m["id"]]})
    for row, what in loose:
        message = last_before(row)
        key = group_key(by, message, row, icps) if by else None
        if by == "variant" and (message is None or
                                (message["sequence"], message["step"]) not in ab_keys):
            key = None
        if what == "call":
            outcome = row.get("outcome")
            bump(key, calls=1, connects=int(outcome in ("connected", "meeting")),
                 call_meetings=int(outcome == "meeting"))
        else:
            bump(key, **{what: 1})

    doc: dict[str, Any] = {"since": since.isoformat() if since else None, "by": by,
                           "totals": totals.as_dict()}
    if by:
        doc["groups"] = [{"key": k, **groups[k].as_dict()} for k in sorted(groups)]
    if by == "variant":
        doc["ab_tests"] = ab_tests(doc["groups"], msgs)
    return doc


def _ab_steps(msgs: Iterable[Mapping[str, Any]]) -> set[tuple[str, int]]:
    """(sequence, step) pairs whose messages went out in more than one variant."""
    seen: dict[tuple[str, int], set[str]] = {}
    for m in msgs:
        seen.setdefault((m["sequence"], m["step"]), set()).add(_identity(m))
    return {k for k, v in seen.items() if len(v) > 1}


def ab_tests(groups: list[dict[str, Any]], msgs: Iterable[Mapping[str, Any]]) -> list[dict]:
    """One comparison per A/B step: the best variant against the runner-up, on reply rate."""
    steps: dict[tuple[str, int], list[dict[str, Any]]] = {}
    by_key = {g["key"]: g for g in groups}
    for seq, step in sorted(_ab_steps(msgs)):
        names = sorted({_identity(m) for m in msgs if (m["sequence"], m["step"]) == (seq, step)})
        rows = []
        for name in names:
            g = by_key.get(f"{seq} step {step}: {name}", {"sent": 0, "replied": 0})
            rows.append({"variant": name, "sent": g["sent"], "replied": g["replied"],
                         "reply_rate": ratio(g["replied"], g["sent"])})
        steps[(seq, step)] = rows
    out = []
    for (seq, step), rows in steps.items():
        ranked = sorted(rows, key=lambda r: (-(r["reply_rate"] or 0), r["variant"]))
        a, b = ranked[0], ranked[1]
        out.append({"sequence": seq, "step": step, "variants": rows,
                    **compare(a["variant"], a["sent"], a["replied"],
                              b["variant"], b["sent"], b["replied"])})
    return out


# -- the A/B question ---------------------------------------------------------------------


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p-value of Fisher's exact test for the table [[a, b], [c, d]]."""
    row1, row2, col1 = a + b, c + d, a + c
    n = row1 + row2

    def log_p(x: int) -> float:
        return (_log_comb(row1, x) + _log_comb(row2, col1 - x) - _log_comb(n, col1))

    observed = log_p(a)
    low, high = max(0, col1 - row2), min(row1, col1)
    total = 0.0
    for x in range(low, high + 1):
        lp = log_p(x)
        if lp <= observed + 1e-7:
            total += math.exp(lp)
    return min(1.0, total)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def sends_needed(p1: float, p2: float) -> int:
    """Sends per variant for a two-sided 5% test to see p1 vs p2 with 80% power."""
    if p1 == p2:
        return 0
    pbar = (p1 + p2) / 2
    top = (Z_ALPHA * math.sqrt(2 * pbar * (1 - pbar))
           + Z_POWER * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2)))
    return math.ceil(top * top / (p1 - p2) ** 2)


def _about(n: int) -> int:
    """Round a sample size up to a number that does not pretend to precision."""
    return n if n < 100 else math.ceil(n / 10) * 10


def compare(name_a: str, sent_a: int, replied_a: int, name_b: str, sent_b: int,
            replied_b: int) -> dict[str, Any]:
    """Is A's reply rate meaningfully different from B's? With a verdict in plain words."""
    ra = replied_a / sent_a if sent_a else 0.0
    rb = replied_b / sent_b if sent_b else 0.0
    p = fisher_exact(replied_a, sent_a - replied_a, replied_b, sent_b - replied_b)
    doc: dict[str, Any] = {"leader": name_a, "runner_up": name_b,
                           "difference": round(ra - rb, 4), "p_value": round(p, 4),
                           "significant": p < ALPHA and sent_a > 0 and sent_b > 0}
    if doc["significant"]:
        doc["needed_per_variant"] = 0
        doc["verdict"] = (f"{name_a} wins: {ra:.1%} vs {rb:.1%} replies (p = {p:.3f}); "
                          f"send {name_a}")
        return doc
    pooled = (replied_a + replied_b) / (sent_a + sent_b) if sent_a + sent_b else 0.0
    if ra == rb and pooled == 0:
        doc["needed_per_variant"] = None
        doc["verdict"] = (f"no replies to either yet ({sent_a} and {sent_b} sent): "
                          "keep sending both")
        return doc
    target = sends_needed(ra, rb) if ra != rb else sends_needed(pooled, pooled *
                                                                (1 + ASSUMED_LIFT))
    more = max(0, target - min(sent_a, sent_b))
    doc["needed_per_variant"] = _about(more) if more else 0
    needed = f"~{doc['needed_per_variant']:,} more sends per variant"
    if ra == rb and more:
        doc["verdict"] = (f"not enough data yet: {needed} needed to see a "
                          f"{ASSUMED_LIFT:.0%} lift (both {ra:.1%} so far)")
    elif more > HOPELESS:
        doc["verdict"] = (f"no meaningful difference: {name_a} {ra:.1%} vs {name_b} {rb:.1%} "
                          f"(p = {p:.2f}); a gap this small would take {needed} to confirm, "
                          "so either is fine")
    elif more:
        doc["verdict"] = (f"not enough data yet: {needed} needed ({name_a} {ra:.1%} vs "
                          f"{name_b} {rb:.1%}, p = {p:.2f})")
    else:
        doc["verdict"] = (f"no meaningful difference: {name_a} {ra:.1%} vs {name_b} {rb:.1%} "
                          f"after {min(sent_a, sent_b)}+ sends each (p = {p:.2f}); "
                          "either is fine")
    return doc


# -- I/O edge ------------------------------------------------------------------------------


def stats(app: Any, *, since: datetime | None = None, by: str | None = None) -> dict[str, Any]:
    """The stats document for `app`'s store."""
    from .calls import sequence_icp

    icps = {name: sequence_icp(app.config, name) for name in app.config.sequences}
    return compute(app.store.stats_messages(), app.store.stats_events(EVENT_KINDS),
                   since=since, by=by, icps=icps)


# -- text ---------------------------------------------------------------------------------


def _of(n: int, d: int, what: str) -> str:
    return f"{n / d:.1%} of {d} {what}" if d else f"of 0 {what}"


def text_lines(doc: Mapping[str, Any]) -> list[str]:
    """The human-readable stats: totals with their denominators, the groups, the A/B verdicts."""
    t = doc["totals"]
    lines = [f"since {doc['since']}" if doc["since"] else "all time", ""]
    rows = [
        ("sent", t["sent"], ""),
        ("delivered", t["delivered"], f"{t['sent']} sent − {t['bounced']} bounced"),
        ("replied", t["replied"], _of(t["replied"], t["sent"], "sent")),
        ("positive", t["positive"], _of(t["positive"], t["replied"], "replies")),
        ("meetings", t["meetings"],
         f"{t['meetings_per_100_sent'] or 0:.1f} per 100 sent" if t["sent"] else ""),
        ("bounced", t["bounced"], _of(t["bounced"], t["sent"], "sent")),
        ("unsubscribed", t["unsubscribed"], _of(t["unsubscribed"], t["sent"], "sent")),
        ("complaints", t["complained"], _of(t["complained"], t["sent"], "sent")),
        ("auto-replies", t["auto_replies"], _of(t["auto_replies"], t["sent"], "sent")),
        ("calls made", t["calls"], ""),
        ("connects", t["connects"], _of(t["connects"], t["calls"], "calls")),
        ("call meetings", t["call_meetings"],
         f"{t['meetings_per_call']:.2f} meetings per call" if t["calls"] else ""),
    ]
    lines += [f"{name:<14}{n:>7}   {note}".rstrip() for name, n, note in rows]
    if doc.get("groups") == []:
        lines += ["", f"(nothing to group by {doc['by']} yet)"]
    elif doc.get("groups") is not None:
        head = (doc["by"].upper(), "SENT", "REPLIED", "REPLY%", "POSITIVE", "MEETINGS",
                "/100 SENT", "BOUNCED", "UNSUB", "CALLS", "CONNECTS")
        table = [head] + [
            (g["key"], str(g["sent"]), str(g["replied"]), _pct(g["reply_rate"]),
             str(g["positive"]), str(g["meetings"]),
             "" if g["meetings_per_100_sent"] is None else f"{g['meetings_per_100_sent']:.1f}",
             str(g["bounced"]), str(g["unsubscribed"]), str(g["calls"]), str(g["connects"]))
            for g in doc["groups"]
        ]
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        lines.append("")
        for r in table:
            cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in
                                                zip(r[1:], widths[1:], strict=True)]
            lines.append("  ".join(cells))
    for test in doc.get("ab_tests", []):
        lines.append("")
        rates = ", ".join(f"{v['variant']} {v['replied']}/{v['sent']}" for v in test["variants"])
        lines.append(f"A/B {test['sequence']} step {test['step']} ({rates}): {test['verdict']}")
    return lines


def _pct(rate: float | None) -> str:
    return "" if rate is None else f"{rate:.1%}"
