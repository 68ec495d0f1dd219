"""outreach-hello: the smallest useful outreach plugin package.

- `outreach hello` (register_commands) says hello and which greeting applies right now;
- `{{ greeting }}` (template_context) is "Good morning" / "Good afternoon" / "Good evening"
  in the prospect's own time zone, so "{{ greeting }} {{ prospect.first_name }}," reads right
  whenever the message goes out.

Settings, optional, in outreach.toml:

    [plugins.hello]
    morning = "Good morning"      # override any of the three phrases
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import click

from outreach import clock, hookimpl
from outreach.plugins import settings

PHRASES = {"morning": "Good morning", "afternoon": "Good afternoon", "evening": "Good evening"}


def greeting(moment: datetime) -> str:
    """The greeting for a local time: before noon, before 5pm, after."""
    part = "morning" if moment.hour < 12 else "afternoon" if moment.hour < 17 else "evening"
    return str(settings("hello").get(part, PHRASES[part]))


@hookimpl
def register_commands(cli: click.Group) -> None:
    @cli.command()
    def hello() -> None:
        """Say hello from the outreach-hello plugin."""
        click.echo(f"{greeting(clock.now())} from outreach-hello!")


@hookimpl
def template_context(prospect: Any, step: Any) -> dict[str, str]:
    zone = ZoneInfo(prospect.timezone) if prospect.timezone else None
    return {"greeting": greeting(clock.now().astimezone(zone))}
