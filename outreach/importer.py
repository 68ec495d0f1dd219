"""CSV -> prospects. Streams the file, validates each row, and writes in one transaction.

A row that cannot be used is rejected with its line number and reason; the rest still
import. A file that is not a prospect CSV at all is one error and writes nothing. Import
never touches suppressions or stages, and a blank cell never erases a value already known.
"""

from __future__ import annotations

import csv
import functools
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from json.encoder import encode_basestring  # type: ignore[attr-defined]  # the C encoder
from operator import itemgetter
from pathlib import Path
from typing import Any

from .app import App
from .columns import Layout, LayoutError, layout, sniff_delimiter
from .config import valid_timezone
from .errors import ImportFileError
from .models import EMAIL_RE, KNOWN_COLUMNS
from .plugins import has_impls

BATCH = 1000
FIELD_LIMIT = 16 * 1024 * 1024
# Columns that may be put in a header (To, Subject): a line break there is header injection.
_ONE_LINE = ("email", *KNOWN_COLUMNS)
_ONE_LINE_SET = frozenset(_ONE_LINE)
_EMAIL = EMAIL_RE.match
_BAND = re.compile(r"^(\d+)\s*(?:-|–|to)\s*\d+$|^(\d+)\s*\+$")


@dataclass
class ImportResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    mapped: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    empty_columns: list[str] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "rejected": self.rejected, "mapped": self.mapped, "ignored": self.ignored,
                "empty_columns": self.empty_columns, "duplicates": self.duplicates}


class RowError(ValueError):
    """Why one row was rejected."""


class RowParser:
    """Validates the records of one file; column positions are worked out once per file.

    A row is a list in the order of `columns` (email, the file's known columns, domain,
    custom as JSON): what the insert takes as it is, with no dict per row.
    """

    def __init__(self, names: list[str]) -> None:
        self.width = len(names)
        known = [(i, n) for i, n in enumerate(names) if n in KNOWN_COLUMNS and n != "domain"]
        at = {n: i for i, n in enumerate(names)}
        self.columns = ["email", *(n for _, n in known), "domain", "custom"]
        # Without a domain column the last cell read is the email again; it becomes its domain.
        self.has_domain = "domain" in at
        self.cells = _getter([at["email"], *(i for i, _ in known),
                              at.get("domain", at["email"])])
        slot = {n: i for i, n in enumerate(self.columns)}
        # Where the columns that need more than strip() are in a row (0: not in this file).
        self.at_employees = slot.get("employees", 0)
        self.at_last_activity = slot.get("last_activity", 0)
        self.at_timezone = slot.get("timezone", 0)
        self.at_country = slot.get("country", 0)
        self.one_line = [(i, n) for i, n in enumerate(names) if n in _ONE_LINE_SET]
        # Custom columns become a JSON object; keys are encoded once, values per row.
        self.custom = [(i, encode_basestring(n) + ": ") for i, n in enumerate(names)
                       if n and n not in _ONE_LINE_SET]
        self.never_filled = [(slot[n], n) for n in names if n in KNOWN_COLUMNS]

    def __call__(self, record: list[str], lines: int = 2) -> list[Any]:
        """One record -> a prospect row; raises RowError with the reason it cannot be used.
        `lines`: how many lines of the file it took (one: no cell holds a line break)."""
        if len(record) < self.width:
            record = record + [""] * (self.width - len(record))
        if lines > 1:  # rare: only then look at which column has the line break
            for i, key in self.one_line:
                if "\r" in record[i] or "\n" in record[i]:
                    raise RowError(f"{key} contains a line break (it could reach an email "
                                   "header)")
        row: list[Any] = [*map(str.strip, self.cells(record))]
        email = row[0]
        if not _EMAIL(email):
            raise RowError(f'invalid email "{email}"' if email else "missing email")
        row[0] = email.lower()
        at = self.at_employees
        if at:
            text = row[at]
            row[at] = int(text) if text.isdigit() else _employees(text)
        at = self.at_last_activity
        if at:
            row[at] = _iso_date(row[at]) if row[at] else None
        at = self.at_timezone
        if at and row[at] and not valid_timezone(row[at]):
            raise RowError(f'unknown timezone "{row[at]}" (use an IANA name like '
                           '"Europe/Berlin")')
        at = self.at_country
        if at:
            row[at] = row[at].upper()
        domain = row[-1] if self.has_domain else ""
        if not domain:
            row[-1] = email.rpartition("@")[2].lower()
        elif "/" in domain:
            row[-1] = _domain(domain)
        else:
            row[-1] = domain.lower().removeprefix("www.")
        custom = self.custom
        if len(custom) == 1:   # the usual case: one notes or pain-point column
            i, key = custom[0]
            row.append("{" + key + encode_basestring(record[i]) + "}" if record[i] else "{}")
        else:
            row.append("{" + ", ".join([key + encode_basestring(record[i])
                                        for i, key in custom if record[i]]) + "}")
        if self.never_filled:
            self.never_filled = [(i, n) for i, n in self.never_filled if not row[i]]
        return row


