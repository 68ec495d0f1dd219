"""Pure: what an inbound message is (bounce, auto-reply, unsubscribe, reply) and what it says.

`classify(message, context)` takes a parsed `email.message.EmailMessage` and returns a
`Verdict`; nothing here touches the store or the network. Only the new text of a reply is
read: quoted history, signatures and our own footer are stripped first, with
mail-parser-reply (maintained, multilingual: it knows the Gmail, Outlook and Apple Mail
attribution lines in English, German, French and Spanish) plus the rules below.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

KINDS = ("reply", "auto_reply", "bounce", "unsubscribe", "referral", "complaint", "other")


@dataclass(frozen=True)
class Context:
    """What the classifier knows about us: our addresses and the footer we put in every email."""

    own_addresses: frozenset[str] = frozenset()
    unsubscribe_address: str = ""
    footer_lines: tuple[str, ...] = ()
    today: date | None = None

    @classmethod
    def make(cls, *, own: Iterable[str] = (), unsubscribe: str = "", footer: str = "",
             today: date | None = None) -> Context:
        lines = tuple(n for n in (_norm(line) for line in footer.splitlines()) if len(n) > 12)
        return cls(own_addresses=frozenset(a.lower() for a in own if a),
                   unsubscribe_address=unsubscribe.lower(), footer_lines=lines, today=today)


@dataclass
class Verdict:
    kind: str  # reply | auto_reply | bounce | unsubscribe | complaint | other
    text: str = ""  # the new text (replies), the notice text (bounces)
    sender: str = ""
    permanent: bool = False  # bounces: 5.x.x
    status: str = ""  # bounces: the enhanced status code, e.g. 5.1.1
    # bounces: who could not be reached; complaints: who complained
    recipients: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)  # bounces: recipients only delayed
    original_ids: list[str] = field(default_factory=list)  # bounces: the returned message's id
    return_date: date | None = None  # auto-replies
    not_interested: bool = False
    referrals: list[tuple[str, str]] = field(default_factory=list)  # (email, name)
    why: str = ""  # what decided the kind, in a few words (poll --json, explain)

    @property
    def hook_kind(self) -> str:
        """The kind as the `classify_reply` hook names it (a reply naming someone: referral)."""
        return "referral" if self.kind == "reply" and self.referrals else self.kind


class MalformedMessage(ValueError):
    """The bytes do not make a message we can read (no header block, no sender)."""


class IndexedMessage(Message):
    """A compat32 `Message` that finds headers through a name index built on first use.

    Classifying reads some twenty headers per message, each a scan of every header with
    `str.lower()` in the stock class; the index makes each one a dict lookup. Values still
    go through the policy, so what `get` returns is unchanged.
    """

    _index: dict[str, list[tuple[str, Any]]] | None = None
    _indexed = -1
    _listed: Any = None
    _params: dict[Any, Any]  # set with the index: parsed parameters, values read
    _headers: list[tuple[str, Any]]   # compat32 Message's own list, which typeshed omits

    def _by_name(self) -> dict[str, list[tuple[str, Any]]]:
        # Appending changes the length; deleting and replacing drop the index below.
        # (set_boundary rebuilds the list at the same length: a new list drops it too.)
        if self._index is None or self._indexed != len(self._headers) \
                or self._listed is not self._headers:
            index: dict[str, list[tuple[str, Any]]] = {}
            for name, value in self._headers:
                index.setdefault(name.lower(), []).append((name, value))
            self._index, self._indexed, self._params = index, len(self._headers), {}
            self._listed = self._headers
        return self._index

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        # Content-Type's parameters, parsed once per message (type, charset, report-type).
        self._by_name()  # after an edit, forgets what it parsed
        key = header.lower()
        if key not in self._params:
            value = self.get(header)
            self._params[key] = _simple_params(value) \
                if isinstance(value, str) and '"' not in value and "*" not in value \
                else super()._get_params_preserve(None, header)  # type: ignore[misc]  # private
        found = self._params[key]
        return failobj if found is None else list(found)

    def get(self, name: str, failobj: Any = None) -> Any:
        key = name.lower()
        found = self._by_name().get(key)
        if not found:
            return failobj
        memo = self._params  # reset with the index
        value = memo.get(("get", key))
        if value is None:
            value = self.policy.header_fetch_parse(*found[0])
            if isinstance(value, str):  # a Header object is built afresh each time
                memo[("get", key)] = value
        return value

    def get_content_type(self) -> str:
        # Asked by the pre-filter, the bounce test and each body part's walk: read once.
        if "content-type" not in self._by_name():
            return self.get_default_type()  # the default may be set after parsing
        found = self._params.get(("type",))
        if found is None:
            found = self._params[("type",)] = super().get_content_type()
        return found

    def get_all(self, name: str, failobj: Any = None) -> Any:
        found = self._by_name().get(name.lower())
        return [self.policy.header_fetch_parse(*f) for f in found] if found else failobj

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._by_name()

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._index = None

    def replace_header(self, _name: str, _value: Any) -> None:
        super().replace_header(_name, _value)
        self._index = None


def _simple_params(value: str) -> list[tuple[str, str]]:
    """What `Message._get_params_preserve` makes of a header value with no quotes and no
    RFC 2231 `*` (so no quoted `;` to skip and nothing to join): `_parseparam`'s split,
    names lowered where a value follows, then `decode_params`' quoting of all but the first.
    Nearly every Content-Type looks so; the stock parse costs more than the rest of reading
    a plain-text body."""
    from email.utils import quote, unquote

    params: list[tuple[str, str]] = []
    for part in value.split(";"):
        name, eq, val = part.partition("=")
        name, val = (name.strip().lower(), val.strip()) if eq else (part.strip(), "")
        params.append((name, f'"{quote(unquote(val))}"') if params else (name, val))
    return params


_current: ContextVar[Context | None] = ContextVar("outreach_classify_context", default=None)


@contextmanager
def using(context: Context) -> Iterator[None]:
    """Make `context` the one the built-in `classify_reply` plugin sees during a poll pass."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


