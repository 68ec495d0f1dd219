"""`outreach poll`: read new mail once, match it to a prospect, classify it and act.

A bounce suppresses (hard) or counts toward suppression (soft); an auto-reply pauses the
sequence until the sender is back; an unsubscribe suppresses for good; a reply stops the
sequence and makes a lead, and the people it names at the same company become referral
prospects. Each message is recorded once handled (and recognised by its Message-ID), and the
actions themselves are idempotent: suppressing, ending a sequence or moving a stage twice
changes nothing twice.
"""

from __future__ import annotations

import gc
import json
import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .app import App
from .clock import iso
from .config import valid_timezone
from .inbox import Inbound, Source, open_source
from .models import is_email, moved
from .plugins import first_result, has_impls
from .store import domain_of

if TYPE_CHECKING:
    from email.message import EmailMessage, Message

    from . import classify
    from .models import Prospect

AUTO_REPLY_PAUSE_DAYS = 3
SOFT_BOUNCE_LIMIT = 3
_PARSER: Any = None
_BUILTIN_CLASSIFIER = "outreach.default_plugins.classifier"
_MSGID = re.compile(r"<[^<>\s]+>")
_TOKEN = re.compile(r"\bunsubscribe\s+([0-9a-fA-F]{16})\b", re.IGNORECASE)


@dataclass
class PollResult:
    processed: int = 0
    replies: int = 0
    auto_replies: int = 0
    bounces: int = 0
    unsubscribes: int = 0
    referrals: int = 0
    complaints: int = 0
    other: int = 0  # machine mail that is no reply (mailing lists, challenge-response ...)
    unmatched: int = 0
    duplicates: int = 0
    malformed: list[dict[str, str]] = field(default_factory=list)
    # Every message handled: kind, addresses, matched prospect, action, why (poll --json).
    messages: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed, "replies": self.replies,
            "auto_replies": self.auto_replies, "bounces": self.bounces,
            "unsubscribes": self.unsubscribes, "referrals": self.referrals,
            "complaints": self.complaints, "other": self.other,
            "unmatched": self.unmatched, "duplicates": self.duplicates,
            "malformed": self.malformed, "messages": self.messages,
        }

    def add(self, other: PollResult) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.malformed.extend(other.malformed)
        self.messages.extend(other.messages)

    def note(self, inbound: Inbound, message_id: str | None, kind: str, action: str,
             why: str, *, addresses: list[str] | None = None,
             prospects: list[str] | None = None) -> None:
        """One entry of the audit trail `poll --json` prints."""
        self.messages.append({"key": f"{inbound.source} {inbound.key}",
                              "message_id": message_id, "kind": kind,
                              "addresses": addresses or [], "prospects": prospects or [],
                              "action": action, "why": why})


_COUNTS = ("processed", "replies", "auto_replies", "bounces", "unsubscribes", "referrals",
           "complaints", "other", "unmatched", "duplicates")


@contextmanager
def poll_lock(app: App) -> Iterator[None]:
    """One `poll` or `watch` per database at a time: two would race on the same messages.
    Released however the process ends, and no database write (so a pass with nothing new
    writes nothing at all)."""
    with app.store.exclusive("poll", f"{app.store.where}: another `outreach poll` or "
                             "`outreach watch` is running on it; let it finish (or stop it), "
                             "then run again."):
        yield


def context_for(app: App) -> classify.Context:
    """Our addresses and the footer we send, so quoted copies of it are not read as new."""
    from . import classify

    cfg = app.config
    try:
        footer = _footer_text(cfg.compliance.footer.read_text(encoding="utf-8"), {
            "sender": cfg.sender, "unsubscribe_mailto": cfg.compliance.unsubscribe_mailto,
            "unsubscribe_url": cfg.compliance.unsubscribe_url})
    except OSError:  # checked by config loading; a footer gone since: match nothing
        footer = ""
    return classify.Context.make(
        own=(cfg.sender.email, *(a for box in cfg.mailboxes   # every mailbox of this rep
                                  for a in (box.email, box.imap.username, box.smtp.username))),
        unsubscribe=cfg.compliance.unsubscribe_mailto, footer=footer,
        today=app.now().astimezone(app.sender_zone).date())


