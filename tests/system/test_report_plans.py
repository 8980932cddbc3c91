"""``syncd report`` reads a provider's orders by range of the indexes made for it, on
every backend: those sent in its window by ``ix_orders_provider_sent``, those finished in
it by ``ix_orders_provider_finished``, so its cost follows the window, not the shop's
years. On SQLite, where a consumer may write a time in any form, the rows whose times are
not in syncd's form are found through the partial indexes ``ix_orders_odd_sent`` and
``ix_orders_odd_finished`` alone:
no statement judges the times of every row of the window (SQLite's date functions, three
times a row, were more than half of a month's report at a million orders).

Each read is captured as the storage layer sends it (``Driver.run``), and planned by the
server itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.errors import StorageError
from syncd.storage import Storage
from tests.query_plans import order_selects, plan_of, stocked

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ROWS = 6_000  # over 300 days: a 3-day window holds a hundredth
PROVIDERS = ("alpha", "beta")
ODD = ("ix_orders_odd_sent", "ix_orders_odd_finished")  # SQLite's partial indexes
INDEXES = ("ix_orders_provider_sent", "ix_orders_provider_finished", *ODD)


def _row(i: int, now: datetime) -> tuple[Any, ...]:
    """(provider, provider order id, state, created, sent, finished) of order ``i``."""
    sent = now - timedelta(days=300) * (1 - i / ROWS)
    return PROVIDERS[i % 2], i, "done", sent, sent, sent + timedelta(minutes=5)


@pytest.fixture
def filled(any_db_url: str) -> Iterator[Storage]:
    storage = stocked(
        any_db_url,
        PROVIDERS,
        ("state", "created_at", "submitted_at", "finished_at"),
        lambda d: [
            (*row[:3], *(d.time(t) for t in row[3:]))
            for row in (_row(i, NOW) for i in range(1, ROWS + 1))
        ],
    )
    yield storage
    storage.close()


def report_reads(storage: Storage, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """The SELECTs on ``orders`` the report sends for one provider's three days."""
    with order_selects(monkeypatch) as sent:
        tally = storage.order_tally("alpha", NOW - timedelta(days=3), NOW)
    assert 0 < sum(n for *_, n in tally.per_day) <= ROWS // 100  # the window's, not all
    return sent


def indexes_used(storage: Storage, sql: str, params: Any) -> list[str]:
    """The report's indexes ``sql``'s plan reads ``orders`` by; a scan of the table or
    another index shows as itself."""
    dialect = storage.engine.dialect.name
    plan = plan_of(storage.engine, sql, params)
    if dialect not in ("sqlite", "postgresql"):  # MariaDB's rows, one a table read
        return [str(row["key"]) for row in plan if row["table"] == "orders" and row["select_type"]]
    lines = [str(line) for line in plan]
    if dialect == "sqlite":
        reads = [line for line in lines if line.startswith(("SCAN orders", "SEARCH orders"))]
    else:
        # A bitmap's heap scan reads the rows its index scan found: the index scan tells.
        reads = [line for line in lines if " Scan " in line and "Bitmap Heap" not in line]
    return [next((i for i in INDEXES if f" {i} " in f"{line} "), line) for line in reads]


def test_the_report_reads_orders_by_range_of_its_indexes(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = report_reads(filled, monkeypatch)
    sqlite = filled.engine.dialect.name == "sqlite"
    assert len(sent) == (5 if sqlite else 3)  # odd rows twice, two sent ranges, the finished
    for sql, params in sent:
        used = indexes_used(filled, sql, params)
        assert used and set(used) <= set(INDEXES), (sql, used)


def test_sqlite_finds_the_odd_rows_by_their_partial_index_and_judges_no_other(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The odd-row read repeats the index's condition (SQLite uses a partial index only
    for a WHERE that does: a change to one but not the other would judge every row of the
    provider again), and the counting statements evaluate no date function."""
    if filled.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite keeps times in forms syncd never writes")
    (*odd, _, _, _) = reads = report_reads(filled, monkeypatch)
    counting = reads[len(ODD) :]
    assert [indexes_used(filled, *read) for read in odd] == [[name] for name in ODD]
    assert all("julianday" not in sql for sql, _ in counting)


def test_without_the_partial_indexes_the_report_fails_rather_than_judge_every_row(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: the odd-row reads name their indexes, and with one gone
    the report stops with the database's error instead of reading every finished row."""
    if filled.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite keeps times in forms syncd never writes")
    with filled.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP INDEX {ODD[1]}")
    with pytest.raises(StorageError, match="no such index"):
        report_reads(filled, monkeypatch)


def test_with_odd_rows_the_counts_leave_them_out_through_the_partial_indexes(
    filled: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order a shop inserted the documented way (``created_at`` left to its default,
    CURRENT_TIMESTAMP: no microseconds) and that was never sent (rejected, cancelled while
    queued) is an odd row for good. With one, each counting statement leaves the
    provider's odd rows out by id: those ids must come from the partial indexes, not from
    every row of the provider judged by the date functions (a million orders: 2 s a
    statement, three statements, where the whole report took under one)."""
    if filled.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite keeps times in forms syncd never writes")
    with filled.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO orders (provider, state, created_at) VALUES ('alpha', 'rejected', ?)",
            ((NOW - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),),
        )
    with order_selects(monkeypatch) as reads:
        tally = filled.order_tally("alpha", NOW - timedelta(days=3), NOW)
    assert [o.state for o in tally.odd] == ["rejected"]
    counting = reads[len(ODD) :]
    assert len(counting) == 3
    for (sql, params), by in zip(counting, INDEXES[:1] * 2 + INDEXES[1:2], strict=True):
        # The range counted, then the odd rows left out: each by its partial index.
        assert sorted(indexes_used(filled, sql, params)) == sorted([by, *ODD]), sql