def current_context() -> Context:
    return _current.get() or Context()


def verdict_for(message: Message, context: Context | None = None) -> Verdict:
    """`classify`, computed once per message object (the poll pass and the built-in plugin
    both ask)."""
    cached = getattr(message, "_outreach_verdict", None)
    if cached is None:
        cached = classify(message, context or current_context())
        message._outreach_verdict = cached  # type: ignore[attr-defined]
    return cached


def classify(message: Message, context: Context | None = None) -> Verdict:
    """Classify one message: complaint, bounce, machine mail (auto-reply or other), then
    unsubscribe, then reply. Only mail a person wrote can be a reply: when unsure, other."""
    context = context or Context()
    sender = address_of(header(message, "From"))
    subject = header(message, "Subject")
    complaint = _complaint(message, sender)
    if complaint:
        return complaint
    bounce = _bounce(message, sender, subject, context)
    if bounce:
        return bounce
    if "@" not in sender:
        raise MalformedMessage("no sender address in From")
    body = body_text(message)
    auto = auto_reply_reason(message, subject, body)
    if auto:
        return Verdict(kind="auto_reply", sender=sender, text=body[:2000], why=auto,
                       return_date=return_date(subject + "\n" + body, today=context.today))
    text = new_text(body, context)
    if context.unsubscribe_address and _addressed_to(message, context.unsubscribe_address):
        return Verdict(kind="unsubscribe", sender=sender, text=text,
                       why=f"sent to the unsubscribe address {context.unsubscribe_address}")
    machine = machine_reason(message, sender, subject, text)
    if machine:
        return Verdict(kind="other", sender=sender, text=text[:2000], why=machine)
    own_subject = "" if _is_own_subject(subject) else subject
    if asks_to_unsubscribe(own_subject) or asks_to_unsubscribe(text):
        return Verdict(kind="unsubscribe", sender=sender, text=text,
                       why="asks to be removed, in words")
    excluded = {sender, *context.own_addresses, context.unsubscribe_address}
    found = referrals(text, _addresses(message, "Cc"), exclude=excluded)
    return Verdict(kind="reply", sender=sender, text=text, not_interested=not_interested(text),
                   referrals=found, why="written by a person" + (
                       f", naming {len(found)} other address(es)" if found else ""))


def _complaint(message: Message, sender: str) -> Verdict | None:
    """A feedback-loop report: a complaint, or (DMARC forensics, not-spam) other."""
    if message.get_content_maintype() != "multipart":
        return None
    from .feedback import read

    report = read(message)
    if report is None:
        return None
    if not report.is_complaint:
        return Verdict(kind="other", sender=sender,
                       why=f"{report.fmt} feedback report of type {report.feedback_type}: "
                           "no complaint")
    return Verdict(kind="complaint", sender=sender, recipients=report.addresses,
                   original_ids=report.original_ids, permanent=True,
                   why=f"{report.fmt} spam-complaint report ({report.feedback_type})")


# -- text ---------------------------------------------------------------------------------


_ANGLE_ADDR = re.compile(r"<\s*([^<>\s@\"]+@[^<>\s@\"]+)\s*>\s*$")
_BARE_ADDR = re.compile(r"^\s*([^<>\s@\"(),;:]+@[^<>\s@\"(),;:]+)\s*$")


def address_of(header: str) -> str:
    """The address in a From-like header (the common shapes without email.utils' parser)."""
    text = str(header or "")
    if text.count("<") == 1 and '"' not in text and (m := _ANGLE_ADDR.search(text)):
        return m.group(1).lower()
    if m := _BARE_ADDR.match(text):
        return m.group(1).lower()
    return parseaddr(text)[1].strip().lower()


def _addresses(message: Message, *names: str) -> list[tuple[str, str]]:
    values = [str(v) for n in names for v in (message.get_all(n) or [])]
    if not values:  # no Cc on most replies: nothing for the address parser to do
        return []
    return [(_decoded(name), addr.strip().lower()) for name, addr in getaddresses(values)
            if "@" in addr]


def _addressed_to(message: Message, address: str) -> bool:
    """Whether `address` is among the recipients (To, Cc, Delivered-To, X-Original-To)."""
    for name in ("To", "Cc", "Delivered-To", "X-Original-To"):
        for value in message.get_all(name) or ():
            if address in str(value).lower() and any(
                    a == address for _, a in getaddresses([str(value).lower()])):
                return True
    return False


def header(message: Message, name: str) -> str:
    """A header as one line of text, RFC 2047 words decoded (works with any email policy)."""
    if isinstance(message, IndexedMessage):  # read once per message (and header edit)
        message._by_name()
        memo = message._params
        text = memo.get(("header", name))
        if text is None:
            text = memo[("header", name)] = _header(message, name)
        return text
    return _header(message, name)


def _header(message: Message, name: str) -> str:
    value = message.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):  # compat32: raw 8-bit bytes, most often UTF-8
        from email.header import decode_header

        value = "".join(part.decode("utf-8", errors="replace") if isinstance(part, bytes)
                        else part for part, _ in decode_header(value))
    return " ".join(_decoded(value).split())


