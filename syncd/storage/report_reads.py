"""``syncd report``'s order figures, counted by the database instead of read order by order
(a month of a busy provider is a hundred thousand orders; building each as an ``Order``
took seconds).

``order_tally`` reads one provider's window in three statements (one more on SQLite):

- spend: the orders sent in the window (by ``submitted_at``, or by ``created_at`` for one
  never sent by syncd) with a provider order id, a row each with its currency, UTC day,
  package and charge, counted in Python per currency, day and charge and per currency,
  package and charge (grouped by day and package in SQL, nearly every group would be one
  order; grouped apart, each row would be fetched twice); found by
  ``ix_orders_provider_sent`` (provider, submitted_at, created_at), one range for each of
  the two times;
- the orders finished in the window, per currency and status, with the number of those
  completed and their times from sending to completion summed in whole microseconds
  (exact; the report divides once), by ``ix_orders_provider_finished`` (provider,
  finished_at).

Money is grouped by its exact stored digits (``money_group_sql``: SQLite keeps it as
text, which SQL would add as binary floats, and PostgreSQL's NUMERIC would group 0.05 with
0.050, which print apart), and each group's charge is read and multiplied by its count
in Python, as ``Decimal``: a handful of distinct charges, not a row each.

Rows hold what syncd writes, except on SQLite, where a consumer may write any value in
any column. A row whose times are not in syncd's form (``Backend.odd_times_sql``) is not
counted by the database: such rows are found first, through the two partial indexes that
hold them alone (``ix_orders_odd_sent``, ``ix_orders_odd_finished``: few, such as the
orders never sent that a shop inserted with ``created_at`` left to its default, in whole
seconds; no row of the window is judged to find them), in the ranges the report read
rows from before it counted (from ``since`` on, with no end); they are read whole
(``odd``) and judged one by one as they always were, and left out of the counts, so that
the figures are those of reading every row. On PostgreSQL and MariaDB the columns are
typed and every row is counted. A provider order id that does not read as one is not
counted (as before: none); a service id, a currency, a status or a charge is grouped by
its stored value and read in Python, as the old reading read it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from syncd.models import Order, OrderState, Status
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
    # (currency, status, orders, completed, microseconds from sending to completion, in
    # all) of the orders finished (state done) in the window
    finished: list[tuple[str | None, Status | None, int, int, int]] = field(default_factory=list)
    # Rows the database cannot count (times not in syncd's form), read whole.
    odd: list[Order] = field(default_factory=list)


# A provider order id that reads as one, and is not 0 (none, to the report).
_COUNTED_ID = (
    "provider_order_id IS NOT NULL AND provider_order_id <> 0"
    f" AND provider_order_id >= {-LARGEST} AND {{whole}}"
)
_SENT_BY = (  # (the time sent by, the condition that it is the one)
    ("submitted_at", "submitted_at IS NOT NULL"),
    ("created_at", "submitted_at IS NULL"),
)
# The orders sent in the window by one of the two times, one range of the index each: a
# row per order, its day, package and charge, counted in Python (grouped by day and
# package, nearly every group would be one order; grouped apart, each range is read twice).
_SPEND = (
    "SELECT {currency}, {day}, service_id, {charge} FROM orders WHERE provider = ?"
    " AND {which} AND {sent} >= ? AND {sent} <= ? AND {counted}{apart}"
)
# The same range as two groupings in one read, where the database has GROUPING SETS
# (PostgreSQL): the groups come back instead of a row per order, which the driver costs
# more to hand over than the database to count. GROUPING(service_id) tells them apart.
_SPEND_SETS = (
    "SELECT {currency}, {day}, service_id, {charge}, COUNT(*), GROUPING(service_id)"
    " FROM orders WHERE provider = ?"
    " AND {which} AND {sent} >= ? AND {sent} <= ? AND {counted}{apart}"
    " GROUP BY GROUPING SETS (({currency}, {day}, {charge}), ({currency}, service_id, {charge}))"
)
_COMPLETED = "{status} = ? AND COALESCE(submitted_at, created_at) <= finished_at"
_FINISHED = (
    "SELECT {currency}, {status}, COUNT(*), COUNT(CASE WHEN {completed} THEN 1 END),"
    " SUM(CASE WHEN {completed} THEN {seconds} END),"
    " SUM(CASE WHEN {completed} THEN {micros} END) FROM orders WHERE provider = ?"
    " AND finished_at >= ? AND finished_at <= ? AND {state} = ?{apart}"
    " GROUP BY {currency}, {status}"
)
# The rows whose times are not plain (each of ``Backend.odd_times_sql``, repeated
# literally: the partial index that holds them serves only a WHERE that does) in one of
# the ranges the report read rows from before it counted (from ``since`` on, with no
# end: a time in another form may sort after any other), read whole. The index is named:
# without statistics, SQLite's planner may take the range of every finished order by
# ``ix_orders_provider_finished`` for ``finished_at IS NOT NULL`` instead; named, a
# WHERE it cannot serve is an error, not a slow read.
_ODD = (
    f"SELECT {', '.join(ORDER_FIELDS)} FROM orders INDEXED BY {{index}}"  # noqa: S608
    " WHERE provider = ? AND {odd} AND (submitted_at IS NOT NULL AND submitted_at >= ?"
    " OR submitted_at IS NULL AND created_at >= ? OR finished_at >= ?)"
)
# Left out of the counts when there are any: all the provider's, found by the same indexes,
# named as above. Unnamed, SQLite's planner took the provider's whole range of
# ``ix_orders_provider_sent`` (it covers ``id``) and judged every row's times, in each
# counting statement: one rejected order a shop inserted with ``created_at`` left to its
# default made a month's report at a million orders seconds slower.
_APART = " AND id NOT IN ({odd})"
_ODD_IDS = "SELECT id FROM orders INDEXED BY {index} WHERE provider = ? AND {odd}"


def order_tally(db: Driver, provider: str, since: datetime, now: datetime) -> OrderTally:
    """``provider``'s orders sent or finished in ``since``..``now``, grouped."""
    backend = db.backend
    tally = OrderTally()
    start, end = db.time(since), db.time(now)
    apart = ""  # the odd rows left out of the counts, when there are any
    left_out: tuple[str, ...] = ()  # its parameters
    # A row odd both ways is taken once.
    found = {
        row[0]: row
        for index, where in backend.odd_times_sql.items()
        for row in db.run(_ODD.format(index=index, odd=where), (provider, start, start, start))
    }
    tally.odd = [read_order(found[order_id]) for order_id in sorted(found)]
    if tally.odd:
        apart = _APART.format(
            odd=" UNION ".join(
                _ODD_IDS.format(index=index, odd=where)
                for index, where in backend.odd_times_sql.items()
            )
        )
        left_out = (provider,) * len(backend.odd_times_sql)
    whole = backend.well_formed_int_sql.format(column="provider_order_id")
    counted = _COUNTED_ID.format(whole=whole)
    charge = backend.money_group_sql.format(column="charge")
    # Currency, status and state by their exact text, as the orders read one by one are
    # judged ('USD ' is not 'USD', 'Completed ' no status).
    currency, status, state = (
        backend.exact_text_sql.format(column=c) for c in ("currency", "status", "state")
    )
    per_day: Counter[tuple[object, object, object]] = Counter()
    per_package: Counter[tuple[object, object, object]] = Counter()
    for sent, which in _SENT_BY:
        statement = (_SPEND_SETS if backend.grouping_sets else _SPEND).format(
            currency=currency,
            day=backend.utc_day_sql.format(column=sent),
            charge=charge,
            which=which,
            sent=sent,
            counted=counted,
            apart=apart,
        )
        rows = db.run(statement, (provider, start, end, *left_out))
        if backend.grouping_sets:
            for stored, day, service, amount, count, by_day in rows:
                if by_day:  # service_id grouped over: the per-day set
                    per_day[stored, day, amount] += int(count)
                else:
                    per_package[stored, service, amount] += int(count)
            continue
        for (stored, day, service, amount), count in Counter(map(tuple, rows)).items():
            per_day[stored, day, amount] += count
            per_package[stored, service, amount] += count
    tally.per_day = [
        (readable(read_text, stored), str(day), readable(read_money, amount), count)
        for (stored, day, amount), count in per_day.items()
    ]
    tally.per_package = [
        (readable(read_text, s), readable(read_int, service), readable(read_money, a), count)
        for (s, service, a), count in per_package.items()
    ]
    seconds, micros = (
        part.format(start="COALESCE(submitted_at, created_at)", end="finished_at")
        for part in backend.elapsed_sql
    )
    statement = _FINISHED.format(
        completed=_COMPLETED.format(status=status),
        seconds=seconds,
        micros=micros,
        currency=currency,
        status=status,
        state=state,
        apart=apart,
    )
    completed = db.text(Status.COMPLETED)
    window = (provider, start, end, db.text(OrderState.DONE), *left_out)
    for kind, stated, count, done, whole_seconds, rest in db.run(
        statement, (completed, completed, completed, *window)
    ):
        elapsed = int(whole_seconds or 0) * 10**6 + int(rest or 0)
        tally.finished.append(
            (readable(read_text, kind), read_status(stated), int(count), int(done), elapsed)
        )
    return tally


__all__ = ["OrderTally", "order_tally"]
