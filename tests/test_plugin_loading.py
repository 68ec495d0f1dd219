"""Plugin loading: folders, the allow-list, misspelled hooks, commands added at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

GREETER = '''
import click
from outreach import hookimpl

@hookimpl
def register_commands(cli):
    @cli.command()
    def hello():
        """Say hello from a plugin."""
        click.echo("hello from greeter")
'''


def run_outreach(campaign, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "outreach", *args],
        capture_output=True, text=True, cwd=campaign.root,
        env={**os.environ, "OUTREACH_CONFIG": str(campaign.config_path), **env},
    )


def test_folder_plugin_adds_a_command_and_is_listed(campaign):
    (campaign.root / "plugins" / "greeter.py").write_text(GREETER, encoding="utf-8")
    proc = run_outreach(campaign, "hello")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from greeter\n"
    listed = json.loads(run_outreach(campaign, "plugins", "--json").stdout)
    greeter = next(p for p in listed if p["name"] == "greeter")
    assert greeter["hooks"] == ["register_commands"] and greeter["builtin"] is False


def test_allow_list_keeps_other_plugins_out(campaign):
    (campaign.root / "plugins" / "greeter.py").write_text(GREETER, encoding="utf-8")
    proc = run_outreach(campaign, "hello", OUTREACH_LOAD_PLUGINS="")
    assert proc.returncode == 2
    assert "No such command 'hello'" in proc.stderr
    listed = json.loads(run_outreach(campaign, "plugins", "--json",
                                     OUTREACH_LOAD_PLUGINS="").stdout)
    assert all(p["builtin"] for p in listed)


def test_allow_list_loads_only_the_named_plugins(campaign):
    (campaign.root / "plugins" / "greeter.py").write_text(GREETER, encoding="utf-8")
    (campaign.root / "plugins" / "other.py").write_text(
        "from outreach import hookimpl\n@hookimpl\ndef stage_changed(prospect, old, new):\n"
        "    pass\n", encoding="utf-8")
    listed = json.loads(run_outreach(campaign, "plugins", "--json",
                                     OUTREACH_LOAD_PLUGINS="greeter").stdout)
    assert sorted(p["name"] for p in listed if not p["builtin"]) == ["greeter"]
    assert run_outreach(campaign, "hello", OUTREACH_LOAD_PLUGINS="greeter").returncode == 0
    both = json.loads(run_outreach(campaign, "plugins", "--json").stdout)
    assert sorted(p["name"] for p in both if not p["builtin"]) == ["greeter", "other"]


@pytest.mark.parametrize(("name", "definition", "named"), [
    ("typo", "def message_send(prospect, message):", "message_send"),       # no such hook
    ("wrongargs", "def message_sent(prospect, message, colour):", "colour"),  # no such argument
])
def test_a_hook_pluggy_refuses_fails_loudly_naming_the_plugin(campaign, name, definition, named):
    (campaign.root / "plugins" / f"{name}.py").write_text(
        f"from outreach import hookimpl\n@hookimpl\n{definition}\n    pass\n", encoding="utf-8")
    proc = run_outreach(campaign, "plugins")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"Error: plugin {name}: ")
    assert named in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("source", "where"), [
    ("import nonexistent_module_xyz\n",
     "broken.py line 1: ModuleNotFoundError: No module named 'nonexistent_module_xyz'"),
    ("from outreach import hookimpl\n\n@hookimpl\ndef message_sent(prospect\n    pass\n",
     "broken.py line 4: SyntaxError: '(' was never closed"),
    ("X = 1\nY = X / 0\n", "broken.py line 2: ZeroDivisionError: division by zero"),
])
def test_plugin_that_fails_to_import_stops_the_command_naming_file_line_and_the_way_out(
        campaign, source, where):
    broken = campaign.root / "plugins" / "broken.py"
    broken.write_text(source, encoding="utf-8")
    csv_path = campaign.root / "p.csv"
    csv_path.write_text("email\nava@northwind.example\n", encoding="utf-8")
    proc = run_outreach(campaign, "import", str(csv_path))
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: plugin broken cannot be loaded: {broken.parent}/{where}\n"
        "Fix it, or disable it: rename it to _broken.py (files starting with _ are not loaded) "
        "or run with OUTREACH_LOAD_PLUGINS set to the plugins you want (empty: none). Nothing "
        "was done, so none of its events are lost.\n")
    # Either way out works, and nothing was imported by the refused run.
    assert json.loads(run_outreach(campaign, "prospects", "--json",
                                   OUTREACH_LOAD_PLUGINS="").stdout) == []
    broken.rename(broken.with_name("_broken.py"))
    assert run_outreach(campaign, "import", str(csv_path)).returncode == 0


def test_a_broken_plugin_stops_only_the_commands_that_use_its_campaign(campaign, tmp_path):
    """Run from a campaign folder whose plugin is broken, `init` of another folder, `--help`
    and `--version` still work; a command on that campaign still stops, naming file and line."""
    broken = campaign.root / "plugins" / "broken.py"
    broken.write_text("X = 1\nY = X / 0\n", encoding="utf-8")
    other = tmp_path / "other"
    made = run_outreach(campaign, "init", str(other))
    assert made.returncode == 0, made.stderr
    assert (other / "outreach.toml").is_file() and (other / "outreach.db").is_file()
    assert run_outreach(campaign, "--version").stdout.startswith("outreach, version ")
    for args in (["--help"], ["init", "--help"], ["prospects", "--help"]):
        shown = run_outreach(campaign, *args)
        assert (shown.returncode, shown.stderr) == (0, ""), args
        assert shown.stdout.startswith(f"Usage: outreach {' '.join(args[:-1])}".rstrip() + " ")
    listed = run_outreach(campaign, "prospects")
    assert listed.returncode == 1
    assert listed.stderr.startswith(f"Error: plugin broken cannot be loaded: {broken} line 2: "
                                    "ZeroDivisionError: division by zero\n")


@pytest.mark.parametrize("marker", ["wrapper=True", "hookwrapper=True"])
def test_a_hook_wrapper_is_refused_at_load_time_naming_plugin_and_hook(campaign, marker):
    (campaign.root / "plugins" / "timing.py").write_text(
        "from outreach import hookimpl\n\n"
        "@hookimpl\ndef stage_changed(prospect, old, new):\n    pass\n\n"
        f"@hookimpl({marker})\ndef message_sent(prospect, message):\n"
        "    result = yield\n    return result\n", encoding="utf-8")
    proc = run_outreach(campaign, "plugins")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"Error: plugin timing: message_sent is a hook wrapper (@hookimpl({marker})), which "
        "outreach cannot run: it calls each plugin's hook on its own, so that one failing "
        "plugin cannot stop the others, and there is no call of all of them to wrap. Make it "
        "a plain @hookimpl.\n")


def test_an_entry_point_that_cannot_load_names_the_plugins_own_file_and_line(
        tmp_path, monkeypatch):
    import outreach.entrypoints
    from outreach.entrypoints import EntryPoint
    from outreach.plugins import PluginError, make_manager

    (tmp_path / "outreach_broken_ep.py").write_text("x = 1\nimport gone_module_xyz\n",
                                                     encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("OUTREACH_LOAD_PLUGINS", raising=False)
    errors = []
    for value in ("outreach_broken_ep", "outreach_not_installed_xyz:hooks"):
        monkeypatch.setattr(outreach.entrypoints, "entry_points",
                            lambda value=value: [EntryPoint("broken", value, "1.0")])
        with pytest.raises(PluginError) as caught:
            make_manager()
        errors.append(str(caught.value).splitlines()[0])
    assert errors == [
        f"plugin broken (outreach_broken_ep) cannot be loaded: {tmp_path}/outreach_broken_ep.py "
        "line 2: ModuleNotFoundError: No module named 'gone_module_xyz'",
        "plugin broken (outreach_not_installed_xyz:hooks) cannot be loaded: "
        "ModuleNotFoundError: No module named 'outreach_not_installed_xyz'"]