def _decoded(text: str) -> str:
    if "=?" not in text:
        return text
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(text)))
    except Exception:  # a broken encoded word: keep the raw text
        return text


def body_text(message: Message) -> str:
    """The first text/plain part (else text/html flattened), decoded leniently."""
    if message.get_content_type() == "text/plain" and "Content-Disposition" not in message:
        return _decode(message)  # most replies: one plain part, nothing to walk
    plain = html = None
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get("Content-Disposition", "").lower().startswith("attachment"):
            continue
        subtype = part.get_content_subtype()
        if subtype == "plain" and plain is None:
            plain = _decode(part)
        elif subtype == "html" and html is None:
            html = _decode(part)
    if plain is not None:
        return plain
    if html is not None:
        return _html_to_text(html)
    return ""


def _decode(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload() or "")
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name: read it as UTF-8 rather than skip it
        return payload.decode("utf-8", errors="replace")


def _html_to_text(html: str) -> str:
    import html as html_lib

    html = re.sub(r"(?is)<(script|style)\b.*?</\1>", "", html)
    html = re.sub(r"(?is)<blockquote\b.*?</blockquote>", "\n", html)
    html = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", html)
    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


_ATTRIBUTION = re.compile(
    r"^[ \t]*(?:On|Am|Le|El|Op)\b[^\n]{0,200}?(?:\n[^\n]{0,200}?)?"
    r"(?:wrote|schrieb|a écrit|a ecrit|escribió|schreef)[ \t]*:[ \t]*$"
    r"|^[ \t]*-{2,}[ \t]*(?:Original Message|Ursprüngliche Nachricht|Message d'origine"
    r"|Mensaje original)[ \t]*-{2,}[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)
_REGEXES: dict[str, Any] = {}


def _split_replies(body: str) -> list[Any]:
    """mail-parser-reply's split, with its regexes built once (it rebuilds them per message)."""
    from mailparser_reply.parser import EmailMessage as ParsedReply

    parsed = ParsedReply(text=body, languages=["en", "de", "fr", "es"], **_REGEXES)
    replies = parsed.read().replies
    if not _REGEXES:
        _REGEXES.update(_header_regex=_HeaderRegex(parsed.HEADER_REGEX),
                        _disclaimers_regex=parsed.DISCLAIMERS_REGEX,
                        _signature_regex=parsed.SIGNATURE_REGEX)
    return replies


class _HeaderRegex:
    """The library's header regex, skipped when it cannot match: each of its alternatives
    (wrote/schrieb/a écrit/escribió lines, From:/Von:/De: blocks, ----- Original Message
    -----) needs a colon or five dashes. Most short replies have neither, and this regex is
    the slowest step of the split."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern

    def findall(self, text: str) -> list[Any]:
        if ":" not in text and "-----" not in text:
            return []
        return self.pattern.findall(text)


def new_text(body: str, context: Context | None = None) -> str:
    """Only what the sender just wrote: no quoted history, signature or our own footer."""
    context = context or Context()
    body = body.replace("\r\n", "\n")
    # Attributions wrapped over two lines ("On Mon, ... Dana <\nd@a> wrote:") first.
    match = _ATTRIBUTION.search(body)
    if match:
        body = body[:match.start()]
    try:
        replies = _split_replies(body)
        text = replies[0].body if replies else body
    except Exception:  # the library is heuristics over regexes: never let it lose a reply
        text = body
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">"):
            continue
        if stripped in ("--", "-- ", "__") or _RULE.fullmatch(stripped):
            break
        normal = _norm(stripped)
        if normal and any(normal in f or f in normal for f in context.footer_lines
                          if len(normal) > 12):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept).strip()


_RULE = re.compile(r"_{5,}|-{5,}")
_NOT_WORD = re.compile(r"[^\w@.]+")


def _norm(text: str) -> str:
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


# -- bounces ------------------------------------------------------------------------------

_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon|mdaemon|bounces?"
                     r"|mail\.delivery\.system)([+@]|$)", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered mail|delivery status notification|returned mail|mail delivery failed|"
    r"delivery failure|failure notice|could not be delivered|delivery has failed|"
    r"nicht zustellbar|unzustellbar|non remis|non distribuable|no se puede entregar|"
    r"no entregado|delivery delayed|warning: message .* delayed|delayed mail|non-delivery|"
    r"not delivered|delivery problem|failure delivery|failed mail|delivery failed|mail error|"
    r"returning (?:message )?to sender|returned to sender|rejected mail",
    re.IGNORECASE,
)
# Every alternative above holds one of these: most subjects hold none and skip the regex.
_BOUNCE_WORDS = ("deliver", "zustellbar", "remis", "distribuable", "entreg", "delayed",
                 "failure", "failed", "mail error", "return", "rejected")


def _bounce_subject(subject: str) -> bool:
    low = subject.lower()
    return any(word in low for word in _BOUNCE_WORDS) and bool(_BOUNCE_SUBJECT.search(subject))
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SMTP_CODE = re.compile(r"(?<![\d.#-])([45])\d\d(?=[ -]|$)", re.MULTILINE)
_SOFT_WORDS = re.compile(
    r"delayed|will (?:retry|be retried|continue)|temporar|not yet been delivered|"
    r"still trying|mailbox (?:is )?full|over quota|quota exceeded",
    re.IGNORECASE,
)
_HARD_WORDS = re.compile(
    r"permanent(?:ly)? (?:error|fatal|failure)|user unknown|no such user|does not exist|"
    r"address rejected|recipient (?:address )?rejected|not found|unknown user|"
    r"couldn't be found|wasn't found|mailbox unavailable|invalid recipient|"
    r"delivery has failed|could not be delivered|failed permanently|address couldn't be found",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+'-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]{2,})(?![\w-])",
                    re.IGNORECASE)
# Where a notice starts quoting the returned message (Exim, qmail, Sendmail, Exchange).
_COPY_MARKER = re.compile(
    r"^-* ?(?:This is a copy of the message|Below this line is a copy of the message|"
    r"Original message headers|The original message was received|Original message follows)",
    re.IGNORECASE | re.MULTILINE)
_MSGID = re.compile(r"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)


def looks_like_bounce(message: Message) -> bool:
    """From headers alone: could this be a delivery or feedback report? (Cheap; a pre-filter
    that lets through more than it keeps: the classifier decides.)"""
    sender = address_of(header(message, "From"))
    subject = header(message, "Subject")
    return message.get_content_type() == "multipart/report" or _is_daemon(message, sender) \
        or "X-Failed-Recipients" in message or _bounce_subject(subject) \
        or (message.get_content_maintype() == "multipart"
            and any(word in subject.lower() for word in _FEEDBACK_WORDS))


# Feedback loops that are not multipart/report (Microsoft JMRP: "complaint about message").
_FEEDBACK_WORDS = ("complaint", "abuse report", "feedback")


def _is_daemon(message: Message, sender: str) -> bool:
    """Sent by a mail system rather than a person: a daemon's address or display name."""
    if _DAEMON.match(sender) or sender in ("", "<>"):
        return True
    name = header(message, "From").lower()
    return "mail delivery" in name or "mailer-daemon" in name or "postmaster" in name


@dataclass
class _Failures:
    """Who a delivery report says could not be reached: for good, or not yet."""

    permanent: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    def add(self, address: str, permanent: bool) -> None:
        address = address.strip().strip("<>").lower()
        if "@" not in address or address in self.permanent or address in self.temporary:
            return
        (self.permanent if permanent else self.temporary).append(address)

    def __bool__(self) -> bool:
        return bool(self.permanent or self.temporary)


def _bounce(message: Message, sender: str, subject: str, context: Context) -> Verdict | None:
    """A delivery report: RFC 3464 status blocks read here (per recipient: `Action: failed`
    or a 5.x.x status is permanent), every other format by flufl.bounce's detectors."""
    ctype = message.get_content_type()
    report = ctype == "multipart/report" and (
        str(message.get_param("report-type") or "")).lower() == "delivery-status"
    daemon = _is_daemon(message, sender)
    if not (report or daemon or ctype == "multipart/report" or "X-Failed-Recipients" in message
            or (_bounce_subject(subject) and not _threaded(message))):
        # Only its subject could say "delivery failed": a person answering or forwarding a
        # notice threads their message (In-Reply-To, References); a mail system does not.
        return None
    found = _Failures()
    actions: list[str] = []
    original_text: list[str] = []
    for part in message.walk():
        part_type = part.get_content_type()
        if part_type in ("message/delivery-status", "message/global-delivery-status"):
            _read_status(part, found, actions)
        elif part_type in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers"):
            original_text.append(_part_as_text(part))
    if actions and not found and all(a in _SUCCESS_ACTIONS for a in actions):
        # A success notice (NOTIFY=SUCCESS, Exchange's "Delivered:"): nothing failed.
        return Verdict(kind="other", sender=sender,
                       why=f"delivery report: {', '.join(dict.fromkeys(actions))}, nothing "
                           "failed")
    dsn_named = bool(found)
    if not dsn_named:
        _flufl_failures(message, found)
    null_sender = header(message, "Return-Path") in ("<>", "")
    if not (report or found or ((daemon or null_sender) and _bounce_subject(subject))
            or (daemon and ctype == "multipart/report")):
        return None
    notice = body_text(message)
    verdict = Verdict(kind="bounce", sender=sender, text=notice[:4000])
    own = context.own_addresses | {context.unsubscribe_address, sender}
    statuses = found.statuses or [m.group(0) for m in _STATUS.finditer(notice)]
    if not statuses and (m := _SMTP_CODE.search(notice)):
        statuses = [f"{m.group(1)}.0.0"]
    if found and not dsn_named and found.permanent and statuses and not any(
            s.startswith("5") for s in statuses) and _SOFT_WORDS.search(notice + " " + subject) \
            and not _HARD_WORDS.search(notice):
        # Heuristic detectors read "not yet delivered ... 452 4.2.2" as a failure: the
        # notice's own 4.x.x codes and its words say it is still being tried (unless it also
        # says it gave up: "could not be delivered").
        found.temporary[:0], found.permanent[:] = found.permanent, []
    if found:
        verdict.permanent = bool(found.permanent)
        why = "RFC 3464 delivery report" if dsn_named else "delivery notice (flufl.bounce)"
    else:
        # Nothing named: the worst status, else the report's actions, else the words decide.
        if statuses:
            verdict.permanent = any(s.startswith("5") for s in statuses)
        elif actions:
            verdict.permanent = "failed" in actions
        else:
            soft = bool(_SOFT_WORDS.search(notice + " " + subject))
            verdict.permanent = not soft or bool(_HARD_WORDS.search(notice))
        why = "delivery notice"
        scan = _COPY_MARKER.split(notice)[0]
        for addr in _EMAIL.findall(scan):
            if addr.lower() not in own and not _DAEMON.match(addr):
                found.add(addr, verdict.permanent)
    wanted = "5" if verdict.permanent else "4"
    verdict.status = next((s for s in statuses if s.startswith(wanted)), f"{wanted}.0.0")
    verdict.recipients = [a for a in found.permanent + found.temporary if a not in own]
    verdict.temporary = [a for a in found.temporary if a not in own]
    verdict.why = (f"{why}: {'permanent' if verdict.permanent else 'temporary'} failure "
                   f"{verdict.status}")
    # Exim and qmail quote the returned message inline after a marker line.
    original = "\n".join(original_text) or notice
    verdict.original_ids = list(dict.fromkeys(_MSGID.findall(original)))
    return verdict


_DONE_ACTIONS = ("delayed", "relayed", "delivered", "expanded")
_SUCCESS_ACTIONS = ("relayed", "delivered", "expanded")


def _read_status(part: Message, found: _Failures, actions: list[str]) -> None:
    """One message/delivery-status part: each recipient block's verdict. `Action: failed`
    is permanent whatever the status (the MTA gave up: 4.4.7 "message timed out")."""
    for block in _status_blocks(part):
        action = str(block.get("Action", "")).strip().lower()
        status = m.group(0) if (m := _STATUS.search(str(block.get("Status", "")))) else ""
        if action:
            actions.append(action)
        if status:
            found.statuses.append(status)
        permanent = action == "failed" or (status.startswith("5") and action not in _DONE_ACTIONS)
        if not permanent and not action.startswith("delayed") and not status.startswith("4"):
            continue  # delivered, relayed, expanded: nothing failed
        # The address as sent (Original-) and as finally tried after aliases (Final-).
        for key in ("Original-Recipient", "Final-Recipient"):
            value = str(block.get(key, ""))
            if ";" in value and "@" in value:
                found.add(value.split(";", 1)[1], permanent)


def _threaded(message: Message) -> bool:
    return "In-Reply-To" in message or "References" in message


def _flufl_failures(message: Message, found: _Failures) -> None:
    """flufl.bounce's detectors (Mailman's: Exim, qmail, Postfix, Exchange, Yahoo, AOL,
    GroupWise and a dozen more) for the formats that are not RFC 3464 reports."""
    from flufl.bounce import all_failures

    _quiet_flufl()
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # heuristics over odd bytes: a detector that trips finds nothing
        return
    for addresses, is_permanent in ((permanent, True), (temporary, False)):
        for raw in sorted(addresses):
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if _EMAIL.fullmatch(text.strip().strip("<>")):
                found.add(text, is_permanent)


def _quiet_flufl() -> None:
    """flufl.bounce logs a detector's exception with its traceback before re-raising it; we
    catch it (that message is then read by our own rules), so nothing is printed."""
    import logging

    log = logging.getLogger("flufl.bounce")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    # Unparsed: split the text into blocks of header lines.
    from email.parser import HeaderParser

    text = payload if isinstance(payload, str) else ""
    return [HeaderParser().parsestr(block) for block in re.split(r"\n\s*\n", text) if block]


def _part_as_text(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n".join(p.as_string() if isinstance(p, Message) else str(p) for p in payload)
    decoded = part.get_payload(decode=True)
    if isinstance(decoded, bytes):
        return decoded.decode("utf-8", errors="replace")
    return str(payload)


# -- auto-replies -------------------------------------------------------------------------

_OOF_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto[- ]?reply|auto[- ]?response|autoresponse|out of (?:the )?office"
    r"|ooo\b|away from (?:the )?office|on vacation|on leave|abwesenheit|abwesend"
    r"|automatische antwort|automatische rückantwort|nicht im büro|außer haus"
    r"|réponse automatique|reponse automatique|absence|absent|message d'absence"
    r"|respuesta automática|respuesta automatica|fuera de la oficina|ausente|de vacaciones)",
    re.IGNORECASE,
)
_OOF_BODY = re.compile(
    r"\b(?:i am|i'm|i will be) (?:currently )?(?:out of (?:the )?office|away|on (?:annual )?leave"
    r"|on vacation|on holiday|travelling|traveling)|"
    r"\bbin (?:ich )?(?:bis|vom|derzeit|zurzeit|momentan)\b.{0,60}\b(?:abwesend|nicht im büro|"
    r"im urlaub|außer haus)|"
    r"\bje suis (?:actuellement )?absente?\b|\bje serai de retour\b|"
    r"\bestoy (?:actualmente )?fuera de la oficina\b|\bestaré de vuelta\b",
    re.IGNORECASE,
)


def is_auto_reply(message: Message, subject: str, body: str = "") -> bool:
    return bool(auto_reply_reason(message, subject, body))


# Vendor headers that mark an automatic answer (Exchange, Yahoo/Hotmail, cPanel, Zimbra ...).
_AUTO_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponse", "X-Auto-Reply",
                 "X-Autogenerated", "X-AutoReply-From", "X-Mail-Autoreply", "X-Autoresponder",
                 "X-FC-MachineGenerated", "X-Zimbra-Auto-Reply")
