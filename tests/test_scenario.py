"""Five simulated weeks of one SDR's campaign, run through the CLI with OUTREACH_NOW: import,
enroll, send, replies, bounces, unsubscribes, calls, meetings, recycling, the cooldown, score
decay, the deliverability guard, and the exact stats that come out."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage

from tests.conftest import prospect_row

MONDAY = "2026-03-02"  # the campaign starts on a Monday, 07:30 in Chicago (in the window)


def at(day: str, clock: str = "07:30") -> str:
    return f"{day}T{clock}:00-06:00"


def deliver(campaign, msg: EmailMessage | bytes) -> None:
    box = mailbox.Maildir(campaign.root / "mail", create=True)
    box.add(msg if isinstance(msg, bytes) else msg.as_bytes())


def mail(frm: str, subject: str, body: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = frm
    msg["To"] = "dana@acme.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Mar 2026 10:00:00 -0600"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def bounce_for(rcpt: str) -> bytes:
    """A Postfix-style RFC 3464 delivery status notification: 5.1.1, user unknown."""
    return (
        "From: MAILER-DAEMON@mx.maker2.example\r\n"
        "To: dana@acme.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Date: Mon, 02 Mar 2026 10:00:00 -0600\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        f"<{rcpt}>: host mx.maker2.example said: 550 5.1.1 User unknown\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.maker2.example\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "\r\n--B--\r\n"
    ).encode()


def message_ids(campaign, email: str) -> list[str]:
    with campaign.app() as app:
        p = app.store.prospect(email)
        return [r[0] for r in app.store.db.execute(
            "SELECT m.message_id FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
            "WHERE e.prospect_id = ? AND m.status = 'sent' ORDER BY m.id", (p.id,))]


def email(n: int) -> str:
    return f"cfo{n}@maker{n}.example"


def test_five_weeks(campaign):
    campaign.edit_config("guard_min_sent = 100", "guard_min_sent = 10")
    campaign.write_csv([prospect_row(n) for n in range(1, 13)])
    campaign.now(at("2026-02-27", "12:00"))
    assert campaign.run_json("import", str(campaign.root / "prospects.csv"))["added"] == 12
    assert campaign.run_json("enroll", "referral")["enrolled"] == 12

    # Week 1, Monday morning: the first email to all twelve, and their call tasks.
    campaign.now(at(MONDAY))
    sent = campaign.run_json("send")
    assert (sent["sent"], sent["calls"]) == (12, 12)

    # Monday afternoon: a reply, a hard bounce, an unsubscribe and an out-of-office come in.
    campaign.now(at(MONDAY, "15:00"))
    first = message_ids(campaign, email(1))[0]
    deliver(campaign, mail(f"First1 Last1 <{email(1)}>", "Re: hi", "Sounds good, call me "
                           "Thursday.\n", In_Reply_To=first, References=first))
    deliver(campaign, bounce_for(email(2)))
    deliver(campaign, mail(email(3), "Re: hi", "Please remove me from your list.\n"))
    deliver(campaign, mail(email(4), "Out of office", "I am out of the office until March 4.\n",
                           Auto_Submitted="auto-replied"))
    polled = campaign.run_json("poll")
    assert {k: polled[k] for k in ("processed", "replies", "bounces", "unsubscribes",
                                   "auto_replies")} == {
        "processed": 4, "replies": 1, "bounces": 1, "unsubscribes": 1, "auto_replies": 1}

    # Tuesday: the power hour. One connect, one meeting booked on the phone.
    campaign.now(at("2026-03-03", "10:00"))
    task = {t["email"]: t["id"] for t in campaign.run_json("calls")}
    assert sorted(task) == sorted(email(n) for n in range(5, 13))  # 4 is away: paused
    assert campaign.run("call", str(task[email(5)]), "--outcome", "connected").exit_code == 0
    assert campaign.run("call", str(task[email(6)]), "--outcome", "meeting").exit_code == 0
    assert campaign.run("call", str(task[email(7)]), "--outcome", "no-answer").exit_code == 0
    # A reply or a conversation is activity; a voicemail or no answer is not.
    activity = {p["email"]: p["last_activity"] for p in campaign.run_json("prospects")}
    assert [activity[email(n)] for n in (1, 4, 5, 6, 7)] == [
        "2026-03-02", None, "2026-03-03", "2026-03-03", None]

    # Friday, day 4: the guard refuses. 1 bounce and 1 unsubscribe in 12 sends this week.
    campaign.now(at("2026-03-06"))
    outbox = campaign.root / "outbox"
    before = len(list(outbox.glob("*.eml")))
    refused = campaign.run("send")
    assert refused.exit_code == 1
    assert refused.stderr.startswith(
        "Error: bounce rate 8.3% (1 of 12 sent in the last 7 days) is above the 2.0% limit: "
        "clean the list")
    assert ("unsubscribe rate 8.3% (1 of 12 sent in the last 7 days) is above the 0.3% limit"
            in refused.stderr)
    assert "`outreach send --force` sends anyway." in refused.stderr
    assert len(list(outbox.glob("*.eml"))) == before
    check = campaign.run_json("check")["deliverability"]
    assert (check["sent"], check["bounced"], check["unsubscribed"], check["ok"]) == (
        12, 1, 1, False)
    forced = campaign.run_json("send", "--force")
    assert forced["sent"] == 8  # 4 is back from holiday; 1, 2, 3 and 6 are out

    # Day 9, the next Wednesday: the A/B step. The week's sends are clean, so no refusal.
    campaign.now(at("2026-03-11"))
    ab = campaign.run_json("send")
    assert ab["sent"] == 8
    with campaign.app() as app:
        variant = {n: app.store.db.execute(
            "SELECT m.template FROM messages m JOIN enrollments e ON e.id = m.enrollment_id "
            "WHERE e.prospect_id = ? AND m.step = 4", (app.store.prospect(email(n)).id,)
        ).fetchone()[0] for n in (4, 5, 7, 8, 9, 10, 11, 12)}
    # The A/B choice is a stable hash of the prospect: these are the variants they drew.
    assert variant == {4: "meeting-a", 5: "meeting-a", 7: "meeting-b", 8: "meeting-b",
                       9: "meeting-b", 10: "meeting-a", 11: "meeting-a", 12: "meeting-a"}

    # Thursday: 7 answers the A/B email and books a meeting; 8 is not interested.
    campaign.now(at("2026-03-12", "11:00"))
    last7 = message_ids(campaign, email(7))[-1]
    deliver(campaign, mail(email(7), "Re: quick question", "Yes, let's talk next week.\n",
                           In_Reply_To=last7, References=last7))
    last8 = message_ids(campaign, email(8))[-1]
    deliver(campaign, mail(email(8), "Re: quick question", "Not interested, thanks.\n",
                           In_Reply_To=last8, References=last8))
    assert campaign.run_json("poll")["replies"] == 2
    campaign.now(at("2026-03-13", "09:00"))
    assert campaign.run_json("mark", email(7), "meeting")["stage"] == "opportunity"
    assert campaign.run_json("status", email(8))["stage"] == "not-interested"
    assert [(h["old"], h["new"], h["cause"], h["at"])
            for h in campaign.run_json("status", email(7))["stages"]] == [
        ("prospect", "lead", "reply", "2026-03-12T17:00:00+00:00"),
        ("lead", "opportunity", "mark meeting", "2026-03-13T15:00:00+00:00")]

    # Day 21: the recycle step ends every enrollment that got no meeting and no answer.
    campaign.now(at("2026-03-23"))
    assert campaign.run_json("send")["recycled"] == 6
    states = {n: [e["state"] for e in campaign.run_json("status", email(n))["enrollments"]]
              for n in range(1, 13)}
    assert states == {1: ["replied"], 2: ["bounced"], 3: ["unsubscribed"], 4: ["recycled"],
                      5: ["recycled"], 6: ["won"], 7: ["replied"], 8: ["replied"],
                      9: ["recycled"], 10: ["recycled"], 11: ["recycled"], 12: ["recycled"]}

    # The funnel, exactly.
    stats = campaign.run_json("stats", "--by", "variant")
    t = stats["totals"]
    assert {k: t[k] for k in ("sent", "delivered", "bounced", "replied", "positive", "meetings",
                              "unsubscribed", "auto_replies", "calls", "connects",
                              "call_meetings")} == {
        "sent": 28, "delivered": 27, "bounced": 1, "replied": 3, "positive": 2, "meetings": 2,
        "unsubscribed": 1, "auto_replies": 1, "calls": 3, "connects": 2, "call_meetings": 1}
    assert (t["reply_rate"], t["meetings_per_100_sent"], t["meetings_per_call"]) == (
        0.1071, 7.14, 0.3333)
    assert [(g["key"], g["sent"], g["replied"], g["positive"], g["meetings"])
            for g in stats["groups"]] == [("referral step 4: meeting-a", 5, 0, 0, 0),
                                          ("referral step 4: meeting-b", 3, 2, 1, 1)]
    assert stats["ab_tests"][0]["verdict"] == (
        "not enough data yet: ~4 more sends per variant needed (meeting-b 66.7% vs meeting-a "
        "0.0%, p = 0.11)")
    by_template = campaign.run_json("stats", "--by", "template")["groups"]
    assert [(g["key"], g["sent"], g["replied"], g["bounced"], g["meetings"], g["calls"])
            for g in by_template] == [("meeting-a", 5, 0, 0, 0, 0), ("meeting-b", 3, 2, 0, 1, 0),
                                      ("referral", 12, 1, 1, 1, 3),
                                      ("referral-bump", 8, 0, 0, 0, 0)]
    week2 = campaign.run_json("stats", "--since", "2026-03-06")["totals"]
    assert (week2["sent"], week2["replied"], week2["bounced"], week2["calls"]) == (16, 2, 0, 0)
    assert campaign.run("stats", "--html", str(campaign.root / "report.html")).exit_code == 0
    assert "meeting-b 66.7%" in (campaign.root / "report.html").read_text(encoding="utf-8")

    # The cooldown: recycled leads wait 90 days before they may start again.
    campaign.now(at("2026-03-24"))
    assert campaign.run_json("enroll", "referral", "--dry-run")["skipped"] == {
        "cooldown": 6, "replied": 4, "suppressed": 2}
    campaign.now(at("2026-06-20"))
    assert campaign.run_json("enroll", "referral", "--dry-run")["skipped"]["cooldown"] == 6
    campaign.now(at("2026-06-22"))
    again = campaign.run_json("enroll", "referral")
    assert (again["enrolled"], again["skipped"]) == (6, {"replied": 4, "suppressed": 2})

    # Score decay: the meeting holds for 30 quiet days, then halves every 30.
    campaign.now("2026-04-12T15:00:00+00:00")  # 30 days after 7's meeting
    assert campaign.run_json("status", email(7))["score"] == 60.0  # reply, lead, meeting
    campaign.now("2026-05-12T15:00:00+00:00")  # 60 days after
    ranked = campaign.run_json("prospects", "--sort", "score")
    assert [(p["email"], p["score"]) for p in ranked[:2]] == [(email(7), 30.0), (email(6), 21.8)]
    assert (ranked[-1]["email"], ranked[-1]["score"]) == (email(8), -14.7)  # not interested
    campaign.now("2026-05-01T21:00:00+00:00")  # 60 days after 1's positive reply
    assert campaign.run_json("status", email(1))["score"] == 10.0

    # Six months on, dormant_days = 180 re-targets the accounts that have gone quiet.
    campaign.edit_config("# dormant_days = 180", "dormant_days = 180")
    campaign.now(at("2026-06-22"))
    dormant = {p["email"] for p in campaign.run_json("prospects", "--icp", "cfo-manufacturing")}
    assert dormant == {email(n) for n in (2, 3, 4, 9, 10, 11, 12)}  # never answered
    campaign.now(at("2026-09-01"))
    dormant = {p["email"] for p in campaign.run_json("prospects", "--icp", "cfo-manufacturing")}
    assert dormant == {email(n) for n in range(1, 13)} - {email(7), email(8)}  # March 12: 173 days
