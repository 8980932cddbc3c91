"""What every order mixin writes and reads the same way: an update with its
``order_changes`` row, the rows an order's judging needs, and the funds left.

The order mixins (``submission``, ``sweep``, ``order_reads``) share these; none of them
decides anything: the rules are the planners' the jobs pass in.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa

from syncd.models import Order, OrderState, StoredPackage
from syncd.plans import Funds, OrderChange, OrderUpdate
from syncd.storage import ledger, plain_orders
from syncd.storage import tables as t
from syncd.storage.base import take_feed_turn
from syncd.storage.catalog import stored_package
from syncd.storage.clock_marks import raise_clock_mark
from syncd.storage.driver import Driver
from syncd.storage.rows import raw

_o = t.orders.c
# The states whose orders were sent (or are being sent), so spend the funds known.
_SPENDING = (OrderState.SUBMITTING, OrderState.ACTIVE, OrderState.DONE, OrderState.AMBIGUOUS)


def package_of(conn: sa.Connection, provider: str, service_id: object) -> StoredPackage | None:
    """The catalog row an order names, if any."""
    if service_id is None:
        return None
    p = t.packages.c
    found = conn.execute(
        sa.select(t.packages).where(p.provider == provider, p.service_id == service_id)
    ).first()
    return stored_package(found) if found is not None else None


def funds_of(conn: sa.Connection, provider: str) -> Funds | None:
    """The last known balance and (rate, type, quantity, params) of each order sent since
    it was read;
    None when no balance is known, or not when it was read (a hand edit): unchecked."""
    known = conn.execute(
        sa.select(t.providers.c.balance, t.providers.c.balance_checked_at).where(
            t.providers.c.name == provider
        )
    ).first()
    if known is None or known.balance is None or known.balance_checked_at is None:
        return None
    p = t.packages.c
    spent = conn.execute(
        sa.select(p.rate, p.type, raw(_o.quantity), raw(_o.params))
        .join(t.packages, sa.and_(p.provider == _o.provider, p.service_id == _o.service_id))
        .where(
            _o.provider == provider,
            _o.state.in_(_SPENDING),
            _o.submitted_at > known.balance_checked_at,
        )
    )
    return Funds(known.balance, [(rate, kind, q, params) for rate, kind, q, params in spent])


def write_update(conn: sa.Connection, order: Order, update: OrderUpdate, now: datetime) -> None:
    """Write one order's update and its ``order_changes`` row."""
    write_updates(conn, [(order, update)], now)


def write_updates(
    conn: sa.Connection, updates: Iterable[tuple[Order, OrderUpdate]], now: datetime
) -> None:
    """Write each order's update, then their ``order_changes`` rows. A time written (a
    check, a sending) raises its provider's clock mark (``storage/clock_marks.py``)."""
    written = list(updates)
    changes = [update_row(conn, order, update) for order, update in written]
    timed = [order.provider for order, update in written if _writes_a_time(update)]
    raise_clock_mark(Driver(conn), timed, now)
    log_changes(conn, changes, now)


def _writes_a_time(update: OrderUpdate) -> bool:
    return any(isinstance(value, datetime) for value in update.written().values())


def update_row(conn: sa.Connection, order: Order, update: OrderUpdate) -> OrderChange | None:
    """Write one order's update; the change it makes, for the feed (written last)."""
    conn.execute(sa.update(t.orders).where(_o.id == order.id).values(update.written()))
    return update.change(order)


def log_changes(conn: sa.Connection, changes: Iterable[OrderChange | None], now: datetime) -> None:
    """The ``order_changes`` rows of a transaction: its last writes but for its alerts
    (see ``take_feed_turn``)."""
    log_changes_with(Driver(conn), [c for c in changes if c is not None], now)


def log_changes_with(
    d: Driver, changes: Sequence[OrderChange], now: datetime, unsent: Collection[int] = ()
) -> None:
    """The ``order_changes`` rows, and the ``ledger`` rows the same changes make (an order
    sent, a charge changed: ``storage/ledger.py``; ``unsent``: orders syncd never sent),
    in one turn."""
    if changes:
        priced = ledger.prepare(d, changes, unsent)
        # A ledger row's provider is locked for its foreign key check: before the turn,
        # or a sending holding that row while it waits for the turn deadlocks with us.
        ledger.lock_providers(d, {o.provider for o in priced.values()})
        take_feed_turn(d.conn)
        plain_orders.insert_changes(d, changes, now)
        ledger.write_order_rows(d, changes, priced, now)
