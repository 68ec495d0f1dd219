"""Benchmark `outreach send` on PostgreSQL (the team engine) against SQLite, same run.

2,000 enrolled prospects, emails only, `concurrency = 8`, one aiosmtpd sink in its own process,
a private PostgreSQL server started here (as tests/postgres.py does). Each round sends the same
campaign from a SQLite file (one sender), and from a PostgreSQL database (made with `outreach
db copy`) by 1, 2 and 4 reps at once (each rep owns 1/k of the prospects; each run holds its
own run lease), interleaved; prints aggregate msg/s (best | median), ratios (goals: one PostgreSQL
sender >= 0.8x one SQLite sender, two >= 1.6x one), database round trips per message (the
clients' waits for the server's answer; goal: <= 1), the server's CPU, and the
duplicate deliveries (the sink counts each recipient's messages; must be 0). The CPU seconds of
the senders, the sink and the server say how busy the two cores were: where they are near 2,
more senders cannot go faster. `--baseline-tree DIR` also times the outreach in another
checkout with the same schema (say, a `git worktree` of main) in the same rounds.

    .venv/bin/python bench/team.py [--prospects 2000] [--rounds 3] [--baseline-tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]
from send import campaign, free_port, listening  # noqa: E402  (bench/send.py: the same campaign)

from tests.postgres import start_server  # noqa: E402

PY = sys.executable

# A sink that counts the messages each recipient got: every run sends each prospect one, so
# more than one per run is a duplicate delivery.
SINK = """
import asyncio, sys, collections, signal
from aiosmtpd.smtp import SMTP

seen = collections.Counter()

class Sink:
    async def handle_DATA(self, server, session, envelope):
        for rcpt in envelope.rcpt_tos:
            seen[rcpt.lower()] += 1
        return "250 2.0.0 OK"

async def main(port, report, runs):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), hostname="sink"), "127.0.0.1", port)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        await stop
    with open(report, "w") as fh:
        fh.write(f"{sum(seen.values())} {sum(max(0, n - runs) for n in seen.values())} "
                 f"{sum(1 for n in seen.values() if n < runs)}")

asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
"""

# `outreach send` with every round trip to the PostgreSQL server counted: each time the client
# waits to read the server's answer (a statement, a pipeline's sync or flush; the statements
# pipelined before it ride along).
COUNTED = """
import atexit, sys
sys.path.insert(0, {repo!r})
from psycopg import waiting
from tests.postgres import round_trip_counter
calls, waiting.wait = round_trip_counter(waiting.wait)
atexit.register(lambda: print(f"ROUNDTRIPS {{calls[0]}}", file=sys.stderr))
"""
# `outreach send` (of this checkout, or of the baseline's).
OUTREACH = """
import sys
sys.path.insert(0, {tree!r})   # the outreach timed: this checkout's, or the baseline's
sys.argv = ["outreach", *sys.argv[1:]]
from outreach.cli import main
main()
"""


def outreach(tree: Path, *, counted: bool) -> list[str]:
    """The command line of `tree`'s `outreach`, its round trips counted when `counted` (a
    PostgreSQL sender: psycopg is imported for it)."""
    code = OUTREACH.format(tree=str(tree))
    return [PY, "-c", (COUNTED.format(repo=str(REPO)) if counted else "") + code]


def start_sink(port: int, report: Path, runs: int) -> subprocess.Popen[bytes]:
    return listening(subprocess.Popen([PY, "-c", SINK, str(port), str(report), str(runs)]), port)


def server_cpu(data: Path) -> float:
    """CPU seconds (user+sys) the PostgreSQL server and its ended children used so far."""
    pid = int((data / "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])   # utime stime cutime cstime
    return total / tick


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def children_cpu() -> float:
    """CPU seconds of this process's ended children (the senders, once waited for)."""
    t = os.times()
    return t.children_user + t.children_system


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(f) for f in fields[11:13]) / os.sysconf("SC_CLK_TCK")


SENDERS = (1, 2, 4)


