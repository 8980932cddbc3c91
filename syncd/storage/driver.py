"""Statements at the driver's speed, for the few paths that write thousands of rows.

SQLAlchemy Core compiles a statement and runs a type processor for every value of every
row (``Money``, ``UTCDateTime``): right for the many small writes, too slow for a status
sweep over 100,000 orders, where it cost more than the database itself. The hot paths
hand plain SQL and plain tuples to the DBAPI cursor through ``exec_driver_sql`` (the door
SQLAlchemy keeps for this), and convert values here, once, to the form each database
stores:

- SQLite keeps times as ``"YYYY-MM-DD HH:MM:SS.ffffff"`` text in UTC, the form
  SQLAlchemy's own ``DATETIME`` writes (so the two kinds of writes compare and sort
  alike), and money as exact decimal text. PostgreSQL takes aware datetimes and Decimals.
- Enumerations go in as their text: psycopg would write an ``Enum``'s *name*.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import sqlalchemy as sa

from syncd.units import money_text


class Driver:
    """One database's paramstyle and value forms, for statements written as SQL text
    with ``?`` placeholders."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"

    def sql(self, text: str) -> str:
        """``text`` in the driver's paramstyle (psycopg takes ``%s``; no ``%`` may appear
        in syncd's statements otherwise)."""
        return text if self.sqlite else text.replace("?", "%s")

    def run(self, text: str, params: Sequence[Any] = ()) -> Sequence[Any]:
        """Run one statement; its rows (plain tuples, values as the driver returns them)."""
        return self.conn.exec_driver_sql(self.sql(text), tuple(params)).fetchall()

    def run_many(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (the driver's executemany)."""
        if rows:
            self.conn.exec_driver_sql(self.sql(text), list(rows))

    def ids_in(self, column: str, count: int) -> str:
        """``column IN (?, ?, ...)`` for ``count`` values: one indexed lookup. PostgreSQL
        gets ``= ANY(?)`` with one array, so that one prepared statement serves any count."""
        if self.sqlite:
            return f"{column} IN ({', '.join('?' * count)})"
        return f"{column} = ANY(?)"

    def id_params(self, ids: Sequence[int]) -> tuple[Any, ...]:
        return tuple(ids) if self.sqlite else (list(ids),)

    def time(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: syncd stores UTC times only")
        if not self.sqlite:
            return value
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None).isoformat(" ", "microseconds")

    def money(self, value: Decimal | None) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
        return money_text(value) if self.sqlite else value

    @staticmethod
    def text(value: str | Enum | None) -> str | None:
        """A state or status as the text it stands for."""
        return value.value if isinstance(value, Enum) else value
