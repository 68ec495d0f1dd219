"""The `outreach` command line: thin click commands over the modules that do the work.

This is the only module that knows about click. Heavy imports happen inside the commands
that need them, so `outreach --help` stays fast.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import partial, wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import OutreachError

F = TypeVar("F", bound=Callable[..., Any])

# Plugins loaded at start-up (for register_commands), reused by the command for that config.
_startup: dict[str, Any] = {}


class OutreachGroup(click.Group):
    """Turns OutreachError into a clean message on stderr and exit code 1, no traceback.
    So is an OSError (a folder that cannot be created, a disk that is full): the user's
    machine, not a bug, and the message names the file."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OutreachError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            # `outreach calls | head`: the reader has what it wanted. Quietly, like cat.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except Exception as exc:
            import sqlite3

            from .store import connection_lost

            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise click.ClickException(
                    "the database is busy: another outreach command held it for 30 seconds. "
                    "Run again when it has finished.") from None
            if connection_lost(exc):
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise click.ClickException(
                    f"the database server stopped answering ({first}); what was not "
                    "committed was rolled back. Run again when it is back.") from None
            raise


@click.group(cls=OutreachGroup)
@click.version_option(package_name="outreach")
def cli() -> None:
    """Outbound email sequences for SDRs: short plain-text emails, calls, replies.

    Start with `outreach init`, then `outreach import prospects.csv`, `outreach enroll
    SEQUENCE`, and run `outreach send` each morning and evening.
    """


# -- shared options ----------------------------------------------------------------------


def config_option(fn: F) -> F:
    return click.option(
        "--config", "config_path", type=click.Path(), default=None, callback=_plugins_loaded,
        help="Config file or campaign folder (default: $OUTREACH_CONFIG, else "
             "./outreach.toml).",
    )(fn)


