"""The plugin guide documents every hook, and every hook has a test (datasette's
test_plugin_hooks_have_tests idea): adding a hook without both fails here."""

from __future__ import annotations

import inspect
import re

import pytest

from outreach import hookspecs

from . import test_hooks
from .conftest import REPO

GUIDE = REPO / "docs" / "plugins.md"


def hook_specs() -> dict[str, list[str]]:
    """Each hook's name and argument names, read from outreach/hookspecs.py."""
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(fn, "outreach_spec")
    }


def test_there_are_hooks_to_check() -> None:
    assert {"register_commands", "template_context", "prospect_imported", "message_sent",
            "reply_received", "call_task_created", "stage_changed",
            "classify_reply"} <= set(hook_specs())


@pytest.mark.parametrize(("hook", "args"), sorted(hook_specs().items()))
def test_plugin_hook_is_documented(hook: str, args: list[str]) -> None:
    heading = f"### {hook}({', '.join(args)})"
    text = GUIDE.read_text(encoding="utf-8")
    assert heading in text.splitlines(), f"docs/plugins.md has no heading {heading!r}"
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    assert "**When:**" in section and "**Returns:**" in section
    assert re.search(rf"```python\n.*@hookimpl\n(async )?def {hook}\(", section, re.S), (
        f"the {hook} section needs a complete example")


@pytest.mark.parametrize("hook", sorted(hook_specs()))
def test_plugin_hook_has_a_test(hook: str) -> None:
    assert callable(getattr(test_hooks, f"test_hook_{hook}", None)), (
        f"tests/test_hooks.py has no test_hook_{hook}")


def test_documented_hooks_exist() -> None:
    """No heading for a hook that is gone or renamed."""
    headings = re.findall(r"^### (\w+)\(", GUIDE.read_text(encoding="utf-8"), re.M)
    assert sorted(headings) == sorted(hook_specs())


def test_readme_links_the_plugin_guide() -> None:
    assert "(docs/plugins.md)" in (REPO / "README.md").read_text(encoding="utf-8")
