"""An `unknown` delivery holds its prospect's sequence until `outreach resolve`; a follow-up is
only ever threaded onto a message the server accepted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.conftest import prospect_row
from tests.smtp_server import DropAfterData, Recorder, use_smtp

THURSDAY_MORNING = "2026-03-05T07:30:00-06:00"
MONDAY_MORNING = "2026-03-09T07:30:00-05:00"   # day 4: the threaded bump is due


@dataclass
class RefuseFirst(Recorder):
    """554 for the first message to each address; accepts the rest."""

    refused: set[str] | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.refused = self.refused or set()
        if envelope.rcpt_tos[0] not in self.refused:
            self.refused.add(envelope.rcpt_tos[0])
            return "554 5.7.1 message refused"
        return self.accept(envelope)


def enrolled_against(campaign, smtp_server, handler, count):
    """`count` prospects enrolled Thursday morning, sending to a server run by `handler`."""
    server = smtp_server(handler)
    use_smtp(campaign, server.port, concurrency=1)
    campaign.now(THURSDAY_MORNING)
    campaign.run_json("import", str(campaign.write_csv([prospect_row(i + 1)
                                                        for i in range(count)])))
    campaign.run_json("enroll", "referral")
    return server


def switch_server(campaign, old_port, new_port):
    campaign.edit_config(f"port = {old_port}", f"port = {new_port}")


def test_unknown_holds_the_sequence_until_resolved(campaign, smtp_server):
    dropping = enrolled_against(campaign, smtp_server, DropAfterData(), 2)
    first = campaign.run("send")
    assert first.stdout == "sent 0, failed 0, unknown 2, held 0, deferred 0; 0 call tasks\n"
    assert ("unknown: cfo1@maker1.example step 0 " in first.stderr
            and ": may have been delivered; it will not be resent (check your Sent folder, then "
            "`outreach resolve cfo1@maker1.example --delivered` or `--not-delivered`)"
            in first.stderr)
    step0 = {m.rcpt_tos[0]: m.message["Message-ID"] for m in dropping.handler.messages}

    recorder = smtp_server()
    switch_server(campaign, dropping.port, recorder.port)
    campaign.now(MONDAY_MORNING)
    predicted = campaign.run_json("send", "--dry-run")
    assert (predicted["sent"], predicted["held"], predicted["calls"]) == (0, 2, 0)
    held = campaign.run("send")
    assert held.stdout == "sent 0, failed 0, unknown 0, held 2, deferred 0; 0 call tasks\n"
    assert ("held: cfo1@maker1.example step 2: waits until step 0's unknown delivery is "
            "resolved: look for it in your Sent folder or the server's log, then `outreach "
            "resolve cfo1@maker1.example --delivered` (or `--not-delivered` to send it again)\n"
            ) in held.stderr
    assert recorder.handler.messages == []

    told = campaign.run("resolve", "cfo1@maker1.example", "--delivered")
    assert told.stdout == (f"cfo1@maker1.example step 0 {step0['cfo1@maker1.example']}: "
                           "recorded as delivered; the sequence goes on\n")
    told = campaign.run("resolve", "cfo2@maker2.example", "--not-delivered")
    assert told.stdout == (f"cfo2@maker2.example step 0 {step0['cfo2@maker2.example']}: "
                           "recorded as not delivered; the next `outreach send` sends it again\n")
    again = campaign.run("resolve", "cfo2@maker2.example", "--not-delivered")
    assert again.exit_code == 1
    assert again.stderr == ("Error: cfo2@maker2.example: no message with an unknown delivery, "
                            "so nothing to resolve (see `outreach status cfo2@maker2.example`)\n")
    neither = campaign.run("resolve", "cfo2@maker2.example")
    assert neither.exit_code == 2 and "--delivered or --not-delivered (one)" in neither.stderr
    both = campaign.run("resolve", "cfo1@maker1.example", "--delivered", "--not-delivered")
    assert both.exit_code == 2 and "--delivered or --not-delivered (one)" in both.stderr

    summary = campaign.run_json("send")
    assert (summary["sent"], summary["held"], summary["unknown"]) == (2, 0, 0)
    got = {m.rcpt_tos[0]: m.message for m in recorder.handler.messages}
    bump, retried = got["cfo1@maker1.example"], got["cfo2@maker2.example"]
    assert bump["Subject"].startswith("Re: ")                  # step 2, threaded on step 0
    assert bump["In-Reply-To"] == step0["cfo1@maker1.example"]
    assert retried["In-Reply-To"] is None                      # step 0 again, fresh
    assert not retried["Subject"].startswith("Re: ")
    events = campaign.run_json("status", "cfo2@maker2.example")["events"]
    assert {"send_unknown", "send_resolved"} <= {e["kind"] for e in events}


def test_a_failed_email_is_never_threaded_onto(campaign, smtp_server):
    refusing = enrolled_against(campaign, smtp_server, RefuseFirst(), 1)
    assert campaign.run_json("send")["failed"] == 1
    campaign.now(MONDAY_MORNING)
    assert campaign.run_json("send")["sent"] == 1
    bump = refusing.handler.messages[0].message
    assert bump["In-Reply-To"] is None and not bump["Subject"].startswith("Re: ")


def test_resolve_json_and_a_moved_on_enrollment(campaign, smtp_server):
    """--json lists what was resolved; an enrollment that ended meanwhile is not sent again."""
    dropping = enrolled_against(campaign, smtp_server, DropAfterData(), 1)
    assert campaign.run_json("send")["unknown"] == 1
    campaign.run("mark", "cfo1@maker1.example", "not-interested")   # the sequence ends
    resolved = campaign.run_json("resolve", "cfo1@maker1.example", "--not-delivered")
    assert [(r["step"], r["delivered"], r["outcome"]) for r in resolved] == [
        (0, False, "recorded as not delivered; its sequence has ended or moved on, so it is "
                   "not sent again")]
    campaign.now(MONDAY_MORNING)
    assert campaign.run_json("send", "--ignore-window")["sent"] == 0
    assert len(dropping.handler.messages) == 1