def _plugins_loaded(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Stop a command on a campaign whose plugins failed to load at start-up. Only those:
    `init`, and `--help`, which click answers before this, use no campaign."""
    if "error" in _startup:
        raise click.ClickException(str(_startup["error"]))
    return value


def json_option(fn: F) -> F:
    return click.option("--json", "json_", is_flag=True,
                        help="Print one JSON document on stdout and nothing else there.")(fn)


def with_app(fn: F, *, copy: bool = False) -> F:
    """Load the config and open the store (with `copy`, a throwaway copy of it: see
    app.copy_store); pass `app` instead of `config_path`."""

    @config_option
    @wraps(fn)
    def wrapper(*args: Any, config_path: str | None, **kwargs: Any) -> Any:
        from .app import App, copy_store
        from .config import load_config

        config = load_config(config_path)
        pm = _startup.get("pm") if _startup.get("config") == config.path else None
        with App.open(config, pm=pm, store=copy_store(config) if copy else None) as app:
            return fn(*args, app=app, **kwargs)

    return wrapper  # type: ignore[return-value]


def echo_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False, default=str))


def echo_table(rows: Sequence[dict[str, Any]], columns: Iterable[str]) -> None:
    columns = list(columns)
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("\n", " ")[:40]


# -- commands ----------------------------------------------------------------------------


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
def init(directory: Path) -> None:
    """Create a campaign folder: outreach.toml, templates/, plugins/ and an empty database.

    Never overwrites: files that already exist are left as they are.
    """
    from .scaffold import init_campaign, source_tree_warning

    warning = source_tree_warning(directory)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    for path, created in init_campaign(directory):
        click.echo(f"{'created' if created else 'kept   '} {path}")
    click.echo("Next: edit outreach.toml ([sender], [icp.*], [sequences.*]), then "
               "`outreach import prospects.csv`.")


@cli.command()
@click.option("--connect", is_flag=True, help="Also log in to the SMTP and IMAP servers.")
@json_option
@with_app
def check(app: Any, connect: bool, json_: bool) -> None:
    """Validate the config and the database; with --connect, log in to SMTP and IMAP."""
    report = {
        "config": str(app.config.path),
        "database": app.store.where,
        "prospects": app.store.count_prospects(),
        "sequences": sorted(app.config.sequences),
        "icps": sorted(app.config.icps),
        "errors": [],
        "warnings": [],
    }
    from .guard import health

    deliverability = health(app)
    report["deliverability"] = deliverability.as_dict()
    report["warnings"].extend(deliverability.problems)
    report["warnings"].extend(deliverability.warnings)
    from .placeholders import warning as identity_warning

    identity = identity_warning(app.config)
    if identity:
        report["warnings"].append(identity)
    from .render import check_templates

    template_errors, template_warnings = check_templates(app)
    report["errors"].extend(template_errors)
    report["warnings"].extend(template_warnings)
    reached: list[dict[str, str]] = []
    if connect:
        reached = _connect_checks(app.config, report["errors"])
        report.update({k: v for k, v in reached[0].items() if k != "mailbox"})
        if len(reached) > 1:   # [[mailboxes]]: every one of them
            report["mailboxes"] = reached
    if json_:
        echo_json(report)
    else:
        verdict = f"{len(report['errors'])} error(s)" if report["errors"] else "OK"
        click.echo(f"{report['config']}: {verdict} ({len(report['sequences'])} sequences, "
                   f"{len(report['icps'])} ICPs, {report['prospects']} prospects)")
        click.echo(deliverability.summary())
        for problem in deliverability.problems:
            click.echo(f"warning: {problem}", err=True)
        if identity:
            click.echo(f"warning: {identity}", err=True)
        for problem in template_warnings:
            click.echo(f"warning: {problem}", err=True)
        for entry in reached:
            mailbox = f"{entry['mailbox']}: " if len(reached) > 1 else ""
            for key in ("smtp", "imap"):
                if key in entry:
                    click.echo(mailbox + entry[key])
        for problem in report["errors"]:
            click.echo(f"error: {problem}", err=True)
    if report["errors"]:
        raise click.exceptions.Exit(1)


def _connect_checks(config: Any, errors: list[str]) -> list[dict[str, str]]:
    """`check --connect`: log in to each mailbox's SMTP and IMAP server (one, without
    [[mailboxes]]); problems go to `errors`, named by mailbox when there are several."""
    import asyncio

    from .inbox import check_mailbox
    from .mailboxes import views
    from .transport import login_check

    out = []
    several = len(config.mailboxes) > 1
    for email, view in views(config).items():
        entry = {"mailbox": email}
        for key, check in (("smtp", lambda v: asyncio.run(login_check(v))),
                           ("imap", check_mailbox)):
            try:
                entry[key] = check(view)
            except OutreachError as exc:
                errors.append(f"{email}: {exc}" if several else str(exc))
        out.append(entry)
    return out


@cli.command()
@click.option("--provider", type=click.Choice(["google", "microsoft", "custom"]),
              help="Only the mailboxes of this provider (default: every auth = \"oauth2\").")
@config_option
def login(provider: str | None, config_path: str | None) -> None:
    """Sign in once with OAuth2 (Google Workspace, Microsoft 365, or any OAuth2 server).

    Prints what to open and waits; the token is then renewed automatically, so `send`,
    `poll` and `watch` never ask. Tokens go to the OS keyring (else a 0600 file).
    """
    from .config import load_config
    from .oauth import accounts
    from .oauth import login as login_

    config = load_config(config_path)
    found = accounts(config, provider)
    if not found:
        raise OutreachError(f"{config.path.name}: no [smtp] or [imap] has auth = \"oauth2\""
                            + (f" with provider = \"{provider}\"" if provider else "")
                            + ": set it (README: Signing in to your mail server)")
    for oauth, username, where in found:
        click.echo(f"{where}: signing in to {oauth.provider} as {username}", err=True)
        status = login_(oauth, username, say=lambda line: click.echo(line, err=True))
        click.echo(f"tokens saved in {status.saved_in}", err=True)
        click.echo(f"signed in as {status.identity}; token refreshes automatically")


@cli.command()
@click.option("--provider", type=click.Choice(["google", "microsoft", "custom"]),
              help="Only the mailboxes of this provider.")
@config_option
def logout(provider: str | None, config_path: str | None) -> None:
    """Forget the OAuth2 tokens `outreach login` saved (sign in again with `outreach login`)."""
    from .config import load_config
    from .oauth import accounts
    from .oauth import logout as logout_

    config = load_config(config_path)
    for oauth, username, _where in accounts(config, provider):
        forgot = logout_(oauth, username)
        click.echo(f"{username}: " + ("signed out; the saved tokens are deleted" if forgot
                                      else "was not signed in"))


@cli.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--map", "maps", multiple=True, metavar='"HEADER=column"',
              help='Read a column as a known one, e.g. --map "Company Name=company" '
                   "(repeatable).")
@json_option
@with_app
def import_(app: Any, file: Path, maps: tuple[str, ...], json_: bool) -> None:
    """Import prospects from a CSV file (email required; other columns kept).

    Headers of Apollo, HubSpot, Salesforce, Sales Navigator and ZoomInfo exports are
    recognised; `,` `;` and tab separators are detected. Rows that cannot be used are listed
    with their line number; the rest import.
    """
    from .columns import LayoutError, parse_map
    from .importer import import_csv, report_lines

    try:
        mapping = parse_map(maps)
    except LayoutError as exc:
        raise OutreachError(str(exc)) from None
    result = import_csv(app, file, mapping)
    if json_:
        echo_json(result.as_dict())
        return
    click.echo(f"{file}: {result.added} added, {result.updated} updated, "
               f"{result.unchanged} unchanged, {len(result.rejected)} rejected")
    for line in report_lines(result):
        click.echo(line, err=True)


@cli.command()
@click.option("--icp", "icp_name", metavar="NAME", help="Only prospects matching this ICP.")
@click.option("--sort", type=click.Choice(["added", "score"]), default="added",
              show_default=True, help="`score`: hottest leads first, with their lead score.")
@click.option("--owner", metavar="REP", help="Only prospects this rep owns ([team] rep; `me` "
              "for yours, `none` for those nobody has enrolled yet).")
@json_option
@with_app
def prospects(app: Any, icp_name: str | None, sort: str, owner: str | None,
              json_: bool) -> None:
    """List prospects, or with --icp only those matching that Ideal Customer Profile.

    `--sort score` ranks by lead score: replies, connects and meetings add points, "not
    interested" takes them away, and the score halves every 30 days after 30 quiet days.
    """
    from collections import Counter

    from .icp import RULES, failed_rules

    rows = list(app.store.prospects())
    if owner is not None:
        wanted = {"me": app.config.team.rep, "none": None}.get(owner.lower(), owner.lower())
        rows = [p for p in rows if p.owner == wanted]
    excluded: Counter[str] = Counter()
    if icp_name is not None:
        icp = app.config.icps.get(icp_name)
        if icp is None:
            known = ", ".join(sorted(app.config.icps)) or "none defined"
            raise OutreachError(f'no ICP "{icp_name}" in {app.config.path.name} (known: {known})')
        today = app.now().astimezone(app.sender_zone).date()
        matched = []
        for p in rows:
            failed = failed_rules(p, icp, today=today)
            excluded.update(failed)
            if not failed:
                matched.append(p)
        total, rows = len(rows), matched
    extra: dict[int, dict[str, Any]] = {p.id: {} for p in rows}
    if sort == "score":
        from .score import SCORED_KINDS, lead_score

        events = app.store.events_by_prospect(SCORED_KINDS)
        for p in rows:
            extra[p.id]["score"] = lead_score(events.get(p.id, ()), now=app.now())
        rows.sort(key=lambda p: -extra[p.id]["score"])
    if json_:
        echo_json([{**p.as_dict(), **extra[p.id]} for p in rows])
        return
    echo_table([{**p.as_dict(), "name": p.name, **extra[p.id]} for p in rows],
               ("email", "name", "title", "company", "stage", "owner")
               + (("score",) if sort == "score" else ()))
    if icp_name is not None:
        why = ", ".join(f"{rule}: {excluded[rule]}" for rule in RULES if excluded[rule])
        click.echo(f"{len(rows)} of {total} prospects match {icp_name}"
                   + (f"; excluded by {why}" if why else ""), err=True)


@cli.command()
@click.argument("sequence")
@click.option("--limit", type=click.IntRange(min=0), help="Enroll at most N prospects.")
@click.option("--dry-run", is_flag=True, help="Report who would be enrolled; write nothing.")
@json_option
@with_app
def enroll(app: Any, sequence: str, limit: int | None, dry_run: bool, json_: bool) -> None:
    """Enroll prospects matching SEQUENCE's ICP that are free to start it."""
    from .enroll import enroll as enroll_

    result = enroll_(app, sequence, limit=limit, dry_run=dry_run)
    if json_:
        echo_json(result.as_dict())
        return
    verb = "would enroll" if dry_run else "enrolled"
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped.items()))
    click.echo(f"{sequence}: {verb} {result.enrolled}" + (f"; skipped {skipped}" if skipped
                                                           else ""))


