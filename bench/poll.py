"""Benchmark `outreach poll` against bare imapclient, on a private Dovecot, in one run.

1. A 20,000-message mailbox already seen: `outreach poll` with nothing new, as a whole
   process, against `python -c` doing connect + login + select + UID SEARCH + logout.
   Target: at most 1.5x.
2. 2,000 new messages: `outreach poll` against `python -c` fetching the same messages' full
   bodies. Target: at most 3x. Two mailboxes: a typical one (one message in ten about a
   prospect: replies, out-of-office, bounces; the rest colleagues and newsletters), and the
   worst case where all 2,000 are prospects' replies that each stop a sequence.

The mailbox is filled by writing Maildir files straight into the Dovecot user's folder.
outreach's own modules are byte-compiled first, as `pip install` leaves an installed package
(the baseline's imapclient runs from its installed bytecode too); without that, a machine that
sets PYTHONDONTWRITEBYTECODE compiles them anew in every run (~50 ms). Each ratio is printed
for the best and for the median of the runs (the machine may be shared and noisy).
`--baseline-tree DIR` also times the outreach of another checkout (say main's, made with
`git worktree add --detach`) in the same interleaved runs, on the same mailbox and database
snapshot, and prints this one's time against it: what a change gains or costs.

    .venv/bin/python bench/poll.py [--old 20000] [--new 2000] [--repeat 3] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _util import run_measured_cpu  # noqa: E402

from tests.dovecot import PASSWORD, USER, Dovecot  # noqa: E402

OUTREACH = [sys.executable, "-m", "outreach"]
NOW = "2026-03-02T15:00:00+00:00"

BARE_SEARCH = """
import sys
from imapclient import IMAPClient
c = IMAPClient("127.0.0.1", port=int(sys.argv[1]), ssl=False)
c.login(sys.argv[2], sys.argv[3])
c.select_folder("INBOX", readonly=True)
c.search(["UID", sys.argv[4] + ":*"])
c.logout()
"""

BARE_FETCH = """
import sys
from imapclient import IMAPClient
c = IMAPClient("127.0.0.1", port=int(sys.argv[1]), ssl=False)
c.login(sys.argv[2], sys.argv[3])
c.select_folder("INBOX", readonly=True)
uids = [u for u in c.search(["UID", sys.argv[4] + ":*"]) if u >= int(sys.argv[4])]
for i in range(0, len(uids), 200):
    c.fetch(uids[i:i + 200], ["BODY.PEEK[]"])
c.logout()
"""


def old_message(i: int) -> bytes:
    return (f"From: Newsletter {i % 50} <news{i % 50}@list{i % 50}.example>\r\n"
            f"To: {USER}\r\nSubject: Weekly digest #{i}\r\n"
            f"Date: Mon, 2 Feb 2026 08:00:00 +0000\r\nMessage-ID: <old-{i}@list.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + "Industry news and updates for finance teams.\r\n" * 20).encode()


def reply_message(i: int) -> bytes:
    quoted = "\r\n".join("> " + line for line in (
        f"Hi First{i},", "", "Who is the best point of contact for finance operations at "
        f"Company {i} Inc?", "", "Thanks,", "Dana Reyes", "--",
        'Not the right fit? Reply "unsubscribe" and you will not hear from me again.'))
    body = ("Thanks Dana, happy to talk next week. Tuesday works.\r\n\r\nBest,\r\n"
            f"First{i}\r\n\r\nOn Mon, Mar 2, 2026 at 8:15 AM Dana Reyes <dana@acme.example> "
            f"wrote:\r\n{quoted}\r\n")
    return (f"From: First{i} Last{i} <p{i}@company{i}.example>\r\nTo: Dana Reyes "
            f"<dana@acme.example>\r\nSubject: Re: Who handles month-end close at Company {i}?\r\n"
            f"Date: Mon, 2 Mar 2026 10:00:00 -0600\r\nMessage-ID: <reply-{i}@company{i}.example>"
            f"\r\nIn-Reply-To: <sent-{i}@acme.example>\r\nReferences: <sent-{i}@acme.example>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()


def auto_reply_message(i: int) -> bytes:
    return (f"From: First{i} Last{i} <p{i}@company{i}.example>\r\nTo: dana@acme.example\r\n"
            f"Subject: Automatic reply: Who handles month-end close at Company {i}?\r\n"
            f"Auto-Submitted: auto-replied\r\nMessage-ID: <ooo-{i}@company{i}.example>\r\n"
            f"In-Reply-To: <sent-{i}@acme.example>\r\nContent-Type: text/plain\r\n\r\n"
            "I am out of the office until March 16, 2026 with limited access to email.\r\n"
            ).encode()


def bounce_message(i: int) -> bytes:
    return (f"From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)\r\nTo: "
            f"dana@acme.example\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            f"Message-ID: <dsn-{i}@mx.acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: "
            f"multipart/report; report-type=delivery-status; boundary=b{i}\r\n\r\n"
            f"--b{i}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered."
            f"\r\n--b{i}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; "
            f"mx.acme.example\r\n\r\nFinal-Recipient: rfc822; p{i}@company{i}.example\r\n"
            f"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b{i}\r\nContent-Type: "
            f"text/rfc822-headers\r\n\r\nMessage-ID: <sent-{i}@acme.example>\r\n\r\n"
            f"--b{i}--\r\n").encode()


def colleague_message(i: int) -> bytes:
    return (f"From: Colleague {i % 30} <colleague{i % 30}@acme.example>\r\nTo: dana@acme.example"
            f"\r\nSubject: Re: pipeline review {i}\r\nMessage-ID: <int-{i}@acme.example>\r\n"
            f"In-Reply-To: <int-{i - 1}@acme.example>\r\nContent-Type: text/plain\r\n\r\n"
            "Can you update the forecast sheet before Friday?\r\n\r\n> earlier thread\r\n"
            ).encode()


def write_maildir(server: Dovecot, messages: list[bytes], tag: str) -> None:
    """Drop messages into the user's INBOX new/ as Dovecot would deliver them."""
    new = server.mail / USER / "new"
    for sub in ("new", "cur", "tmp"):
        (server.mail / USER / sub).mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    for n, raw in enumerate(messages):
        (new / f"{stamp}.{tag}{n}.bench").write_bytes(raw)
    for path in [server.mail, *server.mail.rglob("*")]:
        os.chown(path, server.mail_uid, server.mail_gid)


