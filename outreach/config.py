"""outreach.toml -> frozen dataclasses. Every error names the file, the key and what to write.

Found by --config PATH, else $OUTREACH_CONFIG, else ./outreach.toml. Relative paths are
resolved from the config file's folder. Secrets never live here: a key ending in `_env`
names the environment variable that holds the secret, read only when it is needed.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import itertools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .configpath import CONFIG_NAME as CONFIG_NAME  # re-exported
from .configpath import find_config, missing_config
from .errors import ConfigError
from .models import is_email

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TEMPLATES_DIR = "templates"


@dataclass(frozen=True)
class Sender:
    """[sender]: who the emails are from."""

    name: str
    email: str
    company: str
    phone: str
    postal_address: str
    timezone: str

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]


@dataclass(frozen=True)
class Smtp:
    """[smtp] (or a mailbox's): how mail goes out."""

    transport: str
    outbox: Path
    host: str
    port: int
    security: str
    username: str
    password_env: str
    concurrency: int
    timeout: float
    provider: str = "custom"
    auth: str = "none"     # "password", "oauth2" or "none" (resolved: "none" when no username)
    oauth2: OAuth2 | None = None   # the app registration, for auth = "oauth2"


@dataclass(frozen=True)
class Imap:
    """[imap] (or a mailbox's): where replies are read."""

    source: str
    maildir: Path
    host: str
    port: int
    security: str
    username: str
    password_env: str
    folders: tuple[str, ...]
    provider: str = "custom"
    auth: str = "none"
    oauth2: OAuth2 | None = None


@dataclass(frozen=True)
class OAuth2:
    """The user's own app registration with one provider, and where its endpoints are."""

    provider: str
    client_id: str
    client_secret_env: str
    tenant: str
    token_url: str
    device_authorization_url: str
    authorization_url: str
    scopes: tuple[str, ...]

    @property
    def flow(self) -> str:
        """`device` (RFC 8628) where the provider allows it, else `browser` (RFC 8252 + PKCE).
        Google refuses the mail scope in its device flow."""
        if self.device_authorization_url and self.provider != "google":
            return "device"
        return "browser"


@dataclass(frozen=True)
class Window:
    """One sending window of a day, start to end."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True)
class Sending:
    """[sending]: when and how much goes out."""

    windows: tuple[Window, ...]
    window_timezone: str
    days: tuple[str, ...]
    daily_limit: int
    per_run_limit: int
    max_bounce_rate: float
    max_unsubscribe_rate: float
    guard_min_sent: int


@dataclass(frozen=True)
class Compliance:
    """[compliance]: the unsubscribe address and link, and the footer."""

    unsubscribe_mailto: str
    unsubscribe_url: str
    footer: Path


@dataclass(frozen=True)
class Icp:
    """[icp.NAME]: the rules a prospect must all match."""

    name: str
    industries: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    employees: tuple[int, int] | None = None
    countries: tuple[str, ...] = ()
    exclude_domains: tuple[str, ...] = ()
    dormant_days: int | None = None


@dataclass(frozen=True)
class Step:
    """One step of a sequence: an email (one template, or several for A/B), a call, or recycle."""

    number: int
    day: int
    kind: str  # "email", "call" or "recycle"
    templates: tuple[str, ...] = ()
    thread: bool = False


@dataclass(frozen=True)
class Sequence:
    """[sequences.NAME]: its ICP and steps."""

    name: str
    icp: str
    steps: tuple[Step, ...]
    recycle_cooldown_days: int
    on_referral: str | None


@dataclass(frozen=True)
class Team:
    """This rep's name in a shared database, and the limits the whole team shares."""

    rep: str
    max_emails_per_domain_per_day: int


@dataclass(frozen=True)
class Mailbox:
    """One sending address with its own servers, daily limit, ramp-up and (optionally)
    windows. A config without [[mailboxes]] has one: [sender], [smtp] and [imap]."""

    email: str
    name: str
    smtp: Smtp
    imap: Imap
    daily_limit: int
    ramp_start: int | None      # None: the full daily_limit from the first day
    ramp_step: int
    windows: tuple[Window, ...] | None   # None: [sending] windows


@dataclass(frozen=True)
class Config:
    """The whole outreach.toml, checked."""

    path: Path
    sender: Sender
    store_path: Path
    smtp: Smtp
    imap: Imap
    sending: Sending
    compliance: Compliance
    icps: Mapping[str, Icp]
    sequences: Mapping[str, Sequence]
    plugin_paths: tuple[Path, ...]
    plugin_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    oauth2: Mapping[str, OAuth2] = field(default_factory=dict)   # by provider, when used
    store_url: str = ""            # a postgresql:// URL (a team database); "": SQLite
    store_password_env: str = ""   # the variable holding its password (else libpq's own ways)
    team: Team = Team(rep="", max_emails_per_domain_per_day=3)
    mailboxes: tuple[Mailbox, ...] = ()

    @property
    def store_target(self) -> str | Path:
        """What the store opens: the PostgreSQL URL, else the SQLite file."""
        return self.store_url or self.store_path

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def templates_dir(self) -> Path:
        return self.root / TEMPLATES_DIR

    def mailbox(self, email: str) -> Mailbox | None:
        return next((box for box in self.mailboxes if box.email == email), None)

    def for_mailbox(self, box: Mailbox) -> Config:
        """This config as `box` sends: its From name and address (so Message-IDs use its
        domain) and its servers; everything else (the team's [compliance] opt-out address
        too) unchanged."""
        return replace(self, sender=replace(self.sender, name=box.name, email=box.email),
                       smtp=box.smtp, imap=box.imap)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate a config file, or raise ConfigError naming file and key."""
    cfg_path = find_config(path)
    try:
        raw = cfg_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(missing_config(path, cfg_path)) from None
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{cfg_path}: not UTF-8 text; save it as UTF-8.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not valid TOML: {exc}") from None
    return _Parser(cfg_path.resolve()).config(data)


def secret(env_name: str, *, what: str, holds: str = "the password") -> str:
    """Read a secret from the environment variable a `*_env` key names."""
    value = os.environ.get(env_name, "")
    if not value:
        raise ConfigError(
            f"{what}: environment variable {env_name} is not set; export it with {holds}."
        )
    return value


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


PROVIDERS = ("google", "microsoft", "custom")
AUTH_METHODS = ("password", "oauth2", "none")

# provider = "google" | "microsoft" fills host, port and security of [smtp] and [imap].
SERVER_PRESETS: dict[tuple[str, str], tuple[str, int, str]] = {
    ("smtp", "google"): ("smtp.gmail.com", 587, "starttls"),
    ("imap", "google"): ("imap.gmail.com", 993, "tls"),
    ("smtp", "microsoft"): ("smtp.office365.com", 587, "starttls"),
    ("imap", "microsoft"): ("outlook.office365.com", 993, "tls"),
}

# Their OAuth2 endpoints and the scopes mail needs (openid + email/profile name the account).
_MS = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
OAUTH2_PRESETS: dict[str, dict[str, Any]] = {
    "microsoft": {
        "token_url": f"{_MS}/token",
        "device_authorization_url": f"{_MS}/devicecode",
        "authorization_url": f"{_MS}/authorize",
        "scopes": ("https://outlook.office.com/SMTP.Send",
                   "https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access",
                   "openid", "profile"),
    },
    "google": {
        "token_url": "https://oauth2.googleapis.com/token",
        "authorization_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "scopes": ("https://mail.google.com/", "openid", "email"),
    },
}


def _endpoint_problem(url: str) -> str | None:
    """Why `url` cannot be an OAuth2 endpoint (None when it can): https, or http on loopback,
    with a host and a valid port."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing the port is the check: 99999 or "x" raise)
    except ValueError as exc:
        return f'"{url}" is not a valid URL ({exc})'
    if parts.hostname and (parts.scheme == "https" or (
            parts.scheme == "http" and is_loopback(parts.hostname))):
        return None
    return f'"{url}" must be an https:// URL (http:// only on loopback)'


_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class _Parser:
    """Walks the TOML tables; `where` strings read like `[sending] windows[1]`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.root = path.parent

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path.name}: {where} {problem}")

    # -- generic checks -------------------------------------------------------------

    def section(self, data: Mapping[str, Any], name: str, keys: set[str]) -> Mapping[str, Any]:
        """A top-level table such as [smtp]; absent means all defaults."""
        return self.table(data.get(name, {}), name, keys)

    def table(self, value: Any, name: str, keys: set[str]) -> Mapping[str, Any]:
        """Check that a table holds only known keys, suggesting the closest for a typo."""
        if not isinstance(value, dict):
            raise self.fail(f"[{name}]", "must be a table")
        for key in value:
            if key not in keys:
                close = _closest(key, keys)
                hint = f'did you mean "{close[0]}"?' if close else "known keys: " + ", ".join(
                    sorted(keys)
                )
                raise self.fail(f"[{name}]", f'has unknown key "{key}": {hint}')
        return value

    def get(
        self,
        table: Mapping[str, Any],
        where: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        if key not in table:
            if default is ...:
                raise self.fail(f"[{where}] {key}", "is required")
            return default
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
        if not ok:
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise self.fail(f"[{where}] {key}", f"must be {names}, not {value!r}")
        return value

    def choice(self, table: Mapping[str, Any], where: str, key: str, options: tuple[str, ...],
               default: str) -> str:
        value = self.get(table, where, key, str, default)
        if value not in options:
            raise self.fail(
                f"[{where}] {key}",
                f'"{value}" is not allowed: write one of ' + ", ".join(f'"{o}"' for o in options),
            )
        return value

    def positive(self, table: Mapping[str, Any], where: str, key: str, default: int) -> int:
        value = self.get(table, where, key, int, default)
        if value < 1:
            raise self.fail(f"[{where}] {key}", f"must be 1 or more, not {value}")
        return value

    def strings(self, table: Mapping[str, Any], where: str, key: str,
                default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(table, where, key, list, list(default))
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"[{where}] {key}[{i}]", f"must be a string, not {item!r}")
        return tuple(value)

    def timezone(self, table: Mapping[str, Any], where: str, key: str, default: str) -> str:
        value = self.get(table, where, key, str, default)
        if not valid_timezone(value):
            raise self.fail(
                f"[{where}] {key}",
                f'"{value}" is not a known time zone: use an IANA name like "America/Chicago"',
            )
        return value

    def email(self, table: Mapping[str, Any], where: str, key: str, default: Any = ...) -> str:
        value = self.get(table, where, key, str, default)
        if value and not is_email(value):
            raise self.fail(f"[{where}] {key}", f'"{value}" is not an email address')
        return value

    def path_key(self, table: Mapping[str, Any], where: str, key: str, default: str) -> Path:
        return self.root / self.get(table, where, key, str, default)

    # -- tables ---------------------------------------------------------------------

    def config(self, data: Mapping[str, Any]) -> Config:
        top = {"sender", "store", "smtp", "imap", "oauth2", "sending", "compliance", "icp",
               "sequences", "plugins", "team", "mailboxes"}
        for key in data:
            if key not in top:
                close = _closest(key, top)
                hint = f'did you mean "[{close[0]}]"?' if close else "known tables: " + ", ".join(
                    f"[{t}]" for t in sorted(top))
                raise self.fail(f"[{key}]", f"is not a known table: {hint}")
        if "sender" not in data:
            raise self.fail("[sender]", "is missing: add it with name, email and postal_address")
        sender = self.sender(data)
        icps = self.icps(data)
        sequences = self.sequences(data, icps)
        plugin_paths, plugin_settings = self.plugins(data)
        store = self.section(data, "store", {"path", "url", "password_env"})
        store_path, store_url, store_env = self.store(store)
        smtp, imap = self.smtp(data), self.imap(data)
        sending = self.sending(data, sender)
        compliance = self.compliance(data, sender)
        mailboxes = self.mailboxes(data, sender, smtp, imap, sending)
        oauth2 = self.oauth2(data, tuple(s for box in mailboxes for s in (box.smtp, box.imap)))

        def signed_in(server: Any) -> Any:
            return (dataclasses.replace(server, oauth2=oauth2.get(server.provider))
                    if server.auth == "oauth2" else server)

        mailboxes = tuple(dataclasses.replace(box, smtp=signed_in(box.smtp),
                                              imap=signed_in(box.imap)) for box in mailboxes)
        # With [[mailboxes]], code that reads one server (check --connect) reads the first.
        smtp, imap = mailboxes[0].smtp, mailboxes[0].imap
        return Config(
            path=self.path,
            sender=sender,
            store_path=store_path, store_url=store_url, store_password_env=store_env,
            smtp=smtp,
            imap=imap,
            oauth2=oauth2,
            sending=sending,
            compliance=compliance,
            icps=icps,
            sequences=sequences,
            plugin_paths=plugin_paths,
            plugin_settings=plugin_settings,
            team=self.team(data, sender),
            mailboxes=mailboxes,
        )

    def team(self, data: Mapping[str, Any], sender: Sender) -> Team:
        t = self.section(data, "team", {"rep", "max_emails_per_domain_per_day"})
        rep = self.get(t, "team", "rep", str, sender.email).strip().lower()
        if not rep or any(c in rep for c in "\r\n"):
            raise self.fail("[team] rep", "must be a one-line name, e.g. your email address")
        return Team(rep=rep, max_emails_per_domain_per_day=self.positive(
            t, "team", "max_emails_per_domain_per_day", 3))

    def mailboxes(self, data: Mapping[str, Any], sender: Sender, smtp: Smtp, imap: Imap,
                  sending: Sending) -> tuple[Mailbox, ...]:
        """[[mailboxes]], or the one mailbox [sender], [smtp] and [imap] describe."""
        tables = data.get("mailboxes")
        if tables is None:
            return (Mailbox(email=sender.email, name=sender.name, smtp=smtp, imap=imap,
                            daily_limit=sending.daily_limit, ramp_start=None, ramp_step=0,
                            windows=None),)
        if not isinstance(tables, list) or not tables:
            raise self.fail("[[mailboxes]]", "must be one or more [[mailboxes]] tables")
        for name in ("smtp", "imap"):
            if name in data:
                raise self.fail(f"[{name}]", "cannot be used with [[mailboxes]]: move it into "
                                f"each mailbox as [mailboxes.{name}]")
        out: list[Mailbox] = []
        for i, raw in enumerate(tables, start=1):
            out.append(self.mailbox(raw, f"mailboxes[{i}]", sender, sending))
        seen: set[str] = set()
        for i, box in enumerate(out, start=1):
            if box.email in seen:
                raise self.fail(f"[mailboxes[{i}]] email", f'"{box.email}" is listed twice')
            seen.add(box.email)
        return tuple(out)

    def mailbox(self, raw: Any, where: str, sender: Sender, sending: Sending) -> Mailbox:
        t = self.table(raw, where, {"email", "name", "daily_limit", "ramp_start", "ramp_step",
                                    "windows", "smtp", "imap"})
        email = self.email(t, where, "email").lower()
        name = self.get(t, where, "name", str, sender.name)
        if any(c in name for c in "\r\n"):
            raise self.fail(f"[{where}] name", "must be one line")
        ramp_start = self.positive(t, where, "ramp_start", 1) if "ramp_start" in t else None
        ramp_step = self.get(t, where, "ramp_step", int, 0)
        if ramp_step < 0 or (ramp_step and ramp_start is None):
            raise self.fail(f"[{where}] ramp_step", "must be 0 or more, and goes with "
                            "ramp_start (start at ramp_start a day, add ramp_step each day)")
        windows = None
        if "windows" in t:
            windows = tuple(self.window(text, f"[{where}] windows[{n}]") for n, text in
                            enumerate(self.strings(t, where, "windows")))
            if not windows:
                raise self.fail(f"[{where}] windows", "is empty: leave it out to use "
                                "[sending] windows")
        return Mailbox(
            email=email, name=name,
            smtp=self.smtp({"smtp": t.get("smtp", {})}, where=f"{where}.smtp"),
            imap=self.imap({"imap": t.get("imap", {})}, where=f"{where}.imap"),
            daily_limit=self.positive(t, where, "daily_limit", sending.daily_limit),
            ramp_start=ramp_start, ramp_step=ramp_step, windows=windows,
        )

    def store(self, t: Mapping[str, Any]) -> tuple[Path, str, str]:
        """[store]: a SQLite `path`, or a PostgreSQL `url` (a `url` that is not one is a path)."""
        from urllib.parse import urlsplit

        url = self.get(t, "store", "url", str, "")
        if url and not url.startswith(("postgresql://", "postgres://")):
            if "://" in url:
                raise self.fail("[store] url", f'"{url}" is not a postgresql:// URL (for '
                                "SQLite give a file path)")
            return self.root / url, "", ""
        if url and "path" in t:
            raise self.fail("[store] path", "and url are both set: keep one (url is the team's "
                            "PostgreSQL database, path the SQLite file)")
        try:
            password = urlsplit(url).password
        except ValueError as exc:
            raise self.fail("[store] url", f'"{url}" is not a valid URL: {exc}') from None
        if password:
            raise self.fail("[store] url", "holds a password: take it out and name the "
                            "variable that holds it in [store] password_env (or use libpq's "
                            "PGPASSWORD or ~/.pgpass)")
        env = self.get(t, "store", "password_env", str, "")
        if env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise self.fail("[store] password_env",
                            f'"{env}" is not an environment variable name (the secret itself '
                            "never goes in the config)")
        return self.path_key(t, "store", "path", "outreach.db"), url, env

    def sender(self, data: Mapping[str, Any]) -> Sender:
        t = self.section(data, "sender",
                       {"name", "email", "company", "phone", "postal_address", "timezone"})
        name = self.get(t, "sender", "name", str)
        for key in ("name", "company", "phone"):
            if any(c in str(t.get(key, "")) for c in "\r\n"):
                raise self.fail(f"[sender] {key}", "must be one line")
        postal = self.get(t, "sender", "postal_address", str, "")
        if not postal.strip():
            raise self.fail(
                "[sender] postal_address",
                "is required (CAN-SPAM): write the physical address that goes in every footer",
            )
        return Sender(
            name=name,
            email=self.email(t, "sender", "email"),
            company=self.get(t, "sender", "company", str, ""),
            phone=self.get(t, "sender", "phone", str, ""),
            postal_address=postal,
            timezone=self.timezone(t, "sender", "timezone", "UTC"),
        )

    def server(self, t: Mapping[str, Any], where: str, default_port: int,
               default_security: str) -> dict[str, Any]:
        provider = self.choice(t, where, "provider", PROVIDERS, "custom")
        # "smtp", "imap", or a mailbox's "mailboxes[2].smtp": the presets are by kind.
        preset = SERVER_PRESETS.get((where.rpartition(".")[2], provider))
        if preset:
            for key, value in zip(("host", "port", "security"), preset, strict=True):
                if key in t and t[key] != value:
                    raise self.fail(
                        f"[{where}] {key}",
                        f'{t[key]!r} differs from provider = "{provider}" ({value!r}): remove '
                        f'{key} (the preset fills it), or use provider = "custom"')
            default_host, default_port, default_security = preset
        else:
            default_host = "127.0.0.1"
        security = self.choice(t, where, "security", ("tls", "starttls", "none"),
                               default_security)
        host = self.get(t, where, "host", str, default_host)
        port = self.get(t, where, "port", int, default_port)
        if not 0 < port < 65536:
            raise self.fail(f"[{where}] port", f"must be 1-65535, not {port}")
        if security == "none" and not is_loopback(host):
            raise self.fail(
                f"[{where}] security",
                f'"none" is refused for host "{host}": passwords and mail would cross the '
                'network in clear. Use "tls" or "starttls", or a loopback host.',
            )
        env = self.get(t, where, "password_env", str, "")
        if env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise self.fail(f"[{where}] password_env",
                            f'"{env}" is not an environment variable name (the secret itself '
                            "never goes in the config)")
        username = self.get(t, where, "username", str, "")
        # No `auth` key: a username means a password login, none means no login (as before).
        auth = self.choice(t, where, "auth", AUTH_METHODS, "password" if username else "none")
        if auth != "none" and not username:
            raise self.fail(f"[{where}] username",
                            f'is required for auth = "{auth}": the mailbox to log in as '
                            '(or set auth = "none" for a server that needs no login)')
        return {"host": host, "port": port, "security": security, "username": username,
                "password_env": env, "provider": provider, "auth": auth}

    def oauth2(self, data: Mapping[str, Any], servers: tuple[Smtp | Imap, ...]
               ) -> dict[str, OAuth2]:
        """One resolved registration per provider that a server signs in to with OAuth2."""
        keys = {"client_id", "client_secret_env", "tenant", "token_url",
                "device_authorization_url", "authorization_url", "scopes"}
        top = self.section(data, "oauth2", keys | set(PROVIDERS))
        out: dict[str, OAuth2] = {}
        for server in servers:
            if server.auth != "oauth2" or server.provider in out:
                continue
            name = server.provider
            where = f"oauth2.{name}" if name in top else "oauth2"
            own = self.table(top.get(name, {}), f"oauth2.{name}", keys)
            t = {**{k: v for k, v in top.items() if k in keys}, **own}
            section = "smtp" if isinstance(server, Smtp) else "imap"
            client_id = self.get(t, where, "client_id", str, "")
            if not client_id:
                raise self.fail(f"[{where}] client_id",
                                f'is required for [{section}] auth = "oauth2": the client ID of '
                                "your own app registration (README: Sign in with OAuth2)")
            tenant = self.get(t, where, "tenant", str, "organizations")
            if not re.fullmatch(r"[A-Za-z0-9.-]+", tenant):
                raise self.fail(f"[{where}] tenant", f'"{tenant}" is not a tenant ID or domain')
            secret_env = self.get(t, where, "client_secret_env", str, "")
            if secret_env and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", secret_env):
                raise self.fail(f"[{where}] client_secret_env",
                                f'"{secret_env}" is not an environment variable name')
            if name == "google" and not secret_env:
                raise self.fail(f"[{where}] client_secret_env",
                                "is required for Google: name the environment variable that "
                                "holds your Desktop app client's secret")
            preset = OAUTH2_PRESETS.get(name, {})
            urls = {}
            for key in ("token_url", "device_authorization_url", "authorization_url"):
                url = self.get(t, where, key, str, preset.get(key, "").format(tenant=tenant))
                problem = _endpoint_problem(url) if url else None
                if problem:
                    raise self.fail(f"[{where}] {key}", problem)
                urls[key] = url
            scopes = self.strings(t, where, "scopes", preset.get("scopes", ()))
            if not urls["token_url"]:
                raise self.fail(f"[{where}] token_url",
                                'is required for provider = "custom": the token endpoint')
            if not urls["device_authorization_url"] and not urls["authorization_url"]:
                raise self.fail(f"[{where}] device_authorization_url",
                                'or authorization_url is required for provider = "custom": '
                                "where `outreach login` signs in")
            if not scopes:
                raise self.fail(f"[{where}] scopes", "is required: the scopes to ask for")
            out[name] = OAuth2(provider=name, client_id=client_id, client_secret_env=secret_env,
                               tenant=tenant, scopes=scopes, **urls)
        return out

    def smtp(self, data: Mapping[str, Any], where: str = "smtp") -> Smtp:
        """[smtp], or a mailbox's [mailboxes.smtp] (`where` names it in errors)."""
        t = self.table(data.get("smtp", {}), where, {
            "transport", "outbox", "host", "port", "security", "username", "password_env",
            "concurrency", "timeout", "provider", "auth"})
        timeout = self.get(t, where, "timeout", (int, float), 30)
        if timeout <= 0:
            raise self.fail(f"[{where}] timeout", f"must be more than 0 seconds, not {timeout}")
        return Smtp(
            transport=self.choice(t, where, "transport", ("smtp", "outbox"), "outbox"),
            outbox=self.path_key(t, where, "outbox", "outbox"),
            concurrency=self.positive(t, where, "concurrency", 4),
            timeout=float(timeout),
            **self.server(t, where, 587, "starttls"),
        )

    def imap(self, data: Mapping[str, Any], where: str = "imap") -> Imap:
        """[imap], or a mailbox's [mailboxes.imap] (`where` names it in errors)."""
        t = self.table(data.get("imap", {}), where, {
            "source", "maildir", "host", "port", "security", "username", "password_env",
            "folders", "provider", "auth"})
        folders = self.strings(t, where, "folders", ("INBOX",))
        if not folders:
            raise self.fail(f"[{where}] folders", 'is empty: list at least one, e.g. ["INBOX"]')
        return Imap(
            source=self.choice(t, where, "source", ("imap", "maildir"), "maildir"),
            maildir=self.path_key(t, where, "maildir", "mail"),
            folders=folders,
            **self.server(t, where, 993, "tls"),
        )

    def sending(self, data: Mapping[str, Any], sender: Sender) -> Sending:
        t = self.section(data, "sending", {
            "windows", "window_timezone", "days", "daily_limit", "per_run_limit",
            "max_bounce_rate", "max_unsubscribe_rate", "guard_min_sent"})
        windows = []
        for i, text in enumerate(self.strings(t, "sending", "windows",
                                              ("07:00-09:00", "17:00-19:00"))):
            windows.append(self.window(text, f"[sending] windows[{i}]"))
        if not windows:
            raise self.fail("[sending] windows", 'is empty: nothing could ever be sent. List at '
                            'least one, e.g. ["07:00-09:00"]')
        days = self.strings(t, "sending", "days", WEEKDAYS[:5])
        if not days:
            raise self.fail("[sending] days", 'is empty: nothing could ever be sent. List at '
                            'least one, e.g. ["mon", "tue", "wed", "thu", "fri"]')
        for i, day in enumerate(days):
            if day.lower() not in WEEKDAYS:
                raise self.fail(f"[sending] days[{i}]",
                                f'"{day}" is not a weekday: write one of ' + ", ".join(WEEKDAYS))
        rates = {}
        for key, default in (("max_bounce_rate", 0.02), ("max_unsubscribe_rate", 0.003)):
            rates[key] = float(self.get(t, "sending", key, (int, float), default))
            if not 0 < rates[key] <= 1:
                raise self.fail(f"[sending] {key}",
                                f"must be a fraction between 0 and 1 (0.02 = 2%), not {t[key]}")
        return Sending(
            windows=tuple(windows),
            window_timezone=self.choice(t, "sending", "window_timezone", ("prospect", "sender"),
                                        "prospect"),
            days=tuple(d.lower() for d in days),
            daily_limit=self.positive(t, "sending", "daily_limit", 75),
            per_run_limit=self.positive(t, "sending", "per_run_limit", 50),
            guard_min_sent=self.positive(t, "sending", "guard_min_sent", 100),
            **rates,
        )

    def window(self, text: str, where: str) -> Window:
        m = _WINDOW.match(text)
        if not m:
            raise self.fail(where, f'"{text}": expected HH:MM-HH:MM, e.g. "07:00-09:00"')
        start = time(int(m[1]), int(m[2]))
        end = time(0, 0) if m[3] == "24" and m[4] == "00" else None
        if m[3] == "24" and m[4] != "00":
            raise self.fail(where, f'"{text}": the latest end is 24:00')
        end = end or time(int(m[3]), int(m[4]))
        if end != time(0, 0) and end <= start:
            raise self.fail(where, f'"{text}": the end must be after the start (same day)')
        return Window(start, end)

    def compliance(self, data: Mapping[str, Any], sender: Sender) -> Compliance:
        t = self.section(data, "compliance", {"unsubscribe_mailto", "unsubscribe_url", "footer"})
        mailto = self.email(t, "compliance", "unsubscribe_mailto", "")
        if not mailto:
            raise self.fail(
                "[compliance] unsubscribe_mailto",
                "is required: an address whose mail suppresses the sender, e.g. "
                f'"unsubscribe@{sender.domain}"',
            )
        url = self.get(t, "compliance", "unsubscribe_url", str, "")
        if url and (not url.startswith("https://") or "{token}" not in url):
            raise self.fail("[compliance] unsubscribe_url",
                            f'"{url}" must be an https:// URL containing {{token}}, or ""')
        footer = self.path_key(t, "compliance", "footer", "templates/footer.txt")
        if not footer.is_file():
            raise self.fail("[compliance] footer",
                            f'"{footer}" does not exist: create it or point to another file')
        return Compliance(unsubscribe_mailto=mailto, unsubscribe_url=url, footer=footer)

    def icps(self, data: Mapping[str, Any]) -> dict[str, Icp]:
        tables = data.get("icp", {})
        if not isinstance(tables, dict):
            raise self.fail("[icp]", "must hold tables like [icp.cfo-manufacturing]")
        out = {}
        keys = {"industries", "titles", "employees", "countries", "exclude_domains",
                "dormant_days"}
        for name, t in tables.items():
            where = f"icp.{name}"
            if not isinstance(t, dict):
                raise self.fail(f"[{where}]", "must be a table")
            self.table(t, where, keys)
            employees = None
            if "employees" in t:
                rng = self.get(t, where, "employees", list)
                if len(rng) != 2 or not all(
                    isinstance(n, int) and not isinstance(n, bool) for n in rng
                ) or rng[0] > rng[1]:
                    raise self.fail(f"[{where}] employees",
                                    f"must be [min, max] whole numbers like [200, 5000], not {rng}")
                employees = (rng[0], rng[1])
            dormant = self.get(t, where, "dormant_days", int, None)
            if dormant is not None and dormant < 0:
                raise self.fail(f"[{where}] dormant_days", f"must be 0 or more, not {dormant}")
            out[name] = Icp(
                name=name,
                industries=self.strings(t, where, "industries"),
                titles=self.strings(t, where, "titles"),
                employees=employees,
                countries=tuple(c.upper() for c in self.strings(t, where, "countries")),
                exclude_domains=tuple(d.lower().lstrip("@")
                                      for d in self.strings(t, where, "exclude_domains")),
                dormant_days=dormant,
            )
        return out

    def sequences(self, data: Mapping[str, Any], icps: Mapping[str, Icp]) -> dict[str, Sequence]:
        tables = data.get("sequences", {})
        if not isinstance(tables, dict):
            raise self.fail("[sequences]", "must hold tables like [sequences.referral]")
        out = {}
        for name, t in tables.items():
            where = f"sequences.{name}"
            if not isinstance(t, dict):
                raise self.fail(f"[{where}]", "must be a table")
            self.table(t, where, {"icp", "steps", "recycle_cooldown_days", "on_referral"})
            icp = self.get(t, where, "icp", str)
            if icp not in icps:
                known = ", ".join(sorted(icps)) or "none defined"
                raise self.fail(f"[{where}] icp",
                                f'"{icp}" is not an [icp.*] table (known: {known})')
            raw_steps = self.get(t, where, "steps", list)
            if not raw_steps:
                raise self.fail(f"[{where}] steps", "is empty: add at least one email step")
            steps = tuple(self.step(s, f"[{where}] steps[{i}]", i)
                          for i, s in enumerate(raw_steps))
            for prev, step in itertools.pairwise(steps):
                if step.day < prev.day:
                    raise self.fail(f"[{where}] steps[{step.number}] day",
                                    f"is {step.day}, before the previous step's day {prev.day}: "
                                    "list steps in day order")
            used: dict[str, int] = {}
            for step in steps:
                for template in step.templates if step.kind == "email" else ():
                    if template in used:  # the ledger sends each template once per enrollment
                        raise self.fail(
                            f"[{where}] steps[{step.number}] email",
                            f'"{template}" is already steps[{used[template]}]: each email '
                            "template is sent once per sequence; copy it under a new name")
                    used[template] = step.number
            cooldown = self.get(t, where, "recycle_cooldown_days", int, 90)
            if cooldown < 0:
                raise self.fail(f"[{where}] recycle_cooldown_days",
                                f"must be 0 or more, not {cooldown}")
            out[name] = Sequence(
                name=name,
                icp=icp,
                steps=steps,
                recycle_cooldown_days=cooldown,
                on_referral=self.get(t, where, "on_referral", str, None),
            )
        for name, seq in out.items():
            if seq.on_referral is not None and seq.on_referral not in out:
                raise self.fail(f"[sequences.{name}] on_referral",
                                f'"{seq.on_referral}" is not a [sequences.*] table: define it '
                                "or remove the key")
        return out

    def step(self, raw: Any, where: str, number: int) -> Step:
        if not isinstance(raw, dict):
            raise ConfigError(f"{self.path.name}: {where} must be an inline table like "
                              '{ day = 0, email = "referral" }')
        allowed = {"day", "email", "call", "recycle", "thread"}
        for key in raw:
            if key not in allowed:
                raise ConfigError(f'{self.path.name}: {where} has unknown key "{key}": '
                                  "known keys: " + ", ".join(sorted(allowed)))
        actions = [k for k in ("email", "call", "recycle") if k in raw]
        if len(actions) != 1:
            raise ConfigError(f"{self.path.name}: {where} needs exactly one of email, call or "
                              "recycle")
        day = raw.get("day")
        if not isinstance(day, int) or isinstance(day, bool) or day < 0:
            raise ConfigError(f"{self.path.name}: {where} day must be a whole number of days "
                              f"from enrollment (0 or more), not {day!r}")
        kind = actions[0]
        thread = raw.get("thread", False)
        if not isinstance(thread, bool):
            raise ConfigError(f"{self.path.name}: {where} thread must be true or false")
        if thread and kind != "email":
            raise ConfigError(f"{self.path.name}: {where} thread applies to email steps only")
        if kind == "recycle":
            if raw["recycle"] is not True:
                raise ConfigError(f"{self.path.name}: {where} recycle must be true")
            return Step(number=number, day=day, kind="recycle")
        names = raw[kind]
        if isinstance(names, str):
            names = [names]
        if kind == "call" and len(names) != 1:
            raise ConfigError(f"{self.path.name}: {where} call takes one template name")
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"{self.path.name}: {where} {kind} must name a template "
                              '(or a list of them for A/B), e.g. "referral"')
        for n in names:
            if not (self.root / TEMPLATES_DIR / f"{n}.txt").is_file():
                raise ConfigError(f'{self.path.name}: {where} {kind} "{n}": no template '
                                  f"{TEMPLATES_DIR}/{n}.txt; create it or fix the name")
        if thread and number == 0:
            raise ConfigError(f"{self.path.name}: {where} thread = true needs an earlier email "
                              "step to reply to")
        return Step(number=number, day=day, kind=kind, templates=tuple(names), thread=thread)

    def plugins(self, data: Mapping[str, Any]) -> tuple[tuple[Path, ...], dict[str, dict]]:
        t = data.get("plugins", {})
        if not isinstance(t, dict):
            raise self.fail("[plugins]", "must be a table")
        settings: dict[str, dict] = {}
        for key, value in t.items():
            if key == "paths":
                continue
            if not isinstance(value, dict):
                raise self.fail(f"[plugins] {key}",
                                'is not a known key: use paths = [...] or a [plugins.NAME] table '
                                "of settings for plugin NAME")
            # Paths in plugin settings are relative to this file, like every other path here.
            settings[key] = {k: str(self.root / v) if isinstance(v, str) and v and (
                k == "path" or k.endswith("_path")) else v for k, v in value.items()}
        paths = tuple(self.root / p for p in self.strings(t, "plugins", "paths", ("plugins",)))
        return paths, settings


_TYPE_NAMES: dict[type, str] = {
    str: "a string", int: "a whole number", float: "a number", bool: "true or false",
    list: "a list", dict: "a table",
}


@functools.lru_cache(maxsize=1024)
def valid_timezone(name: str) -> bool:
    """True when zoneinfo knows the IANA name (empty and path-like names are not zones)."""
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _closest(key: str, known: set[str]) -> list[str]:
    """The known name a typo was meant to be, if any (difflib loads only for a bad config)."""
    import difflib

    return difflib.get_close_matches(key, sorted(known), n=1)
