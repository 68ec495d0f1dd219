"""`outreach import`: streams a CSV, rejects bad rows with line and reason, loses nothing."""

from __future__ import annotations

import json

from tests.conftest import COLUMNS, prospect_row


def counts(result):
    """The count keys of `import --json` (it also says how columns were read)."""
    return {k: result[k] for k in ("added", "updated", "unchanged", "rejected")}


def test_counts_added_updated_unchanged(campaign):
    path = campaign.write_csv([prospect_row(1), prospect_row(2)])
    assert counts(campaign.run_json("import", str(path))) == {
        "added": 2, "updated": 0, "unchanged": 0, "rejected": []}
    # Same file again: nothing changes. Then one changed title and a different email case.
    assert campaign.run_json("import", str(path))["unchanged"] == 2
    path = campaign.write_csv([prospect_row(1, email="CFO1@Maker1.EXAMPLE", title="VP Finance"),
                               prospect_row(2)])
    assert counts(campaign.run_json("import", str(path))) == {
        "added": 0, "updated": 1, "unchanged": 1, "rejected": []}
    rows = campaign.run_json("prospects")
    assert [(r["email"], r["title"]) for r in rows] == [
        ("cfo1@maker1.example", "VP Finance"), ("cfo2@maker2.example", "CFO")]


def test_bad_rows_are_rejected_with_line_and_reason_and_the_rest_import(campaign):
    path = campaign.root / "mixed.csv"
    path.write_text(
        "email,first_name,title,employees,last_activity,timezone,company\n"
        "good@a.example,Ann,CFO,300,2026-01-02,Europe/Berlin,A\n"   # line 2
        ",NoEmail,CFO,,,,B\n"                                        # line 3
        "bob@,Bob,CFO,,,,C\n"                                        # line 4
        "c@c.example,Cy,CFO,lots,,,C\n"                              # line 5
        "d@d.example,Di,CFO,,last week,,D\n"                         # line 6
        "e@e.example,Ed,CFO,,,Mars/Base,E\n"                         # line 7
        'f@f.example,"Fi\r\nBcc: victim@x.example",CFO,,,,F\n'       # lines 8-9
        'g@g.example,Gus,"CFO\nInjected: yes",,,,G\n'               # lines 10-11
        "h@h.example,Hal,CFO,\"1,200\",,,H\n",                       # line 12
        encoding="utf-8",
    )
    result = campaign.run_json("import", str(path))
    assert result["added"] == 2
    assert result["rejected"] == [
        {"line": 3, "reason": "missing email"},
        {"line": 4, "reason": 'invalid email "bob@"'},
        {"line": 5, "reason": 'employees "lots" is not a whole number (or a band like '
                              '"201-500")'},
        {"line": 6, "reason": 'last_activity "last week" is not an ISO date (YYYY-MM-DD)'},
        {"line": 7, "reason": 'unknown timezone "Mars/Base" (use an IANA name like '
                              '"Europe/Berlin")'},
        {"line": 8, "reason": "first_name contains a line break (it could reach an email "
                              "header)"},
        {"line": 10, "reason": "title contains a line break (it could reach an email header)"},
    ]
    emails = [r["email"] for r in campaign.run_json("prospects")]
    assert emails == ["good@a.example", "h@h.example"]
    assert campaign.run_json("status", "h@h.example")["email"] == "h@h.example"


def test_human_output_lists_rejections_on_stderr(campaign):
    path = campaign.write_csv([prospect_row(1), prospect_row(2, email="nope")])
    result = campaign.run("import", str(path))
    assert result.exit_code == 0
    assert result.stdout.endswith("1 added, 0 updated, 0 unchanged, 1 rejected\n")
    assert result.stderr == ('  line 3: invalid email "nope"\n'
                             "  warning: column last_activity is empty in every row (did the "
                             "export leave it out?)\n")


def test_bom_custom_columns_and_loose_header_names(campaign):
    path = campaign.root / "bom.csv"
    path.write_bytes("\ufeffEmail,First Name,Pain Point,Favourite Colour\n"
                     "zoe@z.example,Zoë,inventory write-offs,teal\n".encode())
    assert campaign.run_json("import", str(path))["added"] == 1
    [row] = campaign.run_json("prospects")
    assert row["first_name"] == "Zoë"
    assert row["pain_point"] == "inventory write-offs"
    assert row["favourite_colour"] == "teal"
    assert row["domain"] == "z.example"