@cli.command()
@click.argument("target", metavar="EMAIL|@DOMAIN")
@click.option("--reason", default="manual", show_default=True, help="Why, for the record.")
@json_option
@with_app
def suppress(app: Any, target: str, reason: str, json_: bool) -> None:
    """Suppress an address or a whole @domain for good: nothing is ever sent there again."""
    from .lifecycle import suppress as suppress_

    prospects, stopped = suppress_(app, target, reason=reason, source="cli")
    if json_:
        echo_json({"suppressed": target.lower(), "prospects": prospects, "stopped": stopped})
    else:
        click.echo(f"suppressed {target.lower()} ({prospects} prospect"
                   f"{'' if prospects == 1 else 's'}"
                   + (f", {stopped} sequence{'' if stopped == 1 else 's'} stopped)" if stopped
                      else ")"))


@cli.command()
@click.argument("email")
@click.argument("stage", type=click.Choice(
    ["lead", "opportunity", "client", "champion", "not-interested", "meeting"]))
@json_option
@with_app
def mark(app: Any, email: str, stage: str, json_: bool) -> None:
    """Move a prospect to STAGE; `meeting` ends its sequence as won."""
    from .lifecycle import mark as mark_

    prospect = mark_(app, email, stage)
    if json_:
        echo_json({"email": prospect.email, "stage": prospect.stage})
    else:
        click.echo(f"{prospect.email}: {prospect.stage}")