@dataclass
class _Pass:
    """What one poll pass builds once and shares across its messages."""

    context: classify.Context
    domains: dict[str, list[int]]
    pending: list[tuple[Any, ...]] = field(default_factory=list)  # inbound rows to write
    ids: set[str] = field(default_factory=set)  # Message-IDs recorded in this pass
    ledger: dict[str, Any] = field(default_factory=dict)  # the batch's references we sent
    senders: set[str] = field(default_factory=set)  # the batch's senders who are prospects
    # The prospects the batch's references point to, loaded at once inside its transaction
    # and kept current by each action (nothing else writes while it holds the lock).
    prospects: dict[int, Prospect] = field(default_factory=dict)
    tokens: dict[str, int] | None = None  # List-Unsubscribe token -> prospect id

    def prospect(self, app: App, prospect_id: int) -> Prospect | None:
        return self.prospects.get(prospect_id) or app.store.prospect_by_id(prospect_id)

    def by_token(self, app: App, token: str) -> Prospect | None:
        """The prospect whose List-Unsubscribe token this is (built on the first use): the
        keyed token, or the old unkeyed one for a prospect sent mail before the key existed."""
        if self.tokens is None:
            from .render import legacy_unsubscribe_token, unsubscribe_token

            secret = app.store.unsubscribe_secret()
            self.tokens = {legacy_unsubscribe_token(email): pid
                           for pid, email in app.store.legacy_token_prospects()}
            self.tokens.update((unsubscribe_token(email, secret), pid)
                               for pid, email in app.store.prospect_emails())
        pid = self.tokens.get(token)
        return self.prospect(app, pid) if pid is not None else None

    def record(self, inbound: Inbound, now: datetime, message_id: str | None,
               prospect_id: int | None, kind: str, **detail: Any) -> None:
        """Queue the message's inbound row: written with the batch, in its transaction."""
        message_id = message_id or f"<{inbound.key}@inbound>"
        self.ids.add(message_id)
        self.pending.append((inbound.source, inbound.key, inbound.uidvalidity, inbound.uid,
                             message_id, prospect_id, kind,
                             json.dumps(detail, default=str) if detail else "{}", iso(now)))

    def flush(self, app: App) -> None:
        if self.pending:
            app.store.add_inbound_many(self.pending)
            self.pending.clear()


@dataclass
class _Item:
    """A message about a prospect or our mail, classified and waiting to be acted on."""

    inbound: Inbound
    message_id: str
    mail: Mail
    verdict: classify.Verdict
    kind: str
    refs: list[str]  # In-Reply-To and References, as read for the batch


