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


def test_plugin_that_fails_to_import_is_named(campaign):
    (campaign.root / "plugins" / "broken.py").write_text("import nonexistent_module_xyz\n",
                                                         encoding="utf-8")
    proc = run_outreach(campaign, "prospects")
    assert proc.returncode == 1
    assert "plugin broken failed to load" in proc.stderr
    assert "nonexistent_module_xyz" in proc.stderr

