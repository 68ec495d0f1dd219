"""Start-up stays light: `outreach --help` outside a campaign loads neither the config
schema nor the plugin manager, yet every command still sees its plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from outreach.plugins import make_manager

HEAVY = ("pluggy", "outreach.config", "outreach.models", "outreach.hookspecs")
PROBE = (
    "import sys\n"
    "sys.argv = ['outreach', *sys.argv[1:]]\n"
    "from outreach.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
)


def outreach(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")},
           "XDG_CACHE_HOME": str(folder / ".cache")}
    return subprocess.run([sys.executable, "-c", PROBE, *args], cwd=folder, env=env,
                          capture_output=True, text=True, check=True)


def test_help_outside_a_campaign_skips_config_and_plugin_manager(tmp_path: Path) -> None:
    done = outreach(tmp_path, "--help")
    assert "Usage: outreach" in done.stdout and "send" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_plugins_outside_a_campaign_still_lists_the_built_ins(tmp_path: Path) -> None:
    listed = json.loads(outreach(tmp_path, "plugins", "--json").stdout)
    assert [(p["name"], p["hooks"], p["builtin"]) for p in listed] == [
        ("outreach.default_plugins.classifier", ["classify_reply"], True)]


def test_built_in_plugins_add_no_commands() -> None:
    # Start-up builds no manager when only the built-ins are there: that is only right
    # while none of them implements register_commands.
    assert make_manager().hook.register_commands.get_hookimpls() == []