_EXPR = re.compile(r"\{\{\s*([\w.]+)\s*(?:\|[^}]*)?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _footer_text(template: str, values: dict[str, Any]) -> str:
    """The footer's fixed text: `{{ sender.x }}`-style names filled in, anything that varies
    per prospect cut out (each line splits there). Enough to spot it quoted back, without
    loading Jinja2 for every poll."""
    def fill(m: re.Match[str]) -> str:
        if not m.group(1):
            return "\n"
        head, _, attr = m.group(1).partition(".")
        value = values.get(head)
        value = getattr(value, attr, None) if attr and value is not None else value
        return str(value) if isinstance(value, str | int) and value != "" else "\n"

    return _EXPR.sub(fill, template)


def poll(app: App, *, source: Source | None = None) -> PollResult:
    """One pass over the new mail of every configured folder."""
    own = source is None
    source = source or open_source(app.config)
    result = PollResult()
    state: _Pass | None = None
    batches = source.batches(app.store)
    try:
        with ExitStack() as stack, _collector_paused():
            # Closed first when the pass fails: a source may still be reading ahead.
            stack.callback(getattr(batches, "close", lambda: None))
            for batch in batches:
                if not batch:
                    continue
                if state is None:  # built on the first message: nothing new is fast
                    from . import classify

                    state = _Pass(context_for(app), app.store.open_prospects_by_domain())
                    stack.enter_context(classify.using(state.context))
                # Before the source records the batch as seen: a pass that dies here
                # leaves the batch unseen and unacted, and reads it again next time.
                handle_batch(app, batch, result, state)
    finally:
        if own:
            source.close()
    return result


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection during a pass. Each message allocates hundreds of
    short-lived objects (parsed headers, rows, verdicts) that reference counting frees; the
    collector would still walk them some 180 times per 2,000 replies, ~4% of the pass. The
    few cycles a pass leaves (a few hundred objects per 2,000 messages) are collected once
    it ends and the collector runs again."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def handle_batch(app: App, batch: list[Inbound], result: PollResult, state: _Pass) -> None:
    """Classify a batch (no write lock held), then act on it and record it in ONE
    transaction; the hooks its actions fire run in order after that commit.

    The actions run first without a savepoint per message (two statements each saved). If
    any message fails, that whole attempt is rolled back and the batch is acted on again
    with one savepoint per message, so the failing one is undone alone."""
    now = app.now()
    items = _prepare(app, batch, result, state, now)
    pending = list(state.pending)  # _prepare's rows (duplicates, unmatched, malformed)
    try:
        _act_on(app, items, result, state, now, isolated=False)
    except Exception:
        state.pending[:] = pending  # as before the rolled-back attempt
        _act_on(app, items, result, state, now, isolated=True)


def _act_on(app: App, items: list[_Item], result: PollResult, state: _Pass, now: datetime,
            *, isolated: bool) -> None:
    """One attempt at a batch's actions and inbound rows, in one transaction. Not isolated:
    any failure propagates (everything rolled back, counts untouched). Isolated: a failing
    message is rolled back to its savepoint and reported malformed."""
    done = PollResult()
    with app.hooks_after() as held, app.store.transaction():
        state.prospects = app.store.prospects_by_ids(
            {row["prospect_id"] for row in state.ledger.values()}) if items else {}
        for item in items:
            if not isolated:
                prospect_id = _act(app, item, done, state, now)
            else:
                mark = len(held)
                one = PollResult()
                try:
                    with app.store.transaction():  # a savepoint: undoes this message only
                        prospect_id = _act(app, item, one, state, now)
                except Exception as exc:
                    del held[mark:]  # its hooks were never committed either
                    _malformed(item.inbound, item.message_id, exc, done, state, now)
                    continue
                done.add(one)
            state.record(item.inbound, now, item.message_id, prospect_id,
                         item.kind if prospect_id or item.kind == "unsubscribe" else "unmatched")
        state.flush(app)
    result.add(done)  # counted once the batch is committed


def parse(raw: bytes) -> EmailMessage:
    """The full `EmailMessage` plugins are promised (parsed only when one listens)."""
    from email import policy
    from email.parser import BytesParser

    return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


# What email.feedparser takes for a header line (a field, a continuation, an mbox From_).
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")


def parse_head(raw: bytes) -> Message:
    """The header block as a compat32 message, the rest of the bytes its payload: what
    `BytesParser(policy=compat32).parsebytes(raw, headersonly=True)` returns, split here by
    hand in a fraction of the time for the common shape (every line a header or a fold, LF
    or CRLF endings, a blank line after); anything else goes to the parser itself."""
    global _PARSER
    if _PARSER is None:
        from email.parser import BytesParser

        from .classify import IndexedMessage

        # compat32 is the parser's default policy (and email.policy, which would name it,
        # loads the header registry this path never uses).
        _PARSER = BytesParser(IndexedMessage)
    text = raw.decode("ascii", "surrogateescape")
    block = _HEAD_BLOCK.match(text)
    if block is not None:
        end = block.end()
        body = end + 1 if text.startswith("\n", end) else \
            end + 2 if text.startswith("\r\n", end) else 0
        if body:  # the common shape, in two regex passes instead of a loop over lines
            parser = _PARSER.parser
            message = parser._class(policy=parser.policy)
            for name, value in _FIELD.findall(text, 0, end):
                message.set_raw(name, value.rstrip("\r\n"))
            message.set_payload(text[body:])
            return message
    return _parse_head_by_line(text, raw)


# Every line a field (a name of printable characters but the colon, then a colon) or a fold
# (space or tab first), ending LF or CRLF, no other CR: what the loop below accepts. Then a
# blank line. Each field is then read as compat32's header_source_parse reads its lines: the
# name before the first colon, the rest of the first line left-stripped of blanks with its
# folds joined on, trailing CR and LF stripped.
_HEAD_BLOCK = re.compile(r"[\041-\071\073-\176]+:[^\r\n]*\r?\n"
                         r"(?:(?:[\041-\071\073-\176]+:|[\t ])[^\r\n]*\r?\n)*")
_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\n]*\n(?:[\t ][^\n]*\n)*)")


def _parse_head_by_line(text: str, raw: bytes) -> Message:
    fields: list[list[str]] = []
    pos, size = 0, len(text)
    while pos < size:
        end = text.find("\n", pos) + 1 or size
        line = text[pos:end]
        pos = end
        if line == "\n" or line == "\r\n":
            break  # the blank line: the body follows
        bare = line[:-2] if line.endswith("\r\n") else line.rstrip("\n")
        if "\r" in bare or line.startswith(("From ", ":")) or not _HEADER_LINE.match(line) \
                or (line[0] in " \t" and not fields):
            # A bare CR, an mbox From_ line, no field name, a body with no blank line
            # before it, a fold with nothing to fold: the parser's own defect rules.
            fields = []
            break
        if line[0] in " \t":
            fields[-1].append(line)
        else:
            fields.append([line])
    if not fields:
        return _PARSER.parsebytes(raw, headersonly=True)
    parser = _PARSER.parser
    message = parser._class(policy=parser.policy)
    for lines in fields:
        message.set_raw(*parser.policy.header_source_parse(lines))
    message.set_payload(text[pos:])
    return message


