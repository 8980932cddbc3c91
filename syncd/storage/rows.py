"""Reading rows that other programs may have written.

A shop places orders by inserting ``orders`` rows itself, and SQLite keeps any value in
any column: text in an integer column, a unix number where a time belongs, ``'abc'`` where
money belongs, a ``state`` of ``'QUEUED'``.  SQLAlchemy's typed result processors would
raise on such a value in the middle of a fetch and stop every order behind it.  So order
rows are fetched as the database holds them and converted here, one value at a time: a
value that cannot be read becomes ``None`` and is named in the order's ``problem``; the
jobs set that one row aside with an error and go on with the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from syncd.models import Order
from syncd.storage import tables as t
from syncd.storage.order_values import (
    ORDER_FIELDS,
    PROVIDER_NAME_LONGEST,
    plain_values,
    read_order,
    read_orders,
    read_state,
    read_status,
)
from syncd.storage.values import read_int, read_money, read_text, read_time, readable

# The readers live in syncd.storage.order_values and syncd.storage.values (the reading
# commands read without SQLAlchemy) and are offered here too, beside the columns that
# fetch what they read.
__all__ = [
    "ORDER_COLUMNS",
    "ORDER_FIELDS",
    "PARAMS",
    "PROVIDER_NAME_LONGEST",
    "plain_values",
    "raw",
    "read_int",
    "read_money",
    "read_order",
    "read_orders",
    "read_state",
    "read_status",
    "read_text",
    "read_time",
    "readable",
    "with_params",
]


def raw(column: sa.ColumnElement[Any]) -> sa.Label[Any]:
    """``column`` fetched as the database holds it, with no typed conversion that could
    raise on a value someone wrote by hand."""
    return sa.type_coerce(column, sa.types.NullType()).label(column.key)


# Every column an Order carries, in the order of its fields, fetched without conversion;
# ``params`` only where queued orders are judged (``PARAMS``), not by the status sweep.
ORDER_COLUMNS = tuple(raw(t.orders.c[name]) for name in ORDER_FIELDS)
PARAMS = raw(t.orders.c.params)  # fetched after ORDER_COLUMNS: ``with_params``


def with_params(row: Sequence[Any]) -> Order:
    """``read_order`` of a row of ``ORDER_COLUMNS`` and ``PARAMS``, its params kept as the
    database holds them (``order_types`` reads them, each row on its own)."""
    return replace(read_order(row[: len(ORDER_COLUMNS)]), params=row[len(ORDER_COLUMNS)])
