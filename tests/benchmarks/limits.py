"""Benchmark: a provider's published add limit held by three processes together.

Not a test: it prints figures. Run it from the repository root:

    python tests/benchmarks/limits.py                       # add = "60/minute", 3 minutes
    python tests/benchmarks/limits.py --limit 20/10s --seconds 40

Two `syncd run` daemons and a loop of one-shot `syncd order add` share one SQLite
database; a consumer queues an order by SQL every quarter second, more than the limit
lets through. The simulator (in this process) answers 429 past its own limit and counts
what it accepted in any window of it: the busiest window must stay within the limit, and
it must answer no 429 at all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from syncd.limits import parse_limit
from tests.limits_scenario import three_processes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", default="60/minute", help='the add limit, "N/minute", "N/10s"')
    parser.add_argument("--seconds", type=float, default=180.0, help="how long the three run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = three_processes(Path(tmp), parse_limit(args.limit), args.seconds)
    for line in figures.lines():
        print(line)
    held = figures.rate_limited == 0 and figures.busiest <= figures.limit.count
    print(f"held              {'yes' if held else 'NO'}")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
