"""Statements at the driver's speed, for the few paths that write thousands of rows.

SQLAlchemy Core compiles a statement and runs a type processor for every value of every
row (``Money``, ``UTCDateTime``): right for the many small writes, too slow for a status
sweep over 100,000 orders, where it cost more than the database itself. The hot paths
hand plain SQL and plain tuples to the DBAPI cursor (the door SQLAlchemy keeps for this),
and convert each value once, to the form its database stores: the database's backend
(``syncd.storage.backends``) supplies the paramstyle and the value forms, taken once per
connection, so that no value pays for asking which database it goes to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from syncd.storage.backends import Backend, backend_for

if TYPE_CHECKING:  # SQLAlchemy is not imported for PlainDriver's commands
    import sqlalchemy as sa


T = TypeVar("T")

# Bound parameters per statement stay well below SQLite's and PostgreSQL's limits.
CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` a statement's worth at a time."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Driver:
    """One database's paramstyle and value forms, for statements written as SQL text
    with ``?`` placeholders, run on the DBAPI cursor of a SQLAlchemy connection (inside
    the transaction that connection began). The driver's errors are raised as
    SQLAlchemy's, so that lock waits and retries are handled like any other statement's.
    """

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._errors: type[Exception] = conn.dialect.loaded_dbapi.Error
        self._forms(backend_for(conn))

    def _forms(self, backend: Backend) -> None:
        """How values go in, chosen once: a status batch converts thousands."""
        self.backend = backend
        self.sql: Callable[[str], str] = backend.sql
        self.time: Callable[[datetime | None], Any] = backend.time_value
        self.money: Callable[[Decimal | None], Any] = backend.money_value
        self.text: Callable[[str | Enum | None], str | None] = backend.text_value
        self.ids_in: Callable[[str, int], str] = backend.ids_in
        self.id_params: Callable[[Sequence[int]], tuple[Any, ...]] = backend.id_params

    def run(self, text: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement; its rows (values as the driver returns them)."""
        return self._on_cursor(text, lambda cursor, sql: cursor.execute(sql, tuple(params)))

    def run_many(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (the driver's executemany)."""
        if rows:
            self._on_cursor(text, lambda cursor, sql: cursor.executemany(sql, rows))

    def update_rows(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Set ``columns`` of the rows of ``table`` with the ids at the end of ``rows``
        (``(value, ..., id)``), in as few round trips as the backend can."""
        if rows:
            self.backend.update_rows(self, table, columns, rows)

    def _on_cursor(self, text: str, act: Callable[[Any, str], object]) -> list[Any]:
        sql = self.sql(text)
        cursor = self.conn.connection.cursor()
        try:
            act(cursor, sql)
            return list(cursor.fetchall()) if cursor.description is not None else []
        except self._errors as exc:
            import sqlalchemy as sa  # noqa: PLC0415 - imported by now: conn is SQLAlchemy's

            raise sa.exc.DBAPIError.instance(
                sql, None, exc, self._errors, hide_parameters=True, dialect=self.conn.dialect
            ) from exc
        finally:
            cursor.close()


def utc(value: datetime) -> datetime:
    """An aware time in UTC; a naive one is refused (every time syncd stores is UTC)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: syncd stores UTC times only")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def checked_money(value: Decimal) -> Decimal:
    """``value`` if it is a Decimal: a float is refused on its way into the database."""
    if not isinstance(value, Decimal):
        raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
    return value


class PlainDriver(Driver):
    """``Driver`` over a connection of the driver's own (``sqlite3`` or ``psycopg``), for
    the commands that must not pay for importing SQLAlchemy (``syncd status``, ``syncd
    order track``); the driver's errors are raised as they are."""

    def __init__(self, connection: Any, backend: Backend) -> None:  # no SQLAlchemy
        self.connection = connection
        self._forms(backend)

    def _on_cursor(self, text: str, act: Callable[[Any, str], object]) -> list[Any]:
        cursor = self.connection.cursor()
        try:
            act(cursor, self.sql(text))
            return list(cursor.fetchall()) if cursor.description is not None else []
        finally:
            cursor.close()
