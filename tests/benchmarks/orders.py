"""Benchmark: one `orders` pass over N tracked orders against a slow provider.

Not a test: it prints figures. Run it from the repository root:

    python tests/benchmarks/orders.py --orders 100000 --latency 0.05

The simulator runs in its own process with N orders; the database gets N active tracked
orders (inserted directly, as a consumer could); then `syncd sync orders` runs as a
separate process, so its CPU time and peak RSS are its own.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

TOKEN = "bench-token"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per provider request")
    parser.add_argument("--batch", type=int, default=100, help="status_batch_size")
    parser.add_argument("--concurrency", type=int, default=4, help="max_concurrency")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        simulator = subprocess.Popen(
            [sys.executable, "-m", "syncd.simulator", "--token", TOKEN,
             "--orders", str(args.orders), "--latency", str(args.latency),
             "--order-duration", "86400"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert simulator.stdout is not None
        url = simulator.stdout.readline().split()[1]
        first, last = map(int, simulator.stdout.readline().split()[1:])
        try:
            config = Path(tmp) / "syncd.toml"
            database = Path(tmp) / "syncd.db"
            config.write_text(
                f'[database]\nurl = "sqlite:///{database}"\n[logging]\nformat = "json"\n'
                f'[[providers]]\nname = "bench"\nurl = "{url}"\ntoken = "{TOKEN}"\n'
                f"status_batch_size = {args.batch}\nmax_concurrency = {args.concurrency}\n",
                encoding="utf-8",
            )
            subprocess.run(syncd(config, "sync", "catalog"), check=True, capture_output=True)
            load_orders(database, range(first, last + 1))
            expected_calls = math.ceil(args.orders / args.batch)
            ideal = expected_calls * args.latency / args.concurrency
            print(f"orders            {args.orders}")
            print(
                f"ideal             {ideal:.2f} s"
                f"  (ceil(N/batch) x {args.latency}s / {args.concurrency})"
            )
            # First pass: every order changes (Pending for the first time). Second pass: the
            # same orders made due again, and nothing changed at the provider.
            for label in ("first pass, all changed", "second pass, none changed"):
                wall, cpu, rss, output = measure(syncd(config, "sync", "orders"))
                calls = int(re.search(r" in (\d+) calls", output).group(1))  # type: ignore[union-attr]
                print(f"-- {label}: {output.strip()}")
                print(f"status calls      {calls} (ceil(N/{args.batch}) = {expected_calls})")
                print(f"wall              {wall:.2f} s")
                print(f"wall / ideal      {wall / ideal:.2f}")
                print(f"syncd CPU         {cpu:.2f} s")
                print(f"syncd peak RSS    {rss:.0f} MB")
                make_due(database)
        finally:
            simulator.terminate()
            simulator.communicate(timeout=30)


def syncd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "syncd", "--config", str(config), *args]


def load_orders(database: Path, provider_ids: range) -> None:
    """N active tracked orders, due now, inserted in chunks as a consumer would."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    with sqlite3.connect(database) as conn:
        ids = iter(provider_ids)
        while chunk := [next(ids, None) for _ in range(10_000)]:
            rows = [("bench", i, "active", now, now) for i in chunk if i is not None]
            if not rows:
                break
            conn.executemany(
                "INSERT INTO orders (provider, provider_order_id, state, created_at, next_check_at)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )


def make_due(database: Path) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute(
            "UPDATE orders SET next_check_at = '2000-01-01 00:00:00' WHERE state = 'active'"
        )


def measure(command: list[str]) -> tuple[float, float, float, str]:
    """Wall time, CPU seconds and peak RSS (MB) of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"syncd sync orders failed: {output}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


if __name__ == "__main__":
    main()