_LIST_HEADERS = ("List-Id", "List-Unsubscribe", "List-Post", "List-Help", "List-Owner",
                 "X-Mailing-List", "X-Campaign-Id", "X-MC-User", "X-Mailgun-Campaign-Id")


def _present(message: Message) -> Any:
    """The lower-cased names of the message's headers (a view of the index, when it has
    one): some thirty names are asked of every message, most of them absent."""
    if isinstance(message, IndexedMessage):
        return message._by_name().keys()
    return {name.lower() for name in message}


def _first_present(present: Any, names: tuple[str, ...]) -> str:
    return next((name for name in names if name.lower() in present), "")


def auto_reply_reason(message: Message, subject: str, body: str = "") -> str:
    """Why this is an automatic answer (RFC 3834, vendor headers, an out-of-office subject),
    or "" when it is not one. Mailing-list mail is not an auto-reply: see `machine_reason`."""
    present = _present(message)
    if "auto-submitted" in present:
        auto = header(message, "Auto-Submitted").lower()
        if auto and not auto.startswith("no"):
            return f"Auto-Submitted: {auto} (RFC 3834)"
    for name in _AUTO_HEADERS:
        if name.lower() in present and header(message, name).lower() not in ("no", "false"):
            return f"{name} header"
    precedence = header(message, "Precedence").lower() if "precedence" in present else ""
    if precedence == "auto_reply":
        return "Precedence: auto_reply"
    if _first_present(present, _LIST_HEADERS):
        return ""  # a list's mail: machine_reason names it
    if precedence in ("bulk", "junk"):
        return f"Precedence: {precedence}"
    suppress = header(message, "X-Auto-Response-Suppress").lower() \
        if "x-auto-response-suppress" in present else ""
    if suppress and suppress not in ("none", "dr", "rn", "nrn"):
        return f"X-Auto-Response-Suppress: {suppress}"
    if "x-ms-exchange-inbox-rules-loop" in present:
        return "X-MS-Exchange-Inbox-Rules-Loop header"
    if _OOF_SUBJECT.search(_strip_re(subject)):
        return "out-of-office subject"
    return ""


