"""`outreach stats --html FILE`: one self-contained HTML page (inline CSS and SVG, nothing
fetched) with the funnel, the A/B answers and the per-persona comparison drawn as charts."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

from .guard import COMPLAINT_WARN_RATE
from .stats import stats

COLORS = {"sent": "#5b6b7f", "delivered": "#3b82c4", "replied": "#1f9d8b",
          "positive": "#2fae5a", "meetings": "#e08a1e", "muted": "#c9d2dc", "bad": "#c2412d"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2733;
background:#f4f6f8;margin:0}
main{max-width:980px;margin:0 auto;padding:24px 28px 40px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:16px;margin:28px 0 10px}
.sub{color:#5b6b7f;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:10px}
.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:22px}.card span{color:#5b6b7f;font-size:12px}
.card.bad b{color:#c2412d}
section{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:6px 16px 14px;
margin-top:14px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:right;padding:4px 6px;border-bottom:1px solid #edf0f3}
th:first-child,td:first-child{text-align:left}th,td:first-child{white-space:nowrap}
section{overflow-x:auto}
section h2{margin:12px 0 8px}th{color:#5b6b7f;font-weight:600}
.verdict{margin:4px 0 12px;padding:8px 10px;border-left:4px solid #3b82c4;background:#f0f5fb}
.verdict.win{border-color:#2fae5a;background:#eff8f1}
.empty{color:#5b6b7f;font-style:italic}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:#1d2733}
"""


def write_report(app: Any, path: Path, *, since: datetime | None = None) -> None:
    """Write the report for `app`'s store atomically (a temp file renamed over `path`)."""
    docs = {by: stats(app, since=since, by=by)
            for by in ("variant", "persona", "sequence", "rep", "mailbox")}
    sender = app.config.sender
    page = render(docs, title=f"{sender.company} · {sender.name}", generated=app.now())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
            # mkstemp makes the file 0600; a report is for sharing, so give it the mode any
            # new file gets (0644 under the usual umask 022).
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def render(docs: Mapping[str, Mapping[str, Any]], *, title: str, generated: datetime) -> str:
    """The page from the stats documents by variant, persona and sequence (same totals), and
    by rep and mailbox when given (a team's shared database: the totals are the team's)."""
    totals = docs["variant"]["totals"]
    since = docs["variant"]["since"]
    period = f"emails sent since {since[:10]}" if since else "all time"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>Outreach funnel · {escape(title)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Outreach funnel</h1><p class=sub>{escape(title)} · {period} · generated "
        f"{escape(generated.isoformat(timespec='minutes'))}</p>",
        _cards(totals),
        "<section><h2>Funnel</h2>", _funnel(totals), "</section>",
        "<section><h2>A/B tests: reply rate per variant</h2>", _ab(docs["variant"]),
        "</section>",
        "<section><h2>Personas: reply rate and meetings per 100 sent</h2>",
        _personas(docs["persona"]["groups"]), "</section>",
        "<section><h2>Sequences</h2>", _table(docs["sequence"]["groups"], "sequence"),
        "</section>",
        *(f"<section><h2>{heading}</h2>{_table(docs[by]['groups'], by)}</section>"
          for by, heading in (("rep", "Reps (the team)"), ("mailbox", "Mailboxes"))
          if by in docs),
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _pct(rate: float | None, digits: int = 1) -> str:
    return "–" if rate is None else f"{rate * 100:.{digits}f}%"


def _cards(t: Mapping[str, Any]) -> str:
    def card(value: str, label: str, bad: bool = False) -> str:
        return (f'<div class="card{" bad" if bad else ""}"><b>{value}</b>'
                f"<span>{escape(label)}</span></div>")

    per100 = t["meetings_per_100_sent"]
    cards = [
        card(str(t["sent"]), "emails sent"),
        card(_pct(t["reply_rate"]), f"reply rate ({t['replied']} of {t['sent']})"),
        card(str(t["positive"]), f"positive replies (of {t['replied']})"),
        card("–" if per100 is None else f"{per100:.1f}",
             f"meetings per 100 sent ({t['meetings']})"),
        card(_pct(t["bounce_rate"]), f"bounce rate ({t['bounced']})",
             bad=(t["bounce_rate"] or 0) > 0.02),
        card(_pct(t["unsubscribe_rate"]), f"unsubscribe rate ({t['unsubscribed']})",
             bad=(t["unsubscribe_rate"] or 0) > 0.003),
        card(_pct(t["complaint_rate"], 2), f"spam-complaint rate ({t['complained']})",
             bad=(t["complaint_rate"] or 0) > COMPLAINT_WARN_RATE),
    ]
    per_call = "–" if t["meetings_per_call"] is None else f"{t['meetings_per_call']:.2f}"
    calls = (f"<p class=sub style='margin-top:10px'>Calls: {t['calls']} made, {t['connects']} "
             f"connected ({_pct(t['connect_rate'])}), {t['call_meetings']} meetings booked on "
             f"a call ({per_call} per call). Auto-replies: {t['auto_replies']}.</p>")
    return '<div class="cards">' + "".join(cards) + "</div>" + calls


def _bars(rows: Sequence[tuple[str, float, str, str]], *, scale: float, label_width: int = 150,
          width: int = 900, bar_height: int = 26) -> str:
    """Horizontal bars: (label, value, caption, color); `scale` is the value of a full bar."""
    gap = 8
    plot = width - label_width - 170
    height = len(rows) * (bar_height + gap) + gap
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {width} '
           f'{height}" role="img">']
    for i, (label, value, caption, color) in enumerate(rows):
        y = gap + i * (bar_height + gap)
        w = 0.0 if scale <= 0 else max(0.0, min(1.0, value / scale)) * plot
        mid = y + bar_height / 2 + 4
        out.append(f'<text x="{label_width - 8}" y="{mid:.0f}" text-anchor="end">'
                   f"{escape(label)}</text>")
        out.append(f'<rect x="{label_width}" y="{y}" width="{plot}" height="{bar_height}" '
                   f'rx="3" fill="#f0f3f6"/>')
        if w > 0:
            out.append(f'<rect x="{label_width}" y="{y}" width="{max(w, 2):.1f}" '
                       f'height="{bar_height}" rx="3" fill="{color}"/>')
        out.append(f'<text x="{label_width + plot + 8}" y="{mid:.0f}">{escape(caption)}</text>')
    out.append("</svg>")
    return "".join(out)


