"""``syncd status`` counts orders from an index alone, on every backend: its reads of
``orders`` never read a row they do not count, so their cost follows the open (and the
held) orders, never the years of finished ones a busy shop keeps, nor every queued
order's error (see docs/performance.md, "Reading commands at a million orders").

Each read is captured as the storage layer sends it (``Driver.run``), so the test follows
the statements as they change, and run with the server's own account of what it read:
SQLite's plan (an index that covers the read, or rows read from the table), PostgreSQL's
EXPLAIN ANALYZE (rows read and dropped by a filter), MariaDB's ANALYZE (rows read, and
the share of them kept).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.lifecycle import HELD
from syncd.storage import Storage
from tests.query_plans import analyze, order_selects, plan_of, stocked

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROWS = 20_000  # a tenth queued, one in a hundred of those held; a fiftieth active
PROVIDERS = ("alpha", "beta")


def _row(i: int) -> tuple[str, int | None, str, str | None]:
    """(provider, provider order id, state, error) of order ``i``."""
    provider = PROVIDERS[(i // 1000) % 2]
    if i % 10 == 0:
        error = (
            f"{HELD}the package's rate 2 is above the order's max_rate 1" if i % 1000 == 0 else None
        )
        return provider, None, "queued", error
    return provider, i, "active" if i % 50 == 1 else "done", None


@pytest.fixture
def filled(any_db_url: str) -> Iterator[Storage]:
    storage = stocked(
        any_db_url,
        PROVIDERS,
        ("state", "error", "created_at"),
        lambda d: [(*_row(i), d.time(NOW)) for i in range(1, ROWS + 1)],
    )
    yield storage
    storage.close()


def status_reads(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[tuple[str, Any]], Any]:
    """The SELECTs on ``orders`` status sends (in the driver's paramstyle, with their
    parameters), and the providers it showed."""
    with order_selects(monkeypatch) as sent:
        shown = storage.overview()
    return sent, shown


def rows_not_counted(engine: sa.Engine, sql: str, params: Any) -> list[str]:
    """What in ``sql``'s run reads rows of ``orders`` it does not count: a scan, a read
    of the table's rows where an index would answer (SQLite), rows dropped by a filter
    (PostgreSQL, MariaDB); empty when it counts from an index alone, row for row."""
    plan = plan_of(engine, sql, params, analyze=True)
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return [
            line
            for line in plan
            if line.startswith(("SCAN orders", "SEARCH orders"))
            and not line.startswith("SEARCH orders USING COVERING INDEX")
        ]
    if dialect == "postgresql":
        return [
            line
            for line in plan
            if "Seq Scan on orders" in line
            or ("Rows Removed by" in line and not line.rstrip().endswith(": 0"))
        ]
    return [
        str(row)
        for row in plan
        if row["table"] == "orders"
        and (
            row["type"] in ("ALL", "index")
            or (float(row["r_rows"] or 0) > 0 and float(row["r_filtered"] or 0) < 100)
        )
    ]


def test_status_counts_open_and_held_orders_from_an_index_alone(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads, shown = status_reads(filled, monkeypatch)
    assert len(reads) == 2  # the open orders per (provider, state), the held ones
    for sql, params in reads:
        assert rows_not_counted(filled.engine, sql, params) == [], sql
    queued = sum(1 for i in range(1, ROWS + 1) if _row(i)[2] == "queued")
    assert [(p.name, p.held, p.orders["queued"]) for p in shown] == [
        (name, 10, queued // 2) for name in PROVIDERS
    ]


def test_the_check_finds_the_queued_orders_read_without_the_held_index(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``ix_orders_held`` the held count reads the error of every queued order:
    the check above sees it (so it can fail), and the open orders still count from the
    due index alone."""
    drop = "DROP INDEX ix_orders_held" + (
        " ON orders" if filled.engine.dialect.name == "mysql" else ""
    )
    with filled.engine.begin() as conn:
        conn.exec_driver_sql(drop)
    analyze(filled.engine)
    (open_orders, held), shown = status_reads(filled, monkeypatch)
    assert rows_not_counted(filled.engine, *held) != []
    assert rows_not_counted(filled.engine, *open_orders) == []
    assert [p.held for p in shown] == [10, 10]
