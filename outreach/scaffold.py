"""`outreach init`: lay out a campaign folder from the shipped example, never overwriting."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from .errors import OutreachError

PLUGINS_README = """\
Drop plugin modules (*.py) here; outreach loads them on start-up (`outreach plugins` lists them).
examples/ holds the plugins that ship with outreach; they are NOT loaded from there.
To enable one, copy it up into this folder, e.g.  cp plugins/examples/crm_jsonl.py plugins/
and configure it under [plugins.NAME] in outreach.toml. Writing your own: docs/plugins.md.
"""


def skeleton_dir() -> Path:
    """Where the example config and templates are: the source tree, or the installed copy."""
    for base in (Path(__file__).resolve().parent.parent, Path(sys.prefix) / "share" / "outreach"):
        if (base / "config.example.toml").is_file() and (base / "templates").is_dir():
            return base
    raise OutreachError("the example config and templates are missing from this install; "
                        "reinstall outreach")


def source_tree() -> Path | None:
    """outreach's own checkout when running from one (an editable install), else None."""
    base = Path(__file__).resolve().parent.parent
    return base if (base / "pyproject.toml").is_file() and (base / ".git").exists() else None


def source_tree_warning(directory: Path) -> str | None:
    """Why a campaign folder inside outreach's source tree is a mistake, or None."""
    tree = source_tree()
    target = directory.resolve()
    if tree is None or not target.is_relative_to(tree):
        return None
    why = ("commands run there would load the repo's own plugins/ (the shipped examples) as "
           "yours" if target == tree else "your prospects and database would sit inside a git "
           "checkout of outreach")
    return (f"{directory} is inside outreach's source tree ({tree}): {why}. Make the campaign "
            "folder elsewhere, e.g. `outreach init ~/campaigns/q3`")


def init_campaign(directory: Path) -> Iterator[tuple[Path, bool]]:
    """Create what is missing; yield (path, created) for each file and folder."""
    from .store import Store

    source = skeleton_dir()
    directory.mkdir(parents=True, exist_ok=True)
    yield from _copy(source / "config.example.toml", directory / "outreach.toml")
    (directory / "templates").mkdir(exist_ok=True)
    for template in sorted((source / "templates").glob("*.txt")):
        yield from _copy(template, directory / "templates" / template.name)
    (directory / "plugins").mkdir(exist_ok=True)
    if (source / "plugins").is_dir():  # shipped examples, inert until copied up a level
        (directory / "plugins" / "examples").mkdir(exist_ok=True)
        for plugin in sorted((source / "plugins").glob("*.py")):
            yield from _copy(plugin, directory / "plugins" / "examples" / plugin.name)
    readme = directory / "plugins" / "README.txt"
    if not readme.exists():
        readme.write_text(PLUGINS_README, encoding="utf-8")
        yield readme, True
    db = directory / "outreach.db"
    existed = db.exists()
    Store(db).close()
    yield db, not existed


def _copy(source: Path, target: Path) -> Iterator[tuple[Path, bool]]:
    if target.exists():
        yield target, False
        return
    shutil.copyfile(source, target)
    yield target, True
