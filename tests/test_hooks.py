"""Every hook fires at the right moment with the documented arguments, in the commands that
cause it; a raising plugin is isolated; async hooks, tracing and settings work.

One test per hook is named `test_hook_<name>`: tests/test_docs.py checks each exists.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import mailbox
import os
import subprocess
import sys
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import pytest

import outreach.app
from outreach import Prospect, hookimpl
from outreach.plugins import make_manager

from .conftest import Campaign, prospect_row

NOW = "2026-03-02T08:15:00-06:00"  # Monday, inside the 07:00-09:00 window in Chicago


class Recorder:
    """Hears every hook and keeps (hook, kwargs); adds a template variable when asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    @hookimpl
    def template_context(self, prospect: Prospect, step: Any) -> dict[str, Any]:
        self.calls.append(("template_context", {"prospect": prospect, "step": step}))
        return {"plugin_hello": f"hello {prospect.first_name}"}

    @hookimpl
    def prospect_imported(self, prospect: Prospect) -> None:
        self.calls.append(("prospect_imported", {"prospect": prospect}))

    @hookimpl
    def message_sent(self, prospect: Prospect, message: EmailMessage) -> None:
        self.calls.append(("message_sent", {"prospect": prospect, "message": message}))

    @hookimpl
    def reply_received(self, prospect: Prospect, reply: EmailMessage, kind: str) -> None:
        self.calls.append(("reply_received", {"prospect": prospect, "reply": reply,
                                              "kind": kind}))

    @hookimpl
    def call_task_created(self, prospect: Prospect, task: Any) -> None:
        self.calls.append(("call_task_created", {"prospect": prospect, "task": task}))

    @hookimpl
    def call_task_closed(self, prospect: Prospect, task: Any) -> None:
        self.calls.append(("call_task_closed", {"prospect": prospect, "task": task}))

    @hookimpl
    def stage_changed(self, prospect: Prospect, old: str, new: str) -> None:
        self.calls.append(("stage_changed", {"prospect": prospect, "old": old, "new": new}))

    @hookimpl
    def classify_reply(self, reply: EmailMessage) -> str | None:
        self.calls.append(("classify_reply", {"reply": reply}))
        return None


class Raiser:
    """Raises in every hook, and tries to change the read-only prospect first."""

    def _boom(self, prospect: Any = None) -> None:
        if prospect is not None:
            prospect.stage = "client"  # frozen: raises FrozenInstanceError
        raise RuntimeError("boom")

    @hookimpl
    def template_context(self, prospect: Any, step: Any) -> None:
        self._boom(prospect)

    @hookimpl
    def prospect_imported(self, prospect: Any) -> None:
        self._boom(prospect)

    @hookimpl
    def message_sent(self, prospect: Any, message: Any) -> None:
        self._boom(prospect)

    @hookimpl
    def reply_received(self, prospect: Any, reply: Any, kind: str) -> None:
        self._boom(prospect)

    @hookimpl
    def call_task_created(self, prospect: Any, task: Any) -> None:
        self._boom(prospect)

    @hookimpl
    def call_task_closed(self, prospect: Any, task: Any) -> None:
        self._boom(prospect)

    @hookimpl
    def stage_changed(self, prospect: Any, old: str, new: str) -> None:
        self._boom(prospect)

    @hookimpl
    def classify_reply(self, reply: Any) -> None:
        self._boom()


def plug(campaign: Campaign, *plugins: tuple[str, object]) -> None:
    """Register plugin objects, in this order, on every manager the commands build."""

    def manager(*args: Any, **kwargs: Any) -> Any:
        pm = make_manager(*args, **kwargs)
        for name, plugin in plugins:
            pm.register(plugin, name=name)
        return pm

    campaign.monkeypatch.setattr(outreach.app, "make_manager", manager)


@pytest.fixture
def recorder(campaign: Campaign) -> Recorder:
    rec = Recorder()
    plug(campaign, ("recorder", rec))
    return rec


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return result


def started(campaign: Campaign, n: int = 2) -> None:
    """n prospects imported and enrolled, at NOW."""
    campaign.now(NOW)
    ok(campaign.run("import", str(campaign.write_csv([prospect_row(i)
                                                      for i in range(1, n + 1)]))))
    ok(campaign.run("enroll", "referral"))


