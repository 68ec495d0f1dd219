"""CSV -> prospects. Streams the file, validates each row, and writes in one transaction.

A row that cannot be used is rejected with its line number and reason; the rest still
import. A file that is not a prospect CSV at all is one error and writes nothing. Import
never touches suppressions or stages, and a blank cell never erases a value already known.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from .app import App
from .config import valid_timezone
from .errors import ImportFileError
from .models import KNOWN_COLUMNS, is_email
from .plugins import has_impls

BATCH = 1000
FIELD_LIMIT = 16 * 1024 * 1024
_COLUMN = re.compile(r"[^0-9a-z]+")
# Columns that may be put in a header (To, Subject): a line break there is header injection.
_ONE_LINE = ("email", *KNOWN_COLUMNS)
_ONE_LINE_SET = frozenset(_ONE_LINE)


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "rejected": self.rejected}


class RowError(ValueError):
    """Why one row was rejected."""


def column_name(header: str) -> str:
    """`First Name` -> `first_name`: known columns match loosely, custom ones become
    identifiers a template can reach (`prospect.pain_point`)."""
    return _COLUMN.sub("_", header.strip().lower()).strip("_")


class RowParser:
    """Validates the records of one file; column positions are worked out once per file."""

    def __init__(self, names: list[str]) -> None:
        self.width = len(names)
        self.email_at = names.index("email")
        self.known = [(i, n) for i, n in enumerate(names) if n in KNOWN_COLUMNS]
        self.one_line = [(i, n) for i, n in enumerate(names) if n in _ONE_LINE_SET]
        self.custom = [(i, n) for i, n in enumerate(names) if n and n not in _ONE_LINE_SET]

    def __call__(self, record: list[str]) -> dict[str, Any]:
        """One record -> a prospect row; raises RowError with the reason it cannot be used."""
        if len(record) < self.width:
            record = record + [""] * (self.width - len(record))
        joined = "".join(record)
        if "\n" in joined or "\r" in joined:  # rare: only then look at which column has it
            for i, key in self.one_line:
                if "\r" in record[i] or "\n" in record[i]:
                    raise RowError(f"{key} contains a line break (it could reach an email "
                                   "header)")
        email = record[self.email_at].strip()
        if not email:
            raise RowError("missing email")
        if not is_email(email):
            raise RowError(f'invalid email "{email}"')
        row: dict[str, Any] = {"email": email.lower()}
        for i, key in self.known:
            row[key] = record[i].strip()
        if row.get("employees"):
            raw = row["employees"].replace(",", "").replace("_", "")
            if not raw.isdigit():
                raise RowError(f'employees "{row["employees"]}" is not a whole number')
            row["employees"] = int(raw)
        elif "employees" in row:
            row["employees"] = None
        if row.get("last_activity"):
            row["last_activity"] = _iso_date(row["last_activity"])
        elif "last_activity" in row:
            row["last_activity"] = None
        if row.get("timezone") and not valid_timezone(row["timezone"]):
            raise RowError(f'unknown timezone "{row["timezone"]}" (use an IANA name like '
                           '"Europe/Berlin")')
        if row.get("domain"):
            row["domain"] = row["domain"].lower().removeprefix("www.")
        else:
            row["domain"] = email.rpartition("@")[2].lower()
        if "country" in row:
            row["country"] = row["country"].upper()
        row["custom"] = {n: record[i] for i, n in self.custom if record[i]}
        return row


def _iso_date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        raise RowError(f'last_activity "{text}" is not an ISO date (YYYY-MM-DD)') from None


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    """Yield (line number, prospect row or why not) per record; raise for a non-CSV file."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open: {exc.strerror}") from None
    # A long notes column is a usable row; the csv module's 128 KiB default would reject
    # the whole file. Past 16 MiB a "field" is an unclosed quote, and the file is broken.
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    with handle:
        try:
            yield from _records(path, csv.reader(handle))
        except UnicodeDecodeError:
            raise ImportFileError(
                f"{path} line {_first_undecodable_line(path)}: not UTF-8 text; save the file as "
                "UTF-8 CSV and import again (nothing was imported)") from None


