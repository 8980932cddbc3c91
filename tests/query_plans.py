"""What the plan tests share: the statistics a server keeps, and the SELECTs on
``orders`` a piece of syncd sends."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

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