def parse_fast(raw: bytes, head: Message | None = None) -> Message:
    """compat32 parsing: headers stay text until read, several times faster than `default`.

    A single-part message (most replies) is complete after the header block (`head`, when
    the caller has it): its body is the payload as it stands. Only a multipart or message/*
    one is parsed part by part.
    """
    message = head if head is not None else parse_head(raw)
    if message.get_content_maintype() in ("multipart", "message"):
        message = _PARSER.parsebytes(raw)
    return message


class Mail:
    """One inbound message: the fast parse we classify, the rich one plugins get."""

    def __init__(self, raw: bytes, head: Message | None = None) -> None:
        self.raw = raw
        self.message = parse_fast(raw, head)
        self._rich: EmailMessage | None = None

    @property
    def rich(self) -> EmailMessage:
        if self._rich is None:
            self._rich = parse(self.raw)
            verdict = getattr(self.message, "_outreach_verdict", None)
            if verdict is not None:  # the built-in classifier plugin reuses it
                self._rich._outreach_verdict = verdict  # type: ignore[attr-defined]
        return self._rich


def _listened(app: App, hook: str) -> bool:
    """Whether a plugin besides the built-in classifier implements `hook`."""
    return any(impl.plugin_name != _BUILTIN_CLASSIFIER
               for impl in getattr(app.pm.hook, hook).get_hookimpls())


def _prepare(app: App, batch: list[Inbound], result: PollResult, state: _Pass,
             now: datetime) -> list[_Item]:
    """Parse and classify a batch; duplicates, mail about nobody and malformed messages are
    recorded at once. What the headers need from the store is read once per batch."""
    from . import classify

    heads: list[tuple[Inbound, Message, str, list[str], str]] = []
    for inbound in batch:
        result.processed += 1
        try:
            head = parse_head(inbound.raw)
            # No Message-ID: a digest of the bytes stands in, so a rescan still knows it.
            message_id = _first_id(classify.header(head, "Message-ID")) or \
                f"<sha1-{_sha1(inbound.raw)}@inbound>"
            refs = _MSGID.findall(f"{head.get('In-Reply-To') or ''} "
                                  f"{head.get('References') or ''}")
            sender = classify.address_of(classify.header(head, "From"))
        except Exception as exc:
            _malformed(inbound, None, exc, result, state, now)
            continue
        heads.append((inbound, head, message_id, refs, sender))
    store = app.store
    known = store.inbound_message_ids([h[2] for h in heads])
    state.ledger = store.ledger_rows([ref for h in heads for ref in h[3]])
    state.senders = store.known_emails([h[4] for h in heads if "@" in h[4]])
    classifiers = _listened(app, "classify_reply")
    items = []
    for inbound, head, message_id, refs, sender in heads:
        try:
            if message_id in known or message_id in state.ids:
                # Seen before (another folder, a UIDVALIDITY rescan): never act twice.
                result.duplicates += 1
                state.record(inbound, now, message_id, None, "duplicate")
                result.note(inbound, message_id, "duplicate", "none",
                            "handled before (same Message-ID)")
                continue
            if not _concerns_us(head, sender, refs, state):
                # Most of an inbox: from nobody we wrote to, about nothing we sent.
                result.unmatched += 1
                state.record(inbound, now, message_id, None, "unmatched")
                result.note(inbound, message_id, "unmatched", "none",
                            "from nobody we wrote to, about nothing we sent",
                            addresses=[sender] if sender else [])
                continue
            state.ids.add(message_id)  # a second copy later in the batch is a duplicate
            items.append(_classified(app, inbound, head, message_id, refs, state,
                                     classifiers))
        except Exception as exc:
            _malformed(inbound, message_id, exc, result, state, now)
    return items


def _classified(app: App, inbound: Inbound, head: Message, message_id: str, refs: list[str],
                state: _Pass, classifiers: bool) -> _Item:
    """The built-in verdict, overruled by a `classify_reply` plugin's answer if any."""
    from . import classify

    mail = Mail(inbound.raw, head)
    verdict = classify.verdict_for(mail.message, state.context)
    kind = verdict.hook_kind
    if classifiers:
        kind = first_result(app.pm, "classify_reply", reply=mail.rich)
        if kind not in classify.KINDS:
            if kind is not None:
                print(f"outreach: classify_reply answered {kind!r}, not one of "
                      f"{', '.join(classify.KINDS)}; using the built-in answer",
                      file=sys.stderr)
            kind = verdict.hook_kind
        elif kind != verdict.hook_kind:
            verdict.why = f"a classify_reply plugin said {kind} (built-in: {verdict.why})"
    return _Item(inbound, message_id, mail, verdict, kind, refs)