def _funnel(t: Mapping[str, Any]) -> str:
    sent = t["sent"]
    if not sent:
        return "<p class=empty>Nothing sent yet: run `outreach send`.</p>"
    steps = [("Sent", sent, "sent"), ("Delivered", t["delivered"], "delivered"),
             ("Replied", t["replied"], "replied"), ("Positive", t["positive"], "positive"),
             ("Meetings", t["meetings"], "meetings")]
    rows = [(label, float(n), f"{n}  ({n / sent:.1%} of sent)", COLORS[key])
            for label, n, key in steps]
    return _bars(rows, scale=float(sent))


def _ab(doc: Mapping[str, Any]) -> str:
    tests = doc.get("ab_tests") or []
    if not tests:
        return "<p class=empty>No A/B step has sent both variants yet.</p>"
    parts = []
    top = max((v["reply_rate"] or 0) for t in tests for v in t["variants"]) or 1.0
    for t in tests:
        parts.append(f"<h3 style='font-size:14px;margin:12px 0 4px'>{escape(t['sequence'])} "
                     f"step {t['step']}</h3>")
        rows = [(v["variant"], float(v["reply_rate"] or 0),
                 f"{_pct(v['reply_rate'])}  ({v['replied']} of {v['sent']})",
                 COLORS["replied"] if v["variant"] == t["leader"] else COLORS["muted"])
                for v in t["variants"]]
        parts.append(_bars(rows, scale=top * 1.1))
        win = " win" if t["significant"] else ""
        parts.append(f'<p class="verdict{win}">{escape(t["verdict"])}</p>')
    return "".join(parts)


def _personas(groups: Sequence[Mapping[str, Any]]) -> str:
    groups = [g for g in groups if g["sent"]]
    if not groups:
        return "<p class=empty>Nothing sent yet.</p>"
    groups = sorted(groups, key=lambda g: (-g["sent"], g["key"]))[:12]
    top_reply = max(g["reply_rate"] or 0 for g in groups) or 1.0
    top_meet = max(g["meetings_per_100_sent"] or 0 for g in groups) or 1.0
    replies = [(g["key"], float(g["reply_rate"] or 0),
                f"{_pct(g['reply_rate'])}  ({g['replied']} of {g['sent']})", COLORS["replied"])
               for g in groups]
    meetings = [(g["key"], float(g["meetings_per_100_sent"] or 0),
                 f"{g['meetings_per_100_sent'] or 0:.1f}  ({g['meetings']} of {g['sent']})",
                 COLORS["meetings"]) for g in groups]
    return ("<p class=sub style='margin:4px 0'>Reply rate</p>"
            + _bars(replies, scale=top_reply * 1.1, label_width=230)
            + "<p class=sub style='margin:8px 0 4px'>Meetings per 100 sent</p>"
            + _bars(meetings, scale=top_meet * 1.1, label_width=230)
            + _table(groups, "persona"))


def _table(groups: Sequence[Mapping[str, Any]], by: str) -> str:
    if not groups:
        return "<p class=empty>Nothing yet.</p>"
    head = (by, "sent", "delivered", "replied", "reply %", "positive", "meetings",
            "per 100", "bounced", "unsub.", "calls", "connects")
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for g in groups:
        per100 = g["meetings_per_100_sent"]
        cells = (escape(g["key"]), g["sent"], g["delivered"], g["replied"],
                 _pct(g["reply_rate"]), g["positive"], g["meetings"],
                 "–" if per100 is None else f"{per100:.1f}", g["bounced"], g["unsubscribed"],
                 g["calls"], g["connects"])
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"
