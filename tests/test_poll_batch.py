"""`outreach poll` acts on a batch in one transaction: hooks after the commit, in order, and a
pass that dies half-way leaves the batch unacted and unseen."""

from __future__ import annotations

import mailbox
import sqlite3

import pytest

from outreach import hookimpl
from outreach.replies import poll
from outreach.store import Store
from tests.test_poll import drop, seed, state

# The three messages and the hooks each one fires, in the order it fires them.
MESSAGES = {
    "cfo3@maker3.example": [("stage_changed", "cfo3@maker3.example", "lead"),
                            ("reply_received", "cfo3@maker3.example", "reply")],
    "cfo17@maker17.example": [("stage_changed", "cfo17@maker17.example", "lead"),
                              ("reply_received", "cfo17@maker17.example", "reply"),
                              ("prospect_imported", "jane.smith@maker17.example", None),
                              ("reply_received", "jane.smith@maker17.example", "referral")],
    "cfo8@maker8.example": [("stage_changed", "cfo8@maker8.example", "not-interested"),
                            ("reply_received", "cfo8@maker8.example", "reply")],
}


class Probe:
    """Records each hook call and what another connection to the database sees then."""

    def __init__(self, campaign) -> None:
        self.campaign = campaign
        self.calls: list[tuple[str, str, str | None]] = []
        self.seen: list[tuple[bool, int]] = []

    def _look(self) -> None:
        if self.campaign.store_url:
            self.seen.append(self._look_postgres())
            return
        other = sqlite3.connect(self.campaign.root / "outreach.db", timeout=0,
                                isolation_level=None)
        try:
            try:  # `outreach send` would take the write lock now: it must be free
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                free = True
            except sqlite3.OperationalError:
                free = False
            committed = other.execute("SELECT count(*) FROM inbound").fetchone()[0]
        finally:
            other.close()
        self.seen.append((free, committed))

    def _look_postgres(self) -> tuple[bool, int]:
        import psycopg

        with psycopg.connect(self.campaign.store_url, autocommit=True) as other:
            try:  # an open poll transaction holds a ROW EXCLUSIVE lock on inbound
                with other.transaction():
                    other.execute("LOCK TABLE inbound IN EXCLUSIVE MODE NOWAIT")
                free = True
            except psycopg.errors.LockNotAvailable:
                free = False
            row = other.execute("SELECT count(*) FROM inbound").fetchone()
            return free, row[0] if row else 0

    @hookimpl
    def stage_changed(self, prospect, old, new):
        self._look()
        self.calls.append(("stage_changed", prospect.email, new))

    @hookimpl
    def reply_received(self, prospect, reply, kind):
        self._look()
        self.calls.append(("reply_received", prospect.email, kind))

    @hookimpl
    def prospect_imported(self, prospect):
        self._look()
        self.calls.append(("prospect_imported", prospect.email, None))


@pytest.fixture
def batch(campaign):
    seeded = seed(campaign)
    drop(seeded, "reply-apple-mail", "referral-name-and-address", "reply-not-interested")
    box = mailbox.Maildir(seeded.root / "mail")
    # The order the pass reads them in: the Maildir's keys, sorted.
    order = [box.get_message(k)["From"].split("<")[1].rstrip(">") for k in sorted(box.keys())]
    return seeded, order


def run_poll(campaign, probe: Probe):
    with campaign.app() as app:
        app.pm.register(probe, name="probe")
        try:
            return poll(app)
        finally:
            app.pm.unregister(name="probe")


def test_hooks_fire_after_the_commit_in_order(batch):
    campaign, order = batch
    probe = Probe(campaign)
    result = run_poll(campaign, probe)
    assert (result.processed, result.replies, result.referrals) == (3, 3, 1)
    assert probe.calls == [call for sender in order for call in MESSAGES[sender]]
    # Every hook ran with the write lock free and the whole batch already committed.
    assert probe.seen == [(True, 3)] * len(probe.calls)


def test_a_failing_action_undoes_that_message_only(batch, monkeypatch):
    campaign, order = batch

    def broken(self, rows, *, at):
        raise RuntimeError("disk on fire")

    # Fails in cfo17's reply after its stage moved and two of its hooks were queued.
    monkeypatch.setattr(Store, "insert_prospects", broken)
    probe = Probe(campaign)
    result = run_poll(campaign, probe)
    assert (result.processed, result.replies, result.referrals) == (3, 2, 0)
    assert [m["error"] for m in result.malformed] == ["RuntimeError: disk on fire"]
    assert probe.calls == [call for sender in order if sender != "cfo17@maker17.example"
                           for call in MESSAGES[sender]]
    s17 = state(campaign, "cfo17@maker17.example")
    assert s17["stage"] == "prospect" and s17["stages"] == []
    assert s17["enrollments"][0]["state"] == "active"
    assert not [e for e in s17["events"] if e["kind"] in ("reply", "enrollment_ended")]
    assert state(campaign, "cfo3@maker3.example")["stage"] == "lead"
    with campaign.app() as app:
        kinds = sorted(r["kind"] for r in app.store.inbound())
    assert kinds == ["malformed", "reply", "reply"]


def test_a_batch_that_fails_at_its_end_is_acted_on_again_and_loses_no_row(batch, monkeypatch):
    campaign, order = batch
    drop(campaign, "reply-unmatched-stranger")  # recorded before the actions run
    real = Store.add_inbound_many
    calls = []

    def fails_once(self, rows):
        calls.append(len(rows))
        if len(calls) == 1:  # the first attempt dies after every action: all rolled back
            raise RuntimeError("disk hiccup")
        real(self, rows)

    monkeypatch.setattr(Store, "add_inbound_many", fails_once)
    probe = Probe(campaign)
    result = run_poll(campaign, probe)
    assert calls == [4, 4]
    assert (result.processed, result.replies, result.referrals, result.unmatched) == (4, 3, 1, 1)
    assert result.malformed == []
    assert probe.calls == [call for sender in order for call in MESSAGES[sender]]
    for sender in order:  # acted on once, not twice
        assert len([e for e in state(campaign, sender)["events"] if e["kind"] == "reply"]) == 1
    with campaign.app() as app:
        kinds = sorted(r["kind"] for r in app.store.inbound())
    assert kinds == ["referral", "reply", "reply", "unmatched"]


