"""Pure: is this a spam-complaint report (a feedback loop), and whom does it name?

RFC 5965 ARF (`multipart/report; report-type=feedback-report`, or any message carrying a
`message/feedback-report` part, as some providers omit the report-type) and Microsoft's JMRP
(Outlook.com/Hotmail: the original attached with `X-HmXmrOriginalRecipient`). The complainant
is named by `Original-Rcpt-To`/`Removal-Recipient`, the attached original's `To`, or only by
the Message-ID of ours in the attached headers (providers that redact the address).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses

# Feedback types a person's action caused (RFC 5965 abuse/fraud/virus/other, RFC 6650's
# opt-out); auth-failure (DMARC forensics) and not-spam tell of nobody's wish to stop.
NOT_COMPLAINTS = ("auth-failure", "not-spam")
_MSGID = re.compile(r"<[^<>\s]+>|\b[^<>\s@]+@[^<>\s@]+\b")
_ADDRESS = re.compile(r"^[^@\s<>\"(),;:]+@[\w-]+(?:\.[\w-]+)+$")
_ATTACHED = ("message/rfc822", "text/rfc822-headers", "text/rfc822-header",
             "message/rfc822-headers")


@dataclass
class Feedback:
    """What a feedback report says: its type, the complainants, our message it is about."""

    feedback_type: str
    addresses: list[str] = field(default_factory=list)
    original_ids: list[str] = field(default_factory=list)
    fmt: str = "ARF"

    @property
    def is_complaint(self) -> bool:
        return self.feedback_type not in NOT_COMPLAINTS


def read(message: Message) -> Feedback | None:
    """The feedback report in `message`, or None when it is none."""
    if message.get_content_maintype() != "multipart":
        return None
    report = message.get_content_type() == "multipart/report" and (
        str(message.get_param("report-type") or "")).lower() == "feedback-report"
    fields: Message | None = None
    attached: list[Message] = []
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype == "message/feedback-report":
            fields = _fields(part)
        elif ctype in _ATTACHED:
            attached.append(_headers_of(part))
    jmrp = any("X-HmXmrOriginalRecipient" in a for a in attached)
    if fields is None and not report and not jmrp:
        return None
    feedback = Feedback(
        feedback_type=str(fields.get("Feedback-Type", "abuse") if fields is not None
                          else "abuse").strip().lower(),
        fmt="ARF" if fields is not None or report else "JMRP")
    names: list[str] = []
    if fields is not None:
        for key in ("Original-Rcpt-To", "Removal-Recipient"):
            names.extend(str(v) for v in fields.get_all(key) or ())
    for original in attached:
        names.extend(str(v) for v in original.get_all("X-HmXmrOriginalRecipient") or ())
        names.extend(str(v) for v in original.get_all("To") or ())
        feedback.original_ids.extend(_MSGID.findall(str(original.get("Message-ID") or "")))
    for _, address in getaddresses(names):
        address = address.strip().lower()
        if _ADDRESS.match(address) and address not in feedback.addresses:
            feedback.addresses.append(address)
    feedback.original_ids = [i if i.startswith("<") else f"<{i}>"
                             for i in dict.fromkeys(feedback.original_ids)]
    return feedback


def _fields(part: Message) -> Message:
    """The report's `Name: value` block (parsed by the email package, or still text)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        found = next((p for p in payload if isinstance(p, Message)), None)
        if found is not None:
            return found
    from email.parser import HeaderParser

    text = payload if isinstance(payload, str) else ""
    return HeaderParser().parsestr(text.lstrip("\r\n"))


def _headers_of(part: Message) -> Message:
    """The attached original's headers, whether attached whole or as headers only."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    from email.parser import HeaderParser

    decoded = part.get_payload(decode=True)
    text = decoded.decode("utf-8", "replace") if isinstance(decoded, bytes) else str(payload)
    return HeaderParser().parsestr(text.lstrip("\r\n"), headersonly=True)
