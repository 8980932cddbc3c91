"""``orders.status_extra`` and its change rows on every backend: written with the status
in one transaction, one ``order_changes`` row per change (none when unchanged), garbage a
consumer wrote read as a problem and healed, and shown by ``syncd changes`` and ``syncd
order show``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.lifecycle import plan_status_batch
from syncd.models import Order, OrderState, Status
from syncd.plans import StatusPlan
from syncd.provider.replies import parse_statuses
from syncd.storage import Storage, open_storage
from tests.conftest import write_config
from tests.helpers import syncd

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def registered(any_storage: Storage) -> Storage:
    any_storage.register_providers([("sim", "https://panel.example/api/v2")])
    return any_storage


def answer(storage: Storage, order_id: int, at: datetime, entry: dict[str, Any]) -> StatusPlan:
    """One multi-status reply about provider order 501, read and written as the sweep does."""
    answers = parse_statuses({"501": entry}, [501])

    def plan(rows: list[Order]) -> StatusPlan:
        return plan_status_batch(
            rows, answers, at, base=timedelta(minutes=2), give_up_after=timedelta(days=30)
        )

    return storage.apply_status_answers([order_id], at, plan)


def extra_changes(storage: Storage) -> list[tuple[Any, Any]]:
    return [
        (row["extra_old"], row["extra_new"])
        for row in storage.feed_rows("orders", 0, 100)
        if row["extra_old"] != row["extra_new"]
    ]


def test_runs_and_child_orders_are_kept_and_each_change_is_one_row(registered: Storage) -> None:
    (order_id,) = registered.track_orders("sim", [501], NOW).values()
    drip = {"status": "In progress", "charge": "0.5", "remains": "40", "runs": "2 / 5",
            "orders": "9001,9002"}  # fmt: skip
    answer(registered, order_id, NOW + timedelta(minutes=1), drip)
    first = {"runs": 2, "runs_total": 5, "orders": [9001, 9002]}
    order = registered.order(order_id)
    assert order is not None and order.status_extra == first and order.problem is None
    assert extra_changes(registered) == [(None, first)]
    # The same answer again changes nothing: no change row.
    written = answer(registered, order_id, NOW + timedelta(minutes=2), drip)
    assert written.changes == [] and len(extra_changes(registered)) == 1
    # One more run: one more row, with the old and the new object.
    answer(registered, order_id, NOW + timedelta(minutes=3), drip | {"runs": "3 / 5"})
    second = first | {"runs": 3}
    assert extra_changes(registered)[-1] == (first, second)
    order = registered.order(order_id)
    assert order is not None and order.status_extra == second


def test_a_subscription_paused_stays_active_and_expired_is_done(registered: Storage) -> None:
    (order_id,) = registered.track_orders("sim", [501], NOW).values()
    sub = {"status": "Paused", "posts": "3", "expiry": "25/12/2026"}
    answer(registered, order_id, NOW + timedelta(minutes=1), sub)
    order = registered.order(order_id)
    assert order is not None
    assert (order.state, order.status) == (OrderState.ACTIVE, Status.PAUSED)
    assert order.status_extra == {"posts": 3, "expiry": "2026-12-25"}
    answer(registered, order_id, NOW + timedelta(minutes=2), sub | {"status": "Expired"})
    order = registered.order(order_id)
    assert order is not None
    assert (order.state, order.status) == (OrderState.DONE, Status.EXPIRED)


def test_a_failed_write_leaves_neither_the_extra_nor_its_change_row(
    registered: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    (order_id,) = registered.track_orders("sim", [501], NOW).values()
    before = len(registered.feed_rows("orders", 0, 100))

    def broken(*args: object) -> None:
        raise sa.exc.OperationalError("INSERT INTO order_changes", {}, Exception("disk full"))

    monkeypatch.setattr("syncd.storage.order_writes.log_changes_with", broken)
    monkeypatch.setattr("syncd.storage.sweep.log_changes_with", broken)
    with pytest.raises(Exception, match="disk full"):
        answer(registered, order_id, NOW + timedelta(minutes=1), {"status": "Active", "posts": 1})
    order = registered.order(order_id)
    assert order is not None and order.status_extra is None
    assert len(registered.feed_rows("orders", 0, 100)) == before


@pytest.fixture
def sqlite_storage(db_url: str) -> Iterator[Storage]:
    storage = open_storage(db_url)
    storage.register_providers([("sim", "https://panel.example/api/v2")])
    yield storage
    storage.close()


def test_garbage_in_the_column_is_a_problem_until_an_answer_heals_it(
    sqlite_storage: Storage,
) -> None:
    (order_id,) = sqlite_storage.track_orders("sim", [501], NOW).values()
    with sqlite_storage.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE orders SET status_extra = '{{runs' WHERE id = {order_id}")
    order = sqlite_storage.order(order_id)
    assert order is not None and order.status_extra is None
    assert order.problem is not None and "status_extra: not JSON" in order.problem
    answer(sqlite_storage, order_id, NOW + timedelta(minutes=1), {"status": "Active", "posts": 2})
    order = sqlite_storage.order(order_id)
    assert order is not None and order.status_extra == {"posts": 2} and order.problem is None


def test_changes_and_order_show_print_the_extra(
    tmp_path: Path, db_url: str, sqlite_storage: Storage
) -> None:
    (order_id,) = sqlite_storage.track_orders("sim", [501], NOW).values()
    entry = {"status": "In progess", "runs": 1, "orders": [9001]}
    answer(sqlite_storage, order_id, NOW + timedelta(minutes=1), entry)
    config = write_config(tmp_path / "syncd.toml", db_url, "https://panel.example/api/v2")
    changes = syncd(config, "changes")
    assert changes.returncode == 0, changes.stderr
    rows = [json.loads(line) for line in changes.stdout.splitlines()]
    assert rows[-1]["extra_old"] is None
    assert rows[-1]["extra_new"] == {"runs": 1, "orders": [9001]}
    shown = syncd(config, "order", "show", str(order_id), "--json")
    assert shown.returncode == 0, shown.stderr
    order = json.loads(shown.stdout)
    assert order["status_extra"] == {"runs": 1, "orders": [9001]}
    assert order["status"] == "In progress" and order["status_raw"] == "In progess"
    assert order["changes"][-1]["extra_new"] == {"runs": 1, "orders": [9001]}
    text = syncd(config, "order", "show", str(order_id))
    assert 'extra - -> {"runs": 1, "orders": [9001]}' in text.stdout
