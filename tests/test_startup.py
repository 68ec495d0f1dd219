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
# Printed by an atexit handler: main() ends the process itself (see test_exit_...).
PROBE = (
    "import atexit, sys\n"
    "sys.argv = ['outreach', *sys.argv[1:]]\n"
    "atexit.register(lambda: print(sorted(m for m in "
    f"{HEAVY!r} if m in sys.modules), file=sys.stderr))\n"
    "from outreach.cli import main\n"
    "main()\n"
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


EXITS = (
    "import atexit, sys, threading, time\n"
    "class Teardown:\n"
    "    def __del__(self):\n"
    "        print('torn down', flush=True)\n"
    "kept = Teardown()  # freed only by the interpreter's teardown\n"
    "atexit.register(lambda: print('atexit ran'))  # buffered: printed only if flushed\n"
    "if 'thread' in sys.argv:\n"
    "    sys.argv.remove('thread')\n"
    "    threading.Thread(target=lambda: (time.sleep(0.3), print('thread done'))).start()\n"
    "sys.argv = ['outreach', *sys.argv[1:]]\n"
    "from outreach.cli import main\n"
    "main()\n"
)


def test_exit_skips_the_teardown_but_keeps_output_exit_code_and_atexit(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", EXITS, *args], cwd=tmp_path,
                              capture_output=True, text=True)

    done = run("--help")
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: outreach") and done.stdout.endswith("atexit ran\n")
    assert "torn down" not in done.stdout   # the process ended without freeing everything
    failed = run("status", "nobody@example.com", "--config", str(tmp_path / "none.toml"))
    assert failed.returncode == 1 and failed.stderr.startswith("Error: ")
    assert failed.stdout == "atexit ran\n"
    # Another thread still running: the normal exit, which waits for it.
    threaded = run("thread", "--help")
    assert threaded.returncode == 0
    assert threaded.stdout.endswith("thread done\natexit ran\ntorn down\n")


def test_a_plugin_file_left_open_keeps_what_was_written_to_it(tmp_path: Path) -> None:
    """A campaign's own plugin may keep a file open at module level and write to it without
    flushing: the normal exit flushes it as the module is freed, so the quick exit must not
    be taken once code outreach does not ship was loaded."""
    from outreach.scaffold import init_campaign

    list(init_campaign(tmp_path / "camp"))
    (tmp_path / "camp" / "plugins" / "audit.py").write_text(
        "import pluggy\n"
        "hookimpl = pluggy.HookimplMarker('outreach')\n"
        f"LOG = open({str(tmp_path / 'audit.log')!r}, 'a')\n"
        "@hookimpl\n"
        "def campaign_opened(campaign):\n"
        "    LOG.write('opened\\n')\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", EXITS, "stats"], cwd=tmp_path / "camp",
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "audit.log").read_text() == "opened\n"
    # A campaign with only the built-in plugins still ends the quick way.
    (tmp_path / "camp" / "plugins" / "audit.py").unlink()
    plain = subprocess.run([sys.executable, "-c", EXITS, "stats"], cwd=tmp_path / "camp",
                           capture_output=True, text=True)
    assert plain.returncode == 0 and "torn down" not in plain.stdout


def test_a_profiler_still_writes_its_report(tmp_path: Path) -> None:
    """`python -m cProfile -o FILE -m outreach …` writes FILE after main returns: the quick
    exit would end the process first, so it is not taken under a profiler or a tracer."""
    report = tmp_path / "poll.prof"
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(report),
                           "-m", "outreach", "--help"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stdout.startswith("Usage: outreach")
    assert report.stat().st_size > 0
