"""What every part of the store shares: the engine and the suppression test in SQL."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from types import MappingProxyType
from typing import Any

from ..models import Prospect
from .engine import Engine, Record

OPEN_STATES = ("active", "paused")


def domain_of(email: str) -> str:
    return email.rpartition("@")[2].lower()


def suppression_targets(email: str) -> list[str]:
    """The suppression entries that would cover `email`: itself, its domain, parent domains."""
    email = email.strip().lower()
    domain = domain_of(email)
    targets = [email, "@" + domain]
    while "." in domain:
        domain = domain.partition(".")[2]
        targets.append("@" + domain)
    return targets


def suppressed_sql(position: str) -> str:
    """Is prospect `p` suppressed? An "@domain" also covers every subdomain: the SQL walks the
    address's domain up to its last label (a recursive CTE: each level once, indexed lookups),
    and `suppression_targets` lists the same entries in Python."""
    return (
        "EXISTS (WITH RECURSIVE d(x) AS ("
        f"SELECT substr(p.email, {position}(p.email, '@') + 1) "
        f"UNION ALL SELECT substr(x, {position}(x, '.') + 1) FROM d WHERE {position}(x, '.') > 0) "
        "SELECT 1 FROM suppressions s WHERE s.target IN (SELECT p.email UNION ALL "
        "SELECT '@' || x FROM d))"
    )


class Part:
    """A concern of the store, written once for both engines against `self.db`."""

    db: Engine

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.suppressed = suppressed_sql(db.position)
        self.prospect_select = f"SELECT p.*, {self.suppressed} AS suppressed FROM prospects p"

    def one(self, sql: str, args: Sequence[Any] = ()) -> Record | None:
        rows = self.db.records(sql, args)
        return rows[0] if rows else None

    def value(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = self.db.execute(sql, args).fetchall()   # all: a RETURNING statement completes
        return rows[0][0] if rows else None


def like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def to_prospect(row: dict[str, Any]) -> Prospect:
    last = row["last_activity"]
    return Prospect(
        id=row["id"],
        email=row["email"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        title=row["title"],
        company=row["company"],
        domain=row["domain"],
        industry=row["industry"],
        employees=row["employees"],
        country=row["country"],
        timezone=row["timezone"],
        phone=row["phone"],
        last_activity=date.fromisoformat(last) if last else None,
        stage=row["stage"],
        suppressed=bool(row.get("suppressed")),
        referrer_id=row["referrer_id"],
        phone_bad=bool(row["phone_bad"]),
        owner=row.get("owner"),
        custom=MappingProxyType(json.loads(row["custom"])),
    )
