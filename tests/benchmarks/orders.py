"""Benchmark: one `orders` pass over N tracked orders against a slow provider.

Not a test: it prints figures, each beside its target. Run it from the repository root:

    python tests/benchmarks/orders.py --orders 100000 --latency 0.05
    python tests/benchmarks/orders.py --orders 100000 --latency 0.05 --reference
    python tests/benchmarks/orders.py --orders 1000000 --latency 0 --passes 1   # RSS
    python tests/benchmarks/orders.py --orders 100000 --database postgresql+psycopg://u@host/db
    python tests/benchmarks/orders.py --orders 100000 --database mysql+mysqldb://u@host/db

The simulator runs in its own process with N orders; the database gets N active tracked
orders (inserted directly, as a consumer could); then `syncd sync orders` runs as a
separate process, so its CPU time and peak RSS are its own. The first pass finds every
order changed (Pending for the first time); before the second, the simulator moves a
tenth of its orders a step on (SIGUSR1), so the steady pass finds a tenth changed.

The database is a temporary SQLite file, or with ``--database URL`` (a PostgreSQL or
MariaDB server) a fresh database the script creates on that server and drops at the
end. Its schema is syncd's own migration; the orders are inserted through SQLAlchemy
on any server, through sqlite3 on SQLite.

With ``--reference`` (SQLite only), the bare script in bare_sweep.py sweeps a copy of
the same database just before each of syncd's passes, against the same simulator (httpx,
the same concurrency, an executemany and a commit per batch, no change log, no checks):
syncd's wall time and CPU time are also given as ratios to its.

With ``--breakdown``, each syncd pass prints where its CPU went, part by part, by the
CPU time of the thread that spent it (breakdown.py): what a sampling profiler misses,
SQLite's own work included.

With ``--profile DIR``, each syncd pass runs under py-spy (``pip install py-spy``; its
CPU figures then include the sampler's), which writes DIR/pass-N.txt, and the top ten
functions are printed (profile_top.py).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from children import child_env, database, load_orders, measure
from profile_top import report

from syncd.storage import open_storage
from syncd.storage import tables as t

TOKEN = "bench-token"
HERE = Path(__file__).parent
# Targets for a pass over 100,000 orders (CPU) and for any size (the others).
WALL_PER_IDEAL = 1.2
WALL_PER_REFERENCE = 1.1
CPU_PER_REFERENCE = 1.5
CPU_FOR_100K = 3.0
PEAK_RSS_MB = 100.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per provider request")
    parser.add_argument("--batch", type=int, default=100, help="status_batch_size")
    parser.add_argument("--concurrency", type=int, default=4, help="max_concurrency")
    parser.add_argument("--passes", type=int, choices=(1, 2), default=2)
    parser.add_argument(
        "--reference", action="store_true", help="also time the bare script (SQLite only)"
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="a PostgreSQL or MariaDB server URL: the sweep runs in a fresh database created "
        "there and dropped afterwards (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--profile", metavar="DIR", type=Path, help="run each syncd pass under py-spy"
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="print each pass's CPU by part, per thread (breakdown.py)",
    )
    args = parser.parse_args()
    if args.profile is not None and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy on the PATH (pip install py-spy)")
    if args.reference and args.database:
        parser.error("--reference sweeps a SQLite copy: it cannot be used with --database")

    with (
        tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp,
        database(args.database, Path(tmp) / "syncd.db") as database_url,
    ):
        # Every child keeps its compiled bytecode (the setup commands below warm it).
        env = child_env(tmp)
        os.environ.clear()
        os.environ.update(env)
        simulator = subprocess.Popen(
            [sys.executable, "-m", "syncd.simulator", "--dialect", "key", "--token", TOKEN,
             "--orders", str(args.orders), "--latency", str(args.latency),
             "--order-duration", "86400"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert simulator.stdout is not None
        url = simulator.stdout.readline().split()[1]
        first, last = map(int, simulator.stdout.readline().split()[1:])
        try:
            config = Path(tmp) / "syncd.toml"
            config.write_text(
                f'[database]\nurl = "{database_url}"\n[logging]\nformat = "json"\n'
                f'[[providers]]\nname = "bench"\nurl = "{url}"\ntoken = "{TOKEN}"\n'
                f'dialect = "key"\n'
                f"status_batch_size = {args.batch}\nmax_concurrency = {args.concurrency}\n",
                encoding="utf-8",
            )
            subprocess.run(syncd(config, "sync", "catalog"), check=True, capture_output=True)
            load_orders(database_url, "bench", range(first, last + 1))
            expected_calls = math.ceil(args.orders / args.batch)
            ideal = expected_calls * args.latency / args.concurrency
            print(f"database          {sa.engine.make_url(database_url).drivername}")
            print(f"orders            {args.orders:,}")
            print(
                f"ideal             {ideal:.2f} s"
                f"  (ceil(N/batch) x {args.latency}s / {args.concurrency})"
            )
            labels = ("first pass, all changed", "second pass, a tenth changed")
            both: list[tuple[str, float, float]] = []  # (pass, syncd CPU, bare CPU)
            for number, label in enumerate(labels[: args.passes], start=1):
                if number > 1:
                    make_due(database_url)
                    simulator.send_signal(signal.SIGUSR1)
                    while not (line := simulator.stdout.readline()).startswith("moved"):
                        pass
                    print(f"-- simulator: {line.strip()} orders a step on")
                reference = (
                    run_reference(Path(tmp) / "syncd.db", url, args) if args.reference else None
                )
                command = syncd(config, "sync", "orders")
                if args.breakdown:
                    command[1:3] = [str(Path(__file__).with_name("breakdown.py"))]
                if args.profile is not None:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    profile = args.profile / f"pass-{number}.txt"
                    sampler = [str(shutil.which("py-spy")), "record", "--format", "raw",
                               "--rate", "250", "--gil", "--output", str(profile)]  # fmt: skip
                    command = [*sampler, "--", *command]
                wall, cpu, rss, output = measure(command)
                output = "\n".join(
                    line for line in output.splitlines() if not line.startswith("py-spy>")
                )
                calls = int(re.search(r" in (\d+) calls", output).group(1))  # type: ignore[union-attr]
                print(f"-- {label}: {output.strip()}")
                print(f"status calls      {calls} (ceil(N/{args.batch}) = {expected_calls})")
                print(f"wall              {wall:.2f} s")
                if ideal > 0:
                    print(ratio("wall / ideal", wall / ideal, WALL_PER_IDEAL))
                if reference is not None:
                    print(ratio("wall / bare", wall / reference[0], WALL_PER_REFERENCE))
                cpu_line = f"syncd CPU         {cpu:.2f} s"
                if args.orders == 100_000:
                    cpu_line += f"   target <= {CPU_FOR_100K} s  ratio {cpu / CPU_FOR_100K:.2f}"
                print(cpu_line + f"   ({1000 * cpu / args.orders:.3f} ms per order)")
                if reference is not None:
                    print(ratio("CPU / bare", cpu / reference[1], CPU_PER_REFERENCE))
                    both.append((label, cpu, reference[1]))
                print(
                    f"syncd peak RSS    {rss:.0f} MB   target <= {PEAK_RSS_MB:.0f} MB"
                    f"  ratio {rss / PEAK_RSS_MB:.2f}"
                )
                if args.profile is not None:
                    print(report(profile))
            if both:
                print_sweep_alone(config, both)
        finally:
            simulator.terminate()
            simulator.communicate(timeout=30)


def print_sweep_alone(config: Path, both: list[tuple[str, float, float]]) -> None:
    """Each pass's CPU without what each process spends before its sweep starts: syncd
    run once more with nothing due (start-up: imports, config, opening the database),
    the bare script's imports alone."""
    started: float
    idle: float
    _, started, _, _ = measure(syncd(config, "sync", "orders"))
    _, idle, _, _ = measure([sys.executable, "-c", "import asyncio, json, sqlite3, httpx"])
    print(f"-- start-up: syncd with nothing due {started:.2f} s CPU, the bare imports {idle:.2f} s")
    for label, cpu, bare in both:
        alone = (cpu - started) / (bare - idle)
        print(ratio(f"{label.split(',')[0]}: sweep alone / bare", alone, CPU_PER_REFERENCE))


