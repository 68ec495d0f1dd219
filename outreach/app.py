"""The running application: the config, the store and the plugins a command works with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pluggy

from . import clock
from .config import Config
from .plugins import activate, fire, make_manager
from .store import Store


@dataclass
class App:
    config: Config
    store: Store
    pm: pluggy.PluginManager

    @classmethod
    def open(cls, config: Config, pm: pluggy.PluginManager | None = None) -> App:
        """Open the store (migrating it) and load plugins unless a manager is given."""
        config.store_path.parent.mkdir(parents=True, exist_ok=True)
        if pm is None:
            pm = make_manager(config.plugin_paths, config.plugin_settings)
        activate(pm, config.root)  # plugins' settings() and campaign_dir() follow this config
        return cls(config=config, store=Store(config.store_path), pm=pm)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> datetime:
        return clock.now()

    @property
    def sender_zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.sender.timezone)

    def fire(self, hook: str, **kwargs: Any) -> list[Any]:
        return fire(self.pm, hook, **kwargs)
