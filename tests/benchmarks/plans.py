"""Benchmark: the status sweep's statements on a database of N active orders: each one's
query plan and its time per order, to show the cost per order stays flat as N grows.

Not a test: it prints figures. Run it from the repository root:

    python tests/benchmarks/plans.py --orders 100000
    python tests/benchmarks/plans.py --orders 1000000 --database URL

The database gets the schema and two providers through the storage layer, then N active
orders (split between the providers, every other one due now, the rest within the hour),
inserted with the driver's executemany, and the statistics a live database keeps
(PostgreSQL's VACUUM ANALYZE, MariaDB's ANALYZE TABLE; syncd runs no ANALYZE on SQLite,
so none is run there). Then the sweep of one provider runs through ``Storage`` as the
orders job runs it: ``count_due``, then ``--batches`` pages of ``--batch`` due orders from
``due_orders``, each answered (a tenth of the orders changed, a twentieth completed),
planned by ``lifecycle.plan_status_batch`` and written by ``apply_status_answers``.

Every statement the sweep sends is recorded as it runs (SQLAlchemy's cursor events, and
the driver-speed statements of ``storage/driver.py``), so the figures follow the sweep's
code as it changes: for each statement, how often it ran, the rows it returned or
wrote, and its time per order swept. Then each is explained with the parameters it first
ran with: ``EXPLAIN QUERY PLAN`` on SQLite, ``EXPLAIN (ANALYZE, BUFFERS)`` on
PostgreSQL and ``ANALYZE`` on MariaDB (both run the statement, in a transaction rolled
back afterwards).

``--database`` takes a PostgreSQL or MariaDB URL of a server where the user may create
databases; the benchmark creates its database there and drops it afterwards. Without
it, a SQLite file in a temporary directory is used.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from children import database

PROVIDERS = ("alpha", "beta")
CHUNK = 10_000  # orders per executemany while filling


@dataclass
class Seen:
    """One statement as the sweep sent it: the first parameters, and its runs."""

    sql: str
    params: Any
    many: bool
    runs: int = 0
    rows: int = 0
    seconds: float = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000, help="active orders")
    parser.add_argument("--batch", type=int, default=100, help="orders per status batch")
    parser.add_argument("--batches", type=int, default=50, help="batches swept and timed")
    parser.add_argument(
        "--database",
        help="a PostgreSQL or MariaDB server URL (default: a SQLite file in a temporary dir)",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="syncd-plans-") as tmp,
        database(args.database, Path(tmp) / "syncd.db") as url,
    ):
        started = time.perf_counter()
        fill(url, args.orders)
        took = time.perf_counter() - started
        print(f"database   {kind(url)}, {args.orders:,} active orders over"
              f" {len(PROVIDERS)} providers (filled in {took:.0f} s)")  # fmt: skip
        seen, swept = sweep(url, args.batch, args.batches)
        print(f"swept      {swept:,} orders of {PROVIDERS[0]}: {args.batches} batches of"
              f" {args.batch}, after count_due")  # fmt: skip
        print()
        print(f"{'runs':>5}{'rows':>9}{'ms/run':>9}{'µs/order':>10}  statement")
        for s in seen:
            per_run = s.seconds / s.runs * 1000
            print(f"{s.runs:>5}{s.rows:>9}{per_run:>9.3f}{s.seconds / swept * 1e6:>10.1f}  "
                  f"{short(s.sql)}")  # fmt: skip
        total = sum(s.seconds for s in seen)
        print(f"{'':>23}{total / swept * 1e6:>10.1f}  all statements, per order swept")
        print()
        pages = depths(url, args.batch)
        for label, seconds in pages[:2]:
            print(f"due page of {args.batch} {label}: {seconds * 1000:.3f} ms (best of 5)")
        print()
        seen.append(pages[2])
        for s in seen:
            if not s.sql.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
                continue
            print(f"-- {short(s.sql, 160)}")
            for line in explain(url, s):
                print(f"   {line}")


def kind(url: str) -> str:
    return "SQLite" if url.startswith("sqlite") else "MariaDB" if "mysql" in url else "PostgreSQL"


def short(sql: str, width: int = 110) -> str:
    """A statement on one line, its long lists of placeholders (and MariaDB's derived
    table of a batch's rows) cut short."""
    text = " ".join(sql.split())
    text = re.sub(r"((?:%s|\?)(?:, (?:%s|\?)){2,})", "?, ...", text)
    text = re.sub(r"( UNION ALL SELECT \?, \.\.\.)+", " UNION ALL ...", text)
    return text if len(text) <= width else text[: width - 3] + "..."


def fill(url: str, orders: int) -> None:
    """The schema and the providers as syncd writes them, then ``orders`` active orders,
    every other one due now, and the statistics the server would keep."""
    from syncd.storage import open_storage  # noqa: PLC0415
    from syncd.storage.driver import Driver  # noqa: PLC0415

    storage = open_storage(url)
    storage.register_providers((n, f"https://{n}.example/api/v2") for n in PROVIDERS)
    now = datetime.now(UTC)
    rng = random.Random(7)
    sql = (
        "INSERT INTO orders (provider, provider_order_id, service_id, link, quantity, state,"
        " status, status_raw, charge, currency, created_at, submitted_at, checked_at,"
        " next_check_at) VALUES (?, ?, 1, 'https://x.example/p', 100, 'active',"
        " 'In progress', 'In progress', ?, 'USD', ?, ?, ?, ?)"
    )
    for start in range(0, orders, CHUNK):
        with storage.engine.begin() as conn:
            d = Driver(conn)
            rows = []
            for i in range(start, min(start + CHUNK, orders)):
                created = now - timedelta(hours=2, seconds=rng.random() * 3600)
                late = rng.random() * 600 if i % 4 < 2 else -rng.random() * 3600
                rows.append((
                    PROVIDERS[i % len(PROVIDERS)], i + 1, d.money(Decimal("0.05")),
                    d.time(created), d.time(created), d.time(now - timedelta(minutes=20)),
                    d.time(now - timedelta(seconds=late)),
                ))  # fmt: skip
            d.run_many(sql, rows)
    storage.close()
    analyze(url)


def analyze(url: str) -> None:
    """What a live server keeps without being asked: the tables' statistics."""
    if url.startswith("sqlite"):
        return
    import sqlalchemy as sa  # noqa: PLC0415

    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with engine.connect() as conn:
        if "mysql" in url:
            for table in ("orders", "order_changes", "ledger"):
                conn.exec_driver_sql(f"ANALYZE TABLE {table}").fetchall()
        else:
            conn.exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()


def sweep(url: str, batch: int, batches: int) -> tuple[list[Seen], int]:
    """One provider's sweep through ``Storage``, as the orders job runs it, with every
    statement recorded; the statements and the number of orders swept."""
    from syncd.lifecycle import plan_status_batch  # noqa: PLC0415
    from syncd.models import Order, OrderStatus, Status  # noqa: PLC0415
    from syncd.plans import StatusPlan  # noqa: PLC0415
    from syncd.storage import open_storage  # noqa: PLC0415

    storage = open_storage(url)
    provider = PROVIDERS[0]
    now = datetime.now(UTC)
    swept = 0
    with recording(storage.engine) as seen:
        storage.count_due(provider, now, now + timedelta(days=1))
        after = None
        for n in range(batches):
            page, after = storage.due_orders(provider, now, after, batch)
            if not page:
                break

            def plan(rows: list[Order], n: int = n) -> StatusPlan:
                answers = {}
                for o in rows:
                    assert o.provider_order_id is not None
                    poid = o.provider_order_id
                    status = Status.COMPLETED if poid % 20 == n % 20 else Status.IN_PROGRESS
                    remains = 50 if poid % 10 == n % 10 else o.remains
                    answers[poid] = OrderStatus(
                        status, status.value, o.charge, o.start_counter, remains, o.currency
                    )
                return plan_status_batch(
                    rows, answers, datetime.now(UTC),
                    base=timedelta(minutes=5), give_up_after=timedelta(days=30),
                )  # fmt: skip

            written = storage.apply_status_answers([i for i, _ in page], datetime.now(UTC), plan)
            swept += len(written.updates)
    storage.close()
    return list(seen.values()), max(swept, 1)


@contextlib.contextmanager
def recording(engine: Any) -> Iterator[dict[str, Seen]]:
    """Every statement sent on ``engine`` while inside, by its SQL: through SQLAlchemy
    (its cursor events) and through ``Driver`` (its ``run`` and ``run_many``)."""
    import sqlalchemy as sa  # noqa: PLC0415

    from syncd.storage.driver import Driver  # noqa: PLC0415

    seen: dict[str, Seen] = {}

    def note(sql: str, params: Any, many: bool, rows: int, seconds: float) -> None:
        # MariaDB's batch UPDATE differs by its rows' count only: one statement.
        s = seen.setdefault(short(sql, 10**6), Seen(sql, params, many))
        s.runs += 1
        s.rows += rows
        s.seconds += seconds

    def before(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        conn.info["plans_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seconds = time.perf_counter() - conn.info.pop("plans_started")
        rows = max(cursor.rowcount, 0) if not cursor.description else -1
        note(sql, params, many, rows, seconds)

    run, run_many = Driver.run, Driver.run_many

    def timed_run(self: Driver, text: str, params: Sequence[Any] = ()) -> list[Any]:
        started = time.perf_counter()
        result = run(self, text, params)
        note(self.sql(text), tuple(params), False, len(result), time.perf_counter() - started)
        return result

    def timed_many(self: Driver, text: str, rows: Sequence[Sequence[Any]]) -> None:
        started = time.perf_counter()
        run_many(self, text, rows)
        if rows:
            note(self.sql(text), tuple(rows[0]), True, len(rows), time.perf_counter() - started)

    sa.event.listen(engine, "before_cursor_execute", before)
    sa.event.listen(engine, "after_cursor_execute", after)
    Driver.run, Driver.run_many = timed_run, timed_many  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Driver.run, Driver.run_many = run, run_many  # type: ignore[method-assign]
        sa.event.remove(engine, "before_cursor_execute", before)
        sa.event.remove(engine, "after_cursor_execute", after)


def depths(url: str, batch: int) -> tuple[tuple[str, float], tuple[str, float], Seen]:
    """``due_orders`` of the provider not swept, at the first page and at a cursor half
    way through its due orders (none of them written yet, as when a sweep reads ahead
    of its writes): keyset paging costs the same at any depth, or grows with it. The
    deep page's statement, as it was sent, to explain."""
    from syncd.storage import open_storage  # noqa: PLC0415

    storage = open_storage(url)
    provider, now = PROVIDERS[1], datetime.now(UTC)
    due = storage.count_due(provider, now, now + timedelta(days=1))
    with storage.engine.connect() as conn:
        middle = conn.exec_driver_sql(
            "SELECT next_check_at, id FROM orders WHERE provider = 'beta' AND state = 'active'"
            f" AND next_check_at IS NOT NULL ORDER BY next_check_at, id LIMIT 1 OFFSET {due // 2}"
        ).one()
    cursor = (middle[0], middle[1])
    if url.startswith("sqlite"):  # the cursor holds the text SQLite keeps, as due_orders reads
        cursor = (middle[0] if isinstance(middle[0], str) else str(middle[0]), middle[1])
    results = []
    with recording(storage.engine) as seen:
        for label, after in (("first", None), (f"half way through {due:,} due", cursor)):
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                storage.due_orders(provider, now, after, batch)
                best = min(best, time.perf_counter() - started)
            results.append((label, best))
    storage.close()
    deep = [s for s in seen.values() if s.params and len(s.params) > 3]
    return results[0], results[1], deep[0]


def explain(url: str, s: Seen) -> list[str]:
    """The plan of ``s`` with its first parameters, as the database's own EXPLAIN says
    it; a write is run (PostgreSQL, MariaDB) in a transaction rolled back afterwards."""
    import sqlalchemy as sa  # noqa: PLC0415

    engine = sa.create_engine(url, poolclass=sa.NullPool)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if url.startswith("sqlite"):
            cursor.execute("EXPLAIN QUERY PLAN " + s.sql, s.params)
            return [str(row[-1]) for row in cursor.fetchall()]
        if "mysql" in url:
            cursor.execute("SET time_zone = '+00:00'")
            cursor.execute("ANALYZE " + s.sql, s.params)
            names = [d[0] for d in cursor.description]
            keep = ("table", "type", "key", "rows", "r_rows", "filtered", "r_filtered", "Extra")
            return [  # the batch's rows, a derived table of constants, left out
                " ".join(f"{k}={row[names.index(k)]}" for k in keep if k in names)
                for row in cursor.fetchall()
                if row[names.index("table")] and not row[names.index("table")].startswith("<")
            ]
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + s.sql, s.params)
        return [row[0] for row in cursor.fetchall()]
    finally:
        raw.rollback()
        raw.close()
        engine.dispose()


if __name__ == "__main__":
    main()
