"""Pure: is it safe to keep sending? The deliverability guard's decision.

Mailbox providers throttle or block senders whose bounce rate passes ~2% or whose complaint or
unsubscribe rate passes ~0.3%. The guard looks at the last 7 days and judges only once enough
messages were sent (`guard_min_sent`), so three bounces out of ten do not stop a new campaign.
Spam complaints (feedback-loop reports read by `poll`) follow Gmail's and Yahoo's 2024
bulk-sender rules: a warning above 0.1% of recent sends, a stop above 0.3%.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .errors import OutreachError

WINDOW = timedelta(days=7)
COMPLAINT_WARN_RATE = 0.001
COMPLAINT_STOP_RATE = 0.003


class DeliverabilityError(OutreachError):
    """The bounce, unsubscribe or complaint rate of the last 7 days is above its limit."""


@dataclass(frozen=True)
class Health:
    sent: int
    bounced: int
    unsubscribed: int
    max_bounce_rate: float
    max_unsubscribe_rate: float
    min_sent: int
    problems: tuple[str, ...] = field(default=())
    complained: int = 0
    warnings: tuple[str, ...] = field(default=())  # worth knowing, not worth stopping for

    @property
    def judged(self) -> bool:
        return self.sent >= self.min_sent

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bounce_rate(self) -> float:
        return self.bounced / self.sent if self.sent else 0.0

    @property
    def unsubscribe_rate(self) -> float:
        return self.unsubscribed / self.sent if self.sent else 0.0

    @property
    def complaint_rate(self) -> float:
        return self.complained / self.sent if self.sent else 0.0

    def summary(self) -> str:
        """One line for `outreach check`."""
        rates = (f"bounce rate {pct(self.bounce_rate)} ({self.bounced}/{self.sent}), "
                 f"unsubscribe rate {pct(self.unsubscribe_rate)} "
                 f"({self.unsubscribed}/{self.sent}), complaint rate "
                 f"{pct(self.complaint_rate, 2)} ({self.complained}/{self.sent}) over the last "
                 "7 days")
        if not self.judged:
            return (f"deliverability: not judged yet, {self.sent} of the {self.min_sent} sends "
                    f"needed; {rates}")
        return f"deliverability: {'OK' if self.ok else 'AT RISK'}, {rates}"

    def as_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "bounced": self.bounced, "unsubscribed": self.unsubscribed,
                "bounce_rate": round(self.bounce_rate, 4),
                "unsubscribe_rate": round(self.unsubscribe_rate, 4),
                "complained": self.complained,
                "complaint_rate": round(self.complaint_rate, 5),
                "max_bounce_rate": self.max_bounce_rate,
                "max_unsubscribe_rate": self.max_unsubscribe_rate,
                "warn_complaint_rate": COMPLAINT_WARN_RATE,
                "max_complaint_rate": COMPLAINT_STOP_RATE,
                "min_sent": self.min_sent, "judged": self.judged, "ok": self.ok,
                "problems": list(self.problems), "warnings": list(self.warnings)}


def pct(rate: float, digits: int = 1) -> str:
    return f"{rate * 100:.{digits}f}%"


def assess(*, sent: int, bounced: int, unsubscribed: int, max_bounce_rate: float,
           max_unsubscribe_rate: float, min_sent: int, complained: int = 0) -> Health:
    """Judge 7 days of counts against the limits; each problem says the rate, its value and
    what to do."""
    health = Health(sent, bounced, unsubscribed, max_bounce_rate, max_unsubscribe_rate, min_sent,
                    complained=complained)
    if not health.judged:
        return health
    problems, warnings = [], []
    if health.bounce_rate > max_bounce_rate:
        problems.append(
            f"bounce rate {pct(health.bounce_rate)} ({bounced} of {sent} sent in the last 7 "
            f"days) is above the {pct(max_bounce_rate)} limit: clean the list (verify addresses, "
            "drop old or guessed ones) and lower daily_limit before sending more"
        )
    if health.unsubscribe_rate > max_unsubscribe_rate:
        problems.append(
            f"unsubscribe rate {pct(health.unsubscribe_rate)} ({unsubscribed} of {sent} sent in "
            f"the last 7 days) is above the {pct(max_unsubscribe_rate)} limit: tighten the ICP "
            "and the message so it fits who receives it, and slow down (lower daily_limit)"
        )
    complaints = (f"spam-complaint rate {pct(health.complaint_rate, 2)} ({complained} of {sent} "
                  "sent in the last 7 days) is above the {} {}: ")
    if health.complaint_rate > COMPLAINT_STOP_RATE:
        problems.append(complaints.format(pct(COMPLAINT_STOP_RATE), "limit") +
                        "mailbox providers block senders past it; send only to people who "
                        "expect your email, and stop until the rate falls")
    elif health.complaint_rate > COMPLAINT_WARN_RATE:
        warnings.append(complaints.format(pct(COMPLAINT_WARN_RATE), "warning level") +
                        "sending stops at 0.3%; tighten the ICP and lower daily_limit")
    return Health(sent, bounced, unsubscribed, max_bounce_rate, max_unsubscribe_rate, min_sent,
                  tuple(problems), complained, tuple(warnings))


def health(app: Any, *, now: datetime | None = None) -> Health:
    """The last 7 days of `app`'s store judged against its [sending] limits."""
    now = now or app.now()
    counts = app.store.sending_health(since=now - WINDOW)
    sending = app.config.sending
    return assess(sent=counts["sent"], bounced=counts["bounced"],
                  unsubscribed=counts["unsubscribed"], complained=counts["complained"],
                  max_bounce_rate=sending.max_bounce_rate,
                  max_unsubscribe_rate=sending.max_unsubscribe_rate,
                  min_sent=sending.guard_min_sent)


def check_before_send(app: Any, *, force: bool = False) -> Health:
    """Raise DeliverabilityError when a limit is crossed, unless `force`; call before sending."""
    result = health(app)
    if result.problems and not force:
        raise DeliverabilityError(
            "; and ".join(result.problems)
            + ". The deliverability guard sent nothing; `outreach send --force` sends anyway."
        )
    return result
