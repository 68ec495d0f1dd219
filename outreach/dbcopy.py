"""`outreach db copy`: move a campaign's database into another (a solo SQLite file into the
team's PostgreSQL) without loss: every table, the ledger, the timeline; counts verified.

Into an empty target the rows keep their ids. With `merge` the target's rows stay as they are:
a source row whose natural key the target already holds (a prospect's email, a message's
Message-ID, ...) is mapped onto it, never duplicated; the others get ids after the target's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import OutreachError
from .store import Store


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]                     # what makes a row the same row in another db
    refs: Mapping[str, str] = field(default_factory=dict)   # column -> table its ids are from
    has_id: bool = True


# In dependency order. A table outreach writes that is missing here makes the copy refuse.
TABLES = (
    Table("prospects", ("email",), {"referrer_id": "prospects"}),
    Table("suppressions", ("target",), has_id=False),
    Table("enrollments", ("prospect_id", "sequence", "started_at"), {"prospect_id": "prospects"}),
    Table("messages", ("message_id",), {"enrollment_id": "enrollments"}),
    Table("call_tasks", ("enrollment_id", "step"),
          {"enrollment_id": "enrollments", "prospect_id": "prospects"}),
    Table("stage_history", ("prospect_id", "new", "cause", "at"), {"prospect_id": "prospects"}),
    Table("events", ("prospect_id", "enrollment_id", "kind", "at", "detail"),
          {"prospect_id": "prospects", "enrollment_id": "enrollments"}),
    Table("inbound", ("source", "key"), {"prospect_id": "prospects"}),
    Table("mailbox_state", ("source",), has_id=False),
)
# Kept by each database: its own schema version and the leases of running processes. The
# unsubscribe key is copied into an empty target (mail already sent carries tokens made with it).
NOT_COPIED = {"locks", "schema_version", "secrets", "sqlite_sequence"}
SECRET = "unsubscribe"


@dataclass
class CopyResult:
    source: str
    target: str
    merge: bool
    tables: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "merge": self.merge,
                "tables": self.tables, "notes": self.notes}


class _Copy:
    def __init__(self, source: Store, target: Store, merge: bool) -> None:
        self.source, self.target, self.merge = source, target, merge
        self.ids: dict[str, dict[int, int]] = {}   # table -> source id -> target id

    def table(self, spec: Table) -> dict[str, Any]:
        """Copy one table; its counts, checked against the target."""
        rows = self.source.db.records(f"SELECT * FROM {spec.name}"
                                      + (" ORDER BY id" if spec.has_id else ""))
        before = self.count(spec.name)
        existing = self.existing(spec) if self.merge else {}
        offset = self.offset(spec) if self.merge else 0
        ids = self.ids.setdefault(spec.name, {})
        open_prospects = self.open_prospects() if spec.name == "enrollments" else set()
        new: list[dict[str, Any]] = []
        keys: list[tuple[Any, ...]] = []
        stopped = 0
        for row in rows:
            row = self.remap(spec, row)
            key = tuple(row[k] for k in spec.key)
            keys.append(key)
            if key in existing:   # the target has it: map onto it, never a second copy
                if spec.has_id:
                    ids[row["id"]] = existing[key]
                continue
            if spec.has_id:
                ids[row["id"]] = row["id"] = row["id"] + offset
            if spec.name == "enrollments" and row["state"] in ("active", "paused"):
                if row["prospect_id"] in open_prospects:   # the team works them already
                    row.update(state="stopped", ended_at=row["started_at"], paused_until=None,
                               end_reason="merged: already in a sequence in the team database")
                    stopped += 1
                open_prospects.add(row["prospect_id"])
            new.append(row)
        self.insert(spec, new)
        after = self.count(spec.name)
        present = self.existing(spec)
        lost = sum(1 for k in keys if k not in present)
        if after != before + len(new) or lost:
            raise OutreachError(f"{spec.name}: {after - before} rows arrived of {len(new)} sent, "
                                f"{lost} missing; nothing was copied (rolled back)")
        out = {"table": spec.name, "source": len(rows), "copied": len(new),
               "already_there": len(rows) - len(new), "target_before": before,
               "target_after": after}
        if stopped:
            out["stopped"] = stopped
        return out

    def remap(self, spec: Table, row: dict[str, Any]) -> dict[str, Any]:
        for column, table in spec.refs.items():
            value = row.get(column)
            if value is not None and table != spec.name:
                row[column] = self.ids[table][value]
        return row

    def existing(self, spec: Table) -> dict[tuple[Any, ...], int]:
        cols = ", ".join(spec.key) + (", id" if spec.has_id else ", 0")
        return {tuple(r[:-1]): r[-1] for r in self.target.db.execute(
            f"SELECT {cols} FROM {spec.name}").fetchall()}

    def offset(self, spec: Table) -> int:
        if not spec.has_id:
            return 0
        return int(self.target.value(f"SELECT coalesce(max(id), 0) FROM {spec.name}"))

    def count(self, table: str) -> int:
        return int(self.target.value(f"SELECT count(*) FROM {table}"))

    def open_prospects(self) -> set[int]:
        return {r[0] for r in self.target.db.execute(
            "SELECT prospect_id FROM enrollments WHERE state IN ('active', 'paused')")}

    def insert(self, spec: Table, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        cols = list(rows[0])
        self_refs = [c for c, t in spec.refs.items() if t == spec.name]
        values = [[None if c in self_refs else r[c] for c in cols] for r in rows]
        self.target.db.executemany(
            f"INSERT INTO {spec.name} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
            values)
        for column in self_refs:   # a referrer may come later in id order: set afterwards
            table_ids = self.ids[spec.name]
            self.target.db.executemany(
                f"UPDATE {spec.name} SET {column} = ? WHERE id = ?",
                [(table_ids[r[column]], r["id"]) for r in rows if r[column] is not None])
        if spec.has_id:
            self.target.db.reset_ids(spec.name)


def copy_store(source: Store, target: Store, *, merge: bool = False) -> CopyResult:
    """Copy every row of `source` into `target` in one transaction, verified table by table;
    refuses a target that holds data unless `merge`."""
    known = {t.name for t in TABLES} | NOT_COPIED
    unknown = sorted(t for t in source.db.tables() if t not in known
                     and source.value(f"SELECT count(*) FROM {t}"))
    if unknown:
        raise OutreachError(f"{source.where}: table(s) {', '.join(unknown)} are not known to "
                            "`db copy`; upgrade outreach (nothing was copied)")
    result = CopyResult(source=source.where, target=target.where, merge=merge)
    if not merge:
        full = [t.name for t in TABLES if target.value(f"SELECT count(*) FROM {t.name}")]
        if full:
            raise OutreachError(
                f"{target.where}: not empty ({', '.join(full)} hold rows); copy into a new "
                "database, or pass --merge to add this campaign to it (nothing was copied)")
    copy = _Copy(source, target, merge)
    with target.transaction():
        for spec in TABLES:
            try:
                result.tables.append(copy.table(spec))
            except target.db.IntegrityError as exc:
                raise OutreachError(
                    f"{target.where}: {spec.name}: a row conflicts with one already there "
                    f"({str(exc).splitlines()[0]}); nothing was copied") from None
        result.notes.extend(_secrets(source, target, merge, copy.ids.get("messages", {})))
    return result


def _secrets(source: Store, target: Store, merge: bool, message_ids: Mapping[int, int]
             ) -> list[str]:
    """Into an empty target the source's unsubscribe key (and its legacy mark) go along, so
    the tokens in mail already sent keep working. A merge keeps the team's key."""
    rows = dict(source.db.execute("SELECT name, value FROM secrets").fetchall())
    if merge:
        if rows.get(SECRET) != target.value("SELECT value FROM secrets WHERE name = ?",
                                             (SECRET,)):
            return ["the team database keeps its own unsubscribe key: unsubscribe replies to "
                    "mail sent before the merge are matched by their sender's address"]
        return []
    legacy = "unsubscribe_legacy_until_message"
    if legacy in rows:
        rows[legacy] = str(message_ids.get(int(rows[legacy]), int(rows[legacy])))
    target.db.execute("DELETE FROM secrets")
    target.db.executemany("INSERT INTO secrets (name, value) VALUES (?, ?)", list(rows.items()))
    return []

