"""The one plugin manager: loading order, per-plugin isolation, tracing.

Load order: installed packages (entry-point group `outreach`), then modules in the
`[plugins] paths` folders, then the built-in default plugins. OUTREACH_LOAD_PLUGINS, a
comma-separated list of plugin names, limits the first two to those names ("" loads none).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pluggy

from . import hookspecs
from .errors import OutreachError

DEFAULT_PLUGINS: tuple[str, ...] = ("outreach.default_plugins.classifier",)


class PluginError(OutreachError):
    """A plugin could not be loaded (import error, misspelled hook)."""


def allowed_plugins() -> set[str] | None:
    raw = os.environ.get("OUTREACH_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def make_manager(
    plugin_paths: Iterable[Path] = (),
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> pluggy.PluginManager:
    """Build the manager with every plugin loaded and checked."""
    pm = pluggy.PluginManager("outreach")
    pm.add_hookspecs(hookspecs)
    allow = allowed_plugins()
    _load_entry_points(pm, allow)
    for folder in plugin_paths:
        _load_folder(pm, folder, allow)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {pm.get_name(exc.plugin)}: {exc}. Check the hook's name against "
                          "`outreach plugins` and docs/plugins.md.") from None
    pm.outreach_settings = dict(settings or {})  # type: ignore[attr-defined]
    _ACTIVE["pm"] = pm
    return pm


def _versions(pm: pluggy.PluginManager) -> dict[str, str | None]:
    """Distribution versions of entry-point plugins, kept on the manager."""
    if not hasattr(pm, "outreach_versions"):
        pm.outreach_versions = {}  # type: ignore[attr-defined]
    return pm.outreach_versions  # type: ignore[attr-defined]


# The manager of the running command, so a plugin can read its own [plugins.NAME] table.
_ACTIVE: dict[str, pluggy.PluginManager] = {}


def settings(name: str) -> dict[str, Any]:
    """The `[plugins.NAME]` table of the running command's config, for plugin NAME.

    A key ending in `_env` also appears without the suffix, holding that environment
    variable's value (`token_env = "CRM_TOKEN"` gives `token`). Keys named `path` or ending
    in `_path` are already resolved against the config file's folder. Empty if none.
    """
    pm = _ACTIVE.get("pm")
    return plugin_settings(pm, name) if pm is not None else {}


def activate(pm: pluggy.PluginManager, root: Path) -> None:
    """Make `pm` the running command's manager, for the config in folder `root`."""
    pm.outreach_root = root  # type: ignore[attr-defined]
    _ACTIVE["pm"] = pm


def campaign_dir() -> Path:
    """The running command's config folder, where a plugin's default files belong (the
    current directory when no campaign is open)."""
    return Path(getattr(_ACTIVE.get("pm"), "outreach_root", None) or Path.cwd())


def plugin_settings(pm: pluggy.PluginManager, name: str) -> dict[str, Any]:
    """The `[plugins.NAME]` table for plugin NAME, with each `*_env` key's secret resolved."""
    raw = dict(getattr(pm, "outreach_settings", {}).get(name, {}))
    for key in [k for k in raw if k.endswith("_env")]:
        raw[key[: -len("_env")]] = os.environ.get(str(raw[key]), "")
    return raw


def _load_entry_points(pm: pluggy.PluginManager, allow: set[str] | None) -> None:
    from .entrypoints import entry_points

    for ep in entry_points():
        if allow is not None and ep.name not in allow:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name} ({ep.value}) cannot be loaded: {where_failed(exc)}\nFix "
                f"or uninstall it, or disable it: {_HOW_TO_SKIP}") from None
        _register(pm, plugin, ep.name)
        _versions(pm)[ep.name] = ep.version


