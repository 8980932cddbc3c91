"""Reading one stored value that another program may have written, without SQLAlchemy.

SQLite keeps any value in any column: text in an integer column, a unix number where a
time belongs, ``'abc'`` where money belongs. Each reader takes the value as the driver
returns it and gives the typed value, or raises ``ValueError``; ``readable`` turns that
into None. ``syncd status`` reads through the driver alone (``syncd.storage.overview``)
and needs these without the rest of ``syncd.storage.rows``, which imports SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from syncd.units import LARGEST, parse_money, shown

T = TypeVar("T")


def readable(read: Callable[[object], T | None], value: object) -> T | None:
    """``read(value)``, or None when the value cannot be read."""
    try:
        return read(value)
    except ValueError:
        return None


def read_time(value: object) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite keeps text, PostgreSQL a datetime)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not a time: {shown(value)}") from None
    else:
        raise ValueError(f"not a time: {shown(value)}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= LARGEST:
        return value
    raise ValueError(f"not a whole number: {shown(value)}")


def read_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"not text: {shown(value)}")


def read_money(value: object) -> Decimal | None:
    return None if value is None else parse_money(value)
