"""The store migrates on open and refuses what it cannot understand."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from outreach.errors import StoreError
from outreach.migrations import MIGRATIONS
from outreach.store import Store

TABLES = {"prospects", "suppressions", "enrollments", "messages", "inbound", "mailbox_state",
          "call_tasks", "stage_history", "events", "locks", "secrets"}


def test_empty_database_is_migrated_to_the_current_schema(tmp_path):
    with Store(tmp_path / "new.db") as store:
        assert store.version == len(MIGRATIONS)
        names = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master "
                                                "WHERE type = 'table'")}
        assert names >= TABLES
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Opening again applies nothing twice.
    with Store(tmp_path / "new.db") as store:
        assert store.version == len(MIGRATIONS)


def test_each_database_gets_its_own_unsubscribe_secret_once(tmp_path):
    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        secret = a.unsubscribe_secret()
        assert len(secret) == 32 and secret != b.unsubscribe_secret()
    with Store(tmp_path / "a.db") as again:  # made once: the same on every open
        assert again.unsubscribe_secret() == secret


def test_database_from_a_newer_outreach_is_refused(tmp_path):
    path = tmp_path / "future.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match=r"future.db: written by a newer outreach .*Upgrade"):
        Store(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not SQLite" * 100)
    with pytest.raises(StoreError, match=r"notes.db: not an outreach database"):
        Store(path)


def test_one_open_enrollment_per_prospect_is_enforced_by_the_schema(campaign):
    campaign.run("import", str(campaign.write_csv([{"email": "a@b.example"}])))
    with campaign.app() as app:
        pid = app.store.prospect("A@B.example").id
        app.store.enroll(pid, "referral", at=app.now())
        with pytest.raises(app.store.db.IntegrityError):
            app.store.db.execute("INSERT INTO enrollments (prospect_id, sequence, started_at) "
                                 "VALUES (?, 'referred', '2026-03-01')", (pid,))
        # enroll (another rep's, say) is told no instead of failing.
        assert app.store.enroll(pid, "referred", at=app.now()) is None
        assert len(app.store.enrollments(pid)) == 1


def test_transaction_rolls_back_on_error(campaign):
    with campaign.app() as app:
        with pytest.raises(RuntimeError), app.store.transaction():
            app.store.suppress("x@y.example", reason="t", source="test", at=app.now())
            raise RuntimeError
        assert not app.store.is_suppressed("x@y.example")


def set_store(campaign, line):
    """Replace the [store] line (on the PostgreSQL pass the fixture's url)."""
    old = f'url = "{campaign.store_url}"' if campaign.store_url else 'path = "outreach.db"'
    campaign.edit_config(old, line)


@pytest.mark.parametrize(("store", "error"), [
    ('url = "postgresql://dana:hunter2@db.example/outreach"',
     "[store] url holds a password: take it out and name the variable that holds it in "
     "[store] password_env (or use libpq's PGPASSWORD or ~/.pgpass)"),
    ('url = "mysql://db.example/outreach"',
     '[store] url "mysql://db.example/outreach" is not a postgresql:// URL (for SQLite give '
     "a file path)"),
    ('url = "postgresql://db.example/outreach"\npath = "x.db"',
     "[store] path and url are both set: keep one"),
    ('url = "postgresql://db.example/o"\npassword_env = "my secret"',
     '[store] password_env "my secret" is not an environment variable name'),
])
def test_store_config_errors_name_the_key(campaign, store, error):
    set_store(campaign, store)
    result = campaign.run("prospects")
    assert result.exit_code == 1
    assert f"outreach.toml: {error}" in result.stderr


def test_a_url_that_is_a_path_is_sqlite(campaign):
    set_store(campaign, 'url = "state/team.db"')
    assert campaign.run("prospects").exit_code == 0
    assert (campaign.root / "state" / "team.db").exists()


def test_claim_counts_today_s_messages_as_the_limits_do(campaign):
    """claim_steps's counts: today's messages not failed; the rep's with those from before
    team mode; per mailbox; per email domain of the chunk (the address's, whatever the
    prospect's company domain column says), from every rep."""
    campaign.run("import", str(campaign.write_csv([
        {"email": f"p{i}@{d}.example", "domain": "website.example"}
        for i, d in enumerate(["acme", "acme", "acme", "acme", "beta", "gamma"])])))
    with campaign.app() as app:
        store, now = app.store, app.now()
        ids = [store.enroll(store.prospect(f"p{i}@{d}.example").id, "s", at=now, rep="a")
               for i, d in enumerate(["acme", "acme", "acme", "acme", "beta", "gamma"])]
        sent = [(ids[0], "a", "mb1", now), (ids[1], "b", "mb1", now), (ids[2], None, None, now),
                (ids[3], "a", "mb2", now - timedelta(days=1)), (ids[4], "a", "mb2", now)]
        with store.transaction():
            for n, (enrollment, rep, mailbox, at) in enumerate(sent):
                store.add_intents([{"enrollment_id": enrollment, "step": 0, "template": "t",
                                    "variant": None, "message_id": f"<{n}@x>", "subject": "",
                                    "rep": rep, "mailbox": mailbox}], at=at)
        store.set_message_status(store.add_ledger_row(ids[1], step=1, message_id="<f@x>",
                                                      at=now), "failed")
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        with store.transaction():
            store.lock_quota()
            mine, quota = store.claim_steps(
                [(ids[0], 0), (ids[5], 0), (ids[3], 1)], start=start,
                end=start + timedelta(days=1), rep="a",
                domains={"acme.example", "gamma.example"})
    assert mine == {ids[5]}   # ids[0] has its step-0 message; ids[3] is at step 0, not 1
    assert quota == (3, {"mb1": 2, "mb2": 1}, {"acme.example": 3, "gamma.example": 0})
