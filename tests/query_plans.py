"""What the plan tests share: the statistics a server keeps, and the SELECTs on
``orders`` a piece of syncd sends."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.storage import Storage, open_storage
from syncd.storage.driver import Driver


def analyze(engine: sa.Engine) -> None:
    """The statistics a live server keeps on its own (autovacuum, InnoDB's persistent
    statistics); syncd runs no ANALYZE on SQLite, so none is run there."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(
            "ANALYZE orders" if dialect == "postgresql" else "ANALYZE TABLE orders"
        )


@contextmanager
def order_selects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """The SELECTs on ``orders`` sent through ``Driver.run`` inside the block, in the
    driver's paramstyle, with their parameters."""
    sent: list[tuple[str, Any]] = []
    run = Driver.run

    def recorded(self: Driver, text: str, params: Sequence[Any] = ()) -> list[Any]:
        if text.lstrip().upper().startswith("SELECT") and " FROM orders " in f"{text} ":
            sent.append((self.sql(text), tuple(params)))
        return run(self, text, params)

    monkeypatch.setattr(Driver, "run", recorded)
    try:
        yield sent
    finally:
        monkeypatch.setattr(Driver, "run", run)


def stocked(
    url: str,
    providers: Sequence[str],
    columns: Sequence[str],
    rows: Callable[[Driver], Sequence[Sequence[Any]]],
) -> Storage:
    """A migrated database with ``providers`` and the orders ``rows`` makes (each row:
    provider, provider order id, then ``columns``; one package, link and quantity for
    all), its statistics taken."""
    storage = open_storage(url)
    storage.register_providers((n, f"https://{n}.example/api/v2") for n in providers)
    marks = ", ".join("?" * len(columns))
    with storage.engine.begin() as conn:
        d = Driver(conn)
        d.run_many(
            "INSERT INTO orders (provider, provider_order_id, service_id, link, quantity, "
            f"{', '.join(columns)}) VALUES (?, ?, 1, 'https://x.example/p', 100, {marks})",
            rows(d),
        )
    analyze(storage.engine)
    return storage


def plan_of(engine: sa.Engine, sql: str, params: Any, *, analyze: bool = False) -> list[Any]:
    """``sql``'s plan as the engine tells it: SQLite's and PostgreSQL's lines, MariaDB's
    rows as dicts. With ``analyze``, what running it found (PostgreSQL's ``EXPLAIN
    ANALYZE``, MariaDB's ``ANALYZE``); SQLite's plan says how a table is read, never how
    many rows."""
    dialect = engine.dialect.name
    prefix = (
        "EXPLAIN QUERY PLAN"
        if dialect == "sqlite"
        else "EXPLAIN"
        if not analyze
        else ("EXPLAIN ANALYZE" if dialect == "postgresql" else "ANALYZE")
    )
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute(f"{prefix} {sql}", params)
        rows = cursor.fetchall()
        if dialect in ("sqlite", "postgresql"):
            return [str(row[-1] if dialect == "sqlite" else row[0]) for row in rows]
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in rows]
    finally:
        raw.rollback()
        raw.close()
