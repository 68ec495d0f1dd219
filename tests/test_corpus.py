"""Real-world mail through the real `poll`: flufl.bounce's 111 bounces and real spam-complaint
reports, each in a fresh campaign whose prospects (the addresses it names) were sent the first
email. Prints the score; see tests/corpus/*/README.md for where the messages come from."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from outreach.app import App
from outreach.inbox import Inbound
from outreach.replies import poll

CORPUS = Path(__file__).parent / "corpus"
NOW = "2026-03-02T15:00:00+00:00"


class _One:
    """A mail source holding one message."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def batches(self, store):
        yield [Inbound("corpus", "1", self.raw)]

    def close(self) -> None:
        pass


def _poll_one(campaign, fresh_store, n: int, raw: bytes, addresses: list[str],
              message_id: str | None = None) -> App:
    """A fresh database with `addresses` enrolled and sent one email, then one poll of `raw`.
    With no address (a report that names nobody), a prospect stands in for whom `message_id`
    was sent."""
    config = replace(campaign.config(), **fresh_store(f"corpus-{n}"))
    app = App.open(config)
    now = datetime.fromisoformat(NOW)
    people = addresses or ["complainant@redacted.example"]
    app.store.insert_prospects([{"email": a, "custom": "{}"} for a in people], at=now)
    for i, address in enumerate(people):
        prospect = app.store.prospect(address)
        enrollment = app.store.enroll(prospect.id, "referral", at=now)
        sent = message_id if message_id and i == 0 else f"<sent-{n}-{i}@acme.example>"
        app.store.add_ledger_row(enrollment, step=0, message_id=sent,
                                 at=now - timedelta(hours=6))
    poll(app, source=_One(raw))
    return app


def _table(name: str) -> list[dict]:
    return json.loads((CORPUS / name / "expected.json").read_text(encoding="utf-8"))


def test_flufl_bounce_corpus(campaign, fresh_store, capsys):
    """>= 97 of the 100 permanent bounces suppress every address they name; all 11 warnings
    suppress nobody; nobody named becomes a lead."""
    campaign.now(NOW)
    rows = [r for r in _table("flufl-bounce") if r["addresses"]]
    permanent = [r for r in rows if not r["warning"]]
    warnings = [r for r in rows if r["warning"]]
    assert (len(permanent), len(warnings)) == (100, 11)
    misses, wrong = [], []
    for n, row in enumerate(rows):
        raw = (CORPUS / "flufl-bounce" / row["file"]).read_bytes()
        addresses = [a.lower() for a in row["addresses"]]
        with _poll_one(campaign, fresh_store, n, raw, addresses) as app:
            suppressed = [a for a in addresses if app.store.is_suppressed(a)]
            leads = [a for a in addresses if app.store.prospect(a).stage != "prospect"]
            events = app.store.events_by_prospect(("bounce",))
        if leads:
            wrong.append(f"{row['file']}: became {leads}")
        if row["warning"] and (suppressed or not events):
            wrong.append(f"{row['file']}: warning suppressed {suppressed} / not recorded")
        if not row["warning"] and suppressed != addresses:
            misses.append(f"{row['file']}: suppressed {suppressed} of {addresses}")
    score = len(permanent) - len(misses)
    with capsys.disabled():
        print(f"\nflufl.bounce corpus: {score}/100 permanent bounces suppress every address "
              f"they name; {len(warnings) - len(wrong)}/11 warnings suppress nobody")
    assert not wrong
    assert score == 100, misses   # the README's figure: a drop fails here, not silently


def test_complaint_corpus(campaign, fresh_store, capsys):
    """Every spam-complaint report suppresses its complainants (by address or by our
    Message-ID), ends their sequences and makes no lead; other feedback (a DMARC forensic
    report) touches nobody it names."""
    campaign.now(NOW)
    rows = _table("arf")
    assert len(rows) == 11   # the README's "11/11": a sample dropped from the table fails
    failures = []
    for n, row in enumerate(rows):
        raw = (CORPUS / "arf" / row["file"]).read_bytes()
        addresses = row["addresses"]
        with _poll_one(campaign, fresh_store, n, raw, addresses, row.get("message_id")) as app:
            for address in addresses or ["complainant@redacted.example"]:
                prospect = app.store.prospect(address)
                states = {e["state"] for e in app.store.enrollments(prospect.id)}
                complained = app.store.is_suppressed(address) and states == {"complained"}
                untouched = not app.store.is_suppressed(address) and states == {"active"}
                right = complained if row["kind"] == "complaint" else untouched
                if not right or prospect.stage != "prospect":
                    failures.append(f"{row['file']}: {address} suppressed="
                                    f"{app.store.is_suppressed(address)} {states} "
                                    f"{prospect.stage}")
    with capsys.disabled():
        print(f"\nspam-complaint corpus: {len(rows) - len({f.split(':')[0] for f in failures})}"
              f"/{len(rows)} reports read right")
    assert not failures


@pytest.mark.parametrize("name", ["simple_42.txt", "simple_43.txt", "qmail_08.txt",
                                  "bounce_01.txt", "dumbass_01.txt"])
def test_notices_naming_nobody_are_never_replies(name):
    """The corpus's machine notices that name no address: never a reply."""
    from outreach import classify
    from outreach.replies import Mail

    verdict = classify.classify(Mail((CORPUS / "flufl-bounce" / name).read_bytes()).message)
    assert verdict.kind in ("bounce", "auto_reply", "other"), verdict
