"""Reading the change feeds (``order_changes``, ``package_changes``, ``alerts``) the way a
consumer does: rows after a cursor, in id order.

The rows are fetched as the database holds them and turned into JSON values here, one
value at a time, so that a value someone garbled by hand is shown as it is rather than
stopping the read: times as ISO 8601 in UTC when they read as times, amounts as exact
decimal text, an alert's payload as the object it holds.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from syncd.storage import tables as t
from syncd.storage.base import StorageBase
from syncd.storage.rows import raw, read_time, readable
from syncd.units import money_text

FEEDS: dict[str, sa.Table] = {
    "orders": t.order_changes,
    "packages": t.package_changes,
    "requests": t.request_changes,
    "alerts": t.alerts,
    "ledger": t.ledger,
}
_TIMES = {"changed_at", "created_at", "at"}
# JSON columns, which some drivers return as their text: shown as the values they hold.
_JSON = {"payload", "extra_old", "extra_new"}


class FeedStorage(StorageBase):
    def feed_rows(self, feed: str, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of ``feed`` with an id above ``after``, in id order."""
        table = FEEDS[feed]

        def work(conn: sa.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                sa.select(*(raw(column) for column in table.c))
                .where(table.c.id > after)
                .order_by(table.c.id)
                .limit(limit)
            )
            return [{key: _json(key, value) for key, value in row._mapping.items()} for row in rows]

        return self._read(work)

    def order_history(self, order_id: int) -> list[dict[str, Any]]:
        """Every ``order_changes`` row of one order, oldest first, as JSON values."""
        table = t.order_changes

        def work(conn: sa.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                sa.select(*(raw(column) for column in table.c))
                .where(table.c.order_id == order_id)
                .order_by(table.c.id)
            )
            return [{key: _json(key, value) for key, value in row._mapping.items()} for row in rows]

        return self._read(work)


def _json(key: str, value: object) -> Any:
    if isinstance(value, datetime) or (key in _TIMES and isinstance(value, str)):
        moment = readable(read_time, value)
        return moment.isoformat() if moment is not None else value
    if isinstance(value, Decimal):
        return money_text(value)
    if key in _JSON and isinstance(value, str | bytes):
        try:
            return json.loads(value, parse_constant=_not_json)
        except ValueError:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    return value


def _not_json(constant: str) -> object:
    """``NaN`` and ``Infinity`` are Python's extensions, not JSON: a payload holding them
    is printed as the text it is."""
    raise ValueError(constant)