def ratio(name: str, value: float, target: float) -> str:
    verdict = "met" if value <= target else "NOT met"
    return f"{name:<17} {value:.2f}   target <= {target}  ({verdict})"


def run_reference(database: Path, url: str, args: argparse.Namespace) -> tuple[float, float]:
    """The bare script's wall and CPU time over a copy of the database (its writes are
    its own)."""
    copy = database.with_name("reference.db")
    with sqlite3.connect(database) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    command = [sys.executable, str(HERE / "bare_sweep.py"), str(copy), url, TOKEN,
               "--concurrency", str(args.concurrency)]  # fmt: skip
    wall: float  # `measure` is untyped here: this script imports it by its bare name
    cpu: float
    wall, cpu, rss, output = measure(command)
    print(f"-- reference: {output.strip()}")
    print(f"bare wall         {wall:.2f} s   CPU {cpu:.2f} s   peak RSS {rss:.0f} MB")
    copy.unlink()
    return wall, cpu


def syncd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "syncd", "--config", str(config), *args]


def make_due(url: str) -> None:
    """Every active order due again, for the next pass."""
    storage = open_storage(url)
    try:
        with storage.engine.begin() as conn:
            conn.execute(
                sa.update(t.orders)
                .where(t.orders.c.state == "active")
                .values(next_check_at=datetime(2000, 1, 1, tzinfo=UTC))
            )
    finally:
        storage.close()


if __name__ == "__main__":
    main()
