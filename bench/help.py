"""Benchmark `outreach --help` start-up against `python -c "import click"` (target <= 1.5x).

    .venv/bin/python bench/help.py [--runs 15]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import median_time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    outreach = str(Path(sys.executable).parent / "outreach")
    median_time([sys.executable, "-c", "import click"], 2)  # warm the page cache
    median_time([outreach, "--help"], 2)
    base = median_time([sys.executable, "-c", "import click"], args.runs)
    ours = median_time([outreach, "--help"], args.runs)
    print(f'python -c "import click": {base * 1000:6.1f} ms (median of {args.runs})')
    print(f"outreach --help:          {ours * 1000:6.1f} ms")
    print(f"ratio: {ours / base:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
