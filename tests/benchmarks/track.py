"""Benchmark: `syncd order track` of 100,000 provider order ids, in calls of 20,000.

Not a test: it prints figures beside the target. Run it from the repository root:

    python tests/benchmarks/track.py [--ids 100000] [--per-call 20000] [--database URL]

Each call is a process of its own, as a shop's script would run it; the figure is the
wall time of all calls together, start-up included. No provider is asked: tracking
only writes the rows (their statuses come with the next orders pass).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from children import child_env, measure

TARGET = 5.0  # seconds for 100,000 ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument("--per-call", type=int, default=20_000)
    parser.add_argument("--database", help="a database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        env = child_env(tmp)
        url = args.database or f"sqlite:///{tmp}/syncd.db"
        config = Path(tmp) / "syncd.toml"
        config.write_text(
            f'[database]\nurl = "{url}"\n[[providers]]\nname = "bench"\n'
            'url = "https://panel.example/api/v2"\ntoken = "bench-token-0000"\n',
            encoding="utf-8",
        )
        syncd = [sys.executable, "-m", "syncd", "--config", str(config)]
        subprocess.run([*syncd, "status"], check=True, env=env, capture_output=True)  # warm up
        started = time.perf_counter()
        cpu = 0.0
        for first in range(1, args.ids + 1, args.per_call):
            ids = [str(i) for i in range(first, min(first + args.per_call, args.ids + 1))]
            _, used, _, _ = measure(
                [*syncd, "order", "track", "--provider", "bench", *ids], env, keep_output=False
            )
            cpu += used
        wall = time.perf_counter() - started
        calls = -(-args.ids // args.per_call)
        print(f"ids               {args.ids:,} in {calls} calls of {args.per_call:,}")
        print(f"wall              {wall:.2f} s   ({wall / calls:.2f} s per call)")
        print(f"CPU               {cpu:.2f} s")
        target = TARGET * args.ids / 100_000
        verdict = "met" if wall <= target else "NOT met"
        print(f"target            <= {target:.1f} s   ratio {wall / target:.2f}  ({verdict})")


if __name__ == "__main__":
    main()
