"""Is the campaign still signed with the shipped example identity?

`outreach init` copies config.example.toml, whose [sender] is Dana Reyes at acme.example. Mail
sent like that carries someone else's name, a postal address that is not yours and an opt-out
address nobody reads, so `check` warns and `send` keeps such mail off real SMTP servers.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from typing import Any

from .config import Config, is_loopback
from .errors import OutreachError

SENDER_KEYS = ("name", "email", "company", "phone", "postal_address")
# Reserved for documentation and tests (RFC 2606, RFC 6761): never a real mailbox.
_RESERVED = (".example", ".invalid", ".test", ".localhost")
_RESERVED_NAMES = ("example.com", "example.net", "example.org")


def reserved_domain(address: str) -> bool:
    """True for an address (or URL host) on a domain that can never receive mail."""
    domain = address.rpartition("@")[2].lower().rstrip(".")
    if "//" in domain:
        domain = domain.partition("//")[2].partition("/")[0].rpartition("@")[2]
    domain = domain.partition(":")[0]
    return domain.endswith(_RESERVED) or domain in _RESERVED_NAMES \
        or domain.endswith(tuple("." + n for n in _RESERVED_NAMES))


def example_keys(config: Config, example: Mapping[str, Any]) -> list[str]:
    """The keys that still hold the shipped example value or a reserved domain, as
    `[table] key`, in config order."""
    shipped_sender = example.get("sender", {})
    shipped_compliance = example.get("compliance", {})
    keys = []
    for key in SENDER_KEYS:
        value = getattr(config.sender, key)
        if value == shipped_sender.get(key) or (key == "email" and reserved_domain(value)):
            keys.append(f"[sender] {key}")
    compliance = config.compliance
    if compliance.unsubscribe_mailto == shipped_compliance.get("unsubscribe_mailto") \
            or reserved_domain(compliance.unsubscribe_mailto):
        keys.append("[compliance] unsubscribe_mailto")
    if compliance.unsubscribe_url and reserved_domain(compliance.unsubscribe_url):
        keys.append("[compliance] unsubscribe_url")
    return keys


@functools.lru_cache(maxsize=1)
def shipped_example() -> dict[str, Any]:
    """The example config `outreach init` starts from (empty if this install lacks it)."""
    from .scaffold import skeleton_dir

    try:
        with (skeleton_dir() / "config.example.toml").open("rb") as fh:
            return tomllib.load(fh)
    except (OutreachError, OSError, tomllib.TOMLDecodeError):
        return {}


def describe(keys: list[str]) -> str:
    """`[sender] name, email and [compliance] unsubscribe_mailto`: keys grouped by table."""
    tables: dict[str, list[str]] = {}
    for item in keys:
        table, _, key = item.partition(" ")
        tables.setdefault(table, []).append(key)
    parts = [f"{table} {', '.join(names)}" for table, names in tables.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def warning(config: Config) -> str | None:
    """What `check` says while the identity is still the example's; None once it is yours."""
    keys = example_keys(config, shipped_example())
    if not keys:
        return None
    return (f"{config.path.name}: {describe(keys)} still hold the example values (or a "
            "reserved domain such as .example or .invalid): set your own before sending for "
            "real; until then `outreach send` writes only to the outbox or a loopback SMTP "
            "server")


def refuse_example_identity(config: Config) -> None:
    """Raise before real SMTP delivery while the identity is the example's. The outbox
    transport and a server on a loopback address (a local test relay) stay allowed."""
    remote = [box.smtp for box in config.mailboxes   # every [[mailboxes]] entry's server
              if box.smtp.transport == "smtp" and not is_loopback(box.smtp.host)]
    if not remote:
        return
    smtp = remote[0]
    keys = example_keys(config, shipped_example())
    if keys:
        raise OutreachError(
            f"{config.path.name}: {describe(keys)} still hold the example values (or a "
            f"reserved domain such as .example or .invalid): nothing was handed to "
            f"{smtp.host}. Set your own name, address and opt-out address in "
            f"{config.path.name} (`outreach check` lists them); the outbox transport and a "
            "loopback test server work as they are")
