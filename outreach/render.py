"""Templates -> message bytes. Jinja2 in a sandbox with StrictUndefined; headers assembled by hand.

An email template is header lines (`Subject:` and optional others), a blank line, then the
body; a call-script template is body only. Each header value and the body are compiled
separately so a variable can never smuggle a line break into the header block, yet every
error still names the template file's own line numbers.

Messages are built as bytes directly (RFC 5322 headers, RFC 2047 encoded words for non-ASCII,
7bit or quoted-printable `text/plain; charset=utf-8`): `email.message.EmailMessage` costs about
a millisecond per message, which alone would cap a run near 600 messages a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import quoprimime
from email.header import Header
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import format_datetime, formataddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from .config import Config, Sender, Step
from .config import Sequence as SequenceConfig
from .errors import TemplateError
from .models import KNOWN_COLUMNS, Prospect
from .schedule import zone_for

# Headers outreach writes itself; a template may not set them.
RESERVED = frozenset(h.lower() for h in (
    "From", "To", "Date", "Message-ID", "In-Reply-To", "References", "List-Unsubscribe",
    "List-Unsubscribe-Post", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
    "Bcc", "Return-Path", "Sender",
))
_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]?(.*)$")
_LINK = re.compile(r"(?i)\b(?:https?://|www\.)\S+")
_HTML = re.compile(r"<(?:[a-zA-Z][a-zA-Z0-9]*\b[^>]*|/[a-zA-Z][a-zA-Z0-9]*\s*)>")
_RE_PREFIX = re.compile(r"^(?:\s*(?:re|aw|sv|fwd?)\s*:\s*)+", re.IGNORECASE)
MAX_WORDS = 120


# -- compiled templates -------------------------------------------------------------------


# Between the rendered header values and the body: a value that produces it is refused.
_SEP = "\x1e\x1f"
# Variables whose values are the same for every prospect: a footer using only these is
# rendered once per run.
_CONSTANT_VARIABLES = frozenset({"sender", "unsubscribe_mailto"})


@dataclass(frozen=True)
class Compiled:
    """One template file compiled as a single Jinja template: each header value and the body,
    separated by `_SEP`, each starting on its own line of the file so errors name it."""

    name: str
    path: Path
    headers: tuple[tuple[str, int], ...]   # (name, line)
    template: jinja2.Template
    constant: bool                          # uses only _CONSTANT_VARIABLES


class Blank(jinja2.StrictUndefined):
    """A prospect column that is blank for this prospect: false in `{% if %}`, replaced by
    `default(...)`, and an error when printed, so no email says "Hi ," or "at ?"."""

    __slots__ = ()

    def __bool__(self) -> bool:  # type: ignore[override]  # falsy, where StrictUndefined raises
        return False


class _Sandbox(SandboxedEnvironment):
    """The Jinja sandbox, with a fast yes for public fields of the values outreach passes in
    (the general check costs more than the rest of a render)."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) in _PLAIN and not attribute.startswith("_"):
            try:
                value = getattr(obj, attribute)
            except AttributeError:
                pass   # the sandbox reports it as undefined, naming the attribute
            else:
                if (value == "" or value is None) and type(obj) is Prospect \
                        and attribute in _COLUMNS:
                    example = f'{{{{ prospect.{attribute} | default("...") }}}}'
                    return Blank(hint=f"{attribute} is blank for this prospect; give it a "
                                      f"fallback, e.g. {example}", obj=obj, name=attribute)
                return value
        return super().getattr(obj, attribute)


_ENV = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
                trim_blocks=True, lstrip_blocks=True)
_CACHE: dict[tuple[str, int, bool], Compiled] = {}
# While a run holds templates steady (`steady`), each file's modification time is checked once.
_STEADY: dict[tuple[Path, bool], Compiled] | None = None