@cli.command()
@click.argument("email")
@json_option
@with_app
def status(app: Any, email: str, json_: bool) -> None:
    """One prospect's timeline: stage, suppression, enrollments, messages, replies, calls."""
    from .lifecycle import status as status_

    doc = status_(app, email)
    if json_:
        echo_json(doc)
        return
    from .clock import local_text

    zone = app.sender_zone

    def when(value: Any) -> Any:
        return local_text(value, zone, year=True)

    click.echo(f"{doc['email']}  {doc['name']}  {doc['company']}")
    click.echo(f"stage: {doc['stage']}" + ("   SUPPRESSED" if doc["suppressed"] else "")
               + (f"   owner: {doc['owner']}"   # another rep's (team mode)
                  if doc["owner"] and doc["owner"] != app.config.team.rep else ""))
    click.echo(f"lead score: {doc['score']:g}")
    click.echo(f"times in {zone.key} (your time zone)")
    for e in doc["enrollments"]:
        click.echo(f"enrollment {e['id']}: {e['sequence']} {e['state']} since "
                   f"{when(e['started_at'])}"
                   + (f" (next step {e['next_step']})" if e["state"] == "active" else ""))
    for event in doc["events"]:
        detail = ", ".join(f"{k}={when(v)}" for k, v in event.items()
                           if k not in ("at", "kind", "enrollment_id") and v not in (None, ""))
        click.echo(f"  {when(event['at'])}  {event['kind']:<16} {detail}")


@cli.command()
@click.option("--all", "all_", is_flag=True, help="Also open tasks due later, not only by now.")
@click.option("--hour", "hour", is_flag=True,
              help="Only the next power hour: up to 25 calls of the largest persona group.")
@click.option("--format", "format_", type=click.Choice(["table", "csv", "ics"]),
              default="table", show_default=True,
              help="csv opens in spreadsheets; ics imports into calendar apps.")
@json_option
@with_app
def calls(app: Any, all_: bool, hour: bool, format_: str, json_: bool) -> None:
    """The call list: open call tasks due by now, grouped by persona (title and industry),
    largest group first, each with its rendered script. Record a call with `outreach call`."""
    from .calls import call_list, power_hour, table_lines, to_csv, to_ics

    groups = call_list(app, include_later=all_)
    if hour:
        groups = power_hour(groups)
    items = [item for group in groups for item in group]
    zone = app.sender_zone
    if json_:
        echo_json([item.as_dict(zone) for item in items])
    elif format_ == "csv":  # bytes: CRLF and UTF-8 exactly as the formats want them
        click.echo(to_csv(items, zone).encode("utf-8"), nl=False)
    elif format_ == "ics":
        click.echo(to_ics(items, domain=app.config.sender.domain, now=app.now())
                   .encode("utf-8"), nl=False)
    elif not items:
        click.echo("No calls due" + ("" if all_ else " now; `outreach calls --all` lists later "
                                     "ones") + ".", err=True)
    else:
        for line in table_lines(groups, zone):
            click.echo(line)
        click.echo(f"{len(items)} call{'s' * (len(items) != 1)} in {len(groups)} group"
                   f"{'s' * (len(groups) != 1)}. Record each: outreach call ID --outcome "
                   "no-answer|voicemail|connected|meeting|not-interested|bad-number", err=True)


@cli.command()
@click.argument("task_id", metavar="ID", type=click.IntRange(min=1, max=2**63 - 1))
@click.option("--outcome", required=True, type=click.Choice(
    ["no-answer", "voicemail", "connected", "meeting", "not-interested", "bad-number"]),
    help="meeting ends the sequence as won; not-interested stops it; bad-number skips the "
         "prospect's later calls.")
@click.option("--note", default=None, help="A line for the timeline.")
@json_option
@with_app
def call(app: Any, task_id: int, outcome: str, note: str | None, json_: bool) -> None:
    """Record the outcome of call task ID (the number `outreach calls` shows)."""
    from .calls import record_call

    result = record_call(app, task_id, outcome=outcome, note=note)
    if json_:
        echo_json(result.as_dict())
        return
    extra = f"; closed {len(result.closed)} later call task(s)" if result.closed else ""
    click.echo(f"call {task_id} ({result.prospect.email}): {outcome}, stage "
               f"{result.prospect.stage}{extra}")


