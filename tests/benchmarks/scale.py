"""Benchmark: a panel's whole shape at once. Not a test: it prints figures, each beside its
target where there is one. Run it from the repository root:

    python tests/benchmarks/scale.py                                  # SQLite, 1 instance
    python tests/benchmarks/scale.py --database postgresql+psycopg://u@host/postgres
    python tests/benchmarks/scale.py --database mysql+mysqldb://u@host/mysql
    python tests/benchmarks/scale.py --orders 20000 --providers 4 --instances 2 --duration 60

N open orders (``--orders``, a million by default) spread over P simulated providers
(``--providers``), each a ``python -m syncd.simulator`` process of its own, with latencies
from 10 to 150 ms and batch limits of 50, 75 and 100 ids a status call (its
``status_batch_size`` the same); I ``syncd run`` instances (``--instances``) share one
database: with ``--database URL`` (a PostgreSQL or MariaDB server) a fresh database the
script creates there and drops at the end, without it a temporary SQLite file and one
instance (the single-machine figure). The orders are loaded straight into the database,
tracked and due at once; every provider's ``orders_interval`` is ``--interval``, and at
each interval after the first every simulator moves a tenth of its orders a step on, so
a steady sweep finds a tenth changed. The run lasts ``--duration`` seconds from the
daemons' start; a consumer INSERTs queued orders at ``--rate`` all along, a reader follows
``order_changes`` by ``id > cursor`` all along, and one instance is killed (``kill -9``)
early in the second interval, while it sweeps.

What it prints:

- **leases and RSS over time**: leases held and resident memory (VmRSS) of each instance,
  every ``--sample`` seconds; once settled no instance holds more than ceil(P / I) leases
  (ceil(P / (I - 1)) after the kill), and RSS stays flat, at most 100 MB;
- **sweeps**: per provider, each orders pass (from the ``jobs`` table's start and success
  times, and its ``orders.synced`` log line: due, checked, calls) against its ideal,
  ceil(checked / batch) x latency / max_concurrency (target 1.2x; the providers share the
  machine's cores, so a ratio above it on a small machine says where CPU ran out);
- **database load**: transactions and rows written (PostgreSQL: pg_stat_database of the
  benchmark's database, pg_stat_statements when it is loaded; MariaDB: SHOW GLOBAL STATUS,
  the whole server's) per interval and per 100,000 orders checked, the script's own
  readers' statements counted apart;
- **CPU per 100,000 orders checked**: the database server's (the processes of the server
  on this machine, read from /proc; "n/a" when it runs elsewhere), syncd's (each
  instance's /proc/PID/stat) and the simulators' own;
- **INSERT -> sent**: the consumer's orders, from their INSERT's commit until syncd recorded
  them taken by the provider, p50 / p95 / max;
- **kill -9**: seconds until another instance holds each lease of the killed one,
  duplicates (links a simulator received twice, orders a simulator took that no local
  row names) and change rows the reader never saw (each target 0).

The default ``--interval`` is 0.3 ms per order (5 minutes for a million, one minute at
least): on a 2-core machine the first sweep of a million orders, where every order
changes, takes syncd, the database and the simulators about 2 to 3 minutes of both
cores, so a sweep fits in an interval with room for the consumer and the kill.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from children import (
    Consumer,
    FeedReader,
    child_env,
    database,
    holder_pid,
    holders,
    load_orders,
    wait_for,
)

from syncd.storage import tables as t
from syncd.storage.backends import backend_for_url

TOKEN = "bench-token-0123456789"
BATCHES = (50, 75, 100)  # a status call's limit, each provider's in turn (config: 1-100)
FASTEST, SLOWEST = 0.010, 0.150  # seconds a request takes, spread over the providers
CONCURRENCY = 4  # max_concurrency, syncd's default
WALL_PER_IDEAL = 1.2
RSS_MB = 100.0
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Simulator:
    name: str
    latency: float
    batch: int
    orders: int
    links: Path
    process: subprocess.Popen[str]
    url: str = ""
    ids: range = range(0)


@dataclass
class Sample:
    at: float  # seconds since the daemons started
    leases: dict[int, int]  # instance number -> leases held
    rss: dict[int, float]  # instance number -> MB
    cpu: dict[int, float]  # instance number -> CPU seconds so far


@dataclass(eq=False)  # a thread is hashed by its identity
class Sampler(threading.Thread):
    """Every ``period`` seconds: leases, RSS and CPU of each instance; every half second
    the ``jobs`` rows of the orders job, for each pass's start and end."""

    engine: sa.Engine
    pids: list[int]
    period: float
    server: ServerCPU
    started: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    passes: dict[str, set[tuple[datetime, datetime]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    running: set[str] = field(default_factory=set)  # providers whose orders job runs now
    queries: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        next_sample = 0.0
        while not self.done.wait(0.5):
            self._jobs()
            if time.monotonic() >= next_sample:
                next_sample = time.monotonic() + self.period
                self.samples.append(self.sample())
                self.server.seconds()  # each backend's CPU, while it lives

    def sample(self) -> Sample:
        held = Counter(holder_pid(h) for h in holders(self.engine).values())
        self.queries += 1
        rss, cpu = {}, {}
        for n, pid in enumerate(self.pids):
            with contextlib.suppress(OSError):  # a killed instance is gone
                rss[n] = vm_rss(pid)
                cpu[n] = process_cpu(pid)
        leases = {n: held.get(pid, 0) for n, pid in enumerate(self.pids) if n in rss}
        return Sample(time.monotonic() - self.started, leases, rss, cpu)

    def _jobs(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(t.jobs.c.provider, t.jobs.c.last_started_at, t.jobs.c.last_success_at)
                .where(t.jobs.c.job == "orders")
            ).all()  # fmt: skip
        self.queries += 1
        self.running = set()
        for provider, started, success in rows:
            if started is not None and (success is None or success < started):
                self.running.add(provider)
            elif started is not None:
                self.passes[provider].add((started, success))

    def stop(self) -> None:
        self.done.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--orders", type=int, default=1_000_000, help="open orders, in all (default: %(default)s)"
    )
    parser.add_argument(
        "--providers", type=int, default=20, help="simulated providers (default: %(default)s)"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=None,
        help="`syncd run` processes on the database (default: 5 with --database, 1 on SQLite)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="a PostgreSQL or MariaDB server URL: a fresh database is created there and "
        "dropped afterwards (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="orders_interval in seconds (default: 0.3 ms per order, 60 s at least)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds the daemons run (default: three intervals and a half)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="queued orders the consumer INSERTs a second (default: %(default)s)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=int,
        default=30,
        help="the cluster's lease_ttl, s (default: %(default)s)",
    )
    parser.add_argument(
        "--sample",
        type=float,
        default=5.0,
        help="seconds between two samples of leases, RSS and CPU (default: %(default)s)",
    )
    parser.add_argument(
        "--no-kill", action="store_true", help="leave every instance running to the end"
    )
    args = parser.parse_args()
    if args.instances is None:
        args.instances = 5 if args.database else 1
    if args.database is None and args.instances != 1:
        parser.error("SQLite is the single-machine figure: --instances 1 without --database")
    interval = args.interval or max(60.0, round(args.orders * 0.0003))
    duration = args.duration or 3.5 * interval
    kill = not args.no_kill and args.instances > 1

    print(f"machine           {os.cpu_count()} cores, {mem_total_gb():.1f} GB RAM, "
          f"{platform.python_implementation()} {platform.python_version()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="syncd-scale-") as tmp, ExitStack() as stack:
        url = stack.enter_context(database(args.database, Path(tmp) / "syncd.db"))
        os.environ.clear()
        os.environ.update(child_env(tmp))
        os.environ.pop("NOTIFY_SOCKET", None)
        sims = start_simulators(args, Path(tmp))
        stack.callback(stop_simulators, sims)
        config = Path(tmp) / "syncd.toml"
        config.write_text(syncd_config(url, sims, interval, args.lease_ttl), encoding="utf-8")
        # Migrates, registers the providers and pulls their catalogs (the consumer's
        # orders need a service) before the orders are loaded and the daemons race.
        subprocess.run(syncd(config, "sync", "catalog"), check=True, capture_output=True)
        engine = sa.create_engine(url)
        stack.callback(engine.dispose)
        backend = backend_for_url(url).name
        print(f"backend           {backend} {server_version(engine, backend)}")
        print(f"shape             {args.orders:,} orders, {args.providers} providers, "
              f"{args.instances} instance(s), orders_interval {interval:.0f} s, "
              f"lease_ttl {args.lease_ttl} s, run {duration:.0f} s")  # fmt: skip
        loading = time.monotonic()
        for sim in sims:
            load_orders(url, sim.name, sim.ids)
        print(f"loaded            in {time.monotonic() - loading:.0f} s")

        server = ServerCPU(engine, backend)
        stats_before, cpu_before = db_stats(engine, backend), server.baseline
        sims_cpu_before = sum(process_cpu(s.process.pid) for s in sims)
        reader = FeedReader(engine, pause=0.01)
        reader.start()
        logs = [Path(tmp) / f"daemon-{n}.log" for n in range(args.instances)]
        daemons = [start_daemon(config, log) for log in logs]
        stack.callback(stop_daemons, daemons)
        sampler = Sampler(engine, [d.pid for d in daemons], args.sample, server)
        sampler.start()
        try:
            wait_for(lambda: len(holders(engine)) == args.providers, 120, "every lease taken")
        except SystemExit:  # a finding of its own; the run goes on
            print(f"leases            only {len(holders(engine))} of {args.providers} held "
                  "120 s after the start")  # fmt: skip
        stack.callback(print_trouble, logs)
        consumer = Consumer(engine, [s.name for s in sims], args.rate)
        consumer.start()

        killed: Killed | None = None
        moved = 1
        while (now := time.monotonic() - sampler.started) < duration:
            if now >= moved * interval:
                for sim in sims:  # a tenth of each simulator's orders a step on
                    sim.process.send_signal(signal.SIGUSR1)
                moved += 1
            if kill and killed is None and now >= 1.1 * interval:
                killed = kill_one(engine, daemons, sampler, deadline=2 * interval)
            time.sleep(0.2)
        consumer.stop(timeout=120)
        sampler.samples.append(sampler.sample())
        sampler.stop()
        ran = time.monotonic() - sampler.started
        stats_after, cpu_after = db_stats(engine, backend), server.seconds()
        sims_cpu = sum(process_cpu(s.process.pid) for s in sims) - sims_cpu_before
        reader.stop()
        stop_daemons(daemons)
        stop_simulators(sims)
        local = local_orders(engine)
        own = reader.queries + consumer.queries + sampler.queries + 4

        synced = synced_lines(logs)
        checked = sum(int(str(line["checked"])) for lines in synced.values() for line in lines)
        per_100k = 100_000 / checked if checked else math.nan
        print_samples(sampler, args.providers, killed)
        print_sweeps(sims, sampler, synced)
        print(f"\norders checked    {checked:,} in {ran:.0f} s "
              f"({ran / interval:.1f} intervals)")  # fmt: skip
        print_db_load(stats_before, stats_after, own, ran / interval, per_100k)
        syncd_cpu = sum(syncd_cpu_seconds(sampler))
        server_cpu = "n/a (the server is not on this machine)"
        if backend == "sqlite":
            server_cpu = "n/a (SQLite works inside syncd)"
        if cpu_before is not None and cpu_after is not None:
            server_cpu = f"{(cpu_after - cpu_before) * per_100k:.2f} s"
        print(f"CPU / 100k orders database {server_cpu}   syncd {syncd_cpu * per_100k:.2f} s   "
              f"simulators {sims_cpu * per_100k:.2f} s")  # fmt: skip
        print_pickup(consumer, killed, sampler.started)
        print_kill(killed, sims, local, reader)


@dataclass
class Killed:
    instance: int
    at: float  # seconds since the daemons started
    leases: list[str]
    running: list[str]
    takeover: float | None = None


def kill_one(
    engine: sa.Engine, daemons: list[subprocess.Popen[bytes]], sampler: Sampler, deadline: float
) -> Killed | None:
    """``kill -9`` of the instance holding the most leases, once one of its providers'
    orders pass runs (or at ``deadline`` seconds anyway); then waits until every lease it
    held is held by another instance."""
    held = holders(engine)
    sampler.queries += 1  # the script's own, as the sampler's
    by_pid = Counter(holder_pid(h) for h in held.values())
    if not by_pid:
        return None
    pid = by_pid.most_common(1)[0][0]
    its = [name for name, h in held.items() if holder_pid(h) == pid]
    running = sorted(set(its) & sampler.running)
    if not running and time.monotonic() - sampler.started < deadline:
        return None
    number = next(n for n, d in enumerate(daemons) if d.pid == pid)
    at = time.monotonic()
    daemons[number].send_signal(signal.SIGKILL)
    daemons[number].wait()
    killed = Killed(number, at - sampler.started, its, running)

    def taken_over() -> bool:
        sampler.queries += 1
        now_held = holders(engine)
        return all(holder_pid(now_held.get(n, f"x:{pid}:0")) != pid for n in its)

    wait_for(taken_over, 600, "the killed instance's leases taken over")
    killed.takeover = time.monotonic() - at
    return killed


def start_simulators(args: argparse.Namespace, tmp: Path) -> list[Simulator]:
    sims = []
    for n in range(args.providers):
        latency = FASTEST + (SLOWEST - FASTEST) * n / max(1, args.providers - 1)
        batch = BATCHES[n % len(BATCHES)]
        orders = args.orders // args.providers + (n < args.orders % args.providers)
        links = tmp / f"links-{n}.txt"
        command = [sys.executable, "-m", "syncd.simulator", "--token", TOKEN,
                   "--orders", str(orders), "--latency", f"{latency:.4f}", "--max-ids",
                   str(batch), "--order-duration", "86400", "--links", str(links)]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        sims.append(Simulator(f"p{n}", round(latency, 4), batch, orders, links, process))
    for sim in sims:  # started together: each creates its orders meanwhile
        assert sim.process.stdout is not None
        sim.url = sim.process.stdout.readline().split()[1]
        if sim.orders:
            first, last = map(int, sim.process.stdout.readline().split()[1:])
            sim.ids = range(first, last + 1)
        # The rest (a config, then "moved N" at each SIGUSR1) is read at the end.
    return sims


def stop_simulators(sims: list[Simulator]) -> None:
    for sim in sims:
        if sim.process.poll() is None:
            sim.process.terminate()
    for sim in sims:
        with contextlib.suppress(subprocess.TimeoutExpired):
            sim.process.communicate(timeout=60)


def syncd_config(url: str, sims: list[Simulator], interval: float, lease_ttl: int) -> str:
    providers = "".join(
        f'[[providers]]\nname = "{s.name}"\nurl = "{s.url}"\ntoken = "{TOKEN}"\n'
        f'orders_interval = "{interval:.0f}s"\ncatalog_interval = "1h"\n'
        f'balance_interval = "1h"\nstatus_batch_size = {s.batch}\n'
        f"max_concurrency = {CONCURRENCY}\n\n"
        for s in sims
    )
    return (
        f'[database]\nurl = "{url}"\n\n[logging]\nformat = "json"\nlevel = "info"\n\n'
        f'[cluster]\nlease_ttl = "{lease_ttl}s"\n\n{providers}'
    )


def syncd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "syncd", "--config", str(config), *args]


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(syncd(config, "run"), stdout=out, stderr=subprocess.STDOUT)


def stop_daemons(daemons: list[subprocess.Popen[bytes]]) -> None:
    for daemon in daemons:
        if daemon.poll() is None:
            daemon.terminate()
    for daemon in daemons:
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()


# --- what /proc says ----------------------------------------------------------------------


def process_cpu(pid: int, *, children: bool = False) -> float:
    """User and system CPU seconds of a process (and of its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def vm_rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for {pid}")


def mem_total_gb() -> float:
    line = Path("/proc/meminfo").read_text().splitlines()[0]
    return int(line.split()[1]) / 1024**2


class ServerCPU:
    """CPU seconds the database server spent for this benchmark, when it runs on this
    machine: on PostgreSQL the backends of the benchmark's database (children of the
    postmaster, found as the parent of this connection's backend, whose title names the
    database; each one's last reading is kept, so a backend that ended still counts),
    the server's shared background processes left out; on MariaDB the one ``mariadbd``
    process, whatever else it serves. ``None`` on SQLite (the daemons do the work) or
    when the server is elsewhere."""

    def __init__(self, engine: sa.Engine, backend: str) -> None:
        self.pids: list[int] = []
        self.postmaster: int | None = None
        self.database = ""
        self.backends: dict[int, float] = {}
        try:
            if backend == "postgresql":
                with engine.connect() as conn:
                    backend_pid, self.database = conn.execute(
                        sa.text("SELECT pg_backend_pid(), current_database()")
                    ).one()  # fmt: skip
                parent = _parent(Path(f"/proc/{backend_pid}"))
                if _comm(Path(f"/proc/{parent}")) == "postgres":
                    self.postmaster = parent
            elif backend == "mariadb":
                self.pids = [
                    int(p.name) for p in Path("/proc").iterdir()
                    if p.name.isdigit() and _comm(p) == "mariadbd"
                ]  # fmt: skip
        except OSError:
            pass
        self.baseline = self.seconds()

    def seconds(self) -> float | None:
        if self.postmaster is not None:
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit() and _parent(proc) == self.postmaster:
                    with contextlib.suppress(OSError):  # a backend that just ended
                        title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                        if f" {self.database} " in title:
                            self.backends[int(proc.name)] = process_cpu(int(proc.name))
            return sum(self.backends.values())
        if self.pids:
            return sum(process_cpu(pid) for pid in self.pids)
        return None


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def _parent(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


# --- the database's own counters --------------------------------------------------------

PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
MARIADB_COUNTERS = (
    "Questions", "Com_select", "Com_insert", "Com_update", "Com_delete",
    # Rows written, as the storage engines count them (MariaDB 10.11 has no
    # Innodb_rows_* counters any more).
    "Handler_write", "Handler_update", "Handler_delete",
)  # fmt: skip


def server_version(engine: sa.Engine, backend: str) -> str:
    if backend == "sqlite":
        import sqlite3  # noqa: PLC0415

        return sqlite3.sqlite_version
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT version()")).scalar_one())


def db_stats(engine: sa.Engine, backend: str) -> dict[str, int]:
    with engine.connect() as conn:
        if backend == "postgresql":
            conn.execute(sa.text("SELECT pg_stat_clear_snapshot()"))
            row = conn.execute(sa.text(
                f"SELECT {', '.join(PG_COUNTERS)} FROM pg_stat_database "
                "WHERE datname = current_database()"
            )).one()  # fmt: skip
            stats = dict(zip(PG_COUNTERS, map(int, row), strict=True))
            # A pooled connection's read ends in a rollback: both are transactions.
            stats["transactions"] = stats.pop("xact_commit") + stats.pop("xact_rollback")
            with contextlib.suppress(sa.exc.DBAPIError):
                calls = conn.execute(sa.text(
                    "SELECT sum(calls) FROM pg_stat_statements s JOIN pg_database d "
                    "ON d.oid = s.dbid WHERE d.datname = current_database()"
                )).scalar_one()  # fmt: skip
                stats["statements"] = int(calls or 0)
            return stats
        if backend == "mariadb":
            names = ", ".join(f"'{n}'" for n in MARIADB_COUNTERS)
            rows = conn.execute(sa.text(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"))
            return {name: int(value) for name, value in rows}
    return {}


def print_db_load(
    before: dict[str, int], after: dict[str, int], own: int, intervals: float, per_100k: float
) -> None:
    if not after:
        print("database load     n/a on SQLite (one process writes its own file)")
        return
    if "transactions" in after and "statements" not in after:
        print("database load     (pg_stat_statements is not loaded: transactions, not "
              "statements; this database's alone)")  # fmt: skip
    elif "Questions" in after:
        print("database load     (the whole server's, other databases' work included)")
    print(f"  {'counter':<22}{'per interval':>14}{'per 100k checked':>18}")
    for name, value in after.items():
        delta = value - before.get(name, 0)
        if name in ("transactions", "Questions", "statements"):
            delta -= own  # the script's own reader, consumer and sampler
        print(f"  {name:<22}{delta / intervals:>14,.0f}{delta * per_100k:>18,.0f}")
    print(f"  (the script's own statements, taken off the counts above: {own:,})")


# --- what the daemons logged and the figures ---------------------------------------------


def synced_lines(logs: list[Path]) -> dict[str, list[dict[str, object]]]:
    """Each provider's ``orders.synced`` log lines, in time order."""
    found: dict[str, list[dict[str, object]]] = defaultdict(list)
    for log in logs:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if '"orders.synced"' not in line:
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                found[str(entry["provider"])].append(entry)
    for lines in found.values():
        lines.sort(key=lambda e: str(e["timestamp"]))
    return found


def print_trouble(logs: list[Path]) -> None:
    """The daemons' warnings and errors, by event, with the first of each."""
    seen: Counter[str] = Counter()
    first: dict[str, str] = {}
    for log in logs:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") in ("warning", "error", "critical"):
                    key = f"{entry['level']} {entry.get('event')}"
                    seen[key] += 1
                    first.setdefault(key, line[:300])
    print("daemon warnings   " + (", ".join(f"{k} x{n}" for k, n in seen.most_common()) or "none"))
    for line in first.values():
        print(f"  {line}")


def print_samples(sampler: Sampler, providers: int, killed: Killed | None) -> None:
    instances = len(sampler.pids)
    rows = sampler.samples
    step = max(1, len(rows) // 16)
    shown = rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])
    gone = f" (instance {killed.instance} killed at {killed.at:.0f} s)" if killed else ""
    print(f"\nleases / RSS MB per instance over time{gone}")
    print("  t (s)  " + "".join(f"{'i' + str(n):>11}" for n in range(instances)))
    for s in shown:
        cells = "".join(
            f"{s.leases[n]:>4} /{s.rss[n]:>5.0f}" if n in s.rss else f"{'-':>11}"
            for n in range(instances)
        )
        print(f"  {s.at:>5.0f}  {cells}")
    settle = 3 * 10.0  # leases spread within a few renewals
    before = [s for s in rows if s.at >= settle and (killed is None or s.at < killed.at)]
    _lease_line("before the kill" if killed else "settled", before, providers, instances)
    if killed is not None and killed.takeover is not None:
        after = [s for s in rows if s.at >= killed.at + killed.takeover + settle]
        _lease_line("after the kill", after, providers, instances - 1)
    first = {n: next(s.rss[n] for s in rows if n in s.rss) for n in range(instances)}
    for n in range(instances):
        seen = [s.rss[n] for s in rows if n in s.rss]
        print(f"  RSS i{n}: {first[n]:.0f} -> {seen[-1]:.0f} MB, peak {max(seen):.0f} MB   "
              f"target <= {RSS_MB:.0f} MB  ratio {max(seen) / RSS_MB:.2f}")  # fmt: skip


