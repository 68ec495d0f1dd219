"""`outreach db copy`: a campaign's whole database into another (a solo SQLite file into the
team's PostgreSQL), verified; a non-empty target refused unless --merge, which never
duplicates a prospect or a ledger row."""

from __future__ import annotations

from datetime import datetime

import pytest

from outreach.dbcopy import TABLES
from outreach.store import Store

from .conftest import engine_under_test, prospect_row

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"


def worked(campaign, numbers=range(6), now=THURSDAY_MORNING):
    """A campaign with something in every table: sent mail, call tasks and an outcome, a
    stage, a suppression, a reply read, a mailbox position."""
    campaign.now(now)
    rows = [prospect_row(n) for n in numbers]
    rows[1]["pain_point"] = "a custom field"
    assert campaign.run_json("import", str(campaign.write_csv(rows)))["added"] == len(rows)
    campaign.run_json("enroll", "referral")
    assert campaign.run_json("send", "--ignore-window")["sent"] == len(rows)
    task = campaign.run_json("calls")[0]
    assert campaign.run("call", str(task["id"]), "--outcome", "voicemail").exit_code == 0
    last = max(numbers)
    assert campaign.run("mark", f"cfo{last}@maker{last}.example", "lead").exit_code == 0
    assert campaign.run("suppress", f"@maker{last - 1}.example").exit_code == 0
    with campaign.app() as app:
        now = datetime.fromisoformat(now)
        app.store.add_inbound_many([("maildir", f"k{last}", None, None, f"<r{last}@x>",
                                     None, "reply", "{}", now.isoformat())])
        app.store.set_mailbox_state(f"imap:INBOX:{last}", uidvalidity=4294967295,
                                    last_uid=4000000000)   # IMAP's full 32 unsigned bits


def dump(target) -> dict[str, list[tuple]]:
    """Every copied table's rows, in key order (ids included)."""
    with Store(target) as store:
        return {t.name: sorted((tuple(r.values()) for r in store.db.records(
            f"SELECT * FROM {t.name}")), key=repr) for t in TABLES}


def target_of(fresh_store, name):
    fields = fresh_store(name)
    return fields["store_url"] or str(fields["store_path"])


def test_copy_moves_every_row_and_the_campaign_carries_on_there(campaign, fresh_store):
    worked(campaign)
    source = campaign.config().store_target
    target = target_of(fresh_store, "team")
    result = campaign.run("db", "copy", "--to", target)
    assert result.exit_code == 0, result.stderr
    lines = result.output.splitlines()
    assert lines[0] == f"{source} -> {target}"
    counts = {line.split()[0]: line.split()[1:] for line in lines[2:2 + len(TABLES)]}
    assert counts["prospects"] == ["6", "6", "0", "0", "6"]
    assert counts["messages"] == ["6", "6", "0", "0", "6"]
    assert all(int(counts[t.name][0]) > 0 for t in TABLES), counts
    assert lines[-1] == ("verified: every source row is in the target. Point [store] "
                         + ("url" if "://" in target else "path") + " at it.")
    assert dump(target) == dump(source)
    with Store(source) as a, Store(target) as b:
        assert a.unsubscribe_secret() == b.unsubscribe_secret()   # old links keep working
    # The campaign moves over: nothing is sent twice, and new rows follow the copied ids.
    key = "url" if "://" in str(source) else "path"
    campaign.edit_config(f'{key} = "{source if key == "url" else "outreach.db"}"',
                         f'url = "{target}"' if "://" in target else f'path = "{target}"')
    assert campaign.run_json("send", "--ignore-window")["sent"] == 0
    assert campaign.run_json("import", str(campaign.write_csv([prospect_row(9)], "more.csv"))
                             )["added"] == 1
    assert campaign.run_json("enroll", "referral")["enrolled"] == 1
    with Store(target) as b:
        assert b.prospect("cfo9@maker9.example").id == 7


def test_a_target_with_data_is_refused_unless_merging(campaign, fresh_store):
    worked(campaign)
    target = target_of(fresh_store, "team")
    assert campaign.run("db", "copy", "--to", target).exit_code == 0
    result = campaign.run("db", "copy", "--to", target)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {target}: not empty (prospects, suppressions, enrollments, messages, call_tasks, "
        "stage_history, events, inbound, mailbox_state hold rows); copy into a new "
        "database, or pass --merge to add this campaign to it (nothing was copied)\n")
    # Merging the same campaign again adds nothing: every row is already there.
    again = campaign.run("db", "copy", "--to", target, "--merge", "--json")
    doc = __import__("json").loads(again.stdout)
    assert {t["table"]: t["copied"] for t in doc["tables"]} == {t.name: 0 for t in TABLES}


def test_merge_never_duplicates_a_prospect_or_a_ledger_row(campaign, fresh_store):
    """Two reps' solo campaigns into one team database: the prospects both worked stay one
    each, the second open sequence of one is stopped, and every message is there once."""
    worked(campaign, range(0, 4))
    target = target_of(fresh_store, "team")
    assert campaign.run("db", "copy", "--to", target).exit_code == 0
    # The second rep's campaign: the same folder on a database of its own.
    old = f'url = "{campaign.store_url}"' if campaign.store_url else 'path = "outreach.db"'
    second = target_of(fresh_store, "sam")
    campaign.edit_config(old, f'url = "{second}"' if "://" in second else f'path = "{second}"')
    worked(campaign, range(1, 5), "2026-03-05T08:10:00-06:00")   # 1-3 in both, 1 open in both
    result = campaign.run("db", "copy", "--to", target, "--merge", "--json")
    assert result.exit_code == 0, result.stderr
    tables = {t["table"]: t for t in __import__("json").loads(result.stdout)["tables"]}
    assert (tables["prospects"]["copied"], tables["prospects"]["already_there"]) == (1, 3)
    assert tables["enrollments"]["stopped"] == 1
    with Store(target) as team:
        emails = [p.email for p in team.prospects()]
        assert len(emails) == len(set(emails)) == 5
        ids = [r[0] for r in team.db.execute("SELECT message_id FROM messages")]
        assert len(ids) == len(set(ids)) == 8
        open_ = team.db.execute("SELECT prospect_id, count(*) FROM enrollments WHERE state IN "
                                "('active', 'paused') GROUP BY prospect_id").fetchall()
        assert all(n == 1 for _, n in open_)


@pytest.mark.skipif(engine_under_test() != "postgresql", reason="the PostgreSQL pass runs it")
def test_a_solo_sqlite_campaign_moves_into_postgresql(campaign):
    team_url = campaign.store_url
    campaign.edit_config(f'url = "{team_url}"', 'path = "outreach.db"')
    worked(campaign)
    result = campaign.run("db", "copy", "--to", team_url)
    assert result.exit_code == 0, result.stderr
    assert dump(team_url) == dump(campaign.root / "outreach.db")