def test_blank_cells_never_erase_known_values(campaign):
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1)])))
    path = campaign.write_csv([{"email": "cfo1@maker1.example", "phone": "",
                                "pain_point": ""}])
    assert campaign.run_json("import", str(path))["unchanged"] == 1
    [row] = campaign.run_json("prospects")
    assert row["phone"] == "+1 555 0101" and row["pain_point"] == "month-end close"


def test_import_never_unsuppresses(campaign):
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1), prospect_row(2)])))
    assert campaign.run("suppress", "cfo1@maker1.example").exit_code == 0
    assert campaign.run("suppress", "@maker2.example").exit_code == 0
    path = campaign.write_csv([prospect_row(1, title="VP Finance"), prospect_row(2, title="CEO")])
    assert campaign.run_json("import", str(path))["updated"] == 2
    rows = campaign.run_json("prospects")
    assert [r["suppressed"] for r in rows] == [True, True]


def test_duplicate_rows_in_one_file_count_once_each(campaign):
    path = campaign.write_csv([prospect_row(1), prospect_row(1, email="CFO1@maker1.example",
                                                            title="VP Finance")])
    assert counts(campaign.run_json("import", str(path))) == {
        "added": 1, "updated": 1, "unchanged": 0, "rejected": []}


def test_file_without_email_column_is_one_error_and_writes_nothing(campaign):
    path = campaign.root / "people.csv"
    path.write_text("name,phone\nAnn,123\n", encoding="utf-8")
    result = campaign.run("import", str(path))
    assert result.exit_code == 1
    assert "people.csv line 1: no email column (found: name, phone)" in result.stderr
    assert campaign.run_json("prospects") == []


def test_binary_file_is_one_error_and_writes_nothing(campaign):
    path = campaign.root / "photo.csv"
    path.write_bytes(b"email,first_name\na@a.example,Ann\n\xff\xd8\xff\xe0\x00\x10JFIF\x00\n")
    result = campaign.run("import", str(path))
    assert result.exit_code == 1
    assert "photo.csv line 3: " in result.stderr and "nothing was imported" in result.stderr
    assert "Traceback" not in result.stderr
    assert campaign.run_json("prospects") == []


def test_missing_file_is_a_clear_error(campaign):
    result = campaign.run("import", str(campaign.root / "nope.csv"))
    assert result.exit_code == 1
    assert "nope.csv: cannot open" in result.stderr


def test_prospect_imported_fires_for_added_and_updated_only(campaign):
    plugin = campaign.root / "plugins" / "recorder.py"
    log = campaign.root / "imported.jsonl"
    plugin.write_text(
        "import json\nfrom outreach import hookimpl\n"
        "@hookimpl\ndef prospect_imported(prospect):\n"
        f"    with open({str(log)!r}, 'a') as fh:\n"
        "        fh.write(json.dumps([prospect.email, prospect.title]) + '\\n')\n",
        encoding="utf-8",
    )
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1), prospect_row(2)])))
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1),
                                                        prospect_row(2, title="COO")])))
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events == [["cfo1@maker1.example", "CFO"], ["cfo2@maker2.example", "CFO"],
                      ["cfo2@maker2.example", "COO"]]


def test_a_long_notes_field_is_a_usable_row(campaign):
    notes = "word " * 60_000   # 300,000 characters, past the csv module's default limit
    path = campaign.write_csv([prospect_row(1, notes=notes), prospect_row(2)],
                              columns=(*COLUMNS, "notes"))
    assert campaign.run_json("import", str(path))["added"] == 2
    [first, _] = campaign.run_json("prospects")
    assert first["notes"] == notes


def _prospect_indexes(campaign) -> dict[str, str]:
    from tests.conftest import engine_under_test

    with campaign.app() as app:
        sql = ("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'prospects'"
               if engine_under_test() == "postgresql" else
               "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
               "AND tbl_name = 'prospects' AND sql IS NOT NULL")
        return {r[0]: r[1] for r in app.store.db.execute(sql)}


def test_a_first_import_rebuilds_the_domain_indexes_as_the_migrations_made_them(campaign):
    """A first import drops the domain indexes and builds each once at the end (row by row,
    the address-domain one cost a tenth of a 200,000-row import): the same indexes must be
    there afterwards, or the per-company cap's claims scan every prospect."""
    campaign.run("status")   # the database, as the migrations leave it
    made = _prospect_indexes(campaign)
    assert {"prospects_domain", "prospects_email_domain"} <= set(made)
    path = campaign.write_csv([prospect_row(n) for n in range(1, 6)])
    assert campaign.run_json("import", str(path))["added"] == 5
    assert _prospect_indexes(campaign) == made