def _lease_line(label: str, rows: list[Sample], providers: int, instances: int) -> None:
    ceiling = math.ceil(providers / instances)
    if not rows:
        print(f"  leases {label}: no sample once settled")
        return
    most = max(max(s.leases.values(), default=0) for s in rows)
    last = sorted(rows[-1].leases.values(), reverse=True)
    print(f"  leases {label}: most held by one instance {most}   target <= ceil({providers}"
          f"/{instances}) = {ceiling}  ratio {most / ceiling:.2f}   last {last}")  # fmt: skip
    spread = next(
        (s.at for s in rows
         if sum(s.leases.values()) == providers and max(s.leases.values()) <= ceiling),
        None,
    )  # fmt: skip
    if spread is None:
        print("    never spread within the target")
    else:
        print(f"    first within the target, every lease held, at {spread:.0f} s")


def print_sweeps(
    sims: list[Simulator], sampler: Sampler, synced: dict[str, list[dict[str, object]]]
) -> None:
    print("\nsweeps: each orders pass, seconds (ratio to ideal)   target <= "
          f"{WALL_PER_IDEAL}x ideal = ceil(checked/batch) x latency / {CONCURRENCY}")  # fmt: skip
    print(f"  {'prov':<5}{'ms':>4}{'batch':>6}{'orders':>8}  passes: checked calls s (x ideal)")
    for sim in sims:
        passes = sorted(sampler.passes.get(sim.name, ()))
        cells = []
        for started, success in passes:
            seconds = (success - started).total_seconds()
            line = _nearest(synced.get(sim.name, []), success)
            if line is None:
                cells.append(f"? ? {seconds:.1f}")
                continue
            checked, calls = int(str(line["checked"])), int(str(line["calls"]))
            ideal = math.ceil(checked / sim.batch) * sim.latency / CONCURRENCY
            ratio = f" ({seconds / ideal:.1f}x)" if ideal > 0 else ""
            cells.append(f"{checked} {calls} {seconds:.1f}{ratio}")
        print(f"  {sim.name:<5}{sim.latency * 1000:>4.0f}{sim.batch:>6}{sim.orders:>8}  "
              + " | ".join(cells))  # fmt: skip


