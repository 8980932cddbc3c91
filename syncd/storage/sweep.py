"""Sweep storage: the status sweep's reads and writes, and ``syncd order track``.

The sweep is syncd's hottest path (every active order, every pass): its statements are
plain SQL run at the driver's speed (``storage/driver.py``), built once, and a batch's
answers are planned against its rows and written in one transaction
(``apply_status_answers``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from syncd.deadlines import CLOCK_SKEW
from syncd.lifecycle import REPEAT_FIELDS, StatusJudge
from syncd.models import Order, OrderState, RequestKind
from syncd.order_requests import RequestState
from syncd.plans import KEEP, StatusPlan, StatusUpdate
from syncd.status_extra import as_json
from syncd.storage import plain_orders
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.clock_marks import raise_clock_mark
from syncd.storage.driver import Driver, chunks
from syncd.storage.literals import quoted
from syncd.storage.order_writes import log_changes, log_changes_with
from syncd.storage.rows import ORDER_FIELDS, plain_values, raw, read_order, read_orders
from syncd.storage.types import UTCDateTime
from syncd.storage.values import read_time, readable

_o, _r, _j, _p = t.orders.c, t.order_requests.c, t.jobs.c, t.providers.c
# The times a pass writes with its own clock besides those of orders and refills: a
# provider's last status sync, and when each of its jobs last started, succeeded, failed.
_MARKS = (_j.last_started_at, _j.last_success_at, _j.last_failure_at, _j.failing_since)
# The provider's own: its last status sync, and the latest time syncd's clock wrote into
# its orders or requests (a one-off command's included: storage/clock_marks.py).
_PROVIDER_MARKS = (_p.orders_synced_at, _p.clock_mark)
# The statements of the status sweep, run at the driver's speed (see storage/driver.py).
# Statements built with f-strings hold only column names and placeholders, never a value.
_SELECT_ORDERS = f"SELECT {', '.join(ORDER_FIELDS)} FROM orders"  # noqa: S608
# A checked row that stays active keeps its state: SQLite rewrites the entries of every
# index on a column named in SET (three index `state`), which made the batch's UPDATE four
# times dearer. The few rows that leave `active` get the second statement.
_STATUS_COLUMNS = (
    "status", "status_raw", "charge", "start_counter", "remains", "currency", "error",
    "checked_at", "next_check_at", "finished_at", "missing_checks", "overdue_checks",
)  # fmt: skip
# Nor, when the row held neither and gets neither (nearly every row a sweep changes), its
# `error` and `finished_at`: named in SET, the two indexes on `finished_at` and the held
# orders' one are rewritten for every row, a third of the UPDATE's cost on SQLite.
_CLEAN_COLUMNS = tuple(c for c in _STATUS_COLUMNS if c not in ("error", "finished_at"))
_STILL_ACTIVE = f"state = {quoted(OrderState.ACTIVE)}"
# Where the status sweep finds, in an order's values (rows.plain_values), what tells
# whether its answer repeats it (``StatusJudge.repeated``).
_FIELD = {name: index for index, name in enumerate(ORDER_FIELDS)}
_ID, _HELD, _PROVIDER = _FIELD["id"], _FIELD["provider_order_id"], _FIELD["provider"]
_REPEATED = itemgetter(*(_FIELD[name] for name in REPEAT_FIELDS))
DueCursor = tuple[object, int]  # (next_check_at as stored, id) of a page's last row
# One page of due orders, read with next_check_at as the database holds it (the cursor).
_DUE_PAGE = (
    "SELECT id, provider_order_id, next_check_at FROM orders WHERE provider = ? "  # noqa: S608
    f"AND {_STILL_ACTIVE} AND next_check_at <= ?{{page}} "
    "ORDER BY next_check_at, id LIMIT ?"
)


class SweepStorage(AlertStorage):
    def track_orders(
        self, provider: str, provider_order_ids: Sequence[int], now: datetime
    ) -> dict[int, int]:
        """Start tracking orders placed elsewhere. Returns provider id → local id for each,
        including those tracked already (which are left as they are)."""

        def work(conn: sa.Connection) -> dict[int, int]:
            known, changes = plain_orders.track(Driver(conn), provider, provider_order_ids, now)
            log_changes(conn, changes, now)
            return known

        return self._write(work)

    def recover_future_checks(
        self, provider: str, now: datetime, ran_ahead: Callable[[list[datetime | None]], bool]
    ) -> tuple[int, int]:
        """Bring back to ``now`` the check times of ``provider``'s active orders and sent
        refills that a clock running ahead wrote, when ``ran_ahead`` says the provider's
        marks (its last sync, the latest time written into its orders or requests, its
        jobs' times: a few rows) show one did; (orders, refills) brought back.

        A row is brought back when its ``checked_at`` lies more than ``CLOCK_SKEW`` ahead
        of ``now`` (or, never checked, the ``next_check_at`` of an order or the
        ``sent_at`` of a refill does): it becomes due at once, checked ``now``. The
        provider's and its jobs' future times come back to ``now`` too, so the next pass
        finds nothing to do and reads only those few rows again."""
        future = now + CLOCK_SKEW

        def marks(conn: sa.Connection) -> list[datetime | None]:
            synced = conn.execute(sa.select(*map(raw, _PROVIDER_MARKS)).where(_p.name == provider))
            jobs = conn.execute(sa.select(*map(raw, _MARKS)).where(_j.provider == provider))
            return [readable(read_time, at) for row in (*synced, *jobs) for at in row]

        if not ran_ahead(self._read(marks)):
            return 0, 0
        at_now = sa.literal(now, UTCDateTime())

        def brought_back(column: sa.ColumnElement[datetime | None]) -> sa.ColumnElement[object]:
            return sa.case((column > future, at_now), else_=column)

        def work(conn: sa.Connection) -> tuple[int, int]:
            orders = conn.execute(
                sa.update(t.orders)
                .where(
                    _o.provider == provider,
                    _o.state == OrderState.ACTIVE,
                    sa.or_(
                        _o.checked_at > future,
                        sa.and_(_o.checked_at.is_(None), _o.next_check_at > future),
                    ),
                )
                .values(next_check_at=at_now, checked_at=brought_back(_o.checked_at))
            ).rowcount
            refills = conn.execute(
                sa.update(t.order_requests)
                .where(
                    _r.provider == provider,
                    _r.state == RequestState.SENT.value,
                    _r.kind == RequestKind.REFILL.value,
                    sa.or_(
                        _r.checked_at > future,
                        sa.and_(_r.checked_at.is_(None), _r.sent_at > future),
                    ),
                )
                .values(next_check_at=at_now, checked_at=brought_back(_r.checked_at))
            ).rowcount
            conn.execute(
                sa.update(t.providers)
                .where(_p.name == provider, sa.or_(*(mark > future for mark in _PROVIDER_MARKS)))
                .values({mark.key: brought_back(mark) for mark in _PROVIDER_MARKS})
            )
            conn.execute(
                sa.update(t.jobs)
                .where(_j.provider == provider, sa.or_(*(mark > future for mark in _MARKS)))
                .values({mark.key: brought_back(mark) for mark in _MARKS})
            )
            return orders, refills

        return self._write(work)

    def count_due(self, provider: str, due_before: datetime, horizon: datetime) -> int:
        """How many active orders are due by ``due_before``.

        An active row without ``next_check_at`` (edited by hand), or with one beyond
        ``horizon`` (later than any schedule syncd writes: a clock that ran ahead wrote it,
        or a consumer wrote text that sorts after every time), is made due first, so that
        no order waits for a moment that will not come.
        """

        def work(conn: sa.Connection) -> int:
            # Two statements, each one range of the due index: as one OR, SQLite read
            # every active order of the provider to find the few.
            for stray in (_o.next_check_at.is_(None), _o.next_check_at > horizon):
                conn.execute(
                    sa.update(t.orders)
                    .where(_o.provider == provider, _o.state == OrderState.ACTIVE, stray)
                    .values(next_check_at=due_before)
                )
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(*_due(provider, due_before))
                ).scalar_one()
            )

        return self._write(work)

    def due_orders(
        self, provider: str, due_before: datetime, after: DueCursor | None, limit: int
    ) -> tuple[list[tuple[int, object]], DueCursor | None]:
        """One page of due active orders as (id, provider_order_id), oldest
        ``next_check_at`` first, and the cursor for the next page (keyset paging: each
        page costs the same, however deep). The rows themselves are read again in the
        transaction that writes their answers.

        The cursor holds ``next_check_at`` exactly as the database returned it, and is
        compared as such: SQLite compares and sorts times as text, and a time a consumer
        wrote without microseconds must still compare the way it sorts.
        """

        def work(conn: sa.Connection) -> tuple[list[tuple[int, object]], DueCursor | None]:
            d = Driver(conn)
            params: tuple[object, ...] = (provider, d.time(due_before))
            page = ""
            if after is not None:
                raw, last_id = after  # text on SQLite, a timestamp on PostgreSQL
                # The first comparison is where the index scan starts; the second only
                # skips the rows of the last page's time already read. Written as one
                # OR, the cursor was a filter over every row from the first due one, and
                # a page deep into a sweep of a million orders cost as much as reading
                # them all.
                page = " AND next_check_at >= ? AND (next_check_at > ? OR id > ?)"
                params += (raw, raw, last_id)
            rows = d.run(_DUE_PAGE.format(page=page), (*params, limit))
            if not rows:
                return [], None
            last = rows[-1]
            return [(order_id, held) for order_id, held, _ in rows], (last[2], last[0])

        return self._read(work)

    def apply_status_answers(
        self,
        order_ids: Sequence[int],
        asked_at: datetime,
        plan_for: Callable[[list[Order]], StatusPlan],
    ) -> StatusPlan:
        """Plan a batch's answers against its rows as they are now, and write the plan: one
        transaction per batch. Rows another process finished, or checked after
        ``asked_at`` (a fresher answer than ours), are left out, so that two processes
        sweeping at once never record a change twice nor write an older answer last.

        A ``checked_at`` more than ``CLOCK_SKEW`` ahead of ``asked_at`` is no fresher
        answer but the mark of a clock that ran ahead: such a row is answered like any
        other, or it would never be written again."""
        future = asked_at + CLOCK_SKEW

        def work(conn: sa.Connection) -> StatusPlan:
            d = Driver(conn)
            # One indexed lookup of the batch's rows, locked until the commit (where rows
            # are locked: elsewhere the one writer holds the whole database).
            rows = d.run(
                f"{_SELECT_ORDERS} WHERE {d.ids_in('id', len(order_ids))} AND {_STILL_ACTIVE} "
                "AND (checked_at IS NULL OR checked_at <= ? OR checked_at > ?) ORDER BY id"
                + d.backend.row_lock_sql,
                (*d.id_params(order_ids), d.time(asked_at), d.time(future)),
            )
            if isinstance(plan_for, StatusJudge):
                now = plan_for.clock()
                repeated, orders = _repeated(rows, plan_for, now)
                plan = plan_for.plan(orders, now)
            else:
                repeated, orders = {}, read_orders(rows)
                plan = plan_for(orders)
            checked = plan.updates or repeated
            # Every row lock before the feeds' turn, which _write_status_plan takes last:
            # the mark locks the providers row, which a sending holds while it waits for
            # the turn (two waits in opposite order are a deadlock).
            raise_clock_mark(d, {row[_PROVIDER] for row in rows} if checked else (), plan.now)
            _write_repeated(d, repeated, plan.now)
            _write_status_plan(
                d,
                plan,
                unsent={o.id for o in orders if o.submitted_at is None},
                clean={o.id for o in orders if o.error is None and o.finished_at is None},
            )
            self._insert_alerts(conn, plan.alerts, plan.now)
            return replace(plan, repeated=sum(map(len, repeated.values())))

        return self._write(work) if order_ids else plan_for([])

    def record_orders_synced(self, provider: str, now: datetime) -> None:
        self._write(
            lambda conn: conn.execute(
                sa.update(t.providers)
                .where(t.providers.c.name == provider)
                .values(orders_synced_at=now)
            )
        )


def _due(provider: str, due_before: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        _o.provider == provider,
        _o.state == OrderState.ACTIVE,
        _o.next_check_at <= due_before,
    )


def _repeated(
    rows: Sequence[Sequence[Any]], judge: StatusJudge, now: datetime
) -> tuple[dict[datetime, list[int]], list[Order]]:
    """The batch's rows whose answer repeats them, by their next check time (ids), and
    the orders of the others, to be checked in full. The first are read only as far as
    their values, and no order is built for them."""
    times: dict[object, datetime | None] = {}
    amounts: dict[str, Decimal | None] = {}
    repeated: dict[datetime, list[int]] = {}
    orders = []
    for row in rows:
        values = plain_values(row, times, amounts)
        if values is None:
            orders.append(read_order(row))
            continue
        due = judge.repeated(values[_HELD], _REPEATED(values), now)
        if due is None:
            orders.append(Order(*values))
        else:
            repeated.setdefault(due, []).append(values[_ID])
    return repeated, orders


def _write_repeated(d: Driver, repeated: dict[datetime, list[int]], now: datetime) -> None:
    """The rows whose answer repeated them: their check time and next one, with one
    UPDATE per next check time (a batch's rows share a few)."""
    checked = d.time(now)
    for due, ids in repeated.items():
        for part in chunks(ids):
            where = d.ids_in("id", len(part))
            d.run(
                f"UPDATE orders SET checked_at = ?, next_check_at = ? WHERE {where}",  # noqa: S608
                (checked, d.time(due), *d.id_params(part)),
            )


def _write_status_plan(
    d: Driver, plan: StatusPlan, *, unsent: Collection[int] = (), clean: Collection[int] = ()
) -> None:
    """A status batch's updates, then its ``order_changes`` rows, each one executemany.
    Times are converted once per distinct value: a batch shares ``checked_at`` and a few
    ``next_check_at``. ``unsent``: the orders syncd never sent (for the ledger);
    ``clean``: those whose rows hold no ``error`` and no ``finished_at``."""
    time, money = functools.cache(d.time), d.money
    text = None if d.backend.binds_enums_as_text else d.text  # no call per value if not needed

    def row(u: StatusUpdate) -> tuple[object, ...]:
        return (
            u.status if text is None else text(u.status), u.status_raw, money(u.charge),
            u.start_counter, u.remains, u.currency, u.error, time(u.checked_at),
            time(u.next_check_at), time(u.finished_at), u.missing_checks, u.overdue_checks,
        )  # fmt: skip

    def clean_row(u: StatusUpdate) -> tuple[object, ...]:  # row() but error, finished_at
        return (
            u.status if text is None else text(u.status), u.status_raw, money(u.charge),
            u.start_counter, u.remains, u.currency, time(u.checked_at),
            time(u.next_check_at), u.missing_checks, u.overdue_checks, u.order_id,
        )  # fmt: skip

    # Every row of the batch was read `active`.
    active = OrderState.ACTIVE
    stays = [u for u in plan.updates if u.state is active]
    still_clean = [
        u for u in stays if u.error is None and u.finished_at is None and u.order_id in clean
    ]
    d.update_rows("orders", _CLEAN_COLUMNS, [clean_row(u) for u in still_clean])
    if len(still_clean) < len(stays):
        kept = {u.order_id for u in still_clean}
        d.update_rows(
            "orders",
            _STATUS_COLUMNS,
            [(*row(u), u.order_id) for u in stays if u.order_id not in kept],
        )
    d.update_rows(
        "orders",
        (*_STATUS_COLUMNS, "state"),
        [(*row(u), u.state.value, u.order_id) for u in plan.updates if u.state is not active],
    )
    # The few rows whose status said something new beyond the common fields.
    d.update_rows(
        "orders",
        ("status_extra",),
        [(as_json(u.status_extra), u.order_id) for u in plan.updates if u.status_extra is not KEEP],
    )
    log_changes_with(d, plan.changes, plan.now, unsent)


__all__ = ["DueCursor", "SweepStorage"]