@cli.command()
@click.option("--since", metavar="DATE", help="Only emails sent (and calls made) from DATE on, "
              "e.g. 2026-03-01 (midnight, your timezone).")
@click.option("--by", type=click.Choice(["sequence", "template", "variant", "persona", "rep",
                                         "mailbox"]),
              help="Break the numbers down; `variant` also says which A/B variant wins; "
                   "`rep` and `mailbox` split a team's shared database.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write a self-contained HTML report with charts to FILE.")
@json_option
@with_app
def stats(app: Any, since: str | None, by: str | None, html_file: Path | None,
          json_: bool) -> None:
    """The funnel: sent, delivered, replied, positive, meetings, bounces, unsubscribes, calls.

    Every rate shows its denominator. Outcomes are credited to the last email before them.
    """
    from .stats import parse_since, text_lines
    from .stats import stats as stats_

    start = parse_since(since, app.sender_zone) if since else None
    doc = stats_(app, since=start, by=by)
    if html_file is not None:
        from .report import write_report

        write_report(app, html_file, since=start)
    if json_:
        echo_json(doc)
        return
    for line in text_lines(doc):
        click.echo(line)
    if html_file is not None:
        click.echo(f"\nreport written to {html_file}")


@cli.command(name="plugins")
@json_option
@config_option
def plugins_list(json_: bool, config_path: str | None) -> None:
    """List the loaded plugins and the hooks each implements."""
    from .plugins import activate, describe, make_manager

    pm = _startup.get("pm")
    root = Path(_startup["config"]).parent if _startup.get("config") else None
    if pm is None and not config_path and "manager" in _startup:
        pm = make_manager(*_startup["manager"])   # start-up found only the built-ins
    elif pm is None or config_path:
        from .config import load_config

        config = load_config(config_path)
        pm = make_manager(config.plugin_paths, config.plugin_settings)
        root = config.root
    if root is not None:
        activate(pm, root)  # a plugin's status reads its files in the campaign folder
    plugins = describe(pm)
    if json_:
        echo_json(plugins)
        return
    for p in plugins:
        version = f" {p['version']}" if p["version"] else ""
        kind = " (built-in)" if p["builtin"] else ""
        click.echo(f"{p['name']}{version}{kind}: {', '.join(p['hooks']) or 'no hooks'}")
        if p["status"]:
            click.echo(f"  {p['status']}")


@cli.command()
@json_option
@with_app
def poll(app: Any, json_: bool) -> None:
    """Read new mail once: stop sequences on replies, pause on out-of-office, suppress
    bounces and unsubscribes, add referred people. Never marks, moves or deletes mail."""
    from .replies import poll as poll_

    with _poll_lock(app):
        result = poll_(app)
    if json_:
        echo_json(result.as_dict())
    else:
        click.echo(_poll_line(result))
    for bad in result.malformed:
        click.echo(f"skipped malformed message {bad['key']}: {bad['error']}", err=True)


@cli.command()
@click.option("--interval", type=click.FloatRange(min=0.5), default=300, show_default=True,
              help="Seconds between full checks (a Maildir is polled at this interval).")
@with_app
def watch(app: Any, interval: float) -> None:
    """Poll forever: IMAP IDLE wakes a pass when mail arrives, dropped connections are
    re-opened with backoff. Stop it with Ctrl-C or SIGTERM."""
    from .inbox import mail_servers
    from .watch import watch as watch_
    from .watch import watching

    at_terminal = sys.stderr.isatty()  # under cron or piped: only what mail did, no chatter

    def report(result: Any) -> None:
        stamp = f"{app.now().astimezone(app.sender_zone):%H:%M} " if at_terminal else ""
        if result.processed:
            click.echo(stamp + _poll_line(result))
        elif at_terminal:
            click.echo(f"{stamp}checked: no new mail", err=True)
        for bad in result.malformed:
            click.echo(f"skipped malformed message {bad['key']}: {bad['error']}", err=True)

    app.store.long_lived()   # a team database's connection may drop during weeks of watching
    with _poll_lock(app):
        if at_terminal:
            for imap in mail_servers(app.config):   # each mailbox ([[mailboxes]])
                click.echo(watching(imap, interval), err=True)
        watch_(app, interval=interval, on_pass=report)
    click.echo("outreach watch: stopped", err=True)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@partial(with_app, copy=True)