def _getter(positions: list[int]) -> Callable[[list[str]], Iterable[str]]:
    """The cells at `positions` (at least two) of a record, as one call."""
    return itemgetter(*positions)


def _employees(text: str) -> int | None:
    """`1,200` -> 1200; a size band as exports write it (`201-500`, `10,001+`) -> its lower end."""
    if text.isdigit():
        return int(text)
    if not text:
        return None
    raw = text.replace(",", "").replace("_", "").lower().removesuffix("employees").strip()
    if raw.isdigit():
        return int(raw)
    band = _BAND.match(raw)
    if band:
        return int(band.group(1) or band.group(2))
    raise RowError(f'employees "{text}" is not a whole number (or a band like "201-500")')


def _domain(url: str) -> str:
    """`https://www.Acme.example/about` (a Website column) -> `acme.example`."""
    text = url.lower()
    text = text.partition("//")[2] or text
    return text.partition("/")[0].removeprefix("www.")


@functools.lru_cache(maxsize=4096)  # a list repeats its dates
def _iso_date(text: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        raise RowError(f'last_activity "{text}" is not an ISO date (YYYY-MM-DD)') from None


class ProspectFile:
    """One prospect file being read: its layout (known once the header is read) and rows."""

    def __init__(self, path: Path, mapping: dict[str, str] | None = None) -> None:
        self.path = path
        self.mapping = mapping or {}
        self.layout: Layout | None = None
        self.parse: RowParser | None = None
        self.rejected: list[dict[str, Any]] = []   # {line, reason} of each unusable record
        self.line = 0    # where the row just yielded starts
        self.count = 0   # usable rows yielded so far

    def rows(self) -> Iterator[list[Any]]:
        """Yield each usable row (its line in `line`), noting unusable ones in `rejected`;
        raise for a file that is not a prospect CSV at all."""
        path = self.path
        try:
            handle = path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise ImportFileError(f"{path}: cannot open: {exc.strerror}") from None
        # A long notes column is a usable row; the csv module's 128 KiB default would reject
        # the whole file. Past 16 MiB a "field" is an unclosed quote, and the file is broken.
        csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
        with handle:
            try:
                first = handle.readline()
                skipped = 0
                if first.lower().startswith("sep=") and len(first.strip()) == 5:
                    delimiter, skipped = first.strip()[4], 1  # Excel's "sep=;" line
                else:
                    delimiter = sniff_delimiter(first)
                    handle.seek(0)
                reader = csv.reader(handle, delimiter=delimiter)
                parse = self._header(reader, skipped)
                width = parse.width
                end = reader.line_num + skipped
                try:
                    for record in reader:
                        start, end = end + 1, reader.line_num + skipped
                        if len(record) > width:
                            self.rejected.append({"line": start, "reason": (
                                f"{len(record)} fields but the header has {width} (an "
                                "unquoted comma?)")})
                        elif any(record):
                            try:
                                row = parse(record, end - start + 1)
                            except RowError as exc:
                                self.rejected.append({"line": start, "reason": str(exc)})
                                continue
                            self.line = start
                            self.count += 1
                            yield row
                except csv.Error as exc:
                    raise ImportFileError(f"{path} line {end + 1}: broken CSV ({exc}); fix the "
                                          "line and import again (nothing was imported)") from None
            except UnicodeDecodeError:
                raise ImportFileError(
                    f"{path} line {_first_undecodable_line(path)}: not UTF-8 text; save the "
                    "file as UTF-8 CSV and import again (nothing was imported)") from None

    def _header(self, reader: Any, skipped: int) -> RowParser:
        """Read the header row: the layout, and the parser for the rows under it."""
        path = self.path
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise ImportFileError(f"{path} line 1: not a CSV header ({exc})") from None
        if not header:
            raise ImportFileError(f"{path}: empty file; expected a header row with an email "
                                  "column")
        try:
            self.layout = layout(header, self.mapping)
        except LayoutError as exc:
            raise ImportFileError(f"{path} line {1 + skipped}: {exc}") from None
        names = self.layout.names
        if "email" not in names:
            raise ImportFileError(
                f"{path} line {1 + skipped}: no email column (found: "
                f"{', '.join(h.strip() for h in header)}). Add a header row whose columns "
                'include email, or name it: --map "HEADER=email".'
            )
        self.parse = RowParser(names)
        return self.parse

    def empty_columns(self) -> list[str]:
        """Known columns the file has but never fills (an export that left them out)."""
        return [n for _, n in self.parse.never_filled] if self.parse else []


DUPLICATES_SHOWN = 10


def report_lines(result: ImportResult) -> list[str]:
    """What `import` tells the user besides the counts: how columns were read, rejected rows,
    known columns left empty, and addresses the file lists twice."""
    lines = []
    if result.mapped:
        lines.append("  read " + ", ".join(f'"{h}" as {c}' for h, c in result.mapped.items()))
    for header, column in result.ignored.items():
        lines.append(f'  not imported: "{header}" (another column is read as {column})')
    lines += [f"  line {r['line']}: {r['reason']}" for r in result.rejected]
    for column in result.empty_columns:
        lines.append(f"  warning: column {column} is empty in every row (did the export "
                     "leave it out?)")
    for dup in result.duplicates[:DUPLICATES_SHOWN]:
        lines.append(f"  note: line {dup['line']}: {dup['email']} is also on line "
                     f"{dup['first_line']}; line {dup['line']} wins where it has a value")
    if len(result.duplicates) > DUPLICATES_SHOWN:
        lines.append(f"  note: {len(result.duplicates) - DUPLICATES_SHOWN} more addresses "
                     "listed twice (--json lists them all)")
    return lines


def _first_undecodable_line(path: Path) -> int:
    """Only on the error path: find which line is not UTF-8, for the message."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def import_csv(app: App, path: Path, mapping: dict[str, str] | None = None) -> ImportResult:
    """Import a prospect CSV into the store; all-or-nothing for file-level errors."""
    result = ImportResult()
    source = ProspectFile(path, mapping)
    repeats = Repeats(result)

    def firsts() -> Iterator[list[Any]]:
        """Each address's first usable row (the later ones go to `repeats`)."""
        for row in source.rows():
            if repeats.first(source.line, row):
                yield row

    changed: list[str] | None = [] if has_impls(app.pm, "prospect_imported") else None
    now = app.now()
    with app.store.transaction():
        # An empty store (a first import) has nothing to compare: the rows stream straight
        # into one insert that skips an address already in (repeats are rare, so only then is
        # the file read again to find them), and the domain index is built once at the end.
        fresh = app.store.count_prospects() == 0
        rows = source.rows() if fresh else firsts()
        first = next(rows, None)   # reads the header too
        if first is not None:
            assert source.parse is not None
            columns = source.parse.columns
            if fresh:
                with app.store.loading_prospects():
                    app.store.insert_prospect_rows(columns, itertools.chain([first], rows),
                                                   at=now, skip_known=True)
                result.added = app.store.count_prospects()
                if result.added < source.count:
                    again = ProspectFile(path, mapping)
                    for row in again.rows():
                        repeats.first(again.line, row)
                if changed is not None:
                    changed.extend(app.store.prospect_emails_in_order())
            else:
                for batch in _batches(itertools.chain([first], rows), BATCH):
                    _write(app, columns, batch, result, changed, now)
            for row in repeats.later:   # in file order: a later row wins where it has a value
                _write(app, columns, [row], result, changed, now)
    result.rejected = source.rejected
    if source.layout is not None:
        result.mapped = dict(source.layout.renamed)
        result.ignored = dict(source.layout.ignored)
    if source.count:
        result.empty_columns = source.empty_columns()
    for email in dict.fromkeys(changed or ()):
        prospect = app.store.prospect(email)
        if prospect is not None:
            app.fire("prospect_imported", prospect=prospect)
    return result


class Repeats:
    """Addresses a file lists more than once: the first row of each goes in with the rest,
    the later ones are kept (`later`) to merge afterwards and noted in the result."""

    def __init__(self, result: ImportResult) -> None:
        self.result = result
        self.first_line: dict[str, int] = {}
        self.later: list[list[Any]] = []

    def first(self, line: int, row: list[Any]) -> bool:
        """True for an address's first row; a repeat is noted and kept for later."""
        seen = self.first_line.setdefault(row[0], line)
        if seen == line:
            return True
        self.result.duplicates.append({"email": row[0], "line": line, "first_line": seen})
        self.later.append(row)
        return False


def _batches(rows: Iterator[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    while batch := list(itertools.islice(rows, size)):
        yield batch


def _write(app: App, columns: list[str], batch: Sequence[list[Any]], result: ImportResult,
           changed: list[str] | None, now: datetime) -> None:
    """Write rows whose addresses may be known: new ones inserted, known ones merged."""
    existing = app.store.prospects_by_email([r[0] for r in batch])
    inserts, updates = [], []
    for row in batch:
        old = existing.get(row[0])
        if old is None:
            inserts.append(row)
            continue
        merged = _merge(old, dict(zip(columns, row, strict=True)))
        if merged is None:
            result.unchanged += 1
        else:
            updates.append(merged)
    app.store.insert_prospect_rows(columns, inserts, at=now)
    app.store.update_prospects(updates, at=now)
    result.added += len(inserts)
    result.updated += len(updates)
    if changed is not None:
        changed.extend(r[0] for r in inserts)
        changed.extend(r["email"] for r in updates)


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
    for key, value in json.loads(row["custom"]).items():
        if custom.get(key) != value:
            custom[key] = value
            changed = True
    merged["custom"] = json.dumps(custom, ensure_ascii=False)
    return merged if changed else None