_CHALLENGE = re.compile(
    r"verify (?:that )?you(?: are|'re) (?:a )?(?:human|real|not a (?:robot|bot|spammer))|"
    r"(?:confirm|verify) (?:that )?you(?: are|'re) not a (?:robot|bot|spammer)|"
    r"(?:sender|email|e-mail) (?:address )?verification (?:request|required|needed)|"
    r"challenge[- ]response|"
    r"(?:your|the) (?:message|e-?mail) (?:is|has been|was) (?:held|quarantined|queued) "
    r"(?:pending|until|for) (?:your )?(?:verification|confirmation|approval)|"
    r"(?:add|added) (?:yourself )?to (?:my|the|our) (?:approved senders|whitelist|allow ?list)|"
    r"protected by (?:boxbe|spamarrest|spam arrest|mailmate|sendio|choicemail)",
    re.IGNORECASE)
# Each challenge phrase holds one of these: most texts hold none, and skip the regex.
_CHALLENGE_WORDS = ("verif", "challenge", "approv", "whitelist", "allow", "protected by")
_NO_REPLY = re.compile(r"^(?:no[-_.]?reply|do[-_.]?not[-_.]?reply|notifications?|"
                       r"newsletters?|mailer|automailer|auto-?confirm)(?:[+@]|$)", re.IGNORECASE)


