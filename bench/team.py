"""Benchmark `outreach send` on PostgreSQL (the team engine) against SQLite, same run.

2,000 enrolled prospects, emails only, `concurrency = 8`, one aiosmtpd sink in its own process,
a private PostgreSQL server started here (as tests/postgres.py does). Each round sends the same
campaign from a SQLite file (one sender), and from a PostgreSQL database (made with `outreach
db copy`) by 1, 2 and 4 reps at once (each rep owns 1/k of the prospects; each run holds its
own run lease), interleaved; prints aggregate msg/s (best | median), ratios (goals: one PostgreSQL
sender >= 0.8x one SQLite sender, two >= 1.6x one), database round trips per message (the
statements and pipelined batches the clients sent; goal: <= 1), the server's CPU, and the
duplicate deliveries (the sink counts each recipient's messages; must be 0).

    .venv/bin/python bench/team.py [--prospects 2000] [--rounds 3]
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
COUNTED = f"""
import atexit, sys
sys.path.insert(0, {str(REPO)!r})
from psycopg import waiting
from tests.postgres import round_trip_counter
calls, waiting.wait = round_trip_counter(waiting.wait)
atexit.register(lambda: print(f"ROUNDTRIPS {{calls[0]}}", file=sys.stderr))
sys.argv = ["outreach", *sys.argv[1:]]
from outreach.cli import main
main()
"""


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


def run(config: Path, *, counted: bool) -> tuple[float, int, str]:
    cmd = [PY, "-c", COUNTED] if counted else [PY, "-m", "outreach"]
    start = time.perf_counter()
    done = subprocess.run([*cmd, "send", "--ignore-window", "--json", "--config", str(config)],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"send failed:\n{done.stderr}")
    trips = int(done.stderr.rpartition("ROUNDTRIPS ")[2] or 0) if counted else 0
    return elapsed, trips, done.stdout


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


def run_together(configs: list[Path], n: int) -> tuple[float, int]:
    """Every rep's `send` started at once; the wall time until the last ends, round trips."""
    start = time.perf_counter()
    procs = [subprocess.Popen([PY, "-c", COUNTED, "send", "--ignore-window", "--json",
                               "--config", str(c)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in configs]
    outs = [p.communicate() for p in procs]
    elapsed = time.perf_counter() - start
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"send failed:\n{err}")
    sent = sum(json.loads(out)["sent"] for out, _ in outs)
    assert sent == n, sent
    return elapsed, sum(int(err.rpartition("ROUNDTRIPS ")[2] or 0) for _, err in outs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prospects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.prospects
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "outreach")], check=False)
    port = free_port()
    report = Path(tempfile.mkdtemp()) / "sink"
    sink = start_sink(port, report, (1 + len(SENDERS)) * args.rounds)   # runs per prospect
    pg = start_server()
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    os.environ.clear()
    os.environ.update(env_clean)
    times: dict[str, list[float]] = {"sqlite": []}
    trips: dict[int, list[int]] = {}
    cpu: dict[int, list[tuple[float, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            template = campaign(Path(tmp) / "template", n, port)
            for r in range(args.rounds):
                solo = Path(tmp) / f"sqlite{r}"
                shutil.copytree(template.parent, solo)
                config = solo / "outreach.toml"
                subprocess.run([PY, "-m", "outreach", "enroll", "emails-only", "--config",
                                str(config)], check=True, capture_output=True)
                elapsed, _, out = run(config, counted=False)
                assert f'"sent": {n}' in out, out[:300]
                times["sqlite"].append(elapsed)
                for k in SENDERS:
                    reps = team(template, Path(tmp) / f"pg{r}-{k}", pg.create_database(), n, k)
                    before = server_cpu(pg.data)
                    elapsed, count = run_together(reps, n)
                    cpu.setdefault(k, []).append((server_cpu(pg.data) - before, elapsed))
                    times.setdefault(f"postgresql x{k}", []).append(elapsed)
                    trips.setdefault(k, []).append(count)
    finally:
        sink.terminate()
        sink.wait()
        pg.stop()
    delivered, duplicates, short = map(int, report.read_text().split())
    best = {k: n / min(v) for k, v in times.items()}
    median = {k: n / statistics.median(v) for k, v in times.items()}
    print(f"messages: {n} per run, 8 connections per sender, {args.rounds} rounds; "
          "aggregate msg/s, best | median")
    for key in times:
        print(f"{key:15} {best[key]:6.0f} | {median[key]:6.0f} msg/s  {min(times[key]):.2f} s")
    one = "postgresql x1"
    print(f"one PostgreSQL sender / one SQLite sender: {best[one] / best['sqlite']:.2f}x best | "
          f"{median[one] / median['sqlite']:.2f}x median (goal >= 0.8x)")
    for k in SENDERS[1:]:
        key = f"postgresql x{k}"
        print(f"{k} PostgreSQL senders / one: {best[key] / best[one]:.2f}x best | "
              f"{median[key] / median[one]:.2f}x median"
              + (" (goal >= 1.6x)" if k == 2 else ""))
    for k in SENDERS:
        share = statistics.median(c / e for c, e in cpu[k])
        print(f"{k} sender(s): {statistics.median(trips[k]) / n:.2f} round trips per message "
              f"(goal <= 1); server CPU {statistics.median(c for c, _ in cpu[k]):.2f} s, "
              f"{share:.0%} of one core over the run")
    print(f"sink: {delivered} messages accepted, {duplicates} duplicates, {short} prospects "
          "short of one per run (both must be 0)")


if __name__ == "__main__":
    main()