def test_a_pass_that_dies_mid_batch_leaves_it_unacted_and_unseen(batch, monkeypatch):
    campaign, order = batch

    def killed(self, rows, *, at):
        raise KeyboardInterrupt  # not a bad message: the process is going away

    with monkeypatch.context() as patch:
        patch.setattr(Store, "insert_prospects", killed)
        probe = Probe(campaign)
        with pytest.raises(KeyboardInterrupt):
            run_poll(campaign, probe)
    assert probe.calls == []  # nothing committed, so nothing announced
    for sender in order:
        s = state(campaign, sender)
        assert s["stage"] == "prospect" and s["enrollments"][0]["state"] == "active"
        assert not [e for e in s["events"] if e["kind"] == "reply"]
    with campaign.app() as app:
        assert app.store.inbound() == []

    # The next pass reads the whole batch again and acts on it once.
    probe = Probe(campaign)
    result = run_poll(campaign, probe)
    assert (result.processed, result.replies, result.referrals) == (3, 3, 1)
    assert probe.calls == [call for sender in order for call in MESSAGES[sender]]


@pytest.mark.dovecot
def test_imap_position_moves_only_after_the_batch_is_saved(campaign, dovecot, monkeypatch):
    from tests.test_inbox_imap import eml, use_imap

    seed(campaign)
    use_imap(campaign, dovecot)
    for name in ("reply-apple-mail", "referral-name-and-address", "reply-not-interested"):
        dovecot.append(eml(name))

    def killed(self, rows, *, at):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(Store, "insert_prospects", killed)
        with pytest.raises(KeyboardInterrupt):
            run_poll(campaign, Probe(campaign))
    with campaign.app() as app:
        assert app.store.inbound() == []
        assert app.store.db.execute("SELECT count(*) FROM mailbox_state WHERE last_uid > 0"
                                    ).fetchone()[0] == 0  # the UIDs read are not yet seen
    result = run_poll(campaign, Probe(campaign))
    assert (result.processed, result.replies, result.referrals) == (3, 3, 1)
    assert campaign.run_json("poll")["processed"] == 0


def test_imap_reads_ahead_and_a_pass_dying_in_a_later_batch_keeps_the_earlier_ones(
        campaign, dovecot, monkeypatch):
    """Batches of 2: the next batch is fetched while one is acted on. A pass that dies in
    the second batch keeps the first (and the position after it), never the read-ahead."""
    from tests.test_inbox_imap import eml, use_imap

    seed(campaign)
    use_imap(campaign, dovecot)
    names = ("reply-apple-mail", "reply-not-interested", "reply-outlook-interested",
             "reply-spanish", "reply-german-outlook")
    for name in names:
        dovecot.append(eml(name))
    monkeypatch.setattr("outreach.inbox.BATCH", 2)
    calls = {"n": 0}
    real = Store.add_inbound_many

    def dies_on_the_second(self, rows):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, rows)

    with monkeypatch.context() as patch:
        patch.setattr(Store, "add_inbound_many", dies_on_the_second)
        with pytest.raises(KeyboardInterrupt):
            run_poll(campaign, Probe(campaign))
    with campaign.app() as app:
        assert len(app.store.inbound()) == 2
        assert app.store.db.execute("SELECT last_uid FROM mailbox_state").fetchone()[0] == \
            app.store.db.execute("SELECT max(uid) FROM inbound").fetchone()[0]
    result = run_poll(campaign, Probe(campaign))
    assert (result.processed, result.replies) == (3, 3)
    assert campaign.run_json("poll")["processed"] == 0
    with campaign.app() as app:
        assert len(app.store.inbound()) == 5


class Seen:
    """Records, for each stage change and reply hook, what the prospect looked like then
    and whether the garbage collector was running."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object, bool]] = []

    def _add(self, hook: str, prospect) -> None:
        import gc

        self.calls.append((hook, prospect.stage, prospect.last_activity, gc.isenabled()))

    @hookimpl
    def stage_changed(self, prospect, old, new):
        self._add("stage_changed", prospect)

    @hookimpl
    def reply_received(self, prospect, reply, kind):
        if kind == "reply":
            self._add("reply_received", prospect)


def test_the_garbage_collector_is_paused_for_a_pass_and_left_as_found(batch):
    import gc

    campaign, _ = batch
    assert gc.isenabled()
    seen = Seen()
    result = run_poll(campaign, seen)
    assert result.replies == 3 and [c[3] for c in seen.calls] == [False] * 6
    assert gc.isenabled()
    gc.disable()
    try:
        drop(campaign, "reply-unmatched-stranger")
        assert run_poll(campaign, Seen()).processed == 1
        assert not gc.isenabled()  # a caller that turned it off keeps it off
    finally:
        gc.enable()


def test_hooks_see_the_prospect_as_the_reply_left_it(batch):
    from outreach.clock import now

    campaign, _ = batch
    seen = Seen()
    run_poll(campaign, seen)
    today = now().date()
    assert sorted(c[:3] for c in seen.calls) == sorted(
        [("stage_changed", "lead", today), ("reply_received", "lead", today)] * 2
        + [("stage_changed", "not-interested", today),
           ("reply_received", "not-interested", today)])