def machine_reason(message: Message, sender: str, subject: str, text: str) -> str:
    """Why a message that is neither a report nor an auto-reply was still sent by a machine
    (a mailing list or newsletter, a challenge-response check, a no-reply or daemon address,
    a null return path), or "" when a person may have written it."""
    present = _present(message)
    if message.get_content_type() == "multipart/report":   # a read receipt (RFC 8098) ...
        kind = str(message.get_param("report-type") or "unknown").lower()
        return f"a {kind} report (multipart/report), made by a mail program"
    if name := _first_present(present, _LIST_HEADERS):
        return f"mailing-list or newsletter mail ({name} header)"
    if "precedence" in present and header(message, "Precedence").lower() == "list":
        return "mailing-list mail (Precedence: list)"
    if helpdesk := _helpdesk(message, present, subject, text):
        return helpdesk
    sample = (subject + "\n" + text[:3000]).lower()
    if any(word in sample for word in _CHALLENGE_WORDS) and _CHALLENGE.search(sample):
        return "challenge-response: asks us to verify we are human"
    if _NO_REPLY.match(sender) or _DAEMON.match(sender):
        return f"sent from a no-reply or system address ({sender})"
    if "return-path" in present and header(message, "Return-Path") == "<>":
        return "null return path (<>): sent by a mail system, not a person"
    if _bounce_subject(subject) and not _REPLY_PREFIX.match(subject) \
            and not _threaded(message):
        return "a delivery notice naming no address we know"
    return ""


# Ticket systems' own headers (Zendesk, Freshdesk/Freshservice, ServiceNow, Jira and its
# Service Management, Request Tracker, OTRS, Zammad, Help Scout, Kayako) and mailer names.
_HELPDESK_HEADERS = ("x-zendesk-", "x-freshdesk-", "x-freshservice-", "x-servicenow-",
                     "x-jsd-", "x-jira-", "rt-ticket", "x-rt-loop-prevention", "x-otrs-",
                     "x-zammad-", "x-helpscout-", "x-kayako-")
_HELPDESK_MAILER = re.compile(r"zendesk|freshdesk|freshservice|servicenow|jira|otrs|zammad|"
                              r"osticket|kayako|help ?scout|request tracker|happyfox|sysaid",
                              re.IGNORECASE)
