"""Order statements written once for both ways of reaching the database: ``Storage``
(SQLAlchemy's connection, through ``Driver``) and a command's own ``sqlite3``
connection (``PlainDriver``), which ``syncd order track`` uses to spare half a second of
imports per call. Nothing here imports SQLAlchemy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from syncd.models import OrderState
from syncd.plans import ORDER_TRACKED, OrderChange
from syncd.storage.driver import Driver, PlainDriver, chunks
from syncd.storage.migrations import HEAD
from syncd.storage.urls import plain_sqlite_file

# The tracked columns (ORDER_TRACKED) of an order that did not exist, and of one
# tracked from now on.
_NOTHING = (None,) * len(ORDER_TRACKED)
_TRACKED = (OrderState.ACTIVE, *_NOTHING[1:])
_INSERT_CHANGE = (
    "INSERT INTO order_changes (order_id, changed_at, state_old, state_new, status_old, "
    "status_new, charge_old, charge_new, remains_old, remains_new, start_counter_old, "
    "start_counter_new) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def track(
    d: Driver, provider: str, provider_order_ids: Sequence[int], now: datetime
) -> tuple[dict[int, int], list[OrderChange]]:
    """Insert the orders of ``provider_order_ids`` not tracked yet (``active``, due now).
    Returns provider id → local id for each, and the change rows of those inserted here
    (the caller writes them last in its transaction)."""
    known: dict[int, int] = {}
    when = d.time(now)
    active = OrderState.ACTIVE.value
    changes = []
    unique = list(dict.fromkeys(provider_order_ids))
    for ids in chunks(unique):
        found = tracked(d, provider, ids)
        new = [poid for poid in ids if poid not in found]
        if new and d.sqlite:
            # This transaction holds the only write lock: what it did not find, nobody
            # else can insert meanwhile.
            d.run_many(
                "INSERT INTO orders (provider, provider_order_id, state, created_at, "
                "next_check_at) VALUES (?, ?, ?, ?, ?)",
                [(provider, poid, active, when, when) for poid in new],
            )
            inserted = tracked(d, provider, new)
        elif new:
            # Another command may be tracking the same ids right now, unseen until it
            # commits: its rows are left to it, and only the rows this one inserted get a
            # change row.
            inserted = dict(
                d.run(
                    "INSERT INTO orders (provider, provider_order_id, state, created_at,"
                    " next_check_at) SELECT ?, poid, ?, ?, ? FROM unnest(?::bigint[])"
                    " WITH ORDINALITY AS wanted(poid, n) ORDER BY n"
                    " ON CONFLICT (provider, provider_order_id) DO NOTHING"
                    " RETURNING provider_order_id, id",
                    (provider, active, when, when, new),
                )
            )
            found = tracked(d, provider, ids)
        else:
            inserted = {}
        found |= inserted
        changes += [OrderChange(i, _NOTHING, _TRACKED) for i in sorted(inserted.values())]
        known |= found
    return known, changes


def tracked(d: Driver, provider: str, ids: Sequence[int]) -> dict[int, int]:
    """provider order id → local id, for those of ``ids`` the provider's rows hold."""
    rows = d.run(
        "SELECT provider_order_id, id FROM orders WHERE provider = ? "  # noqa: S608
        f"AND {d.ids_in('provider_order_id', len(ids))}",
        (provider, *d.id_params(ids)),
    )
    return dict(rows)


def insert_changes(d: Driver, changes: Sequence[OrderChange], now: datetime) -> None:
    """The ``order_changes`` rows of ``changes`` (on PostgreSQL, in the feed's turn: the
    caller takes it)."""
    if not changes:
        return
    at, text, money = d.time(now), d.text, d.money

    def row(c: OrderChange) -> tuple[object, ...]:
        # ORDER_TRACKED's order: state, status, charge, remains, start_counter.
        (state, status, charge, remains, counter), new = c.old, c.new
        return (
            c.order_id, at, text(state), text(new[0]), text(status), text(new[1]),
            money(charge), money(new[2]), remains, new[3], counter, new[4],
        )  # fmt: skip

    def plain_row(c: OrderChange) -> tuple[object, ...]:  # sqlite3 binds states as text
        (state, status, charge, remains, counter), new = c.old, c.new
        return (
            c.order_id, at, state, new[0], status, new[1],
            money(charge), money(new[2]), remains, new[3], counter, new[4],
        )  # fmt: skip

    d.run_many(_INSERT_CHANGE, [(plain_row if d.sqlite else row)(c) for c in changes])


def track_plainly(
    url: str,
    providers: Iterable[tuple[str, str]],
    provider: str,
    provider_order_ids: Sequence[int],
    now: datetime,
    *,
    busy_timeout: float = 5.0,
) -> dict[int, int] | None:
    """``Storage.track_orders`` through ``sqlite3`` alone, when that does what opening the
    database the usual way and tracking would: a SQLite file that exists, at the newest
    revision, with every configured provider stored under its URL. None otherwise, and on
    any error of the driver's (a lock held past the busy timeout included): the caller
    then goes the usual way, which reports it as it always has. Nothing is written then.

    The connection is set up as ``Storage``'s are: every commit waits for the disk,
    foreign keys are checked, and the write lock is taken when the transaction begins.
    """
    path = plain_sqlite_file(url)
    if path is None or not path.is_file():
        return None
    try:
        connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("BEGIN IMMEDIATE")
        d = PlainDriver(connection)
        if d.run("SELECT version_num FROM alembic_version") != [(HEAD,)]:
            connection.execute("ROLLBACK")
            return None
        stored = dict(d.run("SELECT name, url FROM providers"))
        if any(stored.get(name) != where for name, where in providers):
            connection.execute("ROLLBACK")  # registering it is the usual way's work
            return None
        known, changes = track(d, provider, provider_order_ids, now)
        insert_changes(d, changes, now)
        connection.execute("COMMIT")
        return known
    except sqlite3.Error:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        return None
    finally:
        connection.close()
