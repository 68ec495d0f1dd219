"""Pure: poll's hand-split header block is exactly what email.feedparser makes of it."""

from __future__ import annotations

from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from outreach.classify import IndexedMessage
from outreach.replies import parse_head

CORPUS = Path(__file__).parent / "corpus"
PARSER = BytesParser(IndexedMessage, policy=policy.compat32)

SHAPES = [
    b"From: a@b.example\nSubject: hi\n\nbody\n",
    b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n",
    b"From: a@b.example\r\nSubject: \xc3\xa9t\xc3\xa9\r\n folded\r\n\tagain\r\n\r\nbody\xff\r\n",
    b"Subject: x\nFrom: a@b.example\n\n\n\nbody after blank lines\n",
    b"From: a@b.example\nSubject: no blank line, no body",
    b"From: a@b.example\nSubject: ends at the header block\n",
    b"From: a@b.example\n \nSubject: a whitespace-only fold\n\nbody",
    b"From: a@b.example\nSubject: LF lines, then a CRLF blank line\n\r\nbody\r\n",
    b"From: a@b.example\r\nX-Mixed: LF after CRLF\n\tfold\r\n\nbody",
    b"From: a@b.example\nX-Ctl: vertical\x0btab and form\x0cfeed\x1c\n\nbody",
    b"From: a@b.example\nSubject:\n\tvalue on the fold only\nTo:x@y.example\n\nbody",
    b"From: a@b.example\nX-Empty:\n\n",
    # Shapes the parser handles itself (defects, mbox From_, bare CR): same result.
    b"From x@y Mon Mar  2 10:00:00 2026\nFrom: a@b.example\n\nbody",
    b"X: a\r\r\nY: b\n\nbody",
    b"From: a@b.example\rSubject: x\r\rbody",
    b": no name\nFrom: a@b.example\n\nbody",
    b" starts folded\nFrom: a@b.example\n\nbody",
    b"From: a@b.example\nnot a header line\nSubject: x\n\nbody",
    b"From: a@b.example\nX-Bad name: w\n\nbody",
    b"\nFrom: a@b.example\n",
    b"",
    b"\x00\x01garbage without a colon",
]


def state(message) -> dict:
    fields = {k: v for k, v in vars(message).items()
              if k not in ("_index", "_indexed", "_listed", "_params")}
    fields["defects"] = [type(d).__name__ for d in fields.get("defects", [])]
    return fields


@pytest.mark.parametrize("raw", SHAPES + [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))])
def test_parse_head_is_the_parsers_header_block(raw):
    assert state(parse_head(raw)) == state(PARSER.parsebytes(raw, headersonly=True))


def test_indexed_message_finds_headers_like_the_stock_one():
    raw = (b"From: a@b.example\nReceived: one\nreceived: two\nSubject: =?utf-8?q?caf=C3=A9?=\n"
           b"Content-Type: text/plain; charset=latin-1\n\nbody\n")
    fast = parse_head(raw)
    stock = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
    for name in ("from", "RECEIVED", "Subject", "X-Missing"):
        assert fast.get(name) == stock.get(name)
        assert fast.get_all(name) == stock.get_all(name)
        assert (name in fast) == (name in stock)
    assert fast.get_content_charset() == "latin-1"
    # Edits reach lookups, even one that leaves the header count as it was.
    fast.replace_header("Subject", "changed")
    del fast["received"]
    fast["X-New"] = "added"
    fast["X-Other"] = "also"
    assert (fast.get("Subject"), fast.get_all("Received"), fast.get("x-new")) == (
        "changed", None, "added")


def test_indexed_message_forgets_what_it_read_when_headers_change():
    from outreach.classify import header

    fast = parse_head(b"From: a@b.example\nSubject: one\nContent-Type: multipart/mixed; "
                      b"boundary=x\n\n--x--\n")
    assert (header(fast, "Subject"), fast.get_content_type()) == ("one", "multipart/mixed")
    fast.replace_header("Subject", "two")
    fast.set_type("multipart/alternative")
    assert (header(fast, "Subject"), fast.get_content_type()) == ("two", "multipart/alternative")
    fast.set_boundary("y")  # rebuilds the header list at the same length
    assert fast.get_boundary() == "y"
    del fast["Content-Type"]
    fast.set_default_type("message/rfc822")
    assert fast.get_content_type() == "message/rfc822"


@pytest.mark.parametrize("value", [
    "text/plain", "text/plain; charset=utf-8", " TEXT/Plain ;Charset = UTF-8 ;", "text/plain;",
    "multipart/report; report-type=delivery-status; boundary=b1", "a=b=c; x=<y>; =v; k=; n",
    "text/plain; charset=iso-8859-1\r\n\tformat=flowed", "", ";;", "x; a\\b=c\\d", "é=ü; ä",
])
def test_simple_content_type_params_are_the_stock_parse(value):
    from email.message import Message

    from outreach.classify import _simple_params

    stock = Message()
    stock["Content-Type"] = value
    assert _simple_params(value) == Message._get_params_preserve(stock, None, "content-type")
    if not value.isascii():  # 8-bit header bytes read through the stock parse anyway
        return
    fast = parse_head(f"Content-Type: {value}\n\nbody".encode())
    assert fast.get_params() == stock.get_params()
    assert fast.get_content_charset() == stock.get_content_charset()