def _load_folder(pm: pluggy.PluginManager, folder: Path, allow: set[str] | None) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.py")):
        name = path.stem
        if name.startswith("_") or (allow is not None and name not in allow):
            continue
        if pm.get_plugin(name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(f"outreach_plugins.{name}", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PluginError(
                f"plugin {name} cannot be loaded: {where_failed(exc)}\nFix it, or disable it: "
                f"rename it to _{path.name} (files starting with _ are not loaded) or "
                f"{_HOW_TO_SKIP}") from None
        _register(pm, module, name)


def where_failed(exc: BaseException) -> str:
    """`FILE line N: Type: message` for an exception raised while importing a plugin: the
    syntax error's own place, else the deepest frame outside the loaders (importlib's and
    ours); just `Type: message` when there is none (an entry point's module is missing)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename} line {exc.lineno}: {type(exc).__name__}: {exc.msg}"
    ours = (os.path.dirname(importlib.__file__), os.path.dirname(__file__))  # loaders
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(("<", *ours))]
    place = f"{frames[-1].filename} line {frames[-1].lineno}: " if frames else ""
    return f"{place}{type(exc).__name__}: {exc}"


# Stopping, not carrying on without it: a plugin left out would miss its events for good.
_HOW_TO_SKIP = ("run with OUTREACH_LOAD_PLUGINS set to the plugins you want (empty: none). "
                "Nothing was done, so none of its events are lost.")


# Whether this process loaded plugin code outreach does not ship (a campaign's folder, an
# entry point): such code may hold files open whose buffered writes only a normal exit
# flushes, so `cli.main` then does not end the process the quick way.
LOADED_OTHERS: list[str] = []


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Register, turning pluggy's complaints (a hook taking arguments the spec does not
    have) and a hook wrapper into errors that name the plugin."""
    LOADED_OTHERS.append(name)
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name}: {exc}. See docs/plugins.md for each hook's "
                          "arguments.") from None
    wrappers = [(caller.name, "wrapper=True" if impl.wrapper else "hookwrapper=True")
                for caller in pm.get_hookcallers(plugin) or []
                for impl in caller.get_hookimpls()
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)]
    if wrappers:
        pm.unregister(plugin)
        hook, kind = wrappers[0]
        raise PluginError(
            f"plugin {name}: {hook} is a hook wrapper (@hookimpl({kind})), which outreach "
            "cannot run: it calls each plugin's hook on its own, so that one failing plugin "
            "cannot stop the others, and there is no call of all of them to wrap. Make it a "
            "plain @hookimpl.")


def fire(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> list[Any]:
    """Call a side-effect hook one implementation at a time.

    pluggy aborts a whole hook call when one implementation raises; here each plugin runs
    in its own try, a failure is reported on stderr with the plugin's name, and the others
    still get the event. Async implementations are awaited. Returns the non-None results.
    """
    return list(_answers(pm, hook, kwargs))


def first_result(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> Any:
    """Call a decision hook: the first non-None answer wins; a raising plugin is skipped."""
    return next(_answers(pm, hook, kwargs), None)


def _answers(pm: pluggy.PluginManager, hook: str, kwargs: dict[str, Any]) -> Iterator[Any]:
    """Each implementation's non-None result in pluggy's call order, lazily, isolated."""
    for impl in reversed(getattr(pm.hook, hook).get_hookimpls()):
        try:
            result = impl.function(**{a: kwargs[a] for a in impl.argnames})
            if inspect.isawaitable(result):
                result = _run(result)
        except Exception as exc:
            report_failure(impl.plugin_name, hook, exc)
            continue
        if os.environ.get("OUTREACH_TRACE_PLUGINS"):
            _trace(hook, impl, kwargs, result)
        if result is not None:
            yield result


def has_impls(pm: pluggy.PluginManager, hook: str) -> bool:
    """Whether any plugin listens, so hot loops can skip building hook arguments."""
    return bool(getattr(pm.hook, hook).get_hookimpls())


def report_failure(plugin: str, hook: str, exc: BaseException) -> None:
    print(f"outreach: plugin {plugin} failed in {hook}: {type(exc).__name__}: {exc}",
          file=sys.stderr)


def _run(awaitable: Any) -> Any:
    """Await an async hook from sync code, or from inside a running loop via a thread."""
    import asyncio  # only when a plugin is async: asyncio costs start-up time

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_as_coroutine(awaitable))
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _as_coroutine(awaitable)).result()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable


def _trace(hook: str, impl: Any, kwargs: dict[str, Any], result: Any) -> None:
    args = ", ".join(f"{a}={_short(kwargs[a])}" for a in impl.argnames)
    print(f"outreach: hook {hook}({args}) -> {impl.plugin_name}: {result!r}", file=sys.stderr)


def _short(value: Any) -> str:
    email = getattr(value, "email", None)
    if isinstance(email, str):  # a Prospect: its address says which one
        return f"<{type(value).__name__} {email}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Every loaded plugin, the hooks it implements and its own status line (None when it
    has none, or its `plugin_status` failed, which is reported), for `outreach plugins`."""
    statuses = {impl.plugin_name: impl for impl in pm.hook.plugin_status.get_hookimpls()}
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
        out.append({
            "name": name,
            "hooks": hooks,
            "version": _versions(pm).get(name),
            "builtin": name in DEFAULT_PLUGINS,
            "status": _status(statuses[name]) if name in statuses else None,
        })
    return out


def _status(impl: Any) -> str | None:
    try:
        return impl.function()
    except Exception as exc:
        report_failure(impl.plugin_name, "plugin_status", exc)
        return None
