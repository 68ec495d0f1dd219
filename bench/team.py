"""Benchmark `outreach send` on PostgreSQL (the team engine) against SQLite, same run.

2,000 enrolled prospects, emails only, `concurrency = 8`, one aiosmtpd (or Postfix smtp-sink)
sink in its own process, a private PostgreSQL server started here (as tests/postgres.py does).
Each round sends the same campaign once from a SQLite file and once from a PostgreSQL database
(made with `outreach db copy`), interleaved; prints msg/s (best | median), the ratio PG/SQLite
(goal: >= 0.8x), database round trips per message on PostgreSQL (statements and pipelined
batches the client sent; goal: <= 1), the CPU the server spent (share of the whole run's), and
and the duplicate deliveries (the sink counts each recipient's messages; must be 0).

Several senders at once (each rep holds an own lease on PostgreSQL) are not measured yet.

    .venv/bin/python bench/team.py [--prospects 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
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
from send import campaign, free_port  # noqa: E402  (bench/send.py: the same campaign)

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

# `outreach send` with every statement the PostgreSQL client sends counted (one execute, or
# one pipelined executemany, is one round trip).
COUNTED = """
import atexit, sys
import psycopg
calls = [0]
for name in ("execute", "executemany"):
    real = getattr(psycopg.Cursor, name)
    def counted(self, *args, _real=real, **kwargs):
        calls[0] += 1
        return _real(self, *args, **kwargs)
    setattr(psycopg.Cursor, name, counted)
atexit.register(lambda: print(f"ROUNDTRIPS {calls[0]}", file=sys.stderr))
sys.argv = ["outreach", *sys.argv[1:]]
from outreach.cli import main
main()
"""


def start_sink(port: int, report: Path, runs: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([PY, "-c", SINK, str(port), str(report), str(runs)])
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the sink did not start")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prospects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.prospects
    subprocess.run([PY, "-m", "compileall", "-q", str(REPO / "outreach")], check=False)
    port = free_port()
    report = Path(tempfile.mkdtemp()) / "sink"
    sink = start_sink(port, report, 2 * args.rounds)   # each round: one run per engine
    pg = start_server()
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    os.environ.clear()
    os.environ.update(env_clean)
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    trips: list[int] = []
    cpu: list[tuple[float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            template = campaign(Path(tmp) / "template", n, port)
            for r in range(args.rounds):
                solo = Path(tmp) / f"sqlite{r}"
                shutil.copytree(template.parent, solo)
                config = solo / "outreach.toml"
                subprocess.run([PY, "-m", "outreach", "enroll", "emails-only", "--config",
                                str(config)], check=True, capture_output=True)
                team = Path(tmp) / f"pg{r}"
                shutil.copytree(solo, team)
                url = pg.create_database()
                subprocess.run([PY, "-m", "outreach", "db", "copy", "--to", url, "--config",
                                str(team / "outreach.toml")], check=True, capture_output=True)
                text = (team / "outreach.toml").read_text()
                (team / "outreach.toml").write_text(
                    text.replace('path = "outreach.db"', f'url = "{url}"', 1))
                elapsed, _, out = run(config, counted=False)
                assert f'"sent": {n}' in out, out[:300]
                times["sqlite"].append(elapsed)
                before = server_cpu(pg.data)
                elapsed, count, out = run(team / "outreach.toml", counted=True)
                cpu.append((server_cpu(pg.data) - before, elapsed))
                assert f'"sent": {n}' in out, out[:300]
                times["postgresql"].append(elapsed)
                trips.append(count)
    finally:
        sink.terminate()
        sink.wait()
        pg.stop()
    delivered, duplicates, short = map(int, report.read_text().split())
    best = {k: n / min(v) for k, v in times.items()}
    median = {k: n / statistics.median(v) for k, v in times.items()}
    print(f"messages: {n} per run, 8 connections, {args.rounds} rounds; best | median msg/s")
    for key in times:
        print(f"{key:10} 1 sender: {best[key]:6.0f} | {median[key]:6.0f} msg/s  "
              f"{min(times[key]):.2f} s")
    print(f"PostgreSQL / SQLite: {best['postgresql'] / best['sqlite']:.2f}x best | "
          f"{median['postgresql'] / median['sqlite']:.2f}x median (goal >= 0.8x)")
    print(f"round trips per message (PostgreSQL): {min(trips) / n:.2f} best, "
          f"{statistics.median(trips) / n:.2f} median (goal <= 1)")
    share = statistics.median(c / e for c, e in cpu)
    print(f"PostgreSQL server CPU: {statistics.median(c for c, _ in cpu):.2f} s per run, "
          f"{share:.0%} of one core over the run")
    print(f"sink: {delivered} messages accepted, {duplicates} duplicates, {short} prospects "
          "short of one per run (both must be 0)")


if __name__ == "__main__":
    main()
