"""The status sweep's reads of ``orders`` seek through an index on every backend: a read
that scans every order for each batch makes a sweep's cost grow with the square of the
orders (see docs/performance.md, "Query plans of the sweep").

Each read is captured as the storage layer sends it (``Driver.run``), so the test follows
the statements as they change, and explained with the parameters it ran with, on a
table holding enough rows, with the statistics the server keeps, for the planner to
prefer an index where one serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.lifecycle import plan_stray
from syncd.models import Order
from syncd.plans import StatusPlan
from syncd.storage import Storage
from syncd.storage.driver import Driver
from tests.query_plans import analyze, order_selects, plan_of, stocked

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ROWS = 20_000  # a twentieth of them active, half of those due: the planner's choice is clear
PROVIDERS = ("alpha", "beta")
PAGE = 100  # due orders per page, and per batch
MOST = 10 * PAGE  # rows a read of one page may expect to examine


@pytest.fixture
def filled(any_db_url: str) -> Iterator[Storage]:
    def rows(d: Driver) -> list[tuple[object, ...]]:
        return [
            (
                PROVIDERS[i % 2], i, "active" if i % 20 == 0 else "done",
                d.time(NOW - timedelta(days=1)), d.time(NOW - timedelta(days=1)),
                d.time(NOW - timedelta(hours=1)),
                d.time(NOW + timedelta(minutes=(i % 40) - 20)) if i % 20 == 0 else None,
            )
            for i in range(1, ROWS + 1)
        ]  # fmt: skip

    storage = stocked(
        any_db_url,
        PROVIDERS,
        ("state", "created_at", "submitted_at", "checked_at", "next_check_at"),
        rows,
    )
    yield storage
    storage.close()


def sweep_reads(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The SELECTs on ``orders`` a sweep of one provider sends, with their parameters: a
    first page of due orders, the next page after its cursor, and the batch's rows read
    for writing (the plan writes nothing, so the rows stay due)."""

    def nothing(rows: list[Order]) -> StatusPlan:
        assert len(rows) == PAGE
        return StatusPlan(NOW, [], [], [])

    with order_selects(monkeypatch) as sent:
        page, after = storage.due_orders(PROVIDERS[0], NOW, None, PAGE)
        assert len(page) == PAGE
        storage.due_orders(PROVIDERS[0], NOW, after, PAGE)
        storage.apply_status_answers([i for i, _ in page], NOW, nothing)
    assert len(sent) == 3
    return sent


def full_scans(engine: sa.Engine, sql: str, params: Any) -> list[str]:
    """The lines of ``sql``'s plan that read every row of ``orders``, or every order of
    a provider (an index on ``provider`` alone), or that expect to examine more than ten
    times the page's rows; empty when each of its reads of ``orders`` seeks to its rows."""
    plan = plan_of(engine, sql, params)
    dialect = engine.dialect.name
    if dialect == "sqlite":
        # A partial index (only rows not sent, or in no state) is no scan of orders.
        whole = re.compile(
            r"SCAN orders\b(?! USING (COVERING )?INDEX ix_orders_(unsent|not_a_state))"
            r"|SEARCH orders USING .*\(provider=\?\)$"
        )
        return [line for line in plan if whole.match(line)]
    if dialect == "postgresql":
        # An index scan under a LIMIT 1 stops at its first row, whatever it estimates.
        limited = ["Limit" in above and "rows=1 " in above for above in ["", *plan[:-1]]]
        return [
            line
            for line, first in zip(plan, limited, strict=True)
            if "Seq Scan on orders" in line or (estimate(line) > MOST and not first)
        ]
    return [
        str(row)
        for row in plan
        if row["table"] == "orders"
        and (row["type"] in ("ALL", "index") or int(row["rows"] or 0) > MOST)
    ]


def estimate(line: str) -> int:
    """The rows a line of PostgreSQL's EXPLAIN expects, 0 for a line without a node."""
    found = re.search(r"rows=(\d+)", line)
    return int(found[1]) if found else 0


def test_the_sweeps_reads_of_orders_seek_through_an_index(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sql, params in sweep_reads(filled, monkeypatch):
        assert full_scans(filled.engine, sql, params) == [], sql


def test_the_check_finds_the_full_scan_left_without_the_due_index(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``ix_orders_due`` the due page reads every order: the check above sees it
    (so it can fail), and the batch's read by id still seeks. ``ix_orders_held`` goes
    too: on MariaDB it indexes every order by (provider, state, ...) as well."""
    on = " ON orders" if filled.engine.dialect.name == "mysql" else ""
    with filled.engine.begin() as conn:
        for index in ("ix_orders_due", "ix_orders_held"):
            conn.exec_driver_sql(f"DROP INDEX {index}{on}")
    analyze(filled.engine)
    due, after_cursor, batch = sweep_reads(filled, monkeypatch)
    assert full_scans(filled.engine, *due) != []
    assert full_scans(filled.engine, *after_cursor) != []
    assert full_scans(filled.engine, *batch) == []


def test_each_orders_pass_finds_unusable_rows_without_reading_every_order(
    filled: Storage,
) -> None:
    """Every provider's orders pass looks for rows no job would take (a state that is no
    state, a queued row that already holds a provider order id, active rows of a provider
    nobody configured). On MariaDB, which has no partial indexes, that read every order:
    each look must seek, on every backend, and still find the rows."""
    with filled.engine.begin() as conn:
        d = Driver(conn)
        d.run_many(
            "INSERT INTO orders (provider, provider_order_id, link, quantity, state,"
            " created_at) VALUES (?, ?, 'https://x.example/p', 100, ?, ?)",
            [
                (PROVIDERS[1], None, "QUEUED", d.time(NOW)),
                (PROVIDERS[0], 77, "queued", d.time(NOW)),
            ],
        )
    analyze(filled.engine)
    sent: list[tuple[str, Any]] = []

    def record(*args: Any) -> None:
        statement, parameters = args[2], args[3]
        if " orders" in statement and statement.lstrip().upper().startswith(("SELECT", "WITH")):
            sent.append((statement, parameters))

    sa.event.listen(filled.engine, "before_cursor_execute", record)
    try:
        settled = filled.apply_stray_orders(NOW, plan_stray)
    finally:
        sa.event.remove(filled.engine, "before_cursor_execute", record)
    assert len(settled) == 2, settled
    assert sent
    for sql, params in sent:
        assert full_scans(filled.engine, sql, params) == [], sql