class _Undo(Exception):
    """Raised to roll back what `explain` acted on."""


def explain(app: App, raw: bytes) -> dict[str, Any]:
    """What `poll` would make of one message and do about it, without keeping anything:
    it is classified and acted on exactly as a poll would, inside a transaction that is then
    rolled back, its hooks dropped unfired."""
    from . import classify

    result = PollResult()
    state = _Pass(context_for(app), app.store.open_prospects_by_domain())
    inbound = Inbound("file", "", raw)
    now = app.now()
    with classify.using(state.context):
        head = parse_head(raw)
        message_id = _first_id(classify.header(head, "Message-ID")) or ""
        refs = _MSGID.findall(f"{head.get('In-Reply-To') or ''} {head.get('References') or ''}")
        sender = classify.address_of(classify.header(head, "From"))
        item = _classified(app, inbound, head, message_id, refs, state,
                           _listened(app, "classify_reply"))
        concerns = False
        try:
            with app.hooks_after() as held, app.store.transaction():
                state.ledger = app.store.ledger_rows(refs)
                state.senders = app.store.known_emails([sender])
                concerns = _concerns_us(head, sender, refs, state)
                if concerns:
                    _act(app, item, result, state, now)
                held.clear()
                raise _Undo
        except _Undo:
            pass
    entry: dict[str, Any] = result.messages[0] if result.messages else {
        "kind": item.kind, "addresses": item.verdict.recipients or [sender],
        "prospects": [], "action": "none: from nobody we wrote to, about nothing we sent",
        "why": item.verdict.why}
    entry.pop("key", None)
    entry["message_id"] = message_id or None
    verdict = item.verdict
    if item.kind == "bounce":
        entry.update(permanent=verdict.permanent, status=verdict.status,
                     temporary=verdict.temporary)
    if item.kind == "auto_reply":
        entry["return_date"] = verdict.return_date.isoformat() if verdict.return_date else None
    if item.kind in ("reply", "referral"):
        entry.update(not_interested=verdict.not_interested,
                     referrals=[a for a, _ in verdict.referrals], text=verdict.text[:500])
    if not app.config.store_url and not app.config.store_path.exists():
        entry["note"] = (f"no database at {app.config.store_path} yet: explained without "
                         "matching prospects")
    return entry


def _malformed(inbound: Inbound, message_id: str | None, exc: Exception, result: PollResult,
               state: _Pass, now: datetime) -> None:
    """A message that could not be read or acted on: reported with its key, never fatal."""
    result.malformed.append({"key": f"{inbound.source} {inbound.key}",
                             "error": f"{type(exc).__name__}: {exc}"})
    result.note(inbound, message_id, "malformed", "skipped", f"{type(exc).__name__}: {exc}")
    state.record(inbound, now, message_id, None, "malformed", error=str(exc)[:500])


def _concerns_us(head: Message, sender: str, refs: list[str], state: _Pass) -> bool:
    """From the headers alone: could this message be about a prospect or our mail?

    A bounce, a reference to a message we sent, a prospect's address or a lone active
    prospect's domain, or mail to the unsubscribe address: read it whole. Anything else
    would end `unmatched` anyway. Unreadable headers are read whole, to be reported.
    """
    from .classify import looks_like_bounce

    if any(ref in state.ledger for ref in refs):  # the cheapest test first
        return True
    if "@" not in sender or looks_like_bounce(head):
        return True
    if len(state.domains.get(domain_of(sender), ())) == 1:
        return True
    if sender in state.senders:
        return True
    unsubscribe = state.context.unsubscribe_address
    return bool(unsubscribe) and any(
        unsubscribe in str(v).lower() for n in ("To", "Cc", "Delivered-To", "X-Original-To")
        for v in head.get_all(n) or ())


def _sha1(raw: bytes) -> str:
    import hashlib  # only for the rare message without a Message-ID

    return hashlib.sha1(raw).hexdigest()


def _first_id(value: str) -> str | None:
    m = _MSGID.search(value)
    return m.group(0) if m else None


# -- matching -----------------------------------------------------------------------------


