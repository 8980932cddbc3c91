"""Row locks and the feeds' turn: every row lock comes before the turn (checked in every
test by ``tests/lock_order.py``), and a clock mark that needs no raising locks nothing.

A status batch once raised its provider's clock mark after taking the turn, while a
sending held the provider's row and waited for the turn: MariaDB found the deadlock, and
the sending's transaction was given up (``storage.locked``) three times over under load.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from syncd.storage import Storage
from syncd.storage.base import take_feed_turn
from syncd.storage.clock_marks import MARK_STEP, raise_clock_mark
from syncd.storage.driver import Driver
from syncd.storage.ledger import lock_providers
from tests.lock_order import LockOrder

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_the_check_names_a_row_lock_taken_after_the_turn(
    storage: Storage, row_locks_before_the_turn: LockOrder
) -> None:
    storage.register_providers([("sim", "https://panel.example/api/v2")])
    with storage.engine.begin() as conn:
        take_feed_turn(conn)
        Driver(conn).run("UPDATE providers SET clock_mark = ? WHERE name = ?", (None, "sim"))
    assert row_locks_before_the_turn.broken == [
        "UPDATE providers SET clock_mark = ? WHERE name = ?"
    ]
    row_locks_before_the_turn.broken.clear()  # seen: the test passes


def test_a_row_locked_before_the_turn_may_be_written_after_it(
    any_storage: Storage, row_locks_before_the_turn: LockOrder
) -> None:
    storage = any_storage
    storage.register_providers([("sim", "https://panel.example/api/v2")])
    with storage.engine.begin() as conn:
        d = Driver(conn)
        # SQLite has no row locks: the check reads the statement, not the database.
        d.run("SELECT name FROM providers WHERE name = ? FOR UPDATE", ("sim",)) if (
            d.backend.row_lock_sql
        ) else d.run("UPDATE providers SET clock_mark = NULL WHERE name = ?", ("sim",))
        take_feed_turn(conn)
        d.run("UPDATE providers SET clock_mark = ? WHERE name = ?", (None, "sim"))
        d.run("SELECT id FROM orders WHERE id = ?", (1,))
        d.run(
            "INSERT INTO alerts (event, payload, created_at) VALUES (?, ?, ?)",
            ("x", "{}", d.time(NOW)),
        )
    assert row_locks_before_the_turn.broken == []


def test_a_fresh_clock_mark_does_not_wait_for_a_sending(server_storage: Storage) -> None:
    """Every status batch raises the mark, nearly always finding it fresh. A sending
    holds its provider's row until it commits; on MariaDB an UPDATE waits for the row
    it looks up even when it would change nothing, so each batch of that provider
    queued behind the sending."""
    storage = server_storage
    storage.register_providers([("sim", "https://panel.example/api/v2")])
    with storage.engine.begin() as conn:
        raise_clock_mark(Driver(conn), ["sim"], NOW)
    with storage.engine.connect() as sending:
        sending.exec_driver_sql("SELECT name FROM providers WHERE name = 'sim' FOR UPDATE")
        with storage.engine.begin() as conn:
            raise_clock_mark(Driver(conn), ["sim"], NOW + MARK_STEP / 2)  # fresh: no wait
        stale = NOW + MARK_STEP + timedelta(seconds=1)
        with pytest.raises(sa.exc.OperationalError), storage.engine.begin() as conn:
            raise_clock_mark(Driver(conn), ["sim"], stale)  # written: waits, times out
        sending.rollback()
    with storage.engine.begin() as conn:
        raise_clock_mark(Driver(conn), ["sim"], stale)
    with storage.engine.connect() as conn:
        mark = conn.exec_driver_sql("SELECT clock_mark FROM providers").scalar_one()
    assert mark.replace(tzinfo=UTC) == stale


def test_a_ledger_row_after_the_turn_needs_its_provider_locked_before(
    server_storage: Storage, row_locks_before_the_turn: LockOrder
) -> None:
    """InnoDB's foreign key check of a ledger row locks its provider's row for share: a
    status batch that took the turn and then inserted one waited for a sending holding
    that row, which waited for the turn (MariaDB gave up one of them: ``storage.locked``)."""
    storage = server_storage
    storage.register_providers([("sim", "https://panel.example/api/v2")])
    insert = (
        "INSERT INTO ledger (provider, at, kind, order_id, amount, currency, balance_after)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    row = ("sim", NOW, "topup", None, "1.00", "USD", "1.00")
    for locked in (False, True):
        with storage.engine.begin() as conn:
            d = Driver(conn)
            if locked:
                lock_providers(d, ["sim"])
            take_feed_turn(conn)
            d.run(insert, (*row[:1], d.time(NOW), *row[2:]))
        # PostgreSQL's check takes a key share lock, which no writer of syncd's holds up.
        waits = bool(storage.backend.parent_lock_sql) and not locked
        expected = [" ".join(insert.split())] if waits else []
        assert row_locks_before_the_turn.broken == expected
        row_locks_before_the_turn.broken.clear()  # seen: the test passes
