"""`outreach import` of lists exported by CRM and prospecting tools: their headers, their
separators, `--map`, and what the user is told about columns and repeated addresses."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from outreach.columns import layout, sniff_delimiter
from outreach.importer import _employees

EXPORTS = Path(__file__).parent / "corpus" / "exports"

# One prospect as each tool writes it: header -> cell (headers not listed stay blank).
ROWS = {
    "apollo.csv": {
        "First Name": "Layla", "Last Name": "Saeed", "Title": "Acting CFO, EMEA",
        "Company": "Gulf Castings", "Company Name for Emails": "Gulf", "Email":
        "layla@gulfcastings.example", "First Phone": "+971 4 000 0000",
        "Mobile Phone": "+971 50 000 0000", "# Employees": "1200", "Industry": "Manufacturing",
        "Person Linkedin Url": "http://www.linkedin.com/in/layla-saeed",
        "Website": "http://www.gulfcastings.example", "Country": "AE",
    },
    "hubspot.csv": {
        "Record ID": "901", "First Name": "Gaëlle", "Last Name": "Perrin",
        "Email": "g.perrin@fromagerie.example", "Phone Number": "04 50 11 22 33",
        "Job Title": "CFO", "Company Name": "Fromagerie Perrin", "Contact owner": "Inès",
    },
    "salesforce.csv": {
        "Lead ID": "00Q1", "FirstName": "John", "LastName": "Doe", "Email": "john@sfdc.example",
        "Phone": "555-3001", "Company": "Acme Corp", "LeadSource": "Web",
    },
    "salesnav.csv": {
        "FULL NAME": "Kim Park", "FIRST NAME": "Kim", "LAST NAME": "Park",
        "EMAIL": "kim.park@northwind.example", "POSITION": "VP Finance",
        "LINKEDIN PROFILE URL": "https://www.linkedin.com/in/kimpark",
        "SALES NAVIGATOR PROFILE URL": "https://www.linkedin.com/sales/lead/ACwAA",
        "COMPANY NAME": "Northwind", "COMPANY DOMAIN": "northwind.example",
        "COMPANY INDUSTRY": "Manufacturing", "COMPANY EMPLOYEE COUNT": "640",
        "COMPANY EMPLOYEE COUNT RANGE": "501-1000",
    },
    "zoominfo.csv": {
        "ZoomInfo Contact ID": "123", "Last Name": "Nguyen", "First Name": "Ava",
        "Job Title": "Chief Financial Officer", "Direct Phone Number": "+1 555 0100",
        "Email Address": "ava@northwind-castings.example", "Mobile phone": "+1 555 0199",
        "LinkedIn Contact Profile URL": "https://www.linkedin.com/in/ava",
        "Country": "US", "Company Name": "Northwind Castings",
        "Website": "www.northwind-castings.example", "Employees": "",
        "Employee Range": "1,000 - 5,000", "Primary Industry": "Manufacturing",
    },
}
# What each becomes: (email, first, last, title, company, domain, employees, phone, linkedin).
EXPECTED = {
    "apollo.csv": ("layla@gulfcastings.example", "Layla", "Saeed", "Acting CFO, EMEA",
                   "Gulf Castings", "gulfcastings.example", 1200, "+971 4 000 0000",
                   "http://www.linkedin.com/in/layla-saeed"),
    "hubspot.csv": ("g.perrin@fromagerie.example", "Gaëlle", "Perrin", "CFO",
                    "Fromagerie Perrin", "fromagerie.example", None, "04 50 11 22 33", None),
    "salesforce.csv": ("john@sfdc.example", "John", "Doe", "", "Acme Corp", "sfdc.example",
                       None, "555-3001", None),
    "salesnav.csv": ("kim.park@northwind.example", "Kim", "Park", "VP Finance", "Northwind",
                     "northwind.example", 640, "", "https://www.linkedin.com/in/kimpark"),
    "zoominfo.csv": ("ava@northwind-castings.example", "Ava", "Nguyen",
                     "Chief Financial Officer", "Northwind Castings",
                     "northwind-castings.example", None, "+1 555 0100",
                     "https://www.linkedin.com/in/ava"),
}


def export_file(campaign, name: str, delimiter: str = ",") -> Path:
    header = next(csv.reader(io.StringIO((EXPORTS / name).read_text(encoding="utf-8"))))
    path = campaign.root / name
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerow([ROWS[name].get(h, "") for h in header])
    return path


@pytest.mark.parametrize("name", sorted(ROWS))
def test_real_export_headers_fill_the_known_columns(campaign, name):
    result = campaign.run_json("import", str(export_file(campaign, name)))
    assert (result["added"], result["rejected"]) == (1, [])
    [row] = campaign.run_json("prospects")
    got = tuple(row.get(k) for k in ("email", "first_name", "last_name", "title", "company",
                                     "domain", "employees", "phone", "linkedin_url"))
    assert got == EXPECTED[name]


def test_apollo_export_says_how_its_columns_were_read(campaign):
    result = campaign.run("import", str(export_file(campaign, "apollo.csv")))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("apollo.csv: 1 added, 0 updated, 0 unchanged, 0 rejected\n")
    lines = result.stderr.splitlines()
    assert lines[0] == ('  read "First Phone" as phone, "Person Linkedin Url" as linkedin_url, '
                        '"Website" as domain')
    assert "  warning: column last_activity is empty in every row" not in result.stderr


def test_the_issue_header_email_address_and_company_name(campaign):
    path = campaign.root / "hubspot.csv"
    path.write_text("Email Address,First Name,Last Name,Company Name\n"
                    "ann@a.example,Ann,Lee,Acme\n", encoding="utf-8")
    result = campaign.run("import", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == '  read "Email Address" as email, "Company Name" as company\n'
    [row] = campaign.run_json("prospects")
    assert (row["email"], row["company"]) == ("ann@a.example", "Acme")
    assert "company_name" not in row


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_files_are_sniffed(campaign, delimiter):
    path = campaign.root / "excel.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as fh:  # with a BOM, as Excel
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(["E-mail", "Vorname", "Company Size", "Notes"])
        writer.writerow(["jo@b.example", "Jo", "201-500", 'says "hi", then; bye'])
    result = campaign.run_json("import", str(path))
    assert (result["added"], result["rejected"]) == (1, [])
    [row] = campaign.run_json("prospects")
    assert (row["email"], row["vorname"], row["employees"]) == ("jo@b.example", "Jo", 201)
    assert row["notes"] == 'says "hi", then; bye'


def test_excel_sep_line_names_the_delimiter(campaign):
    path = campaign.root / "sep.csv"
    path.write_text("sep=;\nemail;company\nx@y.example;Y, Inc\nbad;Z\n", encoding="utf-8")
    result = campaign.run("import", str(path))
    assert result.stderr == '  line 4: invalid email "bad"\n'
    assert campaign.run_json("prospects")[0]["company"] == "Y, Inc"


def test_map_reads_a_column_as_a_known_one(campaign):
    path = campaign.root / "crm.csv"
    path.write_text("Work Email,Organisation Legal Name,Company\n"
                    "a@a.example,Acme Holdings GmbH,Acme\n", encoding="utf-8")
    result = campaign.run("import", str(path), "--map", "Organisation Legal Name=company")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == (
        '  read "Work Email" as email, "Organisation Legal Name" as company\n'
        '  not imported: "Company" (another column is read as company)\n')
    [row] = campaign.run_json("prospects")
    assert row["company"] == "Acme Holdings GmbH"


def test_map_errors_name_the_problem(campaign):
    path = campaign.write_csv([{"email": "a@a.example"}], columns=("email",))
    result = campaign.run("import", str(path), "--map", "Account Name=company")
    assert result.exit_code == 1
    assert result.stderr == (f'Error: {path} line 1: --map: no column "Account Name" (found: '
                             'email)\n')
    result = campaign.run("import", str(path), "--map", "company")
    assert result.exit_code == 1
    assert result.stderr == ('Error: --map "company": expected "HEADER=column", e.g. '
                             '"Company Name=company"\n')
    assert campaign.run_json("prospects") == []


def test_no_email_column_suggests_map(campaign):
    path = campaign.root / "people.csv"
    path.write_text("Name,Contact\nAnn,ann@a.example\n", encoding="utf-8")
    result = campaign.run("import", str(path))
    assert result.exit_code == 1
    assert result.stderr == (f"Error: {path} line 1: no email column (found: Name, Contact). "
                             'Add a header row whose columns include email, or name it: '
                             '--map "HEADER=email".\n')
    assert campaign.run_json("import", str(path), "--map", "Contact=email")["added"] == 1


def test_known_column_empty_in_every_row_is_a_warning(campaign):
    path = campaign.root / "thin.csv"
    path.write_text("email,first_name,company\na@a.example,,Acme\nb@b.example,,Beta\n",
                    encoding="utf-8")
    result = campaign.run("import", str(path))
    assert result.stderr == ("  warning: column first_name is empty in every row (did the "
                             "export leave it out?)\n")
    assert campaign.run_json("import", str(path))["empty_columns"] == ["first_name"]


def test_the_same_email_twice_says_which_row_won(campaign):
    path = campaign.root / "twice.csv"
    path.write_text("email,title,phone\nann@a.example,CFO,+1 555 0100\nb@b.example,CEO,\n"
                    "ANN@a.example,VP Finance,\n", encoding="utf-8")
    result = campaign.run("import", str(path))
    assert result.stdout.endswith(": 2 added, 1 updated, 0 unchanged, 0 rejected\n")
    assert result.stderr == ("  note: line 4: ann@a.example is also on line 2; line 4 wins "
                             "where it has a value\n")
    ann = campaign.run_json("prospects")[0]
    assert (ann["title"], ann["phone"]) == ("VP Finance", "+1 555 0100")
    assert campaign.run_json("import", str(path))["duplicates"] == [
        {"email": "ann@a.example", "line": 4, "first_line": 2}]


@pytest.mark.parametrize(("text", "count"), [
    ("1200", 1200), ("1,200", 1200), ("201-500", 201), ("1,001 - 5,000", 1001),
    ("10,001+", 10001), ("51-200 employees", 51), ("", None),
])
def test_employee_counts_and_bands(text, count):
    assert _employees(text) == count


@pytest.mark.parametrize(("line", "delimiter"), [
    ("email,name", ","), ("email;name", ";"), ("email\tname", "\t"), ("email", ","),
    ('"Company, Inc";email;x', ";"),
])
def test_sniff_delimiter(line, delimiter):
    assert sniff_delimiter(line) == delimiter


def test_best_alias_wins_and_the_others_stay_custom():
    names = layout(["Mobile Phone", "First Phone", "Email", "Company Name for Emails",
                    "Company"]).names
    assert names == ["mobile_phone", "phone", "email", "company_name_for_emails", "company"]


def test_repeats_are_noted_whether_or_not_the_store_is_empty(campaign):
    path = campaign.root / "twice.csv"
    path.write_text("email,title\nann@a.example,CFO\nann@a.example,\nann@a.example,COO\n",
                    encoding="utf-8")
    first = campaign.run_json("import", str(path))          # into an empty store
    again = campaign.run_json("import", str(path))          # into one that knows ann
    notes = [{"email": "ann@a.example", "line": 3, "first_line": 2},
             {"email": "ann@a.example", "line": 4, "first_line": 2}]
    assert (first["added"], first["updated"], first["duplicates"]) == (1, 1, notes)
    assert (again["added"], again["updated"], again["duplicates"]) == (0, 2, notes)
    assert campaign.run_json("prospects")[0]["title"] == "COO"


def test_a_bare_carriage_return_in_a_header_bound_cell_is_refused(campaign):
    path = campaign.root / "cr.csv"
    path.write_bytes(b'email,first_name\na@a.example,"Ann\rBcc: x@y.example"\nb@b.example,Bob\n')
    result = campaign.run_json("import", str(path))
    assert (result["added"], result["rejected"]) == (1, [
        {"line": 2, "reason": "first_name contains a line break (it could reach an email "
                              "header)"}])


def test_job_title_wins_over_a_title_that_may_be_a_salutation(campaign):
    assert layout(["Title", "Email", "Job Title"]).names == ["", "email", "title"]
    path = campaign.root / "crm.csv"
    path.write_text("Title,Email,Job Title\nDr,ann@a.example,CFO\n", encoding="utf-8")
    result = campaign.run("import", str(path))
    assert result.stderr == ('  read "Job Title" as title\n'
                             '  not imported: "Title" (another column is read as title)\n')
    assert campaign.run_json("prospects")[0]["title"] == "CFO"
