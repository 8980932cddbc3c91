"""Benchmark: several `syncd run` on one database. Not a test: it prints figures.

    python tests/benchmarks/instances.py                       # SQLite, 3 instances
    python tests/benchmarks/instances.py --database postgresql+psycopg://u@host/db
    python tests/benchmarks/instances.py --database ... --no-notify
    python tests/benchmarks/instances.py --database mysql+mysqldb://u@host/db   # polls

With ``--database`` (a PostgreSQL or MariaDB server URL) the daemons share a fresh
database the script creates on that server and drops at the end.

What it measures, with P simulated providers (in this process, over loopback HTTP) and I
daemons (separate processes) sharing one database:

- **pickup**: a consumer INSERTs queued orders, twice a second (``--rate``); the time
  from each commit until syncd recorded it `active` (the provider took it), p50 / p95 /
  max, with `orders_interval = "1h"`, so only the pickup can send them;
- **duplicates**: orders the providers received more than once (by link), and orders
  the providers hold that no local row names;
- **calls**: catalog and balance requests per provider while the daemons ran, against
  what one daemon alone would make;
- **takeover**: after `kill -9` of the instance holding a provider, seconds until
  another holds it (the lease time is `--lease-ttl`); after SIGTERM of another, seconds
  until its providers are held again;
- **gaps**: a reader that follows `order_changes` with `id > cursor` as fast as it can,
  during the whole run: committed rows it never saw.
- **feed lock** (PostgreSQL and MariaDB): transactions per second of four writers
  inserting three `order_changes` rows each, with the feeds' turn lock (an advisory lock
  on PostgreSQL, a row lock on MariaDB) and without it, and the rows a tight reader
  missed in each case (with the lock there must be none; without it, some show that
  the reader can tell).

MariaDB has no NOTIFY: there the daemons always poll (``--no-notify`` changes nothing).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from children import Consumer, FeedReader, count, database, holder_pid, holders, wait_for

from syncd.simulator import SimulatedProvider, SimulatorServer
from syncd.storage import open_storage
from syncd.storage import tables as t
from syncd.storage.backends import backend_for_url
from syncd.storage.base import take_feed_turn

TOKEN = "bench-token-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--database",
        metavar="URL",
        help="a PostgreSQL or MariaDB server URL: a fresh database is created there and "
        "dropped afterwards (default: a temporary SQLite file)",
    )
    parser.add_argument("--no-notify", action="store_true", help="[database] notify = false")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--orders", type=int, default=60, help="orders a consumer inserts")
    parser.add_argument("--rate", type=float, default=2.0, help="orders inserted per second")
    parser.add_argument("--lease-ttl", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per request")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp, ExitStack() as stack:
        url = stack.enter_context(database(args.database, Path(tmp) / "syncd.db"))
        sims = [SimulatedProvider(token=TOKEN, latency=args.latency) for _ in range(args.providers)]
        servers = [stack.enter_context(SimulatorServer(sim)) for sim in sims]
        config = Path(tmp) / "syncd.toml"
        config.write_text(_config(url, servers, args), encoding="utf-8")
        open_storage(url).close()  # migrated before the daemons race to do it
        engine = sa.create_engine(url)
        stack.callback(engine.dispose)

        reader = FeedReader(engine)
        reader.start()
        started = time.monotonic()
        daemons = [_daemon(config, Path(tmp), n) for n in range(args.instances)]
        stack.callback(_stop_all, daemons)
        wait_for(lambda: len(holders(engine)) == args.providers, 60, "leases taken")
        wait_for(lambda: count(engine, "SELECT count(DISTINCT provider) FROM packages")
              == args.providers, 60, "catalogs synced")  # fmt: skip

        consumer = Consumer(engine, [f"p{n}" for n in range(args.providers)], args.rate,
                            args.orders)  # fmt: skip
        consumer.start()
        consumer.join()  # until it inserted --orders
        consumer.stop(timeout=60)
        if pending := consumer.pending():
            raise SystemExit(f"{len(pending)} orders still not sent after 60 s")
        latencies = [seconds for _, seconds in consumer.latencies()]
        ran = time.monotonic() - started
        calls = {a: [sim.count(a) for sim in sims] for a in ("packages", "balance")}
        held = Counter(holders(engine).values())

        victim_holder = holders(engine)["p0"]
        victim = next(d for d in daemons if d.pid == holder_pid(victim_holder))
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        wait_for(lambda: holders(engine).get("p0", victim_holder) != victim_holder, 120, "takeover")
        wait_for(lambda: len(holders(engine)) == args.providers, 120, "all held again")
        takeover = time.monotonic() - killed_at

        leaving = next(d for d in daemons if d.poll() is None)
        its = {n for n, h in holders(engine).items() if holder_pid(h) == leaving.pid}
        termed_at = time.monotonic()
        leaving.send_signal(signal.SIGTERM)
        leaving.wait(timeout=30)
        wait_for(
            lambda: all(
                holder_pid(h) != leaving.pid and n in holders(engine)
                for n in its
                for h in [holders(engine).get(n, f"x:{leaving.pid}:0")]
            ),
            60,
            "handover",
        )
        handover = time.monotonic() - termed_at

        reader.stop()
        missed = reader.missed()
        lost_alerts = count(engine, "SELECT count(*) FROM alerts WHERE event = 'instance.lost'")
        sent = [
            o.link for sim in sims for o in sim.orders.values() if o.link.startswith("https://b")
        ]
        dupes = sum(n - 1 for n in Counter(sent).values() if n > 1)
        local = count(engine, "SELECT count(*) FROM orders WHERE provider_order_id IS NOT NULL")

        backend = backend_for_url(url).name
        notify = backend == "postgresql" and not args.no_notify
        print(f"backend           {backend}{' (LISTEN/NOTIFY)' if notify else ' (poll only)'}")
        print(f"instances         {args.instances}, providers {args.providers}, "
              f"lease_ttl {args.lease_ttl}s, latency {args.latency * 1000:.0f} ms")  # fmt: skip
        print(f"leases held       {sorted(held.values(), reverse=True)} per instance")
        q = statistics.quantiles(latencies, n=20)
        print(f"pickup (s)        p50 {statistics.median(latencies):.3f}  p95 {q[18]:.3f}  "
              f"max {max(latencies):.3f}  over {len(latencies)} orders")  # fmt: skip
        print(f"orders            {len(sent)} received by the providers, {local} recorded "
              f"with their provider id, {dupes} duplicates")  # fmt: skip
        per = {a: ", ".join(map(str, c)) for a, c in calls.items()}
        print(f"calls in {ran:.0f} s    catalog {per['packages']} / balance {per['balance']} "
              "per provider (one daemon alone: 1 / 1)")  # fmt: skip
        print(f"takeover (s)      kill -9: {takeover:.1f}  SIGTERM: {handover:.1f}  "
              f"instance.lost alerts: {lost_alerts}")  # fmt: skip
        print(f"feed gaps         {len(missed)} of {reader.total()} committed order_changes "
              "rows missed by a tight reader")  # fmt: skip
        if backend != "sqlite":
            (with_lock, gaps), (without, gaps_without) = _feed_lock_cost(url)
            print(f"feed lock         {with_lock:.0f} tx/s with the turn lock, "
                  f"{without:.0f} tx/s without (4 writers, 3 rows each)")  # fmt: skip
            print(f"feed gaps, locks  {gaps} rows missed by a tight reader with the lock, "
                  f"{gaps_without} without it")  # fmt: skip


def _config(url: str, servers: list[SimulatorServer], args: argparse.Namespace) -> str:
    providers = "".join(
        f'[[providers]]\nname = "p{n}"\nurl = "{s.url}"\ntoken = "{TOKEN}"\n'
        'orders_interval = "1h"\ncatalog_interval = "1h"\nbalance_interval = "1h"\n\n'
        for n, s in enumerate(servers)
    )
    notify = "false" if args.no_notify else "true"
    return (
        f'[database]\nurl = "{url}"\nnotify = {notify}\n\n[logging]\nformat = "json"\n'
        f'level = "warning"\n\n[cluster]\nlease_ttl = "{args.lease_ttl}s"\n\n{providers}'
    )


def _daemon(config: Path, tmp: Path, n: int) -> subprocess.Popen[bytes]:
    log = (tmp / f"daemon-{n}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
    )


def _stop_all(daemons: list[subprocess.Popen[bytes]]) -> None:
    for daemon in daemons:
        if daemon.poll() is None:
            daemon.terminate()
    for daemon in daemons:
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()


def _feed_lock_cost(url: str, seconds: float = 3.0) -> tuple[tuple[float, int], tuple[float, int]]:
    """(transactions a second, rows a tight reader missed) of four feed writers, with the
    turn lock and without it."""
    storage = open_storage(url)
    storage.register_providers([("lockbench", "https://x.example")])
    order_id = storage.track_orders("lockbench", [1], datetime.now(UTC))[1]
    rows = [{"order_id": order_id, "changed_at": datetime.now(UTC), "state_new": "x"}] * 3

    def rate(locked: bool) -> tuple[float, int]:
        done = threading.Event()
        counts = [0] * 4

        def write(n: int) -> None:
            while not done.is_set():
                with storage.engine.begin() as conn:
                    if locked:
                        take_feed_turn(conn)
                    conn.execute(sa.insert(t.order_changes), rows)
                counts[n] += 1

        reader = FeedReader(storage.engine)
        reader.start()
        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        done.set()
        for thread in threads:
            thread.join()
        reader.stop()
        return sum(counts) / seconds, len(reader.missed())

    try:
        return rate(True), rate(False)
    finally:
        storage.close()


if __name__ == "__main__":
    main()