def _nearest(lines: list[dict[str, object]], success: datetime) -> dict[str, object] | None:
    """The log line of the pass that succeeded at ``success`` (logged just before)."""
    best, distance = None, 5.0
    for line in lines:
        at = datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00"))
        if success.tzinfo is None:
            success = success.replace(tzinfo=UTC)
        if (gap := abs((at - success).total_seconds())) < distance:
            best, distance = line, gap
    return best


def syncd_cpu_seconds(sampler: Sampler) -> list[float]:
    """Each instance's CPU seconds over the run (a killed one's until its last sample)."""
    return [
        max((s.cpu[n] for s in sampler.samples if n in s.cpu), default=0.0)
        for n in range(len(sampler.pids))
    ]


def print_pickup(consumer: Consumer, killed: Killed | None, started: float) -> None:
    taken = consumer.latencies()
    if len(taken) < 2:
        print(f"INSERT -> sent    {len(taken)} orders taken: too few for a p95")
        return
    seconds = [s for _, s in taken]
    q = statistics.quantiles(seconds, n=20)
    print(f"INSERT -> sent    p50 {statistics.median(seconds):.2f} s  p95 {q[18]:.2f} s  "
          f"max {max(seconds):.2f} s  over {len(seconds)} orders"
          f"{f', {len(consumer.pending())} never sent' if consumer.pending() else ''}")  # fmt: skip
    if killed is not None and killed.takeover is not None:
        end = started + killed.at + killed.takeover
        calm = [s for at, s in taken if not started + killed.at - 5 <= at <= end]
        if len(calm) >= 2:
            p95 = statistics.quantiles(calm, n=20)[18]
            print(f"  outside the kill's takeover: p95 {p95:.2f} s over {len(calm)} orders")


