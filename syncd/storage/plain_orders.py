"""Order statements written once for both ways of reaching the database: ``Storage``
(SQLAlchemy's connection, through ``Driver``) and a command's own connection of the
driver's (``PlainDriver``, where the backend offers ``write_plainly``), which ``syncd
order track`` uses to spare half a second of imports per call. Nothing here imports
SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime

from syncd.models import OrderState
from syncd.plans import ORDER_TRACKED, OrderChange
from syncd.status_extra import as_json
from syncd.storage.clock_marks import raise_clock_mark
from syncd.storage.driver import Driver, chunks
from syncd.storage.migrations import HEAD
from syncd.storage.urls import plain_backend

# The tracked columns (ORDER_TRACKED) of an order that did not exist, and of one
# tracked from now on.
_NOTHING = (None,) * len(ORDER_TRACKED)
_TRACKED = (OrderState.ACTIVE, *_NOTHING[1:])
_INSERT_CHANGE = (
    "INSERT INTO order_changes (order_id, changed_at, state_old, state_new, status_old, "
    "status_new, charge_old, charge_new, remains_old, remains_new, start_counter_old, "
    "start_counter_new, extra_old, extra_new) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def track(
    d: Driver, provider: str, provider_order_ids: Sequence[int], now: datetime
) -> tuple[dict[int, int], list[OrderChange]]:
    """Insert the orders of ``provider_order_ids`` not tracked yet (``active``, due now).
    Returns provider id → local id for each, and the change rows of those inserted here
    (the caller writes them last in its transaction). Rows inserted raise the provider's
    clock mark (``storage/clock_marks.py``): they are due at ``now``."""
    known: dict[int, int] = {}
    when = d.time(now)
    active = OrderState.ACTIVE.value
    changes = []
    unique = list(dict.fromkeys(provider_order_ids))
    stored = functools.partial(tracked, d, provider)
    for ids in chunks(unique):
        found = tracked(d, provider, ids)
        new = [poid for poid in ids if poid not in found]
        inserted: dict[int, int] = {}
        if new:
            # Only the rows this transaction inserted get a change row: another command
            # tracking the same ids right now keeps its own, read here once it commits.
            inserted = d.backend.insert_missing_orders(
                d, provider, new, state=active, when=when, stored=stored
            )
            if len(inserted) < len(new):
                found |= stored([poid for poid in new if poid not in inserted])
        found |= inserted
        changes += [OrderChange(i, _NOTHING, _TRACKED) for i in sorted(inserted.values())]
        known |= found
    if changes:
        raise_clock_mark(d, [provider], now)
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
    """The ``order_changes`` rows of ``changes`` (in the feeds' turn, which the caller
    takes: ``base.take_feed_turn``)."""
    if not changes:
        return
    at, text, money = d.time(now), d.text, d.money

    def row(c: OrderChange) -> tuple[object, ...]:
        # ORDER_TRACKED's order: state, status, charge, remains, start_counter, status_extra.
        (state, status, charge, remains, counter, extra), new = c.old, c.new
        return (
            c.order_id, at, text(state), text(new[0]), text(status), text(new[1]),
            money(charge), money(new[2]), remains, new[3], counter, new[4],
            as_json(extra), as_json(new[5]),
        )  # fmt: skip

    def plain_row(c: OrderChange) -> tuple[object, ...]:  # the driver binds states as text
        (state, status, charge, remains, counter, extra), new = c.old, c.new
        return (
            c.order_id, at, state, new[0], status, new[1],
            money(charge), money(new[2]), remains, new[3], counter, new[4],
            as_json(extra), as_json(new[5]),
        )  # fmt: skip

    d.run_many(
        _INSERT_CHANGE, [(plain_row if d.backend.binds_enums_as_text else row)(c) for c in changes]
    )


def track_plainly(
    url: str,
    providers: Iterable[tuple[str, str]],
    provider: str,
    provider_order_ids: Sequence[int],
    now: datetime,
    *,
    busy_timeout: float = 5.0,
) -> dict[int, int] | None:
    """``Storage.track_orders`` on a connection of the driver's own (the backend's
    ``write_plainly``: SQLite's ``sqlite3``), when that does what opening the database the
    usual way and tracking would: a database file that exists, at the newest revision,
    with every configured provider stored under its URL. None otherwise, and on any
    error of the driver's (a lock held past the busy timeout included): the caller then
    goes the usual way, which reports it as it always has. Nothing is written then.
    """
    backend = plain_backend(url)
    if backend is None:
        return None

    def work(d: Driver) -> dict[int, int] | None:
        if d.run("SELECT version_num FROM alembic_version") != [(HEAD,)]:
            return None
        stored = dict(d.run("SELECT name, url FROM providers"))
        if any(stored.get(name) != where for name, where in providers):
            return None  # registering it is the usual way's work
        known, changes = track(d, provider, provider_order_ids, now)
        insert_changes(d, changes, now)
        return known

    return backend.write_plainly(url, busy_timeout, work)
