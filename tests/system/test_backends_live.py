"""Each database backend against a real database: its clock compares with stored times, and a
migrated PostgreSQL database has every notification.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from syncd.storage import Storage
from syncd.storage import tables as t
from syncd.storage.backends import backend_for
from syncd.storage.driver import Driver


def test_a_migrated_postgresql_database_has_every_notification(pg_storage: Storage) -> None:
    with pg_storage.engine.connect() as conn:
        triggers = set(
            conn.exec_driver_sql(
                "SELECT tgname FROM pg_trigger WHERE left(tgname, 5) = 'syncd' AND NOT tgisinternal"
            ).scalars()
        )
        functions = set(
            conn.exec_driver_sql(
                "SELECT proname FROM pg_proc WHERE left(proname, 5) = 'syncd'"
            ).scalars()
        )
    assert triggers == {
        "syncd_orders_queued",
        "syncd_order_changes_added",
        "syncd_package_changes_added",
        "syncd_alerts_added",
        "syncd_request_changes_added",
        "syncd_ledger_added",
    }
    assert functions == {"syncd_notify_orders", "syncd_notify_changes"}


def test_the_clock_reads_in_the_form_times_are_stored(any_storage: Storage) -> None:
    """A time the driver writes, the database's clock and the clock shifted compare as
    the times they are: leases are judged by these comparisons."""
    backend = backend_for(any_storage.engine)
    before = datetime.now(UTC) - timedelta(minutes=1)
    after = datetime.now(UTC) + timedelta(minutes=1)
    with any_storage.engine.connect() as conn:
        d = Driver(conn)
        ((now_is_later, shifted_is_later, in_order),) = d.run(
            f"SELECT ? < {backend.now_sql}, {backend.now_sql} < {backend.now_plus_sql},"
            f" {backend.now_plus_sql} < ?",
            (d.time(before), backend.now_plus_param(1.0), backend.now_plus_param(1.0),
             d.time(after)),
        )  # fmt: skip
        clock = conn.execute(sa.select(backend.clock(0) < backend.clock(1))).scalar_one()
    assert bool(now_is_later) and bool(shifted_is_later) and bool(in_order) and bool(clock)


def test_rows_updated_by_id_get_exactly_their_values(any_storage: Storage) -> None:
    """``Driver.update_rows``, however the backend sends it (MariaDB: a join to a derived
    table, 200 rows a statement): each row named gets its own values, a NULL among them
    too, and the rows not named keep theirs."""
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    any_storage.register_providers([("p", "https://panel.example/v2")])
    ids = any_storage.track_orders("p", list(range(1, 452)), now)
    named = sorted(ids.values())[:450]
    with any_storage.engine.begin() as conn:
        d = Driver(conn)
        rows = [
            (
                d.money(None if n % 7 == 0 else Decimal(n) / Decimal(10**12)),
                None if n % 5 == 0 else f"err {n} \U0001f680",
                d.time(now + timedelta(microseconds=n + 1)),
                order_id,
            )
            for n, order_id in enumerate(named)
        ]
        d.update_rows("orders", ("charge", "error", "next_check_at"), rows)
    with any_storage.engine.connect() as conn:
        stored = {
            order_id: (charge, error, next_check)
            for order_id, charge, error, next_check in conn.execute(
                sa.select(t.orders.c.id, t.orders.c.charge, t.orders.c.error,
                          t.orders.c.next_check_at)
            )
        }  # fmt: skip
    for n, order_id in enumerate(named):
        charge = None if n % 7 == 0 else Decimal(n) / Decimal(10**12)
        error = None if n % 5 == 0 else f"err {n} \U0001f680"
        assert stored[order_id] == (charge, error, now + timedelta(microseconds=n + 1))
    (left,) = set(ids.values()) - set(named)
    assert stored[left] == (None, None, now)  # as tracked
