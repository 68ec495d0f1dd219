"""Benchmark `outreach send` against a bare aiosmtplib loop, same sink, same run.

2,000 enrolled prospects, `concurrency = 8`, an aiosmtpd sink in its own process (Postfix's
`smtp-sink` when installed). `outreach send --ignore-window` is timed as a whole process
(start-up, rendering, ledger included) against a bare loop of 8 aiosmtplib connections
sending 2,000 pre-rendered messages of the same size; once with the example sequence (the
day-0 call task after each email is created in the same run) and once with an emails-only
sequence. Prints the rates and ratios (target: at least 0.6x) of the best round and of the
median round: on a shared machine the best is the least disturbed, the median the typical.
`--baseline-tree DIR` also times the outreach in another checkout (say, the parent commit's,
made with `git worktree add`) in the same interleaved rounds, and prints this one's speed
against it: how much a change costs.

    .venv/bin/python bench/send.py [--prospects 2000] [--rounds 5] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

SINK = """
import asyncio, sys
from aiosmtpd.smtp import SMTP

class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"

async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), hostname="sink"), "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
"""

BARE = """
import asyncio, sys, time
import aiosmtplib

port, count, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
body = ("x" * 70 + "\\r\\n") * (size // 72)
messages = [
    (f"From: Dana <dana@acme.example>\\r\\nTo: p{i}@maker.example\\r\\nSubject: hi\\r\\n"
     f"Message-ID: <{i}@acme.example>\\r\\n\\r\\n{body}").encode()
    for i in range(count)
]

async def worker(queue):
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await smtp.connect()
    while queue:
        i = queue.pop()
        await smtp.sendmail("dana@acme.example", [f"p{i}@maker.example"], messages[i])
    await smtp.quit()

async def main():
    queue = list(range(count))
    await asyncio.gather(*(worker(queue) for _ in range(8)))

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_sink(port: int) -> subprocess.Popen[bytes]:
    if shutil.which("smtp-sink"):
        # As root, Postfix's smtp-sink insists on a user to drop to after binding the port.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        proc = subprocess.Popen(["smtp-sink", *user, "-c", f"127.0.0.1:{port}", "256"])
    else:
        proc = subprocess.Popen([PY, "-c", SINK, str(port)])
    return listening(proc, port)


def listening(proc: subprocess.Popen[bytes], port: int) -> subprocess.Popen[bytes]:
    """`proc` once it accepts connections on `port`; it is killed if it never does."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the sink did not start")


# The same first email, without the day-0 call step: the sending path alone.
EMAILS_ONLY = """
[sequences.emails-only]
icp = "cfo-manufacturing"
steps = [{ day = 0, email = "referral" }, { day = 4, email = "referral-bump", thread = true }]
"""


def campaign(root: Path, prospects: int, port: int) -> Path:
    """A campaign folder with `prospects` prospects imported (not yet enrolled)."""
    outreach = [PY, "-m", "outreach"]
    subprocess.run([*outreach, "init", str(root)], check=True, capture_output=True)
    config = root / "outreach.toml"
    text = config.read_text()
    for old, new in [('transport = "outbox"', 'transport = "smtp"'),
                     ('host = "smtp.acme.example"', 'host = "127.0.0.1"'),
                     ("port = 587", f"port = {port}"),
                     ('security = "starttls"', 'security = "none"'),
                     ('username = "dana@acme.example"', 'username = ""'),
                     ("concurrency = 4 ", "concurrency = 8 "),
                     ("daily_limit = 75 ", f"daily_limit = {prospects} "),
                     ("per_run_limit = 50 ", f"per_run_limit = {prospects} "),
                     ("\n[plugins]", EMAILS_ONLY + "\n[plugins]")]:
        assert old in text, old
        text = text.replace(old, new, 1)
    config.write_text(text)
    rows = root / "prospects.csv"
    with rows.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "first_name", "last_name", "title", "company", "industry",
                         "employees", "country", "timezone", "pain_point"])
        zones = ["America/Chicago", "America/New_York", "Europe/Berlin", "Asia/Tokyo"]
        for i in range(prospects):
            writer.writerow([f"cfo{i}@maker{i}.example", f"First{i}", f"Last{i}", "CFO",
                             f"Maker {i} Inc", "Manufacturing", 1000, "US", zones[i % 4],
                             "month-end close"])
    subprocess.run([*outreach, "import", str(rows), "--config", str(config)], check=True,
                   capture_output=True)
    return config


def enrolled(template: Path, target: Path, sequence: str) -> Path:
    shutil.copytree(template.parent, target)
    config = target / "outreach.toml"
    subprocess.run([PY, "-m", "outreach", "enroll", sequence, "--config", str(config)],
                   check=True, capture_output=True)
    return config


CPU: dict[str, list[float]] = {}


def timed(cmd: list[str], env: dict[str, str] | None = None, *,
          label: str) -> tuple[float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    CPU.setdefault(label, []).append(used)
    if done.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{done.stderr}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prospects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-tree", type=Path,
                        help="another checkout whose outreach is timed alongside this one")
    args = parser.parse_args()
    n = args.prospects
    # An installed outreach has its bytecode cached; a working tree (with
    # PYTHONDONTWRITEBYTECODE set) would recompile edited modules on every start.
    trees = [REPO] + ([args.baseline_tree.resolve()] if args.baseline_tree else [])
    for tree in trees:
        subprocess.run([PY, "-m", "compileall", "-q", str(tree / "outreach")], check=False)
    port = free_port()
    sink = start_sink(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    # The baseline's package comes first on the path, ahead of this checkout's install.
    envs = {"": env, **({" (baseline)": {**env, "PYTHONPATH": str(trees[1])}}
                        if args.baseline_tree else {})}
    sequences = {"referral": "example sequence: emails + day-0 call tasks",
                 "emails-only": "emails only"}
    runs = [(seq, tag) for seq in sequences for tag in envs]
    times: dict[str, list[float]] = {"bare": [], **{seq + tag: [] for seq, tag in runs}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            template = campaign(Path(tmp) / "template", n, port)
            ready = {(seq, tag, r): enrolled(template, Path(tmp) / f"{seq}{tag}{r}", seq)
                     for seq, tag in runs for r in range(args.rounds)}
            size = len(subprocess.run(
                [PY, "-m", "outreach", "preview", "cfo1@maker1.example", "--config",
                 str(ready["referral", "", 0])], check=True, capture_output=True).stdout)
            for r in range(args.rounds):   # interleaved, so load spikes hit both alike
                times["bare"].append(timed([PY, "-c", BARE, str(port), str(n), str(size)],
                                           label="bare")[0])
                for seq, tag in runs:
                    elapsed, out = timed([PY, "-m", "outreach", "send", "--ignore-window",
                                          "--json", "--config", str(ready[seq, tag, r])],
                                         envs[tag], label=seq + tag)
                    assert f'"sent": {n}' in out, out[:400]
                    times[seq + tag].append(elapsed)
    finally:
        sink.kill()
        sink.wait()
    bare_best, bare_median = n / min(times["bare"]), n / statistics.median(times["bare"])
    print(f"messages: {n} of ~{size} bytes, 8 connections, sink: "
          f"{'smtp-sink' if shutil.which('smtp-sink') else 'aiosmtpd'} (own process); "
          f"{args.rounds} rounds: best | median, wall clock, client CPU (user+sys)")
    print(f"bare aiosmtplib loop: {bare_best:6.0f} | {bare_median:6.0f} msg/s  "
          f"{min(times['bare']):.2f} s  CPU {min(CPU['bare']):.2f} s")
    for seq, tag in runs:
        key = seq + tag
        best, median = n / min(times[key]), n / statistics.median(times[key])
        print(f"outreach send ({sequences[seq]}){tag}: {best:6.0f} | {median:6.0f} msg/s  "
              f"{min(times[key]):.2f} s  CPU {min(CPU[key]):.2f} s  ratio "
              f"{best / bare_best:.2f}x | {median / bare_median:.2f}x (target >= 0.6x)")
    if args.baseline_tree:
        for seq in sequences:
            this, base = times[seq], times[seq + " (baseline)"]
            print(f"this checkout vs the baseline ({sequences[seq]}): "
                  f"{min(base) / min(this):.3f}x best | "
                  f"{statistics.median(base) / statistics.median(this):.3f}x median speed")


if __name__ == "__main__":
    main()
