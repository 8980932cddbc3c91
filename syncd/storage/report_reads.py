"""``syncd report``'s order figures, counted by the database instead of read order by order
(a month of a busy provider is a hundred thousand orders; building each as an ``Order``
took seconds).

``order_tally`` reads one provider's window as groups:

- spend: the orders sent in the window (by ``submitted_at``, or by ``created_at`` for one
  never sent by syncd) with a provider order id, counted per currency, UTC day and
  charge, and per currency, package and charge; found by ``ix_orders_provider_sent``
  (provider, submitted_at, created_at), one range for each of the two times;
- the orders finished in the window, per currency and status, by
  ``ix_orders_provider_finished`` (provider, finished_at);
- for each order completed in the window, its id, currency and the whole microseconds
  from sending to completion, computed by the database: the average is then the sum of
  the same floats in the same order (by id) as when every order was read, so it prints
  the same to the last digit.

Money is grouped by its exact stored digits (``money_group_sql``: SQLite keeps it as
text, which SQL would add as binary floats, and PostgreSQL's NUMERIC would group 0.05 with
0.050, which print apart), and each group's charge is read and multiplied by its count
in Python, as ``Decimal``: a handful of distinct charges, not a row each.

Rows hold what syncd writes, except on SQLite, where a consumer may write any value in
any column. A row whose times are not in syncd's form (``well_formed_time_sql``) is not
counted by the database: such rows (few, if any) are read whole (``odd``) and the report
judges them one by one as it always did, so that the figures are those of reading every
row. A provider order id, a service id, a currency or a status that does not read is
grouped by its stored value and read in Python, as the old reading read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from syncd.models import Order, OrderState, Status
from syncd.storage.backends.interface import Backend
from syncd.storage.driver import Driver
from syncd.storage.order_values import ORDER_FIELDS, read_order, read_status
from syncd.storage.values import read_int, read_money, read_text, readable
from syncd.units import LARGEST


@dataclass
class OrderTally:
    """One provider's orders of a window, grouped (``syncd.cli.report`` turns it into
    figures). Values are read as ``read_order`` reads them: None where one does not."""

    # (currency, day, charge, orders) of the orders sent in the window
    per_day: list[tuple[str | None, str, Decimal | None, int]] = field(default_factory=list)
    # (currency, service id, charge, orders) of the same orders
    per_package: list[tuple[str | None, int | None, Decimal | None, int]] = field(
        default_factory=list
    )
    # (currency, status, orders) of the orders finished (state done) in the window
    finished: list[tuple[str | None, Status | None, int]] = field(default_factory=list)
    # (id, currency, seconds from sending to completion) of those completed
    completed: list[tuple[int, str | None, float]] = field(default_factory=list)
    # Rows the database cannot count (times not in syncd's form), read whole, with
    # whether their sending too is to be judged (else only their finishing).
    odd: list[tuple[Order, bool]] = field(default_factory=list)


# A provider order id that reads as one, and is not 0 (none, to the report).
_COUNTED_ID = (
    "provider_order_id IS NOT NULL AND provider_order_id <> 0"
    f" AND provider_order_id >= {-LARGEST} AND {{whole}}"
)
_SENT_BY = (  # (the time sent by, the condition that it is the one)
    ("submitted_at", "submitted_at IS NOT NULL"),
    ("created_at", "submitted_at IS NULL"),
)
_SPEND = (
    "SELECT currency, {key}, {charge}, COUNT(*) FROM orders WHERE provider = ?"
    " AND {which} AND {sent} >= ? AND {sent} <= ? AND {plain} AND {counted}"
    " GROUP BY currency, {key}, {charge}"
)
_FINISHED = (
    "SELECT currency, status, COUNT(*) FROM orders WHERE provider = ?"
    " AND finished_at >= ? AND finished_at <= ? AND state = ? AND {plain}"
    " GROUP BY currency, status"
)
_COMPLETED = (
    "SELECT id, currency, {micros} FROM orders WHERE provider = ?"
    " AND finished_at >= ? AND finished_at <= ? AND state = ? AND status = ? AND {plain}"
    " AND COALESCE(submitted_at, created_at) <= finished_at"
)
# The rows the report read before, one range at a time (each found by its index).
_ODD = (
    f"SELECT {', '.join(ORDER_FIELDS)}, {{spend_odd}} FROM orders"  # noqa: S608
    " WHERE provider = ? AND {range} AND NOT ({plain})"
)
_RANGES = (
    "submitted_at >= ?",
    "finished_at >= ?",
    "submitted_at IS NULL AND created_at >= ?",
)


def _conditions(backend: Backend) -> tuple[str, str]:
    """(spend, finish): true of a row whose times the database may judge: the time it
    was sent by, and also the time it finished."""
    wf = backend.well_formed_time_sql
    sent = (
        f"(({wf.format(column='submitted_at')}) OR (submitted_at IS NULL AND"
        f" (created_at IS NULL OR {wf.format(column='created_at')})))"
    )
    finish = f"((finished_at IS NULL OR {wf.format(column='finished_at')}) AND {sent})"
    return sent, finish


def order_tally(db: Driver, provider: str, since: datetime, now: datetime) -> OrderTally:
    """``provider``'s orders sent or finished in ``since``..``now``, grouped."""
    backend = db.backend
    tally = OrderTally()
    sent_plain, finish_plain = _conditions(backend)
    window = (db.time(since), db.time(now))
    counted = _COUNTED_ID.format(
        whole=backend.well_formed_int_sql.format(column="provider_order_id")
    )
    charge = backend.money_group_sql.format(column="charge")
    for sent, which in _SENT_BY:
        plain = backend.well_formed_time_sql.format(column=sent)
        day = backend.utc_day_sql.format(column=sent)
        for key, by_day in ((day, True), ("service_id", False)):
            statement = _SPEND.format(
                key=key, charge=charge, which=which, sent=sent, plain=plain, counted=counted
            )
            groups = _groups(db.run(statement, (provider, *window)), by_day)
            (tally.per_day if by_day else tally.per_package).extend(groups)
    done = db.text(OrderState.DONE)
    for currency, status, count in db.run(
        _FINISHED.format(plain=finish_plain), (provider, *window, done)
    ):
        tally.finished.append((readable(read_text, currency), read_status(status), int(count)))
    micros = backend.micros_between_sql.format(
        start="COALESCE(submitted_at, created_at)", end="finished_at"
    )
    for order_id, currency, micro in db.run(
        _COMPLETED.format(micros=micros, plain=finish_plain),
        (provider, *window, done, db.text(Status.COMPLETED)),
    ):
        # What ``timedelta.total_seconds`` gives: microseconds / 10**6, correctly rounded.
        tally.completed.append((int(order_id), readable(read_text, currency), int(micro) / 10**6))
    if backend.well_formed_time_sql != Backend.well_formed_time_sql:  # times may be odd
        seen: set[int] = set()
        for where in _RANGES:
            statement = _ODD.format(range=where, plain=finish_plain, spend_odd=f"NOT {sent_plain}")
            for *row, spend_odd in db.run(statement, (provider, db.time(since))):
                order = read_order(row)
                if order.id not in seen:
                    seen.add(order.id)
                    tally.odd.append((order, bool(spend_odd)))
    return tally


def _groups(rows: list[Any], by_day: bool) -> list[tuple[Any, ...]]:
    """Grouped rows read as ``read_order`` reads their values."""
    return [
        (
            readable(read_text, currency),
            str(key) if by_day else readable(read_int, key),
            readable(read_money, charge),
            int(count),
        )
        for currency, key, charge, count in rows
    ]


__all__ = ["OrderTally", "order_tally"]