def sent_message(campaign: Campaign, to: str) -> EmailMessage:
    for path in sorted((campaign.root / "outbox").glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if msg["To"] and to in msg["To"]:
            return msg  # type: ignore[return-value]
    raise AssertionError(f"nothing sent to {to}")


def deliver(campaign: Campaign, *, sender: str, subject: str, body: str,
            in_reply_to: str | None = None, **headers: str) -> None:
    """Drop a message into the campaign's Maildir, where `outreach poll` reads."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "dana@acme.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Mar 2026 15:00:00 +0000"
    msg["Message-ID"] = f"<{abs(hash((sender, subject)))}@mail.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    mailbox.Maildir(campaign.root / "mail", create=True).add(msg.as_bytes())


# -- one test per hook -------------------------------------------------------------------


def test_hook_register_commands(campaign: Campaign) -> None:
    """Fired at start-up with the click group, before argv is parsed: the command runs."""
    (campaign.root / "plugins" / "greeter.py").write_text(
        "import click\nfrom outreach import hookimpl\n\n"
        "@hookimpl\ndef register_commands(cli):\n"
        "    assert isinstance(cli, click.Group) and cli.name == 'cli'\n"
        "    @cli.command()\n    @click.argument('name')\n"
        "    def greet(name):\n        click.echo(f'hello {name}')\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "outreach", "greet", "Dana"], capture_output=True, text=True,
        cwd=campaign.root, env={**os.environ, "OUTREACH_CONFIG": str(campaign.config_path)})
    # The plugin asserts it was handed the click group itself; a wrong argument fails there.
    assert (proc.returncode, proc.stdout) == (0, "hello Dana\n"), proc.stderr


def test_hook_campaign_opened(campaign: Campaign) -> None:
    """Fired by every command that opens the campaign, before its work, with the campaign's
    folder, sender and open call tasks."""
    seen: list[tuple[Any, str, list[tuple[str, int]]]] = []

    class Opener:
        @hookimpl
        def campaign_opened(self, campaign: Any) -> None:
            seen.append((campaign.root, campaign.sender.domain,
                         [(p.email, t.id) for p, t in campaign.open_call_tasks()]))

    plug(campaign, ("opener", Opener()))
    started(campaign, 2)  # import, enroll
    ok(campaign.run("send", "--ignore-window"))  # opened before the call tasks exist
    ok(campaign.run("calls"))
    tasks = [(c["email"], c["id"]) for c in campaign.run_json("calls")]
    assert len(tasks) == 2
    assert seen[:4] == [(campaign.root, "acme.example", [])] * 3 + [
        (campaign.root, "acme.example", sorted(tasks, key=lambda t: t[1]))]


def test_hook_plugin_status(campaign: Campaign) -> None:
    """`outreach plugins` shows each plugin's status line; one that raises is reported and
    the listing goes on."""
    (campaign.root / "plugins" / "queue.py").write_text(
        "from outreach import campaign_dir, hookimpl\n\n@hookimpl\ndef plugin_status():\n"
        "    return f'3 things waiting in {campaign_dir().name}'\n", encoding="utf-8")
    (campaign.root / "plugins" / "broken.py").write_text(
        "from outreach import hookimpl\n\n@hookimpl\ndef plugin_status():\n"
        "    raise RuntimeError('boom')\n", encoding="utf-8")
    result = ok(campaign.run("plugins"))
    assert result.stdout == (
        "broken: plugin_status\n"
        "outreach.default_plugins.classifier (built-in): classify_reply\n"
        "queue: plugin_status\n  3 things waiting in campaign\n")
    assert result.stderr == "outreach: plugin broken failed in plugin_status: RuntimeError: boom\n"
    listed = {p["name"]: p["status"] for p in campaign.run_json("plugins")}
    assert listed["queue"] == "3 things waiting in campaign" and listed["broken"] is None


def test_hook_prospect_imported(campaign: Campaign, recorder: Recorder) -> None:
    campaign.now(NOW)
    path = campaign.write_csv([prospect_row(1), prospect_row(2)])
    ok(campaign.run("import", str(path)))
    assert [c["prospect"].email for c in recorder.of("prospect_imported")] == [
        "cfo1@maker1.example", "cfo2@maker2.example"]
    first = recorder.of("prospect_imported")[0]["prospect"]
    assert isinstance(first, Prospect) and first.pain_point == "month-end close"
    ok(campaign.run("import", str(path)))  # unchanged rows are not news
    assert len(recorder.of("prospect_imported")) == 2
    changed = campaign.write_csv([prospect_row(1, title="Chief Financial Officer")])
    ok(campaign.run("import", str(changed)))
    assert [c["prospect"].title for c in recorder.of("prospect_imported")][2:] == [
        "Chief Financial Officer"]


def test_hook_template_context(campaign: Campaign, recorder: Recorder) -> None:
    started(campaign, 1)
    template = campaign.root / "templates" / "referral.txt"
    template.write_text(template.read_text(encoding="utf-8") + "\n{{ plugin_hello }}\n",
                        encoding="utf-8")
    preview = ok(campaign.run("preview", "cfo1@maker1.example"))
    assert "hello First1" in preview.stdout
    seen = recorder.of("template_context")[-1]
    assert seen["prospect"].email == "cfo1@maker1.example"
    assert (seen["step"].number, seen["step"].day, seen["step"].kind) == (0, 0, "email")
    ok(campaign.run("send"))
    assert "hello First1" in sent_message(campaign, "cfo1@maker1.example").get_content()


def test_hook_message_sent(campaign: Campaign, recorder: Recorder) -> None:
    started(campaign, 2)
    ok(campaign.run("send"))
    seen = recorder.of("message_sent")
    assert sorted(c["prospect"].email for c in seen) == ["cfo1@maker1.example",
                                                        "cfo2@maker2.example"]
    for call in seen:
        message = call["message"]
        assert isinstance(message, EmailMessage)
        on_disk = sent_message(campaign, call["prospect"].email)
        assert message["Message-ID"] == on_disk["Message-ID"]  # the message as sent
        assert message["Subject"] == on_disk["Subject"]


def test_hook_call_task_created(campaign: Campaign, recorder: Recorder) -> None:
    started(campaign, 1)
    ok(campaign.run("send"))
    [seen] = recorder.of("call_task_created")
    task = seen["task"]
    assert seen["prospect"].email == "cfo1@maker1.example"
    assert isinstance(task.id, int) and isinstance(task.due, datetime)
    assert task.due.tzinfo is not None
    assert task.script.startswith("Hi First1, this is Dana Reyes")
    listed = campaign.run_json("calls", "--all")
    assert [(t["id"], t["script"]) for t in listed] == [(task.id, task.script)]
    ok(campaign.run("send"))  # a second run creates nothing twice
    assert len(recorder.of("call_task_created")) == 1


def test_hook_call_task_closed(campaign: Campaign, recorder: Recorder) -> None:
    started(campaign, 1)
    ok(campaign.run("send"))
    [created] = recorder.of("call_task_created")
    ok(campaign.run("call", str(created["task"].id), "--outcome", "voicemail",
                    "--note", "left a message"))
    [closed] = recorder.of("call_task_closed")
    assert closed["prospect"].email == "cfo1@maker1.example"
    task = closed["task"]
    assert (task.id, task.status, task.outcome, task.note) == (
        created["task"].id, "done", "voicemail", "left a message")


def test_hook_stage_changed(campaign: Campaign, recorder: Recorder) -> None:
    started(campaign, 2)
    ok(campaign.run("mark", "cfo1@maker1.example", "champion"))
    ok(campaign.run("mark", "cfo1@maker1.example", "champion"))  # no move, no event
    seen = [(c["prospect"].email, c["old"], c["new"], c["prospect"].stage)
            for c in recorder.of("stage_changed")]
    assert seen == [("cfo1@maker1.example", "prospect", "champion", "champion")]
    ok(campaign.run("send"))
    [task] = [c["task"] for c in recorder.of("call_task_created")
              if c["prospect"].email == "cfo2@maker2.example"]
    ok(campaign.run("call", str(task.id), "--outcome", "meeting"))
    assert [(c["old"], c["new"]) for c in recorder.of("stage_changed")][1:] == [
        ("prospect", "opportunity")]


def test_hook_reply_received(campaign: Campaign, recorder: Recorder) -> None:
    started(campaign, 2)
    ok(campaign.run("send"))
    first = sent_message(campaign, "cfo1@maker1.example")
    deliver(campaign, sender="First1 Last1 <cfo1@maker1.example>",
            subject=f"Re: {first['Subject']}", body="Sounds interesting, call me Tuesday.",
            in_reply_to=first["Message-ID"])
    deliver(campaign, sender="cfo2@maker2.example", subject="Automatic reply: away",
            body="I am out of the office until March 9.", Auto_Submitted="auto-replied")
    ok(campaign.run("poll"))
    seen = {c["prospect"].email: c for c in recorder.of("reply_received")}
    reply = seen["cfo1@maker1.example"]
    assert reply["kind"] == "reply" and isinstance(reply["reply"], EmailMessage)
    assert reply["reply"]["In-Reply-To"] == first["Message-ID"]
    assert reply["prospect"].stage == "lead"  # the prospect as it is after the reply
    assert seen["cfo2@maker2.example"]["kind"] == "auto_reply"
    assert ("cfo1@maker1.example", "prospect", "lead") in [
        (c["prospect"].email, c["old"], c["new"]) for c in recorder.of("stage_changed")]


def test_hook_classify_reply(campaign: Campaign, recorder: Recorder) -> None:
    """First non-None answer wins, before the built-in rules: here a plugin decides that
    "please stop" is an unsubscribe, which the built-in rules might call a reply."""

    class Strict:
        @hookimpl
        def classify_reply(self, reply: EmailMessage) -> str | None:
            return "unsubscribe" if "stop" in reply.get_content().lower() else None

    # The last registered is asked first (pluggy's LIFO order): the recorder, then strict.
    plug(campaign, ("strict", Strict()), ("recorder", recorder))
    started(campaign, 1)
    ok(campaign.run("send"))
    first = sent_message(campaign, "cfo1@maker1.example")
    deliver(campaign, sender="cfo1@maker1.example", subject=f"Re: {first['Subject']}",
            body="Please stop.", in_reply_to=first["Message-ID"])
    ok(campaign.run("poll"))
    [asked] = recorder.of("classify_reply")
    assert isinstance(asked["reply"], EmailMessage)
    assert asked["reply"]["Message-ID"].endswith("@mail.example>")
    assert [c["kind"] for c in recorder.of("reply_received")] == ["unsubscribe"]
    assert campaign.run_json("status", "cfo1@maker1.example")["suppressed"] is True


# -- isolation, async, tracing, settings -------------------------------------------------


def main_job(campaign: Campaign) -> list[Any]:
    """import, enroll, preview, send, poll a reply, call, mark: the day's commands."""
    started(campaign, 3)
    results = [campaign.run("preview", "cfo3@maker3.example"), campaign.run("send")]
    first = sent_message(campaign, "cfo1@maker1.example")
    deliver(campaign, sender="cfo1@maker1.example", subject=f"Re: {first['Subject']}",
            body="Yes, let's talk.", in_reply_to=first["Message-ID"])
    results.append(campaign.run("poll"))
    tasks = campaign.run_json("calls", "--all")
    results.append(campaign.run("call", str(tasks[0]["id"]), "--outcome", "meeting"))
    results.append(campaign.run("mark", "cfo3@maker3.example", "not-interested"))
    return results


def summary(rec: Recorder) -> list[tuple[str, str]]:
    return [(name, (kw.get("prospect").email if kw.get("prospect") else "")
             + (f" {kw['kind']}" if "kind" in kw else "")) for name, kw in rec.calls]


def test_a_raising_plugin_is_reported_and_the_others_still_hear_every_event(
        campaign: Campaign) -> None:
    alone = Recorder()
    plug(campaign, ("recorder", alone))
    main_job(campaign)
    expected = summary(alone)
    assert {name for name, _ in expected} >= {
        "prospect_imported", "template_context", "message_sent", "call_task_created",
        "classify_reply", "reply_received", "stage_changed", "call_task_closed"}

    second = campaign.root.parent / "second"
    from outreach.scaffold import init_campaign

    list(init_campaign(second))
    beside = Campaign(root=second, monkeypatch=campaign.monkeypatch)
    rec = Recorder()
    plug(beside, ("recorder", rec), ("raiser", Raiser()))  # last registered runs first
    pm = outreach.app.make_manager()
    assert [i.plugin_name for i in reversed(pm.hook.message_sent.get_hookimpls())] == [
        "raiser", "recorder"]
    results = main_job(beside)
    assert all(r.exit_code == 0 for r in results), [r.output for r in results]
    assert summary(rec) == expected
    stderr = "".join(r.stderr for r in results)
    for hook in ("template_context", "message_sent", "call_task_created", "classify_reply",
                 "reply_received", "stage_changed", "call_task_closed"):
        assert f"outreach: plugin raiser failed in {hook}: FrozenInstanceError" in stderr \
            or f"outreach: plugin raiser failed in {hook}: RuntimeError: boom" in stderr, hook
    assert "cannot assign to field 'stage'" in stderr
    # nothing recorded was undone, and the read-only prospect kept its stage
    status = beside.run_json("status", "cfo1@maker1.example")
    assert status["stage"] == "lead"
    assert sorted(p["stage"] for p in beside.run_json("prospects")) == [
        "lead", "not-interested", "opportunity"]
    assert len(list((second / "outbox").glob("*.eml"))) == 3


def test_async_hooks_are_awaited(campaign: Campaign) -> None:
    heard: list[tuple[str, str]] = []

    class Async:
        @hookimpl
        async def prospect_imported(self, prospect: Prospect) -> None:
            heard.append(("prospect_imported", prospect.email))

        @hookimpl
        async def message_sent(self, prospect: Prospect, message: EmailMessage) -> None:
            heard.append(("message_sent", message["To"]))

        @hookimpl
        async def template_context(self, prospect: Prospect, step: Any) -> dict[str, str]:
            return {"plugin_hello": "from an async plugin"}

    plug(campaign, ("async", Async()))
    started(campaign, 1)
    template = campaign.root / "templates" / "referral.txt"
    template.write_text(template.read_text(encoding="utf-8") + "\n{{ plugin_hello }}\n",
                        encoding="utf-8")
    ok(campaign.run("send"))  # message_sent is fired from inside send's event loop
    assert heard == [("prospect_imported", "cfo1@maker1.example"),
                     ("message_sent", "First1 Last1 <cfo1@maker1.example>")]
    assert "from an async plugin" in sent_message(campaign, "cfo1@").get_content()


def test_trace_prints_each_hook_call_and_result(campaign: Campaign,
                                                recorder: Recorder) -> None:
    campaign.monkeypatch.setenv("OUTREACH_TRACE_PLUGINS", "1")
    campaign.now(NOW)
    result = ok(campaign.run("import", str(campaign.write_csv([prospect_row(1)]))))
    assert ("outreach: hook prospect_imported(prospect=<Prospect cfo1@maker1.example>) "
            "-> recorder: None\n") in result.stderr
    ok(campaign.run("enroll", "referral"))
    preview = ok(campaign.run("preview", "cfo1@maker1.example"))
    assert "-> recorder: {'plugin_hello': 'hello First1'}" in preview.stderr
    campaign.monkeypatch.delenv("OUTREACH_TRACE_PLUGINS")
    assert "outreach: hook" not in ok(campaign.run("preview", "cfo1@maker1.example")).stderr


def test_plugin_settings_reach_the_plugin_with_env_secrets(campaign: Campaign) -> None:
    (campaign.root / "plugins" / "crm.py").write_text(
        "import json\nfrom outreach import hookimpl, settings\n\n"
        "@hookimpl\ndef prospect_imported(prospect):\n"
        "    conf = settings('crm')\n"
        "    with open(conf['log_path'], 'a') as fh:\n"
        "        fh.write(json.dumps(conf, sort_keys=True) + '\\n')\n", encoding="utf-8")
    with campaign.config_path.open("a", encoding="utf-8") as fh:
        fh.write('\n[plugins.crm]\nlog_path = "seen.jsonl"\napi_key_env = "CRM_KEY"\n'
                 "batch = 10\n")
    campaign.monkeypatch.setenv("CRM_KEY", "k-123")
    ok(campaign.run("import", str(campaign.write_csv([prospect_row(1)]))))
    [line] = (campaign.root / "seen.jsonl").read_text().splitlines()
    assert json.loads(line) == {"api_key": "k-123", "api_key_env": "CRM_KEY", "batch": 10,
                                "log_path": str(campaign.root / "seen.jsonl")}
    assert "k-123" not in campaign.config_path.read_text()


def test_prospect_is_read_only() -> None:
    prospect = Prospect(id=1, email="a@b.example", stage="prospect")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prospect.stage = "client"  # type: ignore[misc]

