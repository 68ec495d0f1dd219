"""While the campaign is signed with the shipped example identity, `check` warns naming the
keys and `send` hands nothing to a real SMTP server (outbox and loopback servers still work)."""

from __future__ import annotations

import json

import pytest

from outreach.placeholders import describe, reserved_domain
from tests.conftest import prospect_row
from tests.smtp_server import use_smtp

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"
EXAMPLE_KEYS = ("[sender] name, email, company, phone, postal_address and [compliance] "
                "unsubscribe_mailto")


def own_identity(campaign) -> None:
    for old, new in (('name = "Dana Reyes"', 'name = "Kim Park"'),
                     ('email = "dana@acme.example"', 'email = "kim@northwind-analytics.io"'),
                     ('company = "Acme Analytics"', 'company = "Northwind Analytics"'),
                     ('phone = "+1 312 555 0100"', 'phone = "+1 415 555 0199"'),
                     ('postal_address = "Acme Analytics, 1 Main St, Springfield, IL 62701, USA"',
                      'postal_address = "Northwind Analytics, 9 Bay St, Oakland, CA 94607"'),
                     ('unsubscribe_mailto = "unsubscribe@acme.example"',
                      'unsubscribe_mailto = "optout@northwind-analytics.io"')):
        campaign.edit_config(old, new)


def enrolled(campaign) -> None:
    campaign.now(THURSDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(1)])))
    campaign.run_json("enroll", "referral")


def real_smtp(campaign) -> None:
    campaign.edit_config('transport = "outbox"', 'transport = "smtp"')
    campaign.edit_config('host = "smtp.acme.example"', 'host = "smtp.northwind-mail.net"')


def test_check_warns_naming_the_example_keys_until_they_are_yours(campaign):
    result = campaign.run("check")
    assert result.exit_code == 0
    assert (f"warning: outreach.toml: {EXAMPLE_KEYS} still hold the example values (or a "
            "reserved domain such as .example or .invalid): set your own before sending for "
            "real; until then `outreach send` writes only to the outbox or a loopback SMTP "
            "server\n") in result.stderr
    own_identity(campaign)
    campaign.edit_config('email = "kim@northwind-analytics.io"', 'email = "kim@corp.invalid"')
    doc = campaign.run_json("check")
    assert [w for w in doc["warnings"] if "example values" in w] == [
        "outreach.toml: [sender] email still hold the example values (or a reserved domain "
        "such as .example or .invalid): set your own before sending for real; until then "
        "`outreach send` writes only to the outbox or a loopback SMTP server"]
    campaign.edit_config('email = "kim@corp.invalid"', 'email = "kim@northwind-analytics.io"')
    result = campaign.run("check")
    assert "example values" not in result.stderr


def test_send_refuses_a_real_smtp_host_with_the_example_identity(campaign):
    enrolled(campaign)
    real_smtp(campaign)
    result = campaign.run("send")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: outreach.toml: {EXAMPLE_KEYS} still hold the example values (or a reserved "
        "domain such as .example or .invalid): nothing was handed to smtp.northwind-mail.net. "
        "Set your own name, address and opt-out address in outreach.toml (`outreach check` "
        "lists them); the outbox transport and a loopback test server work as they are\n")
    # planning is still fine, and nothing was recorded
    planned = campaign.run("send", "--dry-run", "--json")
    assert planned.exit_code == 0 and json.loads(planned.stdout)["dry_run"] is True
    assert campaign.run_json("status", "cfo1@maker1.example")["enrollments"][0]["next_step"] == 0


def test_outbox_and_loopback_servers_keep_working_with_the_example_identity(
        campaign, smtp_server):
    enrolled(campaign)
    assert campaign.run_json("send")["sent"] == 1        # the outbox transport
    server = smtp_server()
    use_smtp(campaign, server.port)
    campaign.now("2026-03-09T07:30:00-05:00")            # the next email step is due
    assert campaign.run_json("send")["sent"] == 1
    assert server.handler.recipients() == ["cfo1@maker1.example"]


@pytest.mark.parametrize(("address", "reserved"), [
    ("dana@acme.example", True), ("x@corp.invalid", True), ("a@mail.test", True),
    ("a@example.com", True), ("a@www.example.org", True),
    ("https://acme.example/u/{token}", True), ("a@northwind.io", False),
    ("https://unsub.northwind.io/{token}", False), ("a@examples.com", False),
])
def test_reserved_domain(address, reserved):
    assert reserved_domain(address) is reserved


def test_describe_groups_keys_by_table():
    assert describe(["[sender] name"]) == "[sender] name"
    assert describe(["[sender] name", "[sender] email", "[compliance] unsubscribe_url"]) == (
        "[sender] name, email and [compliance] unsubscribe_url")