# The opening of an acknowledgement; all but the last need a ticket number to count.
_ACK_OPENING = re.compile(
    r"we(?:'ve| have)? received your (?:support )?(?:request|message|e-?mail|enquiry|inquiry|"
    r"ticket|case)|"
    r"your (?:support )?(?:request|ticket|case|enquiry|inquiry)(?: \(?#?[\w-]*\d[\w-]*\)?)? "
    r"(?:has been|was|is) (?:received|created|logged|opened|submitted|registered|raised)|"
    r"(?:a|your) (?:new )?(?:support )?(?:ticket|case) (?:has been|was) (?:created|opened|logged"
    r"|raised)|"
    r"(?P<automated>this is an? automat(?:ed|ic) (?:response|reply|message|e-?mail|notification|"
    r"acknowledge?ment)|this (?:e-?mail|message) (?:is|was) (?:sent |generated )?automatically"
    r"(?: generated| sent)?)", re.IGNORECASE)
_ACK_WORDS = ("receiv", "automat", "ticket", "case")
_TICKET_REF = re.compile(
    r"(?i:\b(?:ticket|request|case|incident|ref(?:erence)?)\b\s*(?:no\.?|number|id)?\s*"
    r"[:#(\[]?\s*#?\s*[a-z]{0,5}-?\d{3,}\b)|(?<![\w#])#\s?\d{3,}\b|"
    r"\b(?:INC|REQ|RITM|SCTASK|CS|SR|TKT)\d{5,}\b|"
    r"[\[(][A-Z][A-Z0-9]{1,9}-\d{1,7}[\])]|"
    r"(?i:\b(?:ticket|request|case) (?:received|created|opened|logged)\b)")


def _helpdesk(message: Message, present: Any, subject: str, text: str) -> str:
    """Why this is a help desk's mail (its headers, or an acknowledgement's opening with a
    ticket number), or "". Ticket systems often send no Auto-Submitted header."""
    if "x-mailer" in present and _HELPDESK_MAILER.search(mailer := header(message, "X-Mailer")):
        return f"sent by a help desk (X-Mailer: {mailer})"
    if any(name.startswith(_HELPDESK_HEADERS) for name in present):
        name = next(n for n in message if n.lower().startswith(_HELPDESK_HEADERS))
        return f"sent by a help desk ({name} header)"
    opening = text[:400]
    low = opening.lower()
    if not any(word in low for word in _ACK_WORDS):
        return ""
    ack = _ACK_OPENING.search(opening)
    if not ack:
        return ""
    said = " ".join(ack[0].lower().split())
    if ack["automated"]:
        return f'says it was sent automatically ("{said}")'
    if _TICKET_REF.search(subject) or _TICKET_REF.search(opening):
        return f'a help-desk acknowledgement with a ticket number ("{said}")'
    return ""


_RE_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|fw|fwd|wg|tr)\s*:\s*)+", re.IGNORECASE)
_REPLY_PREFIX = re.compile(r"^\s*(re|aw)\s*:", re.IGNORECASE)


def _strip_re(subject: str) -> str:
    return _RE_PREFIX.sub("", subject)


def _is_own_subject(subject: str) -> bool:
    """A subject that is `Re: <our subject>` tells nothing about what the sender wants."""
    return bool(_REPLY_PREFIX.match(subject))


# -- return dates -------------------------------------------------------------------------

_MONTHS = {
    # English
    "january": 1, "jan": 1, "february": 2, "feb": 2, "march": 3, "mar": 3, "april": 4, "apr": 4,
    "may": 5, "june": 6, "jun": 6, "july": 7, "jul": 7, "august": 8, "aug": 8,
    "september": 9, "sept": 9, "sep": 9, "october": 10, "oct": 10, "november": 11, "nov": 11,
    "december": 12, "dec": 12,
    # German
    "januar": 1, "jänner": 1, "februar": 2, "märz": 3, "maerz": 3, "mai": 5, "juni": 6,
    "juli": 7, "oktober": 10, "okt": 10, "dezember": 12, "dez": 12,
    # French
    "janvier": 1, "février": 2, "fevrier": 2, "mars": 3, "avril": 4, "juin": 6,
    "juillet": 7, "août": 8, "aout": 8, "septembre": 9, "octobre": 10, "novembre": 11,
    "décembre": 12, "decembre": 12,
    # Spanish
    "enero": 1, "febrero": 2, "marzo": 3, "abril": 4, "mayo": 5, "junio": 6, "julio": 7,
    "agosto": 8, "septiembre": 9, "setiembre": 9, "octubre": 10, "noviembre": 11,
    "diciembre": 12,
}
_MONTH_RE = "|".join(sorted((re.escape(m) for m in _MONTHS), key=len, reverse=True))
_DATE_PATTERNS = (
    # 2026-03-15
    (re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b"), "ymd"),
    # 15.03.2026, 15/03/2026, 15.03.
    (re.compile(r"\b(\d{1,2})[./](\d{1,2})[./](\d{4}|\d{2})?(?!\d)"), "dmy"),
    # March 15, March 15th 2026, Mar. 15
    (re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b,?(?:\s+(\d{{4}}))?",
                re.IGNORECASE), "mdy"),
    # 15 March 2026, 15. März, 15 de marzo de 2026, 1er avril
    (re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th|er|\.)?\s+(?:de\s+)?({_MONTH_RE})\b\.?"
                rf"(?:\s+(?:de\s+)?(\d{{4}}))?", re.IGNORECASE), "dmy-name"),
)
# Dates that mark the start of the absence ("from 2 March"), not the return.
_RETURN_HINT = re.compile(
    r"back|return|zurück|wieder|retour|de vuelta|regres|until|till|bis|jusqu|hasta|"
    r"after|nach|après|a partir|ab dem|from|à partir|desde|through", re.IGNORECASE)