_REPORTS = ("bounce", "complaint")  # kinds that name the people they are about


def match(app: App, message: Message, refs: list[str], verdict: classify.Verdict, kind: str,
          state: _Pass) -> tuple[Prospect | None, Any]:
    """`refs` (In-Reply-To/References) against our ledger, then the address, then a lone
    domain. Returns the prospect and the ledger row it was matched by (None otherwise)."""
    ids = refs[::-1]  # the newest reference is the most specific
    # A bounce or complaint names the message it returns in its body: that decides first.
    row = app.store.ledger_match(verdict.original_ids) \
        if kind in _REPORTS and verdict.original_ids else None
    if row is None:
        row = next((state.ledger[m] for m in ids if m in state.ledger), None)
    if row is not None:
        return state.prospect(app, row["prospect_id"]), row
    # Our List-Unsubscribe mailto puts the prospect's token in the subject: it names them
    # even when the mail comes from another address (an alias, a forward).
    token = _TOKEN.search(str(message.get("Subject") or "")) if kind == "unsubscribe" else None
    if token and (prospect := state.by_token(app, token[1].lower())):
        return prospect, None
    addresses = _named_addresses(verdict, kind)
    for address in addresses:
        if address and (prospect := app.store.prospect(address)):
            return prospect, None
    if kind not in _REPORTS and kind != "other" and verdict.sender:
        candidates = state.domains.get(domain_of(verdict.sender), [])
        if len(candidates) == 1:
            return state.prospect(app, candidates[0]), None
    return None, None


def _named_addresses(verdict: classify.Verdict, kind: str) -> list[str]:
    """Whom the message is about: the recipients a report names, else its sender (also when
    a classify_reply plugin calls a person's own message a bounce or complaint)."""
    if kind in _REPORTS and verdict.kind in _REPORTS:
        return verdict.recipients
    return [verdict.sender]


def _named(app: App, prospect: Prospect, addresses: list[str]) -> list[Prospect]:
    """A bounce's or complaint's prospects: the one matched, then every other prospect it
    names (a report about several recipients acts on each)."""
    found = [prospect]
    for address in addresses:
        if all(p.email != address for p in found) and (other := app.store.prospect(address)):
            found.append(other)
    return found


# -- actions ------------------------------------------------------------------------------


def _act(app: App, item: _Item, result: PollResult, state: _Pass,
         now: datetime) -> int | None:
    """Match the message and do what its kind asks; returns the prospect's id, if matched.
    Runs inside the caller's transaction, so a message's actions commit together."""
    from .classify import header
    from .lifecycle import suppress

    mail, verdict, kind = item.mail, item.verdict, item.kind
    prospect, row = match(app, mail.message, item.refs, verdict, kind, state)
    enrollment_id = row["enrollment_id"] if row is not None else None
    addresses = _named_addresses(verdict, kind)
    if prospect is None:
        if kind == "unsubscribe" and verdict.sender and is_email(verdict.sender):
            # Mail to the unsubscribe address from anyone: honoured, prospect or not.
            suppress(app, verdict.sender, reason="unsubscribe", source="poll")
            result.unsubscribes += 1
            result.note(item.inbound, item.message_id, kind, "suppressed", verdict.why,
                        addresses=addresses)
            return None
        if kind == "complaint" and (named := [a for a in addresses if is_email(a)]):
            # Someone who reported our mail as spam is never written to, prospect or not
            # (yet): their address may come in with the next import.
            for address in named:
                suppress(app, address, reason="complaint", source="poll")
            result.complaints += 1
            result.note(item.inbound, item.message_id, kind, "suppressed (no prospect)",
                        verdict.why, addresses=named)
            return None
        result.unmatched += 1
        result.note(item.inbound, item.message_id, kind, "none: matches no prospect",
                    verdict.why, addresses=addresses)
        return None
    detail = {"subject": header(mail.message, "Subject")[:200],
              "message_id": _first_id(header(mail.message, "Message-ID")),
              "from": verdict.sender}
    targets = _named(app, prospect, addresses) if kind in _REPORTS else [prospect]
    action = "none"
    for target in targets:
        ledger = enrollment_id if target is prospect else None
        done, updated = _ACTIONS.get(kind, _act_reply)(app, target, verdict, detail, ledger, now)
        action = done if action == "none" else action
        if kind in ("bounce", "unsubscribe", "complaint"):
            state.prospects.clear()  # a suppressed address may be another loaded prospect's
        state.prospects[target.id] = updated
        if has_impls(app.pm, "reply_received") and kind != "other":
            app.fire("reply_received", prospect=updated, reply=mail.rich,
                     kind="reply" if kind == "referral" else kind)
        if kind in ("reply", "referral") and verdict.referrals:
            sequence = row["sequence"] if row is not None else _sequence_of(app, prospect)
            _referrals(app, updated, mail, verdict, sequence, result, now)
    counter = {"reply": "replies", "referral": "replies", "auto_reply": "auto_replies",
               "bounce": "bounces", "unsubscribe": "unsubscribes",
               "complaint": "complaints"}.get(kind, "other")
    setattr(result, counter, getattr(result, counter) + 1)
    result.note(item.inbound, item.message_id, kind, action, verdict.why, addresses=addresses,
                prospects=[t.email for t in targets])
    return prospect.id