def explain(app: Any, file: Path, json_: bool) -> None:
    """Show what `poll` would make of one saved message (an .eml file) and what it would do,
    changing nothing: kind, the addresses it names, the prospects it matches, the action and
    why. For support, and for plugin authors (classify_reply plugins are asked too)."""
    from .replies import explain as explain_

    try:
        entry = explain_(app, file.read_bytes())
    except OutreachError:
        raise
    except Exception as exc:  # a message poll would skip as malformed
        raise OutreachError(f"{file}: not a message outreach can read ({type(exc).__name__}: "
                            f"{exc}); poll would skip it and report it as malformed") from None
    if json_:
        echo_json(entry)
        return
    for key in ("kind", "why", "addresses", "prospects", "action", "status", "permanent",
                "return_date", "not_interested", "referrals", "message_id", "note"):
        if key in entry:
            value = entry[key]
            text = ", ".join(value) or "-" if isinstance(value, list) else value
            click.echo(f"{key.replace('_', ' ') + ':':<16}{'-' if text is None else text}")


def _poll_lock(app: Any) -> Any:
    from .replies import poll_lock

    return poll_lock(app)


def _poll_line(result: Any) -> str:
    line = (f"processed {result.processed}: {_n(result.replies, 'reply', 'replies')}, "
            f"{_n(result.auto_replies, 'auto-reply', 'auto-replies')}, "
            f"{_n(result.bounces, 'bounce')}, {_n(result.unsubscribes, 'unsubscribe')}, "
            + (f"{_n(result.complaints, 'spam complaint')}, " if result.complaints else "")
            + (f"{result.other} other machine mail, " if result.other else "")
            + f"{result.unmatched} unmatched"
            + (f", {len(result.malformed)} malformed" if result.malformed else ""))
    if result.referrals:  # people named in those replies, not extra messages
        line += f"; {_n(result.referrals, 'referral')} added from the replies"
    return line


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else many or one + 's'}"


@cli.command()
@click.argument("email")
@click.option("--step", "step_number", type=click.IntRange(min=0), default=None,
              help="Step number in the sequence (default: the enrollment's next step).")
@with_app
def preview(app: Any, email: str, step_number: int | None) -> None:
    """Print the exact message the next (or --step N) step would send to EMAIL.

    Headers and body as bytes on the wire; a call step prints its script. Which step,
    template and A/B variant made it goes to stderr.
    """
    from .preview import preview as preview_

    data, source = preview_(app, email, step=step_number)
    click.echo(f"preview: {source}", err=True)  # stderr: stdout stays the exact bytes
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@cli.command()
@click.option("--dry-run", is_flag=True, help="Render and report everything; record nothing.")
@click.option("--limit", type=click.IntRange(min=0), help="Send at most N emails this run.")
@click.option("--ignore-window", is_flag=True,
              help="Send now even outside the sending windows and days.")
@click.option("--force", is_flag=True,
              help="Send even when the last 7 days' bounce, unsubscribe or spam-complaint "
                   "rate is too high.")
