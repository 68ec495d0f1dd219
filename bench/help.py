"""Benchmark `outreach --help` start-up against `python -c "import click"` (target <= 1.5x).

The two commands alternate run by run, so a load spike from another process hits both alike;
the ratio is reported for the medians and for the minimums (the least disturbed runs).
Bytecode is compiled first, as an installed package has it.

    .venv/bin/python bench/help.py [--runs 31]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import run_measured

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=31)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "outreach")],
                   check=False)
    commands = {"base": [sys.executable, "-c", "import click"],
                "ours": [str(Path(sys.executable).parent / "outreach"), "--help"]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(args.runs + 2):   # the first two warm the page cache and the caches
        for name, argv in commands.items():
            elapsed = run_measured(argv)[0]
            if i >= 2:
                times[name].append(elapsed)
    base, ours = times["base"], times["ours"]
    print(f"{args.runs} alternating runs each      median    min")
    print(f'python -c "import click":   {statistics.median(base) * 1000:6.1f} ms '
          f"{min(base) * 1000:6.1f} ms")
    print(f"outreach --help:            {statistics.median(ours) * 1000:6.1f} ms "
          f"{min(ours) * 1000:6.1f} ms")
    print(f"ratio: {statistics.median(ours) / statistics.median(base):.2f}x of medians, "
          f"{min(ours) / min(base):.2f}x of minimums (target <= 1.5x)")


if __name__ == "__main__":
    main()
