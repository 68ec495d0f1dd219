"""`outreach send` against real aiosmtpd servers and the outbox: windows, limits, headers,
threading, A/B, suppression, misbehaving servers, at-most-once."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.header import decode_header, make_header
from email.utils import parseaddr

import pytest

from outreach import hookimpl, transport
from outreach.schedule import choose_variant
from outreach.send import send
from tests.conftest import prospect_row
from tests.smtp_server import (
    AlwaysTempFail,
    Closing421,
    DropAfterData,
    RejectRecipient,
    Slow,
    TempFailOnce,
    self_signed_certificate,
    use_smtp,
)

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"   # inside Chicago's 07:00-09:00 window


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(transport, "RETRY_INITIAL", 0.01)
    monkeypatch.setattr(transport, "RETRY_MAX", 0.05)


def enrolled(campaign, rows, *, now=THURSDAY_MORNING, sequence="referral"):
    campaign.now(now)
    assert campaign.run_json("import", str(campaign.write_csv(rows)))["added"] == len(rows)
    assert campaign.run_json("enroll", sequence)["enrolled"] == len(rows)


def ledger(campaign, where="true"):
    return campaign.records(
        "SELECT m.*, p.email FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
        f"JOIN prospects p ON p.id = e.prospect_id WHERE {where} ORDER BY m.id")


def sql(campaign, query, *args):
    return campaign.sql(query, *args)


def header(msg, name):
    return str(make_header(decode_header(msg[name])))


def send_listening(campaign, listener):
    """One send with `listener` registered as a plugin."""
    with campaign.app() as app:
        app.pm.register(listener, name="listener")
        try:
            return send(app)
        finally:
            app.pm.unregister(name="listener")


# -- the happy path -----------------------------------------------------------------------


def test_send_delivers_compliant_messages_once(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    enrolled(campaign, [prospect_row(i) for i in range(6)])

    summary = campaign.run_json("send")

    assert summary["sent"] == 6 and summary["failed"] == 0 and summary["deferred"] == 0
    assert summary["window_open"] is True and summary["calls"] == 6
    assert sorted(server.handler.recipients()) == sorted(f"cfo{i}@maker{i}.example"
                                                         for i in range(6))
    ids = set()
    for received in server.handler.messages:
        msg = received.message
        assert received.mail_from == "dana@acme.example"
        assert msg["Date"] and msg["Message-ID"].endswith("@acme.example>")
        ids.add(msg["Message-ID"])
        assert msg.get_content_type() == "text/plain" and not msg.is_multipart()
        assert msg.get_content_charset() == "utf-8"
        unsubscribe = msg["List-Unsubscribe"]
        assert unsubscribe.startswith("<mailto:unsubscribe@acme.example?subject=unsubscribe%20")
        assert "List-Unsubscribe-Post" not in msg   # only with an https URL
        body = msg.get_payload(decode=True).decode()
        assert "1 Main St, Springfield, IL 62701" in body   # the footer
        assert "unsubscribe@acme.example" in body
        assert "http" not in body
    assert len(ids) == 6
    rows = ledger(campaign)
    assert [r["status"] for r in rows] == ["sent"] * 6
    assert {r["message_id"] for r in rows} == ids
    assert all(r["template"] == "referral" and r["variant"] == "A" for r in rows)
    status = campaign.run_json("status", "cfo0@maker0.example")
    kinds = [e["kind"] for e in status["events"]]
    assert kinds == ["enrolled", "sent", "call_task"]
    assert status["enrollments"][0]["next_step"] == 2

    again = campaign.run_json("send")
    assert again["sent"] == 0 and len(server.handler.messages) == 6


def test_one_click_unsubscribe_only_with_a_url(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    campaign.edit_config('unsubscribe_url = ""',
                         'unsubscribe_url = "https://acme.example/u/{token}"')
    enrolled(campaign, [prospect_row(1)])
    campaign.run_json("send")
    msg = server.handler.messages[0].message
    mailto, url = [part.strip() for part in msg["List-Unsubscribe"].split(",")]
    token = mailto.rsplit("%20", 1)[1].rstrip(">")
    assert url == f"<https://acme.example/u/{token}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_outbox_writes_one_eml_per_message(campaign):
    enrolled(campaign, [prospect_row(i) for i in range(3)])
    summary = campaign.run_json("send")
    files = sorted((campaign.root / "outbox").iterdir())
    assert summary["sent"] == 3 and len(files) == 3
    assert all(f.suffix == ".eml" for f in files)   # no temp files left behind
    ids = {message_from_bytes(f.read_bytes())["Message-ID"] for f in files}
    assert ids == {r["message_id"] for r in ledger(campaign)}


def test_non_ascii_names_are_encoded(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    enrolled(campaign, [prospect_row(1, first_name="Zoë", last_name="Ångström",
                                     company="Société Générale d'Usinage")])
    campaign.run_json("send")
    received = server.handler.messages[0]
    assert received.data.isascii()
    msg = received.message
    assert header(msg, "Subject") == \
        "Who handles month-end close at Société Générale d'Usinage?"
    name, address = parseaddr(header(msg, "To"))
    assert (name, address) == ("Zoë Ångström", "cfo1@maker1.example")
    assert "Hi Zoë," in msg.get_payload(decode=True).decode("utf-8")


# -- windows, days, limits ----------------------------------------------------------------


def test_windows_are_read_in_each_prospects_time_zone(campaign):
    enrolled(campaign, [prospect_row(1), prospect_row(2, timezone="Europe/Berlin")])
    morning_chicago = campaign.run_json("send")          # 14:30 in Berlin
    assert morning_chicago["sent"] == 1 and morning_chicago["deferred"] == 1
    assert morning_chicago["next_window"] == "2026-03-05T16:00:00+00:00"   # 17:00 CET
    assert [r["email"] for r in ledger(campaign)] == ["cfo1@maker1.example"]

    campaign.now("2026-03-05T17:30:00+01:00")              # evening in Berlin, 10:30 Chicago
    evening_berlin = campaign.run_json("send")
    assert evening_berlin["sent"] == 1 and evening_berlin["deferred"] == 0
    assert [r["email"] for r in ledger(campaign)] == ["cfo1@maker1.example",
                                                       "cfo2@maker2.example"]


def test_sender_time_zone_mode(campaign):
    campaign.edit_config('window_timezone = "prospect"', 'window_timezone = "sender"')
    enrolled(campaign, [prospect_row(1, timezone="Asia/Tokyo")])
    assert campaign.run_json("send")["sent"] == 1   # 07:30 for the sender in Chicago


def test_weekend_defers_to_monday_and_ignore_window_sends(campaign):
    enrolled(campaign, [prospect_row(1)], now="2026-03-07T08:00:00-06:00")   # Saturday
    summary = campaign.run_json("send")
    assert summary["sent"] == 0 and summary["deferred"] == 1
    assert summary["window_open"] is False
    assert summary["next_window"] == "2026-03-09T12:00:00+00:00"   # Monday 07:00 CDT
    forced = campaign.run_json("send", "--ignore-window")
    assert forced["sent"] == 1


def test_limits_oldest_due_first(campaign):
    campaign.edit_config("daily_limit = 75 ", "daily_limit = 5 ")
    campaign.edit_config("per_run_limit = 50 ", "per_run_limit = 3 ")
    enrolled(campaign, [prospect_row(i) for i in range(4)], now="2026-03-03T10:00:00-06:00")
    rows = [prospect_row(i) for i in range(4, 8)]
    enrolled(campaign, rows)   # Thursday: these are due later than the Tuesday four

    first = campaign.run_json("send", "--limit", "2")
    assert (first["sent"], first["deferred"], first["limited_by"]) == (2, 6, "--limit")
    second = campaign.run_json("send")
    # 3 left today and 3 per run: on a tie the daily limit is named (running again won't help)
    assert (second["sent"], second["deferred"], second["limited_by"]) == (3, 3, "daily_limit")
    third = campaign.run_json("send")
    assert (third["sent"], third["deferred"], third["limited_by"]) == (0, 3, "daily_limit")
    assert third["next_window"] == "2026-03-06T13:00:00+00:00"   # Friday 07:00 CST
    told = campaign.run("send").stdout
    assert told == ("sent 0, failed 0, unknown 0, held 0, deferred 3; 0 call tasks\n"
                    "deferred 3: held back by daily_limit; they stay due and go from "
                    "Fri 06 Mar 07:00\n")
    sent = [r["email"] for r in ledger(campaign)]
    assert sent[:4] == [f"cfo{i}@maker{i}.example" for i in range(4)]

    campaign.now("2026-03-06T07:30:00-06:00")               # the next sender day
    assert campaign.run_json("send")["sent"] == 3


def test_dry_run_renders_and_records_nothing(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    enrolled(campaign, [prospect_row(i) for i in range(3)])
    summary = campaign.run_json("send", "--dry-run")
    assert summary["dry_run"] is True and summary["sent"] == 3 and summary["calls"] == 3
    assert [m["subject"] for m in summary["messages"]] == [
        f"Who handles month-end close at Maker {i} Inc?" for i in range(3)]
    assert server.handler.messages == [] and ledger(campaign) == []
    assert sql(campaign, "SELECT count(*) FROM call_tasks") == [(0,)]
    assert sql(campaign, "SELECT count(*) FROM events WHERE kind != 'enrolled'") == [(0,)]
    assert campaign.run_json("send")["sent"] == 3


def test_suppressed_and_paused_prospects_get_nothing(campaign):
    enrolled(campaign, [prospect_row(i) for i in range(4)])
    # Suppressed behind the lifecycle's back, to prove send itself checks.
    sql(campaign, "INSERT INTO suppressions VALUES ('cfo0@maker0.example', 'manual', 'test', "
                  "'2026-03-01T00:00:00+00:00')")
    sql(campaign, "INSERT INTO suppressions VALUES ('@maker1.example', 'manual', 'test', "
                  "'2026-03-01T00:00:00+00:00')")
    sql(campaign, "UPDATE enrollments SET state = 'paused', "
                  "paused_until = '2026-03-10T00:00:00+00:00' WHERE id = 3")
    summary = campaign.run_json("send")
    assert summary["sent"] == 1
    assert [r["email"] for r in ledger(campaign)] == ["cfo3@maker3.example"]
    campaign.now("2026-03-10T07:30:00-05:00")   # the pause is over
    assert [m["email"] for m in campaign.run_json("send", "--dry-run")["messages"]] == \
        ["cfo2@maker2.example", "cfo3@maker3.example"]


# -- a sequence over 21 days: threading, A/B, calls, recycling -----------------------------


def test_sequence_threads_ab_calls_and_recycles(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    rows = [prospect_row(i) for i in range(8)]
    enrolled(campaign, rows)
    assert campaign.run_json("send")["sent"] == 8

    campaign.now("2026-03-09T07:30:00-05:00")   # day 4: the threaded bump, then a call
    day4 = campaign.run_json("send")
    assert day4["sent"] == 8 and day4["calls"] == 8
    by_id = {m.message["Message-ID"]: m.message for m in server.handler.messages}
    for received in server.handler.messages[8:]:
        bump = received.message
        original = by_id[bump["In-Reply-To"]]
        assert original["To"] == bump["To"]
        assert bump["References"] == original["Message-ID"]
        assert bump["Subject"] == "Re: " + original["Subject"]

    campaign.now("2026-03-16T07:30:00-05:00")   # day 11 (>= 9): the A/B meeting ask
    assert campaign.run_json("send")["sent"] == 8
    meeting = ledger(campaign, "m.step = 4")
    expected = {r["email"]: choose_variant(("meeting-a", "meeting-b"), email=r["email"],
                                           sequence="referral", step=4) for r in rows}
    assert {r["email"]: r["template"] for r in meeting} == expected
    assert {r["variant"] for r in meeting} == {"A", "B"}   # both variants in use
    assert all(r["variant"] == "AB"[r["template"] == "meeting-b"] for r in meeting)
    recorded = sql(campaign, "SELECT variants FROM enrollments WHERE id = 1")[0][0]
    assert json.loads(recorded) == {"4": expected["cfo0@maker0.example"]}

    campaign.now("2026-03-26T07:30:00-05:00")   # day 21: recycle
    assert campaign.run_json("send")["recycled"] == 8
    states = sql(campaign, "SELECT DISTINCT state, ended_at IS NOT NULL FROM enrollments")
    assert states == [("recycled", 1)]
    assert len(server.handler.messages) == 24
    tasks = sql(campaign, "SELECT step, script FROM call_tasks WHERE enrollment_id = 1 "
                          "ORDER BY step")
    assert [t[0] for t in tasks] == [1, 3]
    assert "I'm following up on the email I sent on Monday, March 9" in tasks[1][1]
    assert "I'm following up on the email I sent on Thursday, March 5" in tasks[0][1]


# -- template problems --------------------------------------------------------------------


def test_header_injection_is_refused_and_named(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    enrolled(campaign, [prospect_row(1), prospect_row(
        2, pain_point="close\nBcc: everyone@victim.example")])
    result = campaign.run("send", "--json")
    summary = json.loads(result.stdout)
    assert summary["sent"] == 1
    assert summary["errors"] == [{
        "email": "cfo2@maker2.example", "step": 0,
        "error": "templates/referral.txt line 1: the Subject header would contain a line "
                 "break (prospect cfo2@maker2.example); a variable in it holds more than one "
                 "line"}]
    assert server.handler.recipients() == ["cfo1@maker1.example"]
    assert [r["email"] for r in ledger(campaign)] == ["cfo1@maker1.example"]


def test_template_error_names_file_line_and_prospect(campaign):
    enrolled(campaign, [prospect_row(1)])
    template = campaign.root / "templates" / "referral.txt"
    template.write_text(template.read_text().replace("Thanks,", "Thanks, {{ prospect.nickname }}"))
    result = campaign.run("send")
    assert result.exit_code == 1  # cron notices: nothing could be sent until the template is fixed
    line = template.read_text().splitlines().index("Thanks, {{ prospect.nickname }}") + 1
    assert (f"not sent: cfo1@maker1.example step 0: templates/referral.txt line {line}: "
            "'outreach.models.Prospect object' has no attribute 'nickname' "
            "(prospect cfo1@maker1.example)") in result.stderr
    assert ledger(campaign) == []
    template.write_text(template.read_text().replace(" {{ prospect.nickname }}", ""))
    result = campaign.run("send", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["sent"] == 1


# -- misbehaving servers ------------------------------------------------------------------


def test_451_is_retried_then_sent_once(campaign, smtp_server):
    server = smtp_server(TempFailOnce())
    use_smtp(campaign, server.port)
    enrolled(campaign, [prospect_row(i) for i in range(3)])
    summary = campaign.run_json("send")
    assert summary["sent"] == 3 and summary["failed"] == 0
    assert sorted(server.handler.recipients()) == sorted(f"cfo{i}@maker{i}.example"
                                                         for i in range(3))


def test_421_opens_another_connection(campaign, smtp_server):
    server = smtp_server(Closing421())
    use_smtp(campaign, server.port, concurrency=1)
    enrolled(campaign, [prospect_row(i) for i in range(5)])
    summary = campaign.run_json("send")
    assert summary["sent"] == 5 and summary["failed"] == 0
    assert len(server.handler.recipients()) == 5
    assert server.handler.connections >= 3   # a fresh connection after each 421


def test_550_5_1_1_fails_that_message_and_suppresses(campaign, smtp_server):
    server = smtp_server(RejectRecipient(bad={"cfo1@maker1.example"}))
    use_smtp(campaign, server.port)
    enrolled(campaign, [prospect_row(i) for i in range(3)])
    result = campaign.run("send", "--json")
    summary = json.loads(result.stdout)
    assert summary["sent"] == 2 and summary["failed"] == 1
    assert summary["failures"][0]["email"] == "cfo1@maker1.example"
    assert summary["failures"][0]["error"].startswith("550 5.1.1")
    assert sorted(server.handler.recipients()) == ["cfo0@maker0.example",
                                                   "cfo2@maker2.example"]
    status = campaign.run_json("status", "cfo1@maker1.example")
    assert status["suppressed"] is True
    assert status["enrollments"][0]["state"] == "bounced"
    assert {"send_failed", "bounce", "suppressed"} <= {e["kind"] for e in status["events"]}
    assert [r["status"] for r in ledger(campaign, "p.email = 'cfo1@maker1.example'")] == \
        ["failed"]


def test_connection_dropped_after_data_is_unknown_and_never_resent(campaign, smtp_server):
    server = smtp_server(DropAfterData())
    use_smtp(campaign, server.port, concurrency=1)
    enrolled(campaign, [prospect_row(1)])
    result = campaign.run("send", "--json")
    summary = json.loads(result.stdout)
    assert summary["sent"] == 0 and summary["unknown"] == 1
    assert summary["unknowns"][0]["email"] == "cfo1@maker1.example"
    assert len(server.handler.messages) == 1            # the server did get it
    assert [r["status"] for r in ledger(campaign)] == ["unknown"]
    campaign.run_json("send")
    campaign.run_json("send", "--ignore-window")
    assert len(server.handler.messages) == 1


def test_an_address_with_a_line_break_is_refused_before_any_command(smtp_server):
    import asyncio
    from pathlib import Path

    from outreach.config import Smtp
    from outreach.render import Envelope

    server = smtp_server()
    conn = transport.SmtpConnection(Smtp(
        transport="smtp", outbox=Path("outbox"), host="127.0.0.1", port=server.port,
        security="none", username="", password_env="", concurrency=1, timeout=5), None)
    smuggled = Envelope(mail_from="dana@acme.example",
                        rcpt_to="cfo1@maker1.example>\r\nRCPT TO:<boss@maker1.example",
                        message_id="<1@acme.example>", data=b"Subject: hi\r\n\r\nHi\r\n",
                        subject="hi")

    async def deliver():
        try:
            return await conn.deliver(smuggled)
        finally:
            await conn.close()

    delivery = asyncio.run(deliver())
    assert delivery.outcome is transport.Outcome.FAILED
    assert "control character" in delivery.error
    assert server.handler.messages == []


def test_slow_server_past_the_timeout_is_unknown(campaign, smtp_server):
    server = smtp_server(Slow(delay=1.0))
    use_smtp(campaign, server.port, timeout=0.3)
    enrolled(campaign, [prospect_row(1)])
    summary = campaign.run_json("send")
    assert summary["unknown"] == 1 and summary["sent"] == 0
    assert [r["status"] for r in ledger(campaign)] == ["unknown"]
    assert "no reply within the 0.3 s timeout" in summary["unknowns"][0]["error"]


def test_slow_server_within_the_timeout_uses_every_connection(campaign, smtp_server):
    server = smtp_server(Slow(delay=0.05))
    use_smtp(campaign, server.port, concurrency=4)
    enrolled(campaign, [prospect_row(i) for i in range(12)])
    assert campaign.run_json("send")["sent"] == 12
    assert server.handler.connections == 4


def test_consecutive_failures_stop_the_run(campaign, smtp_server):
    server = smtp_server(AlwaysTempFail())
    use_smtp(campaign, server.port, concurrency=1)
    enrolled(campaign, [prospect_row(i) for i in range(10)])
    result = campaign.run("send")
    assert result.exit_code == 1
    assert "stopped after 5 failures in a row (last: 451 4.3.0 mailbox busy)" in result.stderr
    assert ledger(campaign) == []          # nothing handed over, nothing left as intent
    assert sql(campaign, "SELECT DISTINCT next_step FROM enrollments") == [(0,)]


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_with_password_from_env(campaign, smtp_server, monkeypatch):
    server = smtp_server(auth=("dana", "s3cret"))
    use_smtp(campaign, server.port, username="dana")
    enrolled(campaign, [prospect_row(1)])
    missing = campaign.run("send")
    assert missing.exit_code == 1 and "OUTREACH_SMTP_PASSWORD is not set" in missing.stderr
    monkeypatch.setenv("OUTREACH_SMTP_PASSWORD", "wrong")
    refused = campaign.run("send")
    assert refused.exit_code == 1 and "username dana: login refused" in refused.stderr
    assert ledger(campaign) == []
    check = campaign.run("check", "--connect")
    assert "login refused" in check.stderr and check.exit_code == 1
    monkeypatch.setenv("OUTREACH_SMTP_PASSWORD", "s3cret")
    assert campaign.run_json("send")["sent"] == 1
    assert f"smtp 127.0.0.1:{server.port}: logged in" in campaign.run("check", "--connect").stdout


@pytest.mark.sqlite_only   # on PostgreSQL senders share the work: tests/test_send_runs.py
def test_second_sender_is_refused_while_one_holds_the_lease(campaign):
    enrolled(campaign, [prospect_row(1)])
    with campaign.app() as app:
        from datetime import timedelta

        from outreach.clock import wall_now

        now = wall_now()   # leases follow the real clock, whatever OUTREACH_NOW says
        app.store.acquire_lock("send", owner="test", now=now, until=now + timedelta(hours=1))
        result = campaign.run("send")
        assert result.exit_code == 1
        assert "another `outreach send` is running" in result.stderr
        app.store.release_lock("send")
    assert campaign.run_json("send")["sent"] == 1


# -- plugins ------------------------------------------------------------------------------


def test_message_sent_hook_gets_the_message_as_sent(campaign, smtp_server):
    server = smtp_server()
    use_smtp(campaign, server.port)
    enrolled(campaign, [prospect_row(i) for i in range(2)])
    seen = []

    tasks = []

    class Listener:
        @hookimpl
        def message_sent(self, prospect, message):
            seen.append((prospect.email, message["Message-ID"], message.get_content()))

        @hookimpl
        def call_task_created(self, prospect, task):
            tasks.append((prospect.email, task.id, task.script))

    result = send_listening(campaign, Listener())
    assert result.sent == 2
    delivered = {m.message["Message-ID"]: m.message for m in server.handler.messages}
    assert sorted(email for email, _, _ in seen) == ["cfo0@maker0.example",
                                                     "cfo1@maker1.example"]
    for _, message_id, content in seen:
        assert content == delivered[message_id].get_payload(decode=True).decode()
    assert sorted(email for email, _, _ in tasks) == ["cfo0@maker0.example",
                                                      "cfo1@maker1.example"]
    assert all(script.startswith("Hi First") and "Thursday, March 5" in script
               for _, _, script in tasks)


def test_day0_calls_are_made_while_later_emails_are_on_the_wire(campaign, smtp_server,
                                                                monkeypatch):
    from outreach import dispatch

    monkeypatch.setattr(dispatch, "FLUSH_SECONDS", 0.01)
    server = smtp_server(Slow(delay=0.03))
    use_smtp(campaign, server.port, concurrency=2)
    enrolled(campaign, [prospect_row(i) for i in range(12)])
    created = []   # (prospect, messages the server had received by then)

    class Listener:
        @hookimpl
        def call_task_created(self, prospect, task):
            created.append((prospect.email, len(server.handler.messages), task.script))

    result = send_listening(campaign, Listener())
    assert result.sent == 12 and result.calls == 12
    assert sorted(email for email, _, _ in created) == sorted(
        f"cfo{i}@maker{i}.example" for i in range(12))
    assert min(seen for _, seen, _ in created) < 12   # not only after the last email
    assert all("Thursday, March 5" in script for _, _, script in created)
    assert sql(campaign, "SELECT count(*), count(DISTINCT enrollment_id) FROM call_tasks "
                         "WHERE step = 1") == [(12, 12)]
    assert sql(campaign, "SELECT DISTINCT next_step FROM enrollments") == [(2,)]
    assert campaign.run_json("send")["calls"] == 0   # none twice


def test_a_sequence_without_recycle_completes_after_a_grace_period(campaign):
    campaign.edit_config("\n[plugins]", '\n[sequences.short]\nicp = "cfo-manufacturing"\n'
                         'steps = [{ day = 0, email = "referral" }]\n\n[plugins]')
    enrolled(campaign, [prospect_row(1)], sequence="short")
    assert campaign.run_json("send")["sent"] == 1
    assert sql(campaign, "SELECT state FROM enrollments") == [("active",)]   # replies may come
    campaign.now("2026-03-18T07:30:00-05:00")    # day 13
    assert campaign.run_json("send")["completed"] == 0
    campaign.now("2026-03-19T07:30:00-05:00")    # day 14
    assert campaign.run_json("send")["completed"] == 1
    assert sql(campaign, "SELECT state, ended_at IS NOT NULL FROM enrollments") == \
        [("completed", 1)]
    kinds = [e["kind"] for e in campaign.run_json("status", "cfo1@maker1.example")["events"]]
    assert kinds[-1] == "enrollment_ended"


@pytest.mark.parametrize(("security", "implicit"), [("starttls", False), ("tls", True)])
def test_tls_and_starttls_verify_the_certificate(campaign, smtp_server, tmp_path, monkeypatch,
                                                  security, implicit):
    certificate = self_signed_certificate(tmp_path)
    server = smtp_server(certificate=certificate, implicit_tls=implicit)
    use_smtp(campaign, server.port)
    campaign.edit_config('security = "none"', f'security = "{security}"')
    campaign.edit_config('host = "127.0.0.1"', 'host = "localhost"')
    enrolled(campaign, [prospect_row(1)])
    untrusted = campaign.run("send")
    assert untrusted.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert server.handler.messages == [] and ledger(campaign) == []

    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))   # trust the test certificate
    assert campaign.run_json("send")["sent"] == 1
    assert server.handler.tls == [True]


def test_editing_the_steps_never_sends_a_template_twice(campaign):
    enrolled(campaign, [prospect_row(1)])
    assert campaign.run_json("send")["sent"] == 1          # step 0: referral
    # Two steps inserted in front: "referral" is now step 2, and next_step points at it.
    campaign.edit_config('  { day = 0,  email = "referral" },',
                         '  { day = 0,  email = "meeting-a" },\n'
                         '  { day = 0,  call = "voicemail" },\n'
                         '  { day = 0,  email = "referral" },')
    campaign.edit_config('{ day = 9,  email = ["meeting-a", "meeting-b"] }',
                         '{ day = 9,  email = "meeting-b" }')
    sql(campaign, "UPDATE enrollments SET next_step = 2")
    result = campaign.run("send", "--json")
    summary = json.loads(result.stdout)
    assert summary["sent"] == 0 and result.exit_code == 1
    assert summary["errors"] == [{
        "email": "cfo1@maker1.example", "step": 2,
        "error": 'template "referral" already went to them as step 0 of this enrollment '
                 "(were the sequence's steps edited?); skipped"}]
    assert [(r["step"], r["template"]) for r in ledger(campaign)] == [(0, "referral")]
    # The enrollment moved past it: the next run does not report it again.
    assert json.loads(campaign.run("send", "--json").stdout)["errors"] == []