@json_option
@with_app
def send(app: Any, dry_run: bool, limit: int | None, ignore_window: bool, force: bool,
         json_: bool) -> None:
    """Send the due emails inside the windows and limits, and create due call tasks.

    Each message goes at most once: a run that dies, a dropped connection or a second
    `outreach send` never makes anyone get a step twice (one whose delivery is unknown waits
    for `outreach resolve`). Ctrl-C finishes the messages in flight; twice stops at once.
    Run it each morning and evening.
    Refuses to start while the last 7 days' bounce or unsubscribe rate is above its
    [sending] limit (max_bounce_rate, max_unsubscribe_rate), or the spam-complaint rate is
    above 0.3% (a warning above 0.1%), unless --force.
    """
    from .guard import check_before_send
    from .placeholders import refuse_example_identity
    from .send import send as send_

    if not dry_run:
        refuse_example_identity(app.config)
    # A dry run shows that refusal too, as a real run would.
    for warning in check_before_send(app, force=force).warnings:
        click.echo(f"warning: {warning}", err=True)

    bar: Any = None

    def progress(sent: int, failed: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(
                length=total, label="sending", file=sys.stderr,
                item_show_func=lambda _: f"{counts[0]} sent, {counts[1]} failed")
            bar.__enter__()
        counts[:] = [sent, failed]
        bar.update(sent + failed - bar.pos)

    def tell(text: str) -> None:
        click.echo(("\n" if bar is not None else "") + text, err=True)

    counts = [0, 0]
    on_terminal = not json_ and not dry_run and sys.stderr.isatty()
    try:
        result = send_(app, dry_run=dry_run, limit=limit, ignore_window=ignore_window,
                       progress=progress if on_terminal else None, tell=tell)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if json_:
        echo_json(result.as_dict())
    else:
        _send_report(result, app.sender_zone)
    if result.interrupted:   # as a shell reports a command a signal stopped: 128 + signal
        raise click.exceptions.Exit(128 + signal.Signals[result.interrupted].value)
    if result.stopped or result.errors:  # cron must notice a run that could not do its job
        raise click.exceptions.Exit(1)


def _send_report(result: Any, zone: Any) -> None:
    verb = "would send" if result.dry_run else "sent"
    line = (f"{verb} {result.sent}, failed {result.failed}, unknown {result.unknown}, "
            f"held {result.held}, deferred {result.deferred}")
    line += f"; {result.calls} call task{'' if result.calls == 1 else 's'}"
    if result.recycled:
        line += f", {result.recycled} recycled"
    if result.completed:
        line += f", {_n(result.completed, 'sequence')} completed"
    if result.recovered:
        line += (f"; {result.recovered} delivered by a run that stopped "
                 + ("would be " if result.dry_run else "") + "recorded as sent")
    if result.suppressed_mid_run:
        line += f"; {len(result.suppressed_mid_run)} suppressed mid-run, not sent"
    click.echo(line)
    for m in result.as_dict().get("messages", []):
        click.echo(f"  {m['email']}  step {m['step']}  {m['template']}  {m['subject']}")
    for why, deferred in result.deferred_by.items():
        if why == "max_emails_per_domain_per_day":   # team mode: one line per company
            for line in _capped_lines(result, deferred["next"], zone):
                click.echo(line)
            continue
        click.echo(f"deferred {deferred['count']}: {_deferred_why(why, deferred['next'], zone)}")
    for problem in result.errors:
        click.echo(f"not sent: {problem['email']} step {problem['step']}: {problem['error']}",
                   err=True)
    told = {(p["email"], p["step"], p["error"]) for p in result.errors}
    for hold in result.holds:
        if (hold["email"], hold["step"], hold["reason"]) not in told:
            click.echo(f"held: {hold['email']} step {hold['step']}: {hold['reason']}", err=True)
    for failure in result.failures:
        again = " (stays due: the next run retries it)" if failure["retry"] else ""
        click.echo(f"failed: {failure['email']} step {failure['step']}: {failure['error']}"
                   + again, err=True)
    for stopped in result.suppressed_mid_run:
        click.echo(f"not sent: {stopped['email']} step {stopped['step']}: suppressed while "
                   "this run was sending (by another process); its sequence has ended", err=True)
    for unknown in result.unknowns:
        click.echo(f"unknown: {unknown['email']} step {unknown['step']} "
                   f"{unknown['message_id']}: may have been delivered; it will not be resent "
                   f"(check your Sent folder, then `outreach resolve {unknown['email']} "
                   "--delivered` or `--not-delivered`)", err=True)
    if result.stopped:
        click.echo(f"Error: {result.stopped}", err=True)


def _deferred_why(why: str, until: Any, zone: Any) -> str:
    """Why some due emails wait, and when they may go."""
    from .clock import local

    when = local(until, zone) if until else None
    if why == "window":
        return (f"outside the sending window; the next opens {when} (or use --ignore-window)"
                if when else "outside the sending window (or use --ignore-window)")
    if why in ("interrupted", "stopped"):
        return "not started before the run stopped; they stay due: run again"
    if why == "mailbox_limit":   # team mode: every mailbox they may use is full today
        return ("their mailbox reached its daily_limit (or ramp-up) today; they stay due"
                + (f" and go from {when}" if when else ""))
    if when:   # a limit on the day (daily_limit, a company's cap): they go tomorrow
        return f"held back by {why}; they stay due and go from {when}"
    return f"held back by {why}; they stay due: run again to send more"


@cli.command()
@click.argument("email")
@click.option("--delivered", is_flag=True,
              help="It arrived (it is in the Sent folder or the server's log): record it sent.")
@click.option("--not-delivered", is_flag=True,
              help="It never arrived: make the step due again.")
@json_option
@with_app
def resolve(app: Any, email: str, delivered: bool, not_delivered: bool, json_: bool) -> None:
    """Settle EMAIL's message whose delivery `send` reported unknown.

    Look for the message in your mailbox's Sent folder or the SMTP server's log first; until
    it is resolved the prospect's sequence waits.
    """
    from .settle import resolve as resolve_

    if delivered == not_delivered:   # neither, or both (a typo must not resend a message)
        raise click.UsageError("say what you found: --delivered or --not-delivered (one)")
    resolved = resolve_(app, email, delivered=delivered)
    if json_:
        echo_json(resolved)
        return
    for r in resolved:
        click.echo(f"{r['email']} step {r['step']} {r['message_id']}: {r['outcome']}")


@cli.group()
def db() -> None:
    """The campaign's database: copy it into a team's PostgreSQL."""


@db.command(name="copy")
@click.option("--to", "to", required=True, metavar="URL|PATH",
              help="The target: postgresql://... (password from PGPASSWORD or ~/.pgpass), or "
                   "a SQLite file.")
@click.option("--merge", is_flag=True,
              help="The target holds other data: add this campaign to it, never duplicating "
                   "a prospect or a ledger row.")
@json_option
@with_app
def db_copy(app: Any, to: str, merge: bool, json_: bool) -> None:
    """Copy every table of this campaign's database (prospects, suppressions, the ledger, the
    timeline, replies read, calls) into another, in one transaction, and verify the counts.

    Refuses a target that holds data unless --merge. Then point [store] at the target.
    """
    from .dbcopy import copy_store
    from .store import Store

    with Store(to) as target:
        result = copy_store(app.store, target, merge=merge)
    if json_:
        echo_json(result.as_dict())
        return
    click.echo(f"{result.source} -> {result.target}" + (" (merged)" if merge else ""))
    echo_table(result.tables, ["table", "source", "copied", "already_there", "target_before",
                               "target_after"])
    stopped = sum(t.get("stopped", 0) for t in result.tables)
    if stopped:
        click.echo(f"{stopped} open sequence(s) stopped: their prospect is already in a "
                   "sequence in the target")
    for note in result.notes:
        click.echo(f"note: {note}")
    key = "url" if "://" in result.target else "path"
    click.echo(f"verified: every source row is in the target. Point [store] {key} at it.")


def _capped_lines(result: Any, until: Any, zone: Any) -> list[str]:
    """Team mode: the companies [team] max_emails_per_domain_per_day held mail back for."""
    from .clock import local

    when = f" and go from {local(until, zone)}" if until else ""
    return [f"deferred {n}: {domain} had [team] max_emails_per_domain_per_day "
            f"({result.cap_per_domain}) from the team today; they stay due{when}"
            for domain, n in result.capped_domains.items()]


# -- start-up ----------------------------------------------------------------------------


def load_startup_plugins(argv: Sequence[str]) -> None:
    """Load plugins before click parses argv, so register_commands can add commands.

    Uses the config the command line names when it loads; a broken config is left for
    the command itself to report.
    """
    from .configpath import find_config
    from .entrypoints import any_plugins

    explicit = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            explicit = argv[i + 1]
        elif arg.startswith("--config="):
            explicit = arg.split("=", 1)[1]
    path = find_config(explicit)
    config = None
    if path.is_file():  # outside a campaign folder the config module is never imported
        from .config import load_config

        try:
            config = load_config(path)
        except OutreachError:
            config = None
    paths = config.plugin_paths if config else ()
    settings = config.plugin_settings if config else None
    _startup.update(config=config.path if config else None, manager=(paths, settings))
    if not any_plugins(paths):
        return   # the built-ins add no commands: no manager (nor pluggy) needed to start
    from .plugins import fire, make_manager

    pm = make_manager(paths, settings)
    _startup["pm"] = pm
    fire(pm, "register_commands", cli=cli)


def main() -> None:
    try:
        load_startup_plugins(sys.argv[1:])
    except OutreachError as exc:
        _startup["error"] = exc  # reported by the group, through click, like any other error
    try:
        cli(prog_name="outreach")
    except SystemExit as exc:
        _exit(exc.code)
        raise


def _exit(code: Any) -> None:
    """End the process without the interpreter's teardown (freeing every object and module
    one by one: 15-30 ms per command, a tenth of a `poll` with nothing new). Only when that
    loses nothing: the command has returned (its store closed, its files closed by their
    `with`), no other thread runs, no plugin code outreach does not ship was loaded (a
    file it keeps open is flushed only as the interpreter frees it), and the exit code is a
    number. The atexit handlers run and stdout and stderr are flushed first, as a normal
    exit does; if a flush fails (a closed pipe) the caller exits the normal way, which
    reports it as before."""
    import os

    threading = sys.modules.get("threading")
    plugins = sys.modules.get("outreach.plugins")
    if not (code is None or isinstance(code, int)) or (
            threading is not None and threading.active_count() > 1) or (
            plugins is not None and plugins.LOADED_OTHERS) or (
            sys.getprofile() is not None or sys.gettrace() is not None):
        return   # (a profiler or debugger writes its report after main returns)
    import atexit

    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)
