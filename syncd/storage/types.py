"""Column types that keep money exact and times in UTC on every database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from syncd.storage.backends import backend_for
from syncd.storage.driver import utc


class Money(TypeDecorator[Decimal]):
    """Exact decimal, in the column type and form the database's backend keeps exact
    (``money_type``, ``money_value``): TEXT holding ``"0.27819"`` in SQLite, whose own
    NUMERIC affinity would turn ``0.1`` into a binary float; NUMERIC in PostgreSQL.
    Reading it back gives a ``Decimal`` again.  A float is refused on the way in.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(backend_for(dialect).money_type())

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        return backend_for(dialect).money_value(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite keeps them without offset:
    the backend's ``time_column``)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return backend_for(dialect).time_column(utc(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a row a consumer wrote with CURRENT_TIMESTAMP text
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]