def _records(path: Path, reader: Any) -> Iterator[tuple[int, dict[str, Any] | RowError]]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportFileError(f"{path} line 1: not a CSV header ({exc})") from None
    if not header:
        raise ImportFileError(f"{path}: empty file; expected a header row with an email column")
    names = [column_name(h) for h in header]
    if "email" not in names:
        raise ImportFileError(
            f"{path} line 1: no email column (found: {', '.join(h.strip() for h in header)}). "
            "Add a header row whose columns include email."
        )
    duplicates = {n for n in names if names.count(n) > 1 and n}
    if duplicates:
        raise ImportFileError(f"{path} line 1: duplicate column {sorted(duplicates)[0]}; "
                              "each column may appear once")
    parse = RowParser(names)
    end = reader.line_num
    while True:
        start = end + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileError(f"{path} line {start}: broken CSV ({exc}); fix the line "
                                  "and import again (nothing was imported)") from None
        end = reader.line_num
        if not any(record):
            continue
        if len(record) > len(names):
            yield start, RowError(f"{len(record)} fields but the header has {len(names)} "
                                  "(an unquoted comma?)")
            continue
        try:
            yield start, parse(record)
        except RowError as exc:
            yield start, exc


def _first_undecodable_line(path: Path) -> int:
    """Only on the error path: find which line is not UTF-8, for the message."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def import_csv(app: App, path: Path) -> ImportResult:
    """Import a prospect CSV into the store; all-or-nothing for file-level errors."""
    result = ImportResult()
    changed: list[str] = []
    notify = has_impls(app.pm, "prospect_imported")
    now = app.now()
    with app.store.transaction():
        batch: dict[str, dict[str, Any]] = {}
        for line, row in read_rows(path):
            if isinstance(row, RowError):
                result.rejected.append({"line": line, "reason": str(row)})
                continue
            if row["email"] in batch or len(batch) >= BATCH:
                _flush(app, batch, result, changed if notify else None, now)
            batch[row["email"]] = row
        _flush(app, batch, result, changed if notify else None, now)
    for email in changed:
        prospect = app.store.prospect(email)
        if prospect is not None:
            app.fire("prospect_imported", prospect=prospect)
    return result


def _flush(app: App, batch: dict[str, dict[str, Any]], result: ImportResult,
           changed: list[str] | None, now: datetime) -> None:
    if not batch:
        return
    existing = app.store.prospects_by_email(list(batch))
    inserts, updates = [], []
    for email, row in batch.items():
        old = existing.get(email)
        if old is None:
            row["custom"] = json.dumps(row["custom"], ensure_ascii=False)
            inserts.append(row)
            continue
        merged = _merge(old, row)
        if merged is None:
            result.unchanged += 1
        else:
            updates.append(merged)
    app.store.insert_prospects(inserts, at=now)
    app.store.update_prospects(updates, at=now)
    result.added += len(inserts)
    result.updated += len(updates)
    if changed is not None:
        changed.extend(r["email"] for r in inserts)
        changed.extend(r["email"] for r in updates)
    batch.clear()


def _merge(old: Any, row: dict[str, Any]) -> dict[str, Any] | None:
    """The updated row, or None when the file adds nothing new. Blank cells keep old values."""
    merged: dict[str, Any] = {"email": row["email"]}
    changed = False
    for key in KNOWN_COLUMNS:
        new = row.get(key)
        if new in (None, ""):
            merged[key] = old[key]
        else:
            merged[key] = new
            changed = changed or new != old[key]
    custom = json.loads(old["custom"])
    for key, value in row["custom"].items():
        if custom.get(key) != value:
            custom[key] = value
            changed = True
    merged["custom"] = json.dumps(custom, ensure_ascii=False)
    return merged if changed else None