_Done = tuple[str, "Prospect"]


def _act_bounce(app: App, prospect: Prospect, verdict: classify.Verdict,
                detail: dict[str, Any], enrollment_id: int | None, now: datetime) -> _Done:
    """A permanent failure (or the third soft one in a row) suppresses and ends the
    sequence; a temporary one is recorded. Per address: a report may name several."""
    from .lifecycle import suppress

    store = app.store
    permanent = verdict.permanent and prospect.email not in verdict.temporary
    store.add_event("bounce", at=now, prospect_id=prospect.id, enrollment_id=enrollment_id,
                    status=verdict.status or "5.0.0", permanent=permanent, **detail)
    action = "recorded temporary failure"
    if not permanent and store.soft_bounce_streak(prospect.id) >= SOFT_BOUNCE_LIMIT:
        permanent, action = True, f"suppressed after {SOFT_BOUNCE_LIMIT} soft bounces"
    if not permanent:
        return action, prospect
    _end(app, prospect, "bounced", "bounce", now)
    suppress(app, prospect.email, reason="bounce", source="poll")
    return ("suppressed" if action.startswith("recorded") else action,
            store.prospect_by_id(prospect.id) or prospect)


def _act_complaint(app: App, prospect: Prospect, verdict: classify.Verdict,
                   detail: dict[str, Any], enrollment_id: int | None, now: datetime) -> _Done:
    """A spam complaint: suppressed at once, every open sequence ends, no stage change."""
    from .lifecycle import suppress

    app.store.add_event("complaint", at=now, prospect_id=prospect.id,
                        enrollment_id=enrollment_id, **detail)
    _end(app, prospect, "complained", "complaint", now)
    suppress(app, prospect.email, reason="complaint", source="poll")
    return "suppressed", app.store.prospect_by_id(prospect.id) or prospect


def _act_auto_reply(app: App, prospect: Prospect, verdict: classify.Verdict,
                    detail: dict[str, Any], enrollment_id: int | None, now: datetime) -> _Done:
    store = app.store
    until = _pause_until(app, prospect, verdict, now)
    store.add_event("auto_reply", at=now, prospect_id=prospect.id, enrollment_id=enrollment_id,
                    return_date=verdict.return_date.isoformat()
                    if verdict.return_date else None, **detail)
    for paused in store.pause_enrollments(prospect.id, until=until):
        store.add_event("paused", at=now, prospect_id=prospect.id, enrollment_id=paused,
                        until=iso(until))
    return f"paused until {until.date().isoformat()}", prospect


def _act_unsubscribe(app: App, prospect: Prospect, verdict: classify.Verdict,
                     detail: dict[str, Any], enrollment_id: int | None, now: datetime) -> _Done:
    from .lifecycle import suppress

    app.store.add_event("unsubscribe", at=now, prospect_id=prospect.id,
                        enrollment_id=enrollment_id, **detail)
    for address in dict.fromkeys((prospect.email, verdict.sender)):
        if address and is_email(address):  # an address we could never write to is skipped
            suppress(app, address, reason="unsubscribe", source="poll")
    return "suppressed", app.store.prospect_by_id(prospect.id) or prospect


def _act_other(app: App, prospect: Prospect, verdict: classify.Verdict,
               detail: dict[str, Any], enrollment_id: int | None, now: datetime) -> _Done:
    """Machine mail that is no reply (a list, a challenge, a notice): recorded, nothing
    changes. A wrong `reply` would make a lead and stop a sequence; this is the safe side."""
    return "none: not written by a person", prospect


