"""Shared by the benchmarks: run a whole process and measure its wall time and peak RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence


def run_measured(argv: Sequence[str], **kwargs) -> tuple[float, float]:
    """Run argv to completion; return (wall seconds, peak RSS in MB) of that one process."""
    wall, _, rss = run_measured_cpu(argv, **kwargs)
    return wall, rss


def run_measured_cpu(argv: Sequence[str], **kwargs) -> tuple[float, float, float]:
    """Run argv to completion; return (wall s, CPU s, peak RSS MB). CPU time is what a busy
    machine disturbs least, so benchmarks compare it as well as wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def median_time(argv: Sequence[str], runs: int, **kwargs) -> float:
    return statistics.median(run_measured(argv, **kwargs)[0] for _ in range(runs))
