"""Benchmark: the reading commands (`syncd status`, `syncd report`, `syncd order list`) on
a database holding 100,000 orders, against 0.3 s of wall each.

Not a test: it prints figures. Run it from the repository root:

    python tests/benchmarks/status.py
    python tests/benchmarks/status.py --orders 1000000 --runs 5 --database URL
    python tests/benchmarks/status.py --only status,order   # those commands alone

The database gets the schema and three providers the way syncd writes them (through the
storage layer), then what a shop that has run for a while holds, inserted with the
driver's executemany as a consumer could: N orders across the states (most of them
finished long ago), a catalog, a day of balance snapshots and a month of ledger rows per
provider, job outcomes, a lease, an instance and a webhook backlog. The orders were
placed evenly over the last year (a 30-day report reads a twelfth of them), and the
finished ones carry what syncd writes (a status, a charge, when they finished). Then
`syncd status` (and `--json`), `syncd report` (its default 30 days, and `--days 7`),
`syncd order list` (the newest 50; and filtered by state, and by provider and state) and
`syncd --help` run as child processes, each once to warm the file cache and compile the
bytecode (as installing does), then ``--runs`` times: the best and median wall time of
each, their ratio to the target, and the median CPU time (steadier on a busy machine).
The whole process counts: interpreter start-up, imports, the queries, the output.

``--database`` takes a PostgreSQL or MariaDB URL of a server where the user may create
databases (``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``,
``mysql+mysqldb://root@127.0.0.1:3306/mysql``): the benchmark creates its database there
and drops it afterwards. Without it, a SQLite file in a temporary directory is used.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from children import child_env, database, measure

TARGET = 0.3  # seconds of wall time for the whole process of each reading command
PROVIDERS = ("alpha", "beta", "gamma")
# How a shop's orders are spread over the states: nearly all finished.
STATES = {
    "done": 80.0, "rejected": 3.0, "missing": 1.0, "abandoned": 1.0, "active": 13.0,
    "queued": 1.5, "submitting": 0.2, "ambiguous": 0.3,
}  # fmt: skip
PACKAGES = 1000  # per provider
FINISHED = ("done", "rejected", "missing", "abandoned")
# The commands timed, each against TARGET.
COMMANDS = (
    ["status"], ["status", "--json"], ["report"], ["report", "--days", "7"],
    ["order", "list"], ["order", "list", "--state", "active"],
    ["order", "list", "--provider", PROVIDERS[1], "--state", "rejected"], ["--help"],
)  # fmt: skip
PROBE = (
    "import sys; from syncd.cli import main; main(sys.argv[1:]); "
    "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & "
    "{'sqlalchemy', 'sqlmodel', 'pydantic', 'structlog'})) or '-', file=sys.stderr)"
)

Insert = Callable[[str, Sequence[Sequence[Any]]], None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command")
    parser.add_argument(
        "--database",
        help="a PostgreSQL or MariaDB server URL (default: a SQLite file in a temporary dir)",
    )
    parser.add_argument(
        "--only",
        metavar="WORDS",
        help="time only the commands starting with these words, comma-separated"
        " (such as status,order); default all",
    )
    args = parser.parse_args()
    wanted = set(args.only.split(",")) if args.only else None

    with (
        tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp,
        database(args.database, Path(tmp) / "syncd.db") as url,
    ):
        config = write_config(Path(tmp) / "syncd.toml", url)
        open_count = fill(url, args.orders)
        kind = "SQLite" if not args.database else "MariaDB" if "mysql" in url else "PostgreSQL"
        print(f"database   {kind}, {args.orders:,} orders ({open_count:,} open),"
              f" {len(PROVIDERS)} providers")  # fmt: skip
        print(f"target     {TARGET:.2f} s of wall for the whole process")
        heavy = subprocess.run(
            [sys.executable, "-c", PROBE, "--config", str(config), "status"],
            capture_output=True, text=True, check=True,
        ).stderr.strip().splitlines()[-1]  # fmt: skip
        print(f"status imports of SQLAlchemy, SQLModel, pydantic, structlog: {heavy}")
        # An installed syncd has its bytecode compiled (pip does it); with bytecode writing
        # off in the environment, every run would compile syncd's modules again. The
        # children keep theirs under the temporary directory, not in the source tree.
        env = child_env(tmp)
        print(f"{'command':<52}{'best':>9}{'median':>9}{'best/target':>13}"
              f"{'median/target':>15}{'CPU median':>12}")  # fmt: skip
        for words in COMMANDS:
            if wanted is not None and words[0].removeprefix("--") not in wanted:
                continue
            measured = timed(["--config", str(config), *words], args.runs, env)
            walls = [wall for wall, _ in measured]
            best, median = min(walls), statistics.median(walls)
            cpu = statistics.median(cpu for _, cpu in measured)
            label = "syncd " + " ".join(words)
            print(f"{label:<52}{best:>7.3f} s{median:>7.3f} s{best / TARGET:>13.2f}"
                  f"{median / TARGET:>15.2f}{cpu:>10.3f} s")  # fmt: skip
        walls = scrapes(url, args.runs)
        best, median = min(walls), statistics.median(walls)
        print(f"{'a /metrics scrape':<52}{best:>7.3f} s{median:>7.3f} s{best / TARGET:>13.2f}"
              f"{median / TARGET:>15.2f}")  # fmt: skip


def scrapes(url: str, runs: int) -> list[float]:
    """Wall seconds of one /metrics body each, as the instance that holds every lease
    builds it (all the database's series, read in one transaction), in this process."""
    import time  # noqa: PLC0415
    from dataclasses import replace  # noqa: PLC0415

    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    from syncd.metrics import Known, Metrics  # noqa: PLC0415
    from syncd.models import Lease  # noqa: PLC0415
    from syncd.storage import open_storage  # noqa: PLC0415
    from syncd.storage.overview import Monitored  # noqa: PLC0415

    storage = open_storage(url)
    until = datetime.now(UTC) + timedelta(hours=1)

    class Everything:
        me = "bench"

        def providers(self) -> list[Known]:
            return [
                Known(n, ["services", "balance", "status", "add"], {"orders": 60})
                for n in PROVIDERS
            ]

        def held(self) -> list[str]:
            return list(PROVIDERS)

        def monitored(self) -> Monitored:
            leases = {n: Lease(n, self.me, 1, until) for n in PROVIDERS}
            return replace(storage.monitored(30), leases=leases)

    metrics = Metrics()
    metrics.watch(Everything())
    walls = []
    for _ in range(runs + 1):  # the first warms the connection pool
        started = time.perf_counter()
        generate_latest(metrics.registry)
        walls.append(time.perf_counter() - started)
    storage.close()
    return walls[1:]


def write_config(path: Path, url: str) -> Path:
    providers = "".join(
        f'[[providers]]\nname = "{name}"\nurl = "https://{name}.example/api/v2"\n'
        f'token = "bench-token-{name}"\n'
        for name in PROVIDERS
    )
    path.write_text(
        f'[database]\nurl = "{url}"\n[logging]\nformat = "json"\n'
        f'[[webhooks]]\nname = "ops"\nurl = "https://hooks.example/syncd"\n{providers}',
        encoding="utf-8",
    )
    return path


def fill(url: str, orders: int) -> int:
    """The schema and the providers as syncd writes them, then a shop's rows; the number
    of open orders."""
    from syncd.storage import open_storage  # noqa: PLC0415

    storage = open_storage(url)
    storage.register_providers((n, f"https://{n}.example/api/v2") for n in PROVIDERS)
    storage.close()
    now = datetime.now(UTC)
    rng = random.Random(7)
    with inserting(url) as (insert, stored):
        for name in PROVIDERS:
            insert(
                "INSERT INTO packages (provider, service_id, name, type, category, rate, min,"
                " max, active, first_seen_at, updated_at, extra)"
                " VALUES (?, ?, ?, 'Default', 'Followers', ?, 10, 10000, ?, ?, ?, '{}')",
                [(name, i, f"Service {i}", stored(Decimal("0.5")), i % 10 != 0,
                  stored(now), stored(now)) for i in range(PACKAGES)],
            )  # fmt: skip
            insert(
                "INSERT INTO balance_snapshots (provider, balance, currency, observed_at)"
                " VALUES (?, ?, 'USD', ?)",
                [(name, stored(Decimal(500 - 5 * hour)), stored(now - timedelta(hours=hour)))
                 for hour in range(30, 0, -1)],
            )  # fmt: skip
            # The money ledger: a charge row per order, over the last 30 days (status
            # reads the last day's of the current ledger).
            spread = max(1, orders // len(PROVIDERS))
            insert(
                "INSERT INTO ledger (provider, at, kind, order_id, amount, currency,"
                " balance_after) VALUES (?, ?, 'charge', ?, ?, 'USD', ?)",
                [(name, stored(now - timedelta(days=30) * (1 - i / spread)), i,
                  stored(Decimal("-0.05")), stored(Decimal(10_000) - Decimal("0.05") * i))
                 for i in range(spread)],
            )  # fmt: skip
            insert(
                "UPDATE providers SET ledger_opened_at = ?, ledger_currency = 'USD',"
                " ledger_opening = ? WHERE name = ?",
                [(stored(now - timedelta(days=31)), stored(Decimal(10_000)), name)],
            )
            insert(
                "INSERT INTO jobs (provider, job, last_started_at, last_success_at)"
                " VALUES (?, ?, ?, ?)",
                [(name, job, stored(now), stored(now)) for job in ("catalog", "balance", "orders")],
            )  # fmt: skip
        states = rng.choices(list(STATES), weights=list(STATES.values()), k=orders)
        year = timedelta(days=365)
        for start in range(0, orders, 10_000):
            insert(
                "INSERT INTO orders (provider, provider_order_id, service_id, link, quantity,"
                " state, status, charge, currency, created_at, submitted_at, checked_at,"
                " next_check_at, finished_at)"
                " VALUES (?, ?, ?, 'https://x.example/p', 100, ?, ?, ?, 'USD', ?, ?, ?, ?, ?)",
                [order_row(i, states[i], now - year * (1 - i / orders), stored)
                 for i in range(start, min(start + 10_000, orders))],
            )  # fmt: skip
        far = stored(now + timedelta(days=3650))  # held by the database's clock for years
        insert(
            "INSERT INTO leases (name, holder, epoch, acquired_at, renewed_at, expires_at)"
            " VALUES (?, 'host:1:1', 1, ?, ?, ?)",
            [(PROVIDERS[0], stored(now), stored(now), far)],
        )
        insert(
            "INSERT INTO instances (id, host, pid, version, started_at, heartbeat_at)"
            " VALUES ('host:1:1', 'host', 1, '0.1.0', ?, ?)",
            [(stored(now), far)],
        )
        insert(
            "INSERT INTO alerts (id, event, provider, payload, created_at)"
            " VALUES (?, 'balance.low', ?, '{}', ?)",
            [(i, PROVIDERS[0], stored(now)) for i in range(1, 51)],
        )
        insert(
            "INSERT INTO alert_deliveries (alert_id, webhook, attempts, last_error)"
            " VALUES (?, 'ops', 1, 'HTTP 503')",
            [(i,) for i in range(1, 51)],
        )
    # The ledger by day, as syncd keeps it with the rows it writes (and migration 0013
    # builds it from rows already written): the rows above went in past syncd.
    from syncd.storage.driver import Driver  # noqa: PLC0415
    from syncd.storage.ledger_days import catch_up  # noqa: PLC0415

    def rebuild(conn: Any) -> None:
        for name in PROVIDERS:
            catch_up(Driver(conn), name)

    storage = open_storage(url)
    storage._write(rebuild, fenced=False)
    storage.close()
    return sum(1 for s in states if s in ("queued", "submitting", "active", "ambiguous"))


def order_row(
    i: int, state: str, created: datetime, stored: Callable[[object], object]
) -> tuple[object, ...]:
    """Order ``i`` placed at ``created`` as syncd leaves it in ``state``: sent a minute
    later unless still queued, checked and charged once sent, finished two hours later."""
    sent = None if state == "queued" else created + timedelta(minutes=1)
    status = {"done": "Completed", "active": "In progress"}.get(state)
    charge = Decimal("0.05") if state in ("done", "active") else None
    checked = None if sent is None else sent + timedelta(minutes=5)
    due = checked + timedelta(minutes=10) if state == "active" and checked else None
    finished = created + timedelta(hours=2) if state in FINISHED else None
    return (
        PROVIDERS[i % len(PROVIDERS)], i, 1 + i % PACKAGES, state, status, stored(charge),
        stored(created), stored(sent), stored(checked), stored(due), stored(finished),
    )  # fmt: skip


@contextlib.contextmanager
def inserting(url: str) -> Iterator[tuple[Insert, Callable[[object], object]]]:
    """executemany on the driver's own connection, in one transaction, and the form values
    take in that database (SQLite: times as syncd's UTC text, money as text)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))

        def on_sqlite(sql: str, rows: Sequence[Sequence[Any]]) -> None:
            conn.executemany(sql, rows)

        def sqlite_value(value: object) -> object:
            if isinstance(value, datetime):
                return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
            return str(value) if isinstance(value, Decimal) else value

        with conn:
            yield on_sqlite, sqlite_value
        conn.close()
        return
    if "mysql" in url:
        with _on_mariadb(url) as pair:
            yield pair
        return
    import psycopg  # noqa: PLC0415

    from syncd.storage.urls import conninfo  # noqa: PLC0415

    with psycopg.connect(conninfo(url)) as pg, pg.cursor() as cursor:

        def on_postgres(sql: str, rows: Sequence[Sequence[Any]]) -> None:
            cursor.executemany(sql.replace("?", "%s"), rows)

        yield on_postgres, lambda value: value
    # What autovacuum does to a live database: statistics, and the visibility map that lets
    # the open orders be counted from ix_orders_due alone.
    with psycopg.connect(conninfo(url), autocommit=True) as pg:
        pg.execute("VACUUM ANALYZE")


@contextlib.contextmanager
def _on_mariadb(url: str) -> Iterator[tuple[Insert, Callable[[object], object]]]:
    """As ``inserting``, on MariaDB: times naive UTC, as syncd's backend writes them."""
    import importlib  # noqa: PLC0415

    from syncd.storage.backends.mariadb import MariaDB, plain_parts  # noqa: PLC0415

    parts = plain_parts(url)
    assert parts is not None, "a mysql+mysqldb:// or mysql+pymysql:// URL"
    driver, connect = parts
    dbapi: Any = importlib.import_module({"mysqldb": "MySQLdb"}.get(driver, driver))
    conn = dbapi.connect(**connect, charset="utf8mb4")
    cursor = conn.cursor()
    cursor.execute("SET time_zone = '+00:00'")

    def on_mariadb(sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cursor.executemany(sql.replace("?", "%s"), rows)

    def mariadb_value(value: object) -> object:
        return MariaDB.time_value(value) if isinstance(value, datetime) else value

    yield on_mariadb, mariadb_value
    conn.commit()
    # What InnoDB's persistent statistics reach on their own after the load.
    for table in ("orders", "ledger", "packages", "balance_snapshots"):
        cursor.execute(f"ANALYZE TABLE {table}")
        cursor.fetchall()
    conn.close()


def timed(words: list[str], runs: int, env: dict[str, str]) -> list[tuple[float, float]]:
    """Wall and CPU seconds of ``runs`` child processes ``syncd WORDS``, after one that
    warms the file cache and compiles the bytecode."""
    command = [sys.executable, "-m", "syncd", *words]
    measured = []
    for _ in range(runs + 1):
        wall, cpu, _, _ = measure(command, env, keep_output=False)
        measured.append((wall, cpu))
    return measured[1:]


if __name__ == "__main__":
    main()
