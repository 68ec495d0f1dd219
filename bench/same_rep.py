"""Benchmark several `outreach send` of ONE rep at once on PostgreSQL, against one, same run.

2,000 enrolled prospects of one rep, emails only, `concurrency = 8`, one aiosmtpd sink in its
own process, a private PostgreSQL server (as bench/team.py). Each round sends the campaign
with 1, 2 and 4 processes of that rep started at once (they share the due work: claims with
`FOR UPDATE SKIP LOCKED`), interleaved; prints aggregate msg/s (best | median), the senders'
CPU (user+sys, all processes together: what composing a message twice would show), database
round trips per message, and the sink's duplicate deliveries (must be 0).

    .venv/bin/python bench/same_rep.py [--prospects 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
from team import COUNTED, PY, start_sink  # noqa: E402

from tests.postgres import start_server  # noqa: E402

SENDERS = (1, 2, 4)


def rep(template: Path, root: Path, url: str) -> Path:
    """One rep's folder on a new database holding the template's prospects, all enrolled."""
    shutil.copytree(template.parent, root)
    config = root / "outreach.toml"
    subprocess.run([PY, "-m", "outreach", "db", "copy", "--to", url, "--config", str(config)],
                   check=True, capture_output=True)
    config.write_text(config.read_text().replace('path = "outreach.db"', f'url = "{url}"', 1))
    subprocess.run([PY, "-m", "outreach", "enroll", "emails-only", "--config", str(config)],
                   check=True, capture_output=True)
    return config


def cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def together(config: Path, k: int, n: int) -> tuple[float, float, int, list[int]]:
    """`k` sends of the rep at once: wall time, their CPU, round trips, each one's sent."""
    start, before = time.perf_counter(), cpu()
    procs = [subprocess.Popen([PY, "-c", COUNTED, "send", "--ignore-window", "--json",
                               "--config", str(config)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(k)]
    outs = [p.communicate() for p in procs]
    elapsed, used = time.perf_counter() - start, cpu() - before
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"send failed:\n{err}")
    sent = [json.loads(out)["sent"] for out, _ in outs]
    assert sum(sent) == n, sent
    return elapsed, used, sum(int(err.rpartition("ROUNDTRIPS ")[2] or 0) for _, err in outs), sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prospects", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.prospects
    port = free_port()
    report = Path(tempfile.mkdtemp()) / "sink"
    sink = start_sink(port, report, len(SENDERS) * args.rounds)
    pg = start_server()
    env_clean = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    os.environ.clear()
    os.environ.update(env_clean)
    rows: dict[int, list[tuple[float, float, int, list[int]]]] = {k: [] for k in SENDERS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            template = campaign(Path(tmp) / "template", n, port)
            for r in range(args.rounds):
                for k in SENDERS:
                    config = rep(template, Path(tmp) / f"r{r}-{k}", pg.create_database())
                    rows[k].append(together(config, k, n))
    finally:
        sink.terminate()
        sink.wait()
        pg.stop()
    delivered, duplicates, short = map(int, report.read_text().split())
    print(f"messages: {n} per run, one rep, 8 connections per sender, {args.rounds} rounds; "
          "aggregate msg/s, best | median")
    one = statistics.median(cpu for _, cpu, _, _ in rows[1])
    for k in SENDERS:
        walls = [wall for wall, _, _, _ in rows[k]]
        cpus = statistics.median(c for _, c, _, _ in rows[k])
        trips = statistics.median(t for _, _, t, _ in rows[k]) / n
        shares = min(min(sent) for _, _, _, sent in rows[k])
        print(f"{k} sender(s): {n / min(walls):6.0f} | {n / statistics.median(walls):6.0f} msg/s"
              f"  senders' CPU {cpus:.2f} s ({cpus / one:.2f}x one sender's)"
              f"  {trips:.2f} round trips/message  fewest sent by one: {shares}")
    print(f"sink: {delivered} messages accepted, {duplicates} duplicates, {short} prospects "
          "short of one per run (both must be 0)")


if __name__ == "__main__":
    main()
