"""Benchmark: the catalog job against a provider with N packages (10,000 by default).

Not a test: it prints figures. Run it from the repository root:

    python tests/benchmarks/catalog.py --packages 10000

The simulator runs in its own process (latency 0) with N packages. Three syncs run in
turn against one database: the first fills an empty catalog, the second finds nothing
changed, the third finds about 1% of the prices changed (the stored rates of every
hundredth package are altered first, which is what the job sees when the provider
reprices them). Each is timed in this process around the job alone, as ``syncd sync
catalog`` runs it (under the provider's lease, fenced), so interpreter start-up, imports
and the schema migration are left out; beside the wall time, the CPU time of this
process during the job, which a busy machine disturbs less. The same three then run as
``syncd sync catalog`` processes against a second database, for the figure a person at a
terminal sees. The time the simulator takes to answer a bare request comes first: it is
part of every sync's wall time and no part of syncd's work.

``--database`` takes a PostgreSQL URL of a server where the user may create databases
(``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``): the benchmark creates its
two databases there and drops them afterwards. Without it, SQLite files in a temporary
directory are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import sqlalchemy as sa
from children import database

from syncd import logs
from syncd.config import Config, load_config
from syncd.jobs.leases import wait_for_lease
from syncd.jobs.runner import ProviderRunner
from syncd.provider import DIALECTS
from syncd.storage import Storage, open_storage
from syncd.storage import tables as t

TOKEN = "bench-token"
PROVIDER = "bench"
# Wall seconds each sync of 10,000 packages should take at most, scaled linearly for
# another --packages. "1% repriced" is a reply that differs from the stored catalog (1 %
# of the stored rates altered, and the last reply forgotten): it is read and compared in
# full, so it is held to the first sync's target.
TARGETS = {"first": 0.3, "unchanged": 0.1, "1% repriced": 0.3}
REPRICED_EVERY = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packages", type=int, default=10_000)
    parser.add_argument(
        "--database", help="a PostgreSQL server URL (default: SQLite files in a temporary dir)"
    )
    parser.add_argument("--no-cli", action="store_true", help="skip the `syncd sync` processes")
    args = parser.parse_args()
    scale = args.packages / 10_000

    with (
        tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp,
        simulator(args.packages) as url,
        database(args.database, Path(tmp) / "inproc.db") as inproc_url,
        database(args.database, Path(tmp) / "cli.db") as cli_url,
    ):
        print(f"packages  {args.packages}   database  {sa.engine.make_url(inproc_url).drivername}")
        print(f"the simulator's answer alone (a bare request): {bare_answer(url):.3f} s")
        for database_url in (inproc_url, cli_url):
            migrated(database_url)
        config = write_config(Path(tmp) / "inproc.toml", url, inproc_url)
        figures = asyncio.run(in_process(load_config(config)))
        cli: dict[str, float] = {}
        if not args.no_cli:
            cli = cli_runs(write_config(Path(tmp) / "cli.toml", url, cli_url), cli_url)
        for label, (seconds, cpu, summary) in figures.items():
            target = TARGETS[label] * scale
            ratio = seconds / target
            line = (
                f"{label:<12} {seconds:6.3f} s  target {target:.3f} s  ratio {ratio:4.2f}"
                f"   cpu {cpu:.3f} s"
            )
            if label in cli:
                line += f"   (syncd sync catalog process: {cli[label]:.2f} s)"
            print(line)
            print(f"{'':<12} {summary}")


@contextlib.contextmanager
def simulator(packages: int) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd.simulator", "--token", TOKEN,
         "--packages", str(packages), "--latency", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        yield process.stdout.readline().split()[1]
    finally:
        process.terminate()
        process.communicate(timeout=30)


def write_config(path: Path, provider_url: str, database_url: str) -> Path:
    path.write_text(
        f'[database]\nurl = "{database_url}"\n[logging]\nformat = "json"\n'
        f'[[providers]]\nname = "{PROVIDER}"\nurl = "{provider_url}"\ntoken = "{TOKEN}"\n',
        encoding="utf-8",
    )
    return path


def bare_answer(url: str) -> float:
    """Wall seconds of the simulator's catalog answer to a bare request, best of three: the
    part of each sync's time that is the provider's, not syncd's."""
    action = DIALECTS["api_token"].list_action
    with httpx.Client() as client:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            client.post(url, data={"api_token": TOKEN, "action": action}).raise_for_status()
            best = min(best, time.perf_counter() - started)
    return best


def migrated(url: str) -> None:
    """Bring the schema to the newest revision in a process of its own: the measuring
    process then opens a database as ``syncd sync`` finds it, importing no Alembic (which
    would leave it a larger heap for the garbage collector to walk)."""
    code = "import sys; from syncd.storage import open_storage; open_storage(sys.argv[1]).close()"
    subprocess.run([sys.executable, "-c", code, url], check=True)


async def in_process(config: Config) -> dict[str, tuple[float, float, str]]:
    logs.configure(fmt="json", level="critical")  # as a one-shot command does
    storage = await asyncio.to_thread(open_storage, config.database.connect_url)
    try:
        storage.register_providers((p.name, p.url) for p in config.providers)
        figures = {}
        for label in TARGETS:
            if label == "1% repriced":
                reprice(storage)
            figures[label] = await one_sync(config, storage)
        return figures
    finally:
        storage.close()


async def one_sync(config: Config, storage: Storage) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (of this process, every thread) and summary of one
    catalog job, under the lease as the CLI runs it. On a shared machine the CPU figure
    moves less than the wall one; the simulator's CPU is its own process's."""
    provider = config.providers[0]
    ttl = config.cluster.lease_ttl.total_seconds()
    lease = await wait_for_lease(storage, provider.name, ttl, wait=10)
    assert not isinstance(lease, str), f"the lease is held by {lease}"
    try:
        async with ProviderRunner(provider, storage, lease=lease) as runner:
            started, cpu = time.perf_counter(), time.process_time()
            result = await runner.run("catalog")
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await asyncio.to_thread(storage.release_lease, lease)
    if not result.ok:
        sys.exit(f"the catalog job failed: {result.message}")
    return seconds, cpu, result.message


def reprice(storage: Storage) -> None:
    """Alter the stored rate of every hundredth package, and forget the last reply applied
    (as a new reply would): the next sync reads the reply whole and sees them changed."""
    with storage.engine.begin() as conn:
        conn.execute(
            sa.update(t.packages)
            .where(t.packages.c.provider == PROVIDER)
            .where(t.packages.c.service_id % REPRICED_EVERY == 0)
            .values(rate=Decimal("0.0001"))
        )
        conn.execute(sa.update(t.providers).values(catalog_digest=None))


def cli_runs(config: Path, url: str) -> dict[str, float]:
    """The same syncs as ``syncd sync catalog`` processes, interpreter start-up included."""
    storage = open_storage(url)
    figures = {}
    try:
        for label in TARGETS:
            if label == "1% repriced":
                reprice(storage)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "syncd", "--config", str(config), "sync", "catalog"],
                check=True,
                capture_output=True,
            )
            figures[label] = time.perf_counter() - started
    finally:
        storage.close()
    return figures


if __name__ == "__main__":
    main()
