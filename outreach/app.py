"""The running application: the config, the store and the plugins a command works with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pluggy

from . import clock
from .config import Config, Sender, secret
from .plugins import activate, fire, make_manager
from .store import Store

if TYPE_CHECKING:
    from .calls import CallTask
    from .models import Prospect


def open_store(config: Config) -> Store:
    """The campaign's store: its PostgreSQL database, or its SQLite file (folder made)."""
    password = None
    if config.store_url:
        if config.store_password_env:
            password = secret(config.store_password_env,
                              what=f"{config.path.name}: [store] password_env")
    else:
        config.store_path.parent.mkdir(parents=True, exist_ok=True)
    return Store(config.store_target, password=password)


def copy_store(config: Config) -> Store:
    """What `explain` reads: an in-memory copy of the campaign's SQLite file (empty when there
    is none yet), so nothing it does reaches the file or creates it. A team database is opened
    as usual: explain rolls back its transaction there."""
    if config.store_url:
        return open_store(config)
    from .store.sqlite import SQLiteEngine

    return Store(SQLiteEngine.copy_of(config.store_path))


@dataclass
class App:
    config: Config
    store: Store
    pm: pluggy.PluginManager
    # Hook calls held back by `hooks_after`, in order; None when hooks fire at once.
    _held: list[tuple[str, dict[str, Any]]] | None = field(default=None, init=False, repr=False)

    @classmethod
    def open(cls, config: Config, pm: pluggy.PluginManager | None = None,
             store: Store | None = None) -> App:
        """Open the store (migrating it) unless one is given, and load plugins unless a
        manager is given."""
        if pm is None:
            pm = make_manager(config.plugin_paths, config.plugin_settings)
        activate(pm, config.root)  # plugins' settings() and campaign_dir() follow this config
        app = cls(config=config, store=store or open_store(config), pm=pm)
        app.fire("campaign_opened", campaign=CampaignView(app))
        return app

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
        if self._held is not None:
            self._held.append((hook, kwargs))
            return []
        return fire(self.pm, hook, **kwargs)

    @contextmanager
    def hooks_after(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """Hold back side-effect hooks fired inside the block, then fire them in order once
        it ends without error (a batch's hooks after its commit, never under the write lock).
        The caller may drop the tail of the yielded list (work that was rolled back)."""
        if self._held is not None:  # already held by an outer block: it fires them
            yield self._held
            return
        held: list[tuple[str, dict[str, Any]]] = []
        self._held = held
        try:
            yield held
        finally:
            self._held = None
        for hook, kwargs in held:
            fire(self.pm, hook, **kwargs)


class CampaignView:
    """The open campaign as `campaign_opened` hands it to plugins: facts to read, no store."""

    def __init__(self, app: App) -> None:
        self._app = app
        self.root: Path = app.config.root
        self.sender: Sender = app.config.sender

    def open_call_tasks(self) -> list[tuple[Prospect, CallTask]]:
        """Every open call task with its prospect, oldest due first."""
        from .calls import to_task

        store = self._app.store
        pairs = [(store.prospect_by_id(row["prospect_id"]), to_task(row))
                 for row in store.open_call_tasks()]
        return [(prospect, task) for prospect, task in pairs if prospect is not None]