def team(template: Path, root: Path, url: str, n: int, k: int) -> list[Path]:
    """`k` reps' folders on one new database holding the template's prospects; rep i owns
    (has enrolled) the i-th k-th of them."""
    base = root / "base"
    shutil.copytree(template.parent, base)
    subprocess.run([PY, "-m", "outreach", "db", "copy", "--to", url, "--config",
                    str(base / "outreach.toml")], check=True, capture_output=True)
    configs = []
    for i in range(k):
        folder = root / f"rep{i}"
        shutil.copytree(template.parent, folder)
        config = folder / "outreach.toml"
        text = config.read_text().replace('path = "outreach.db"', f'url = "{url}"', 1)
        config.write_text(text.replace('email = "dana@acme.example"',
                                       f'email = "rep{i}@acme.example"', 1))
        subprocess.run([PY, "-m", "outreach", "enroll", "emails-only", "--limit",
                        str(n // k), "--config", str(config)], check=True, capture_output=True)
        configs.append(config)
    return configs


def run_together(configs: list[Path], n: int, tree: Path, *, counted: bool = True
                 ) -> tuple[float, int]:
    """Every rep's `send` started at once; the wall time until the last ends, round trips."""
    start = time.perf_counter()
    command = [*outreach(tree, counted=counted), "send", "--ignore-window", "--json"]
    procs = [subprocess.Popen([*command, "--config", str(c)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in configs]
    outs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - start
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"send failed:\n{err}")
    sent = sum(json.loads(out)["sent"] for out, _ in outs)
    assert sent == n, sent
    return elapsed, sum(int(err.rpartition("ROUNDTRIPS ")[2] or 0) for _, err in outs)


class Runs:
    """Per configuration ("sqlite", "postgresql x2", ... and their "(baseline)"): wall
    times, round trips and the CPU seconds of senders, sink and server in each round."""

    def __init__(self, sink: int, server: Path) -> None:
        self.sink, self.server = sink, server
        self.times: dict[str, list[float]] = {}
        self.trips: dict[str, list[int]] = {}
        self.cpu: dict[str, list[tuple[float, float, float]]] = {}

    def timed(self, key: str, run: Any) -> None:
        before = (children_cpu(), process_cpu(self.sink), server_cpu(self.server))
        elapsed, trips = run()
        after = (children_cpu(), process_cpu(self.sink), server_cpu(self.server))
        self.times.setdefault(key, []).append(elapsed)
        self.trips.setdefault(key, []).append(trips)
        self.cpu.setdefault(key, []).append(
            tuple(b - a for a, b in zip(before, after, strict=True)))   # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prospects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-tree", type=Path,
                        help="also time the outreach in this checkout, in the same rounds")
    args = parser.parse_args()
    n = args.prospects
    trees = {"": REPO, **({" (baseline)": args.baseline_tree.resolve()}
                          if args.baseline_tree else {})}
    for tree in trees.values():
        subprocess.run([PY, "-m", "compileall", "-q", str(tree / "outreach")], check=False)
    port = free_port()
    report = Path(tempfile.mkdtemp()) / "sink"
    sink = start_sink(port, report, (1 + len(SENDERS)) * args.rounds * len(trees))
    pg = start_server()
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    os.environ.clear()
    os.environ.update(env_clean)
    runs = Runs(sink.pid, pg.data)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            template = campaign(Path(tmp) / "template", n, port)
            for r in range(args.rounds):
                for label, tree in trees.items():
                    solo = Path(tmp) / f"sqlite{r}{label}"
                    shutil.copytree(template.parent, solo)
                    config = solo / "outreach.toml"
                    subprocess.run([PY, "-m", "outreach", "enroll", "emails-only", "--config",
                                    str(config)], check=True, capture_output=True)
                    runs.timed(f"sqlite{label}", lambda c=config, t=tree: run_together(
                        [c], n, t, counted=False))
                    for k in SENDERS:
                        reps = team(template, Path(tmp) / f"pg{r}-{k}{label}",
                                    pg.create_database(), n, k)
                        runs.timed(f"postgresql x{k}{label}",
                                   lambda c=reps, t=tree: run_together(c, n, t))
    finally:
        sink.terminate()
        sink.wait()
        pg.stop()
    report_runs(runs, n, args.rounds, trees)
    delivered, duplicates, short = map(int, report.read_text().split())
    print(f"sink: {delivered} messages accepted, {duplicates} duplicates, {short} prospects "
          "short of one per run (both must be 0)")


def report_runs(runs: Runs, n: int, rounds: int, trees: dict[str, Path]) -> None:
    times = runs.times
    best = {k: n / min(v) for k, v in times.items()}
    median = {k: n / statistics.median(v) for k, v in times.items()}
    print(f"messages: {n} per run, 8 connections per sender, {rounds} rounds; "
          "aggregate msg/s, best | median; median CPU seconds of the senders, the sink and "
          "the PostgreSQL server, and the cores they kept busy (of 2)")
    for key in times:
        cpu = [statistics.median(c[i] for c in runs.cpu[key]) for i in range(3)]
        busy = statistics.median(sum(c) / t for c, t in zip(runs.cpu[key], times[key],
                                                             strict=True))
        print(f"{key:26} {best[key]:5.0f} | {median[key]:5.0f} msg/s  "
              f"{min(times[key]):.2f} s  CPU {cpu[0]:.2f} + {cpu[1]:.2f} + {cpu[2]:.2f}"
              f" = {sum(cpu):.2f} s, {busy:.2f} cores")
    for label in trees:
        one, solo = f"postgresql x1{label}", f"sqlite{label}"
        print(f"one PostgreSQL sender / one SQLite sender{label}: "
              f"{best[one] / best[solo]:.2f}x best | {median[one] / median[solo]:.2f}x median "
              "(goal >= 0.8x)")
        for k in SENDERS[1:]:
            key = f"postgresql x{k}{label}"
            print(f"{k} PostgreSQL senders / one{label}: {best[key] / best[one]:.2f}x best | "
                  f"{median[key] / median[one]:.2f}x median"
                  + (" (goal >= 1.6x)" if k == 2 else ""))
        for k in SENDERS:
            key = f"postgresql x{k}{label}"
            print(f"{k} sender(s){label}: {statistics.median(runs.trips[key]) / n:.2f} round "
                  "trips per message (goal <= 1)")


if __name__ == "__main__":
    main()