@contextmanager
def steady() -> Iterator[None]:
    """Within the block each template file is read and stat-ed once (one `outreach send`
    renders thousands of messages from a few files); outside it, every load checks."""
    global _STEADY
    outer, _STEADY = _STEADY, {} if _STEADY is None else _STEADY
    try:
        yield
    finally:
        _STEADY = outer


def _compile(path: Path, source: str) -> tuple[jinja2.Template, bool]:
    try:
        ast = _ENV.parse(source, name=path.name, filename=str(path))
        code = _ENV.compile(ast, name=path.name, filename=str(path))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"{_where(path)} line {exc.lineno}: {exc.message}; fix the "
                            "template") from None
    constant = meta.find_undeclared_variables(ast) <= _CONSTANT_VARIABLES
    # A plain dict of the sandbox's globals, not the ChainMap make_globals gives: Jinja copies
    # the globals into every render's context, and iterating a ChainMap costs more than the
    # rest of building that context. Nothing changes globals after start-up.
    return _ENV.template_class.from_code(_ENV, code, dict(_ENV.globals)), constant


def _at_line(line: int, current: int) -> str:
    # A comment holding the missing newlines makes Jinja count lines as the file does.
    return "{#" + "\n" * (line - current) + "#}"


def _where(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def load(path: Path, *, email: bool) -> Compiled:
    """Parse and compile a template file (cached by path and modification time)."""
    if _STEADY is not None:
        found = _STEADY.get((path, email))
        if found is None:
            found = _STEADY[path, email] = _load(path, email=email)
        return found
    return _load(path, email=email)


def _load(path: Path, *, email: bool) -> Compiled:
    try:
        key = (str(path), os.stat(path).st_mtime_ns, email)
        if key in _CACHE:
            return _CACHE[key]
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(f"{_where(path)}: no such template; create it or fix the step's "
                            "name in outreach.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{_where(path)}: cannot read it as UTF-8 text ({exc})") from None
    source = source.replace("\r\n", "\n").lstrip("\ufeff")
    lines = source.split("\n")
    headers: list[tuple[str, int]] = []
    combined, current, body_line = "", 1, 1
    if email and lines and _HEADER_LINE.match(lines[0]):
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                body_line = number + 1
                break
            m = _HEADER_LINE.match(text)
            if not m:
                raise TemplateError(
                    f"{_where(path)} line {number}: expected a header line like "
                    "\"Subject: ...\" or a blank line before the body")
            if m[1].lower() in RESERVED:
                raise TemplateError(f"{_where(path)} line {number}: {m[1]} is written by "
                                    "outreach itself; remove the line")
            if m[1].lower() == "cc":  # one person, one ask: a copy would not even be sent
                raise TemplateError(f"{_where(path)} line {number}: Cc is not supported: each "
                                    "email goes to its prospect only; remove the line")
            headers.append((m[1], number))
            combined += _at_line(number, current) + m[2] + _SEP
            current = number
        else:
            body_line = len(lines) + 1
    if email and not any(h.lower() == "subject" for h, _ in headers):
        raise TemplateError(f'{_where(path)} line 1: no "Subject:" line; an email template '
                            'starts with "Subject: ..." and a blank line before the body')
    combined += _at_line(body_line, current) + "\n".join(lines[body_line - 1:])
    template, constant = _compile(path, combined)
    compiled = Compiled(name=path.stem, path=path, headers=tuple(headers), template=template,
                        constant=constant)
    _CACHE[key] = compiled
    return compiled


def _render(compiled: Compiled, context: Mapping[str, Any], who: str) -> str:
    try:
        return compiled.template.render(context)
    except jinja2.TemplateError as exc:
        error: Exception = exc
        problem = exc.message or type(exc).__name__
    except Exception as exc:  # a filter or a plugin's value blew up while rendering
        error = exc
        problem = f"{type(exc).__name__}: {exc}"
        if "no loader" in str(exc):  # {% include %}, {% import %}, {% extends %}
            problem = "a template cannot include, import or extend another; write it out"
    line = _error_line(error, compiled.path) or 1
    raise TemplateError(f"{_where(compiled.path)} line {line}: {problem} (prospect {who}); "
                        "fix the template or the prospect's data")


def _error_line(exc: BaseException, path: Path) -> int | None:
    """The template line an error was raised on: Jinja rewrites tracebacks to template frames."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(path):
            line = frame.lineno
    return line


# -- context ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceView:
    name: str


_PLAIN = frozenset({Prospect, Sender, Step, SequenceView})
# A prospect's columns that a template may print: blank ones need a fallback (see Blank).
_COLUMNS = frozenset({*KNOWN_COLUMNS, "name"})


@lru_cache(maxsize=64)
def _sequence_view(name: str) -> SequenceView:
    return SequenceView(name)


def context(app: Any, prospect: Prospect, step: Step, sequence: SequenceConfig | str, *,
            referrer: Prospect | None = None, last_email_date: str | None = None,
            plugins: bool = True) -> dict[str, Any]:
    """The variables of CONTRACT §5, plugins' extras underneath (they cannot replace ours)."""
    config: Config = app.config
    extra: dict[str, Any] = {}
    if plugins:
        from .plugins import has_impls

        if has_impls(app.pm, "template_context"):
            for result in app.fire("template_context", prospect=prospect, step=step):
                if isinstance(result, Mapping):
                    extra.update(result)
    name = sequence if isinstance(sequence, str) else sequence.name
    return {
        **extra,
        "prospect": prospect,
        "sender": config.sender,
        "referrer": referrer,
        "step": step,
        "sequence": _sequence_view(name),
        "unsubscribe_mailto": config.compliance.unsubscribe_mailto,
        "last_email_date": last_email_date,
    }


# -- rendering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """An email rendered for one prospect and step, before the envelope headers."""

    template: str
    variant: str
    subject: str
    headers: tuple[tuple[str, str], ...]
    body: str


_PATHS: dict[tuple[Path, str], Path] = {}


def template_path(config: Config, name: str) -> Path:
    key = (config.path, name)   # config.root builds a new Path on every call
    if key not in _PATHS:
        _PATHS[key] = config.templates_dir / f"{name}.txt"
    return _PATHS[key]


def render_template_email(config: Config, name: str, ctx: Mapping[str, Any], *, who: str,
                          variant: str = "A") -> Rendered:
    """Render an email template plus the footer; raise TemplateError naming file, line and who."""
    compiled = load(template_path(config, name), email=True)
    parts = _render(compiled, ctx, who).split(_SEP)
    if len(parts) != len(compiled.headers) + 1:
        raise TemplateError(f"{_where(compiled.path)}: a variable holds control characters "
                            f"(prospect {who}); clean the prospect's data")
    subject = ""
    headers: list[tuple[str, str]] = []
    for (header, line), value in zip(compiled.headers, parts, strict=False):
        value = value.strip(" \t")
        if "\r" in value or "\n" in value or "\x00" in value:
            raise TemplateError(f"{_where(compiled.path)} line {line}: the {header} "
                                f"header would contain a line break (prospect {who}); a "
                                "variable in it holds more than one line")
        if header.lower() == "subject":
            if not value:
                raise TemplateError(f"{_where(compiled.path)} line {line}: the Subject is "
                                    f"empty (prospect {who}); give its variables a fallback "
                                    "or write a subject")
            subject = value
        else:
            headers.append((header, value))
    body = parts[-1].strip("\n")
    return Rendered(template=name, variant=variant, subject=subject, headers=tuple(headers),
                    body=f"{body}\n\n{_footer(config, ctx, who)}\n")


_FOOTERS: dict[tuple[int, Sender, str], str] = {}


def _footer(config: Config, ctx: Mapping[str, Any], who: str) -> str:
    footer = load(config.compliance.footer, email=False)
    # The compiled footer lives in _CACHE for the process, so its id names it.
    key = (id(footer), config.sender, config.compliance.unsubscribe_mailto)
    if footer.constant and key in _FOOTERS:
        return _FOOTERS[key]
    text = _render(footer, ctx, who).strip("\n")
    if footer.constant:
        _FOOTERS[key] = text
    return text


def render_script(config: Config, name: str, ctx: Mapping[str, Any], *, who: str) -> str:
    compiled = load(template_path(config, name), email=False)
    return _render(compiled, ctx, who).strip("\n") + "\n"


def variant_letter(step: Step, template: str) -> str:
    """Which A/B variant a template is within its step: "A", "B", ..."""
    return chr(ord("A") + step.templates.index(template)) if template in step.templates else "A"


def _referrer(app: Any, prospect: Prospect) -> Prospect | None:
    return app.store.prospect_by_id(prospect.referrer_id) if prospect.referrer_id else None


def _sequence(app: Any, enrollment: Mapping[str, Any]) -> SequenceConfig:
    return app.config.sequences[enrollment["sequence"]]


def chosen_template(step: Step, prospect: Prospect, sequence: str,
                    enrollment: Mapping[str, Any] | None = None) -> str:
    """The step's template for this prospect: a variant already recorded, else a stable hash."""
    from .schedule import choose_variant

    if enrollment is not None and len(step.templates) > 1:
        recorded = json.loads(enrollment["variants"] or "{}").get(str(step.number))
        if recorded in step.templates:
            return recorded
    return choose_variant(step.templates, email=prospect.email, sequence=sequence,
                          step=step.number)


def render_email(app: Any, prospect: Prospect, enrollment: Mapping[str, Any],
                 step: Step) -> Rendered:
    """Render an enrollment's email step for a prospect (A/B variant chosen stably)."""
    sequence = _sequence(app, enrollment)
    name = chosen_template(step, prospect, sequence.name, enrollment)
    ctx = context(app, prospect, step, sequence, referrer=_referrer(app, prospect))
    return render_template_email(app.config, name, ctx, who=prospect.email,
                                 variant=variant_letter(step, name))


def render_call_script(app: Any, prospect: Prospect, enrollment: Mapping[str, Any],
                       step: Step, *, last_sent_at: str | None = None) -> str:
    """Render a call step's script; `last_email_date` is the day this enrollment last mailed
    (`last_sent_at`, an ISO time, when the caller knows it; else looked up)."""
    sequence = _sequence(app, enrollment)
    last = last_sent_at or app.store.last_email_sent_at(enrollment["id"])
    ctx = context(app, prospect, step, sequence, referrer=_referrer(app, prospect),
                  last_email_date=_spoken_date(app.config, prospect, last))
    return render_script(app.config, step.templates[0], ctx, who=prospect.email)


def _spoken_date(config: Config, prospect: Prospect, sent_at: str | None) -> str | None:
    if not sent_at:
        return None
    return _say_date(sent_at, prospect.timezone, config.sender.timezone,
                     config.sending.window_timezone)


@lru_cache(maxsize=256)
def _say_date(sent_at: str, prospect_zone: str, sender_zone: str, mode: str) -> str:
    """"Tuesday, March 3": the day an email went, in the prospect's (or sender's) time."""
    day = datetime.fromisoformat(sent_at).astimezone(zone_for(prospect_zone, sender_zone, mode))
    return f"{day:%A}, {day:%B} {day.day}"


def lint(rendered: Rendered) -> list[str]:
    """What `outreach check` warns about in a rendered email: length, links, HTML."""
    warnings = []
    body = rendered.body.rsplit("\n\n", 1)[0] if "\n\n" in rendered.body else rendered.body
    words = len(body.split())
    if words > MAX_WORDS:
        warnings.append(f"body is {words} words (keep it under {MAX_WORDS})")
    if _LINK.search(rendered.body) or _LINK.search(rendered.subject):
        warnings.append("contains a link (plain text without links lands in the inbox)")
    if _HTML.search(rendered.body):
        warnings.append("contains HTML tags (messages are plain text)")
    return warnings


# -- threading and message bytes ----------------------------------------------------------


@dataclass(frozen=True)
class Thread:
    """What a `thread = true` step replies to: the enrollment's earlier messages."""

    in_reply_to: str
    references: tuple[str, ...]
    subject: str


def reply_subject(subject: str) -> str:
    return "Re: " + _RE_PREFIX.sub("", subject)


def thread_for(previous: Sequence[Mapping[str, Any]]) -> Thread | None:
    """The thread from an enrollment's earlier handed-over messages (oldest first), if any."""
    if not previous:
        return None
    last = previous[-1]
    return Thread(in_reply_to=last["message_id"],
                  references=tuple(m["message_id"] for m in previous),
                  subject=reply_subject(last["subject"]))


def unsubscribe_token(email: str, secret: bytes) -> str:
    """A per-prospect token for List-Unsubscribe: an HMAC-SHA256 of the address under the
    database's own secret, 16 hex characters. Stable, and only this database can make one,
    so knowing someone's address is not enough to unsubscribe them."""
    return hmac.new(secret, email.strip().lower().encode(), hashlib.sha256).hexdigest()[:16]


def legacy_unsubscribe_token(email: str) -> str:
    """The unkeyed token mail sent before the secret carried: still honoured for it."""
    digest = hashlib.sha256(b"outreach-unsubscribe\x00" + email.strip().lower().encode())
    return digest.hexdigest()[:16]


def new_message_id(domain: str, *, enrollment_id: int, step: int, now: datetime) -> str:
    """`<stamp.enrollment.step.random@sender-domain>`: unique, and readable in a ledger."""
    return f"<{_stamp(now)}.{enrollment_id}.{step}.{secrets.token_hex(6)}@{domain}>"


@lru_cache(maxsize=8)
def _stamp(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S")


@dataclass
class Envelope:
    """A message ready for a transport: envelope addresses and the exact bytes."""

    mail_from: str
    rcpt_to: str
    message_id: str
    data: bytes
    subject: str
    meta: dict[str, Any] = field(default_factory=dict)

    def as_email_message(self) -> EmailMessage:
        """The parsed message, for plugins (built only when one listens)."""
        msg = BytesParser(policy=default_policy).parsebytes(self.data)
        assert isinstance(msg, EmailMessage)
        return msg


def compose(config: Config, prospect: Prospect, rendered: Rendered, *, message_id: str,
            now: datetime, unsubscribe_secret: bytes, thread: Thread | None = None) -> Envelope:
    """Assemble the message bytes of CONTRACT §7 for one rendered email."""
    sender = config.sender
    compliance = config.compliance
    subject = thread.subject if thread else rendered.subject
    token = unsubscribe_token(prospect.email, unsubscribe_secret)
    # The token is hex, so it needs no URL quoting.
    unsubscribe = f"<mailto:{compliance.unsubscribe_mailto}?subject=unsubscribe%20{token}>"
    if compliance.unsubscribe_url:
        unsubscribe += f", <{compliance.unsubscribe_url.replace('{token}', token)}>"
    lines = [
        _from_line(sender),
        # formataddr quotes and RFC 2047-encodes display names.
        "To: " + formataddr((prospect.name, prospect.email), charset="utf-8"),
        _header("Subject", subject),
        _date_line(now, sender.timezone),
        "Message-ID: " + message_id,
    ]
    if thread:
        lines.append("In-Reply-To: " + thread.in_reply_to)
        lines.append(_fold("References", thread.references))
    lines.append(_header("List-Unsubscribe", unsubscribe))
    if compliance.unsubscribe_url:
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    lines.extend(_header(name, value) for name, value in rendered.headers)
    body = rendered.body.replace("\r\n", "\n").replace("\r", "\n")
    if body.isascii() and all(len(line) <= 998 for line in body.split("\n")):
        encoding, payload = "7bit", body.replace("\n", "\r\n")
    else:
        encoding = "quoted-printable"
        payload = quoprimime.body_encode(body.encode("utf-8").decode("latin-1"),
                                         maxlinelen=76, eol="\r\n")
        if not payload.endswith("\r\n"):
            payload += "\r\n"
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: " + encoding]
    data = ("\r\n".join(lines) + "\r\n\r\n" + payload).encode("ascii")
    return Envelope(mail_from=sender.email, rcpt_to=prospect.email, message_id=message_id,
                    data=data, subject=subject)


@lru_cache(maxsize=8)
def _from_line(sender: Sender) -> str:
    return "From: " + formataddr((sender.name, sender.email), charset="utf-8")


@lru_cache(maxsize=8)
def _date_line(now: datetime, zone: str) -> str:
    # A run stamps its messages with its own moment (seconds precision).
    return "Date: " + format_datetime(now.astimezone(ZoneInfo(zone)))


def _header(name: str, value: str) -> str:
    """One header line: ASCII folded at spaces, anything else as RFC 2047 encoded words."""
    if value.isascii() and "=?" not in value:
        return _fold(name, value.split(" "))
    return f"{name}: " + Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def _fold(name: str, words: Iterable[str]) -> str:
    out, line = [], f"{name}:"
    for word in words:
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            out.append(line)
            line = ""
        line += " " + word if line or out else word
    out.append(line)
    return "\r\n".join(out)


# -- outreach check -----------------------------------------------------------------------


def check_templates(app: Any) -> tuple[list[str], list[str]]:
    """Render every step's template(s) for every enrolled prospect: (errors, warnings).

    Problems repeat across prospects, so each is reported once with who it affects.
    """
    errors: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    config: Config = app.config
    # Call scripts are body only: a first line like "Goal: find the owner" is not a header.
    uses = {(n, s.kind == "email") for seq in config.sequences.values() for s in seq.steps
            for n in s.templates}
    for name, email in sorted(uses):
        try:
            load(template_path(config, name), email=email)
        except TemplateError as exc:
            errors.setdefault(str(exc), [])
    try:
        load(config.compliance.footer, email=False)
    except TemplateError as exc:
        errors.setdefault(str(exc), [])
    if errors:
        return list(errors), []
    enrollments = [e for e in app.store.open_enrollments() if e["sequence"] in config.sequences]
    prospects = app.store.prospects_by_ids({e["prospect_id"] for e in enrollments})
    for enrollment in enrollments:
        prospect = prospects[enrollment["prospect_id"]]
        for step in config.sequences[enrollment["sequence"]].steps:
            for name in step.templates:
                who = f" (prospect {prospect.email})"
                try:
                    if step.kind == "call":
                        render_call_script(app, prospect, enrollment, step)
                        continue
                    ctx = context(app, prospect, step, enrollment["sequence"],
                                  referrer=_referrer(app, prospect))
                    rendered = render_template_email(config, name, ctx, who=prospect.email)
                except TemplateError as exc:
                    errors.setdefault(str(exc).replace(who, ""), []).append(prospect.email)
                    continue
                for warning in lint(rendered):
                    key = f"{_where(template_path(config, name))}: {warning}"
                    warnings.setdefault(key, []).append(prospect.email)
    return [_who(k, v) for k, v in errors.items()], [_who(k, v) for k, v in warnings.items()]


WHO_SHOWN = 5


def _who(problem: str, emails: list[str]) -> str:
    """The problem and who it affects: the first few addresses, then how many more."""
    if not emails:
        return problem
    shown = ", ".join(emails[:WHO_SHOWN])
    more = f" and {len(emails) - WHO_SHOWN} more" if len(emails) > WHO_SHOWN else ""
    return f"{problem} [{'prospect' if len(emails) == 1 else 'prospects'} {shown}{more}]"