def return_date(text: str, *, today: date | None = None) -> date | None:
    """The last date an out-of-office text names (its return), in a common format, or None."""
    if today is None:  # a caller without a Context (the bare hook): the one clock decides
        from .clock import now

        today = now().date()
    found: list[date] = []
    for pattern, order in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            parsed = _to_date(m, order, today)
            if parsed and today - timedelta(days=1) <= parsed <= today + timedelta(days=366):
                found.append(parsed)
    return max(found) if found else None


def _to_date(m: re.Match[str], order: str, today: date) -> date | None:
    try:
        if order == "ymd":
            return date(int(m[1]), int(m[2]), int(m[3]))
        if order == "dmy":
            day, month = int(m[1]), int(m[2])
            if month > 12 and day <= 12:  # 03/15/2026: month first
                day, month = month, day
            return _with_year(day, month, m[3], today)
        if order == "mdy":
            return _with_year(int(m[2]), _MONTHS[m[1].lower()], m[3], today)
        return _with_year(int(m[1]), _MONTHS[m[2].lower()], m[3], today)
    except (ValueError, KeyError):
        return None


def _with_year(day: int, month: int, year: str | None, today: date) -> date:
    if year:
        y = int(year)
        return date(y + 2000 if y < 100 else y, month, day)
    candidate = date(today.year, month, day)
    if candidate < today - timedelta(days=1):
        candidate = date(today.year + 1, month, day)
    return candidate


# -- what a reply says --------------------------------------------------------------------

_UNSUBSCRIBE = re.compile(
    r"\bunsubscribe\b|\bremove me\b|\bremove (?:us|my (?:e-?mail|address|name))\b|"
    r"\btake me off\b|\bstop (?:e-?mailing|contacting|spamming)\b|"
    r"\bstop (?:sending|writing) (?:me|us)\b|"
    r"\b(?:do not|don't|dont|never) (?:e-?mail|contact|write(?: to)?) (?:me|us)"
    r"(?:\s+(?:again|anymore|any more|ever))?[ \t]*(?:[.!;\n]|$)|\bopt(?:-| )?out\b|"
    r"\bno more e-?mails\b|\boff (?:your|the) (?:mailing )?list\b|"
    r"\babmelden\b|\baustragen\b|\bkeine (?:weiteren )?e-?mails\b|\bnicht mehr (?:kontaktieren|"
    r"anschreiben)\b|\bdésabonner\b|\bdesabonner\b|\bdésinscri|\bretirez-moi\b|"
    r"\bne (?:plus|me) (?:m'?)?(?:écrire|contacter)|\bne plus recevoir\b|"
    r"\bdar(?:me)? de baja\b|\bbaja de (?:su|la) lista\b|\bno me (?:escrib|contact)|"
    r"\beliminar(?:me)? de (?:su|la) lista\b",
    re.IGNORECASE,
)
_NOT_INTERESTED = re.compile(
    r"\bnot interested\b|\bno interest\b|\bno,? thanks?\b|\bno thank you\b|\bwe(?:'re| are) "
    r"(?:all set|covered)\b|\bwe(?:'re| are) good(?:,? thanks?)?[ \t]*(?:[.!;\n]|$)|"
    r"\bnot a (?:fit|priority)\b|\bnot (?:for us|relevant)\b|"
    r"\bpass on this\b|\bkein(?:e)? interesse\b|\bnicht interessiert\b|"
    r"\bpas intéress|\bpas interess|\bnon merci\b|\bno (?:estamos|estoy) interesad|"
    r"\bno me interesa\b|\bno nos interesa\b",
    re.IGNORECASE,
)


def asks_to_unsubscribe(text: str) -> bool:
    return bool(text) and bool(_UNSUBSCRIBE.search(text))


def not_interested(text: str) -> bool:
    return bool(_NOT_INTERESTED.search(text))


_NAME_BEFORE = re.compile(
    r"((?:[A-ZÀ-Ý][\w'’-]+)(?:\s+[A-ZÀ-Ý][\w'’-]+){0,2})\s*(?:[,:(<\[-]|–|—|at|via)?\s*<?$")
_NOT_NAMES = {"Try", "Talk", "Contact", "Please", "Ask", "Email", "Reach", "Hi", "Thanks",
              "Write", "Mail", "Cc", "Mailto", "Or", "And", "Her", "His", "Him", "She", "He",
              "Our", "The", "Send", "Loop", "Copied", "Copying", "Adding", "Added",
              "Kontaktieren", "Sie", "Schreiben", "Contactez", "Escriba", "Contacte", "Con"}


def referrals(text: str, cc: list[tuple[str, str]], *,
              exclude: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Addresses named in the new text or copied on the reply, each with a name if given."""
    skip = {e.lower() for e in exclude if e}
    out: dict[str, str] = {}
    for m in _EMAIL.finditer(text):
        addr = m.group(1).lower().rstrip(".")
        if addr in skip or _DAEMON.match(addr) or addr in out:
            continue
        out[addr] = _name_before(text[max(0, m.start() - 60):m.start()])
    for name, addr in cc:
        new = addr not in skip and addr not in out and not _DAEMON.match(addr)
        if new or (addr in out and not out[addr] and name):
            out[addr] = name.strip().strip('"')
    return list(out.items())


def _name_before(before: str) -> str:
    before = before.split("\n")[-1].rstrip()
    m = _NAME_BEFORE.search(before)
    if not m:
        return ""
    words = [w for w in m.group(1).split() if w not in _NOT_NAMES]
    return " ".join(words)


def split_name(name: str) -> tuple[str, str]:
    first, _, last = name.strip().partition(" ")
    return first, last.strip()