def local_orders(engine: sa.Engine) -> set[tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.orders.c.provider, t.orders.c.provider_order_id)
            .where(t.orders.c.link.like("https://b.example/%"))
            .where(t.orders.c.provider_order_id.is_not(None))
        )  # fmt: skip
        return {(p, int(i)) for p, i in rows}


def print_kill(
    killed: Killed | None, sims: list[Simulator], local: set[tuple[str, int]], reader: FeedReader
) -> None:
    links: Counter[str] = Counter()
    orphans = 0
    for sim in sims:
        text = sim.links.read_text(encoding="utf-8") if sim.links.exists() else ""
        for line in text.splitlines():
            order_id, link = line.split()
            links[link] += 1
            orphans += (sim.name, int(order_id)) not in local
    dupes = sum(n - 1 for n in links.values() if n > 1)
    if killed is None:
        print("kill -9           not done (one instance, or --no-kill)")
    elif killed.takeover is None:
        print("kill -9           no takeover seen")
    else:
        print(f"kill -9           instance {killed.instance} at {killed.at:.0f} s, holding "
              f"{len(killed.leases)} leases, sweeping {', '.join(killed.running) or 'none'}; "
              f"all held by others after {killed.takeover:.1f} s")  # fmt: skip
    print(f"duplicates        {dupes} links sent twice, {orphans} provider orders no local "
          f"row names, of {sum(links.values())} taken   target 0")  # fmt: skip
    print(f"missed changes    {len(reader.missed())} of {reader.total():,} committed "
          "order_changes rows the reader never saw   target 0")  # fmt: skip


if __name__ == "__main__":
    main()