def _act_reply(app: App, prospect: Prospect, verdict: classify.Verdict,
               detail: dict[str, Any], enrollment_id: int | None, now: datetime) -> _Done:
    from .lifecycle import change_stage

    app.store.add_event("reply", at=now, prospect_id=prospect.id, enrollment_id=enrollment_id,
                        not_interested=verdict.not_interested, text=verdict.text[:500],
                        **detail)
    _end(app, prospect, "replied", "reply", now)
    touched = _touch(app, prospect, now)
    if verdict.not_interested and prospect.stage in ("prospect", "lead"):
        return "sequence stopped, stage not-interested", change_stage(
            app, prospect, "not-interested", cause="reply", **touched)
    if prospect.stage == "prospect":
        return "sequence stopped, stage lead", change_stage(app, prospect, "lead",
                                                            cause="reply", **touched)
    return "sequence stopped", moved(prospect, **touched) if touched else prospect


_ACTIONS = {"bounce": _act_bounce, "complaint": _act_complaint, "auto_reply": _act_auto_reply,
            "unsubscribe": _act_unsubscribe, "other": _act_other}


def _touch(app: App, prospect: Prospect, now: datetime) -> dict[str, Any]:
    """A real answer moves `last_activity` forward, so `dormant_days` counts from it.
    Returns what moved, for the caller to set with the stage in one copy of the prospect."""
    app.store.touch_activity(prospect.id, at=now)
    today = now.astimezone(UTC).date()
    if prospect.last_activity is None or prospect.last_activity < today:
        return {"last_activity": today}
    return {}


def _end(app: App, prospect: Prospect, state: str, reason: str, now: datetime) -> None:
    """End a prospect's open enrollments and call tasks (inside the caller's transaction)."""
    for ended in app.store.end_enrollments(prospect.id, state=state, reason=reason, at=now):
        app.store.add_event("enrollment_ended", at=now, prospect_id=prospect.id,
                            enrollment_id=ended, state=state)
    app.store.close_call_tasks(prospect.id, reason=reason, at=now)


def _pause_until(app: App, prospect: Prospect, verdict: classify.Verdict,
                 now: datetime) -> datetime:
    """The day after the named return date (prospect's time), or a few days from now."""
    if verdict.return_date is None:
        return now + timedelta(days=AUTO_REPLY_PAUSE_DAYS)
    zone = ZoneInfo(prospect.timezone) if valid_timezone(prospect.timezone) else app.sender_zone
    return datetime.combine(verdict.return_date + timedelta(days=1), time(0), zone)


def _sequence_of(app: App, prospect: Prospect) -> str | None:
    row = app.store.latest_enrollment(prospect.id)
    return row["sequence"] if row else None


def _referrals(app: App, referrer: Prospect, mail: Mail, verdict: classify.Verdict,
               sequence_name: str | None, result: PollResult, now: datetime) -> None:
    """People named at the referrer's company become prospects, enrolled in on_referral."""
    from . import classify

    store = app.store
    domains = {d for d in (domain_of(referrer.email), referrer.domain.lower().lstrip("@")) if d}
    sequence = app.config.sequences.get(sequence_name or "")
    target = sequence.on_referral if sequence else None
    for address, name in verdict.referrals:
        domain = domain_of(address)
        if not is_email(address):  # e.g. non-ASCII: we could never send to it
            store.add_event("referral", at=now, prospect_id=referrer.id, referred=address,
                            created=False, reason="not an address outreach can write to")
            continue
        if address == referrer.email or not any(
                domain == d or domain.endswith("." + d) for d in domains):
            continue
        if store.is_suppressed(address) or store.prospect(address) is not None:
            store.add_event("referral", at=now, prospect_id=referrer.id, referred=address,
                            created=False)
            continue
        first, last = classify.split_name(name)
        store.insert_prospects([{
            "email": address, "first_name": first, "last_name": last, "title": "",
            "phone": "", "last_activity": None, "company": referrer.company,
            "domain": referrer.domain,
            "industry": referrer.industry, "employees": referrer.employees,
            "country": referrer.country, "timezone": referrer.timezone,
            "custom": json.dumps({}), "referrer_id": referrer.id,
        }], at=now)
        new = store.prospect(address)
        assert new is not None
        store.add_event("referral", at=now, prospect_id=referrer.id, referred=address,
                        created=True)
        store.add_event("referral", at=now, prospect_id=new.id, referrer=referrer.email)
        if target:
            # The referrer's rep works the person they named (team mode).
            enrollment = store.enroll(new.id, target, at=now,
                                      rep=referrer.owner or app.config.team.rep)
            store.add_event("enrolled", at=now, prospect_id=new.id,
                            enrollment_id=enrollment, sequence=target)
        result.referrals += 1
        app.fire("prospect_imported", prospect=new)
        if has_impls(app.pm, "reply_received"):
            app.fire("reply_received", prospect=new, reply=mail.rich, kind="referral")
