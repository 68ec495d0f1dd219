"""Emails that never embarrass: a column blank for a prospect needs a fallback in the template,
or that message is held; an email step needs a subject. Driven through the CLI."""

from __future__ import annotations

import json
import re

from tests.conftest import prospect_row

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"   # inside Chicago's 07:00-09:00 window
BLANK = "{{ prospect.first_name | default(\"...\") }}"


def enrolled(campaign, rows):
    campaign.now(THURSDAY_MORNING)
    assert campaign.run_json("import", str(campaign.write_csv(rows)))["added"] == len(rows)
    assert campaign.run_json("enroll", "referral")["enrolled"] == len(rows)


def outbox(campaign) -> list[str]:
    return sorted(p.read_text() for p in (campaign.root / "outbox").glob("*.eml"))


def test_shipped_templates_have_fallbacks_for_blank_names_and_companies(campaign):
    enrolled(campaign, [prospect_row(1, first_name="", company="", last_name="")])
    check = campaign.run("check")
    assert check.exit_code == 0, check.stderr
    assert "error" not in check.stderr
    message = campaign.run("preview", "cfo1@maker1.example").stdout
    assert "Subject: Who handles month-end close at your company?" in message
    assert "\nHi there,\n" in message
    assert "manufacturers like your company spend" in message
    for step in range(1, 5):   # every later step, calls included, renders too
        assert campaign.run("preview", "cfo1@maker1.example", "--step", str(step)).exit_code == 0


def test_a_blank_column_without_fallback_holds_that_message_and_check_names_who(campaign):
    enrolled(campaign, [prospect_row(1), prospect_row(2, first_name=""),
                        prospect_row(3, first_name="")])
    template = campaign.root / "templates" / "referral.txt"
    template.write_text(template.read_text().replace(
        '{{ prospect.first_name | default("there") }}', "{{ prospect.first_name }}"))
    check = campaign.run("check")
    assert check.exit_code == 1
    assert (f"error: templates/referral.txt line 3: first_name is blank for this prospect; "
            f"give it a fallback, e.g. {BLANK}; fix the template or the prospect's data "
            "[prospects cfo2@maker2.example, cfo3@maker3.example]\n") in check.stderr

    result = campaign.run("send", "--json")
    summary = json.loads(result.stdout)
    assert summary["sent"] == 1
    assert [(e["email"], e["step"]) for e in summary["errors"]] == [
        ("cfo2@maker2.example", 0), ("cfo3@maker3.example", 0)]
    assert summary["errors"][0]["error"].startswith(
        "templates/referral.txt line 3: first_name is blank for this prospect")
    [sent] = outbox(campaign)
    assert "To: First1 Last1 <cfo1@maker1.example>" in sent and "Hi First1," in sent

    human = campaign.run("send")
    assert re.search(r"not sent: cfo2@maker2\.example step 0: templates/referral\.txt line 3: "
                     r"first_name is blank for this prospect", human.stderr)
    assert len(outbox(campaign)) == 1


def test_an_email_template_without_subject_is_an_error_not_a_warning(campaign):
    enrolled(campaign, [prospect_row(1)])
    template = campaign.root / "templates" / "referral.txt"
    template.write_text(template.read_text().split("\n\n", 1)[1])
    check = campaign.run("check")
    assert check.exit_code == 1
    assert ('error: templates/referral.txt line 1: no "Subject:" line; an email template '
            'starts with "Subject: ..." and a blank line before the body\n') in check.stderr
    result = campaign.run("send", "--json")
    assert json.loads(result.stdout)["sent"] == 0
    assert outbox(campaign) == []
