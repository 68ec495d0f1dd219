"""Team and mailbox decisions, pure: who a rep may enroll, how many emails one company may
get from the team today, and which of a rep's mailboxes sends which message.

`send` reads the counts from the store and hands them here; nothing here does I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import TypeVar

from .config import Mailbox

T = TypeVar("T")

# Why a due message waits for a mailbox (the `deferred_by` keys of `outreach send --json`).
NO_MAILBOX = "mailbox_removed"     # its prospect sticks to a mailbox no longer configured
MAILBOX_LIMIT = "mailbox_limit"    # its mailbox(es) reached their daily limit or ramp


def other_rep(owner: str | None, open_rep: str | None, rep: str) -> bool:
    """Whether another rep owns this prospect or is working it (an open enrollment)."""
    return bool(owner and owner != rep) or bool(open_rep and open_rep != rep)


def ramp_limit(box: Mailbox, *, first_used: date | None, today: date) -> int:
    """The mailbox's limit today: `ramp_start` on its first sending day, `ramp_step` more
    each day after, never above `daily_limit`. No ramp: the daily limit."""
    if box.ramp_start is None:
        return box.daily_limit
    days = 0 if first_used is None else max((today - first_used).days, 0)
    return min(box.daily_limit, box.ramp_start + box.ramp_step * days)


def domain_cap(items: Sequence[T], domain: Callable[[T], str], *, sent_today: Mapping[str, int],
               cap: int) -> tuple[list[T], Counter[str]]:
    """Keep items, in order, while their company (email domain) has had fewer than `cap`
    emails from the team today; returns those kept and {domain: held back}."""
    counts = Counter(sent_today)
    kept: list[T] = []
    held: Counter[str] = Counter()
    for item in items:
        d = domain(item)
        if counts[d] >= cap:
            held[d] += 1
            continue
        counts[d] += 1
        kept.append(item)
    return kept, held


def assign_mailboxes(items: Sequence[T], *, mailboxes: Sequence[str],
                     sticky: Callable[[T], str | None], room: Mapping[str, int], total: int,
                     is_open: Callable[[T, str], bool]
                     ) -> tuple[list[tuple[T, str]], list[tuple[T, str]], list[T]]:
    """Give each item (oldest due first) a mailbox: the one its prospect sticks to, else the
    open mailbox with the most room left today (so a day's mail spreads over them all), up
    to `total` items. Returns (item, mailbox) pairs, (item, reason) pairs of those no mailbox
    could take (NO_MAILBOX, MAILBOX_LIMIT), and the items left over past `total`."""
    left = dict(room)
    order = {m: i for i, m in enumerate(mailboxes)}
    chosen: list[tuple[T, str]] = []
    waiting: list[tuple[T, str]] = []
    for n, item in enumerate(items):
        if len(chosen) >= total:
            return chosen, waiting, list(items[n:])
        own = sticky(item)
        if own is not None and own not in order:
            waiting.append((item, NO_MAILBOX))
            continue
        candidates = [own] if own is not None else list(mailboxes)
        usable = [m for m in candidates if left.get(m, 0) > 0 and is_open(item, m)]
        if not usable:
            waiting.append((item, MAILBOX_LIMIT))
            continue
        box = max(usable, key=lambda m: (left[m], -order[m]))
        left[box] -= 1
        chosen.append((item, box))
    return chosen, waiting, []