def make_campaign(root: Path, server: Dovecot, prospects: int) -> Path:
    subprocess.run([*OUTREACH, "init", str(root)], check=True, stdout=subprocess.DEVNULL)
    config = root / "outreach.toml"
    text = config.read_text()
    start = text.index("[imap]")
    end = text.index("\n[", start + 1)
    config.write_text(text[:start] + server.imap_toml() + text[end:])
    csv = root / "prospects.csv"
    with csv.open("w") as fh:
        fh.write("email,first_name,last_name,title,company,domain,industry,employees,country\n")
        for i in range(prospects):
            fh.write(f"p{i}@company{i}.example,First{i},Last{i},CFO,Company {i} Inc,"
                     f"company{i}.example,Manufacturing,1000,US\n")
    env = {**os.environ, "OUTREACH_NOW": NOW}
    subprocess.run([*OUTREACH, "import", str(csv), "--config", str(config)], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    subprocess.run([*OUTREACH, "enroll", "referral", "--config", str(config)], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    db = sqlite3.connect(root / "outreach.db")
    with db:
        db.executemany(
            "INSERT INTO messages (enrollment_id, step, template, message_id, subject, status, "
            "created_at, sent_at) SELECT e.id, 0, 'referral', '<sent-' || "
            "substr(p.email, 2, instr(p.email, '@') - 2) || '@acme.example>', 'Who', 'sent', ?, ?"
            " FROM enrollments e JOIN prospects p ON p.id = e.prospect_id WHERE p.email = ?",
            [(NOW, NOW, f"p{i}@company{i}.example") for i in range(prospects)])
    db.close()
    return config


def timed(ours: list[str], bare: list[str], repeat: int, env: dict[str, str],
          before: object = None, base_env: dict[str, str] | None = None
          ) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of `repeat` runs of each whole process, interleaved so that
    load from elsewhere on the machine falls on all alike (`before` runs ahead of each
    outreach run; `base_env` adds the baseline checkout's outreach)."""
    # The baseline first: the database checked after the runs is then this checkout's.
    sides = [*([("base", ours, base_env)] if base_env else []), ("ours", ours, env),
             ("bare", bare, env)]
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in sides}
    for _ in range(repeat):
        for name, argv, side_env in sides:
            if callable(before) and name != "bare":
                before()
            # Not run from a checkout's root, where `-m outreach` would import that one.
            wall, cpu, _ = run_measured_cpu(argv, env=side_env, cwd=tempfile.gettempdir())
            runs[name].append((wall, cpu))
    return {k: {"wall": [w for w, _ in v], "cpu": [c for _, c in v]} for k, v in runs.items()}


def report(title: str, runs: dict[str, dict[str, list[float]]], bare_name: str,
           target: float) -> None:
    """Best and median of each side, and the ratio of the bests and of the medians."""
    print(f"\n{title} ({len(runs['ours']['wall'])} runs each):")
    names = (("outreach poll", "ours"), ("baseline tree's poll", "base"), (bare_name, "bare"))
    for name, key in names:
        if key not in runs:
            continue
        wall, cpu = runs[key]["wall"], runs[key]["cpu"]
        print(f"  {name:<21} best {min(wall):.3f}s  median {statistics.median(wall):.3f}s wall"
              f"  (median {statistics.median(cpu):.3f}s cpu)")
    for key, label in (("ours", "ratio"), ("base", "baseline's ratio")):
        if key in runs:
            best = min(runs[key]["wall"]) / min(runs["bare"]["wall"])
            median = statistics.median(runs[key]["wall"]) / statistics.median(runs["bare"]["wall"])
            print(f"  {label:<21} {best:.2f}x best  {median:.2f}x median  (target <= {target}x)")
    if "base" in runs:
        best = min(runs["base"]["wall"]) / min(runs["ours"]["wall"])
        median = statistics.median(runs["base"]["wall"]) / statistics.median(runs["ours"]["wall"])
        print(f"  this vs the baseline  {best:.2f}x best  {median:.2f}x median speed")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", type=int, default=20_000)
    parser.add_argument("--new", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-tree", type=Path,
                        help="another checkout whose outreach is timed alongside this one")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dvb", dir="/tmp"))
    work.chmod(0o755)  # Dovecot's unprivileged auth process reads the passwd file in it
    server = Dovecot(work / "dv")
    server.root.mkdir()
    env = {**os.environ, "OUTREACH_NOW": NOW, "OUTREACH_IMAP_PASSWORD": PASSWORD}
    trees = [ROOT] + ([args.baseline_tree.resolve()] if args.baseline_tree else [])
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "outreach")],
                       check=True)
    # The baseline's package comes first on the path, ahead of this checkout's install.
    base_env = {**env, "PYTHONPATH": str(trees[1])} if args.baseline_tree else None
    try:
        server.start()
        t = time.perf_counter()
        write_maildir(server, [old_message(i) for i in range(args.old)], "old")
        with server.client() as c:  # let Dovecot index the folder once, as a live one is
            c.select_folder("INBOX", readonly=True)
        print(f"mailbox: {args.old} messages written and indexed in "
              f"{time.perf_counter() - t:.1f}s")
        config = make_campaign(work / "campaign", server, args.new + args.new // 10)
        poll = [*OUTREACH, "poll", "--config", str(config)]
        t = time.perf_counter()
        subprocess.run(poll, check=True, env=env, stdout=subprocess.DEVNULL)
        print(f"first poll of {args.old} old messages: {time.perf_counter() - t:.1f}s")

        next_uid = args.old + 1
        bare_search = [sys.executable, "-c", BARE_SEARCH, str(server.port), USER, PASSWORD,
                       str(next_uid)]
        runs = timed(poll, bare_search, args.repeat * 3, env, base_env=base_env)
        report(f"nothing new, {args.old}-message mailbox", runs, "bare imapclient", 1.5)

        # A typical inbox: one message in ten is about a prospect.
        about = args.new // 10
        typical = ([reply_message(args.new + i) for i in range(about * 3 // 4)]
                   + [auto_reply_message(args.new + i)
                      for i in range(about * 3 // 4, about * 9 // 10)]
                   + [bounce_message(args.new + i) for i in range(about * 9 // 10, about)]
                   + [old_message(args.old + i) if i % 2 else colleague_message(i)
                      for i in range(args.new - about)])
        scenarios = [
            (f"{args.new} new messages, a typical inbox ({about} about prospects: replies, "
             "out-of-office, bounces; the rest other mail)", typical),
            (f"{args.new} new messages, worst case: every one a prospect's reply (matched, "
             "sequence stopped, stage lead)", [reply_message(i) for i in range(args.new)]),
        ]
        db = config.parent / "outreach.db"
        for title, messages in scenarios:
            write_maildir(server, messages, f"s{next_uid}")
            with server.client() as c:
                c.select_folder("INBOX", readonly=True)
            # A fresh snapshot per scenario, both connections closed: `with connect()` only
            # commits, and a still-open copy keeps its pages in its -wal, which copyfile
            # below would miss (the previous scenario's mail then counted as new again).
            snapshot = work / f"seen-{next_uid}.db"
            with closing(sqlite3.connect(db)) as conn, closing(sqlite3.connect(snapshot)) as copy:
                conn.backup(copy)
                before = conn.execute("SELECT count(*) FROM inbound").fetchone()[0]

            def restore(snapshot: Path = snapshot) -> None:
                for suffix in ("-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                shutil.copyfile(snapshot, db)

            bare_fetch = [sys.executable, "-c", BARE_FETCH, str(server.port), USER, PASSWORD,
                          str(next_uid)]
            runs = timed(poll, bare_fetch, args.repeat, env, before=restore, base_env=base_env)
            with closing(sqlite3.connect(db)) as conn:
                handled = conn.execute("SELECT count(*) FROM inbound WHERE uid >= ?",
                                       (next_uid,)).fetchone()[0]
                total = conn.execute("SELECT count(*) FROM inbound").fetchone()[0]
            assert handled == len(messages), f"only {handled} of {len(messages)} handled"
            assert total - before == len(messages), f"{total - before} handled, not {len(messages)}"
            next_uid += len(messages)
            report(title, runs, "bare imapclient fetch", 3)
        print(f"\n(run at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Dovecot on 127.0.0.1)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
