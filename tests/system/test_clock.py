"""A clock that jumps: orders and alerts written while it was wrong are not stranded.

Real machines boot with a wrong clock and NTP steps it back, or an operator sets it by
hand. Each test runs real passes (real HTTP to the simulator, a real database) with a
clock the test moves, and the provider's own clock moved separately.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from syncd.config import Config
from syncd.jobs.balance import runway_hours
from syncd.jobs.runner import JobResult, run_pass
from syncd.simulator import SimulatedProvider, SimulatorServer
from syncd.storage import Storage
from tests.conftest import TOKEN, make_config, provider_config
from tests.fakes import FakeClock

ORDERS = 40


class ProviderTime:
    """The simulator's own clock (seconds), moved by the test."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def provider_time() -> ProviderTime:
    return ProviderTime()


@pytest.fixture
def sim_server(provider_time: ProviderTime) -> Iterator[SimulatorServer]:
    sim = SimulatedProvider(token=TOKEN, order_duration=10.0, clock=provider_time)
    with SimulatorServer(sim) as server:
        yield server


@pytest.fixture
def config(db_url: str, sim_server: SimulatorServer) -> Config:
    return make_config(db_url, provider_config(sim_server.url))


def orders_pass(config: Config, storage: Storage, clock: FakeClock) -> JobResult:
    (result,) = asyncio.run(run_pass(config, storage, ["orders"], clock=clock))
    assert result.ok, result.message
    return result


def rows(db_url: str, statement: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute(statement).fetchall()


def track_all(storage: Storage, server: SimulatorServer, clock: FakeClock) -> None:
    storage.register_providers([("sim", server.url)])
    ids = server.provider.create_orders(ORDERS)
    storage.track_orders("sim", ids, clock())


def test_a_pass_a_day_ahead_then_back_strands_no_order(
    config: Config, storage: Storage, sim_server: SimulatorServer, db_url: str,
    provider_time: ProviderTime,
) -> None:  # fmt: skip
    clock = FakeClock()
    track_all(storage, sim_server, clock)
    orders_pass(config, storage, clock)  # Pending
    clock.step(days=1)
    orders_pass(config, storage, clock)  # checked_at and next_check_at a day ahead
    clock.step(days=-1, minutes=5)  # NTP steps the clock back
    provider_time.seconds = 60  # meanwhile the provider finished every order
    before = storage.order_change_count()
    result = orders_pass(config, storage, clock)
    assert f"checked {ORDERS} of {ORDERS} due" in result.message
    assert storage.order_change_count() - before >= ORDERS
    assert rows(db_url, "SELECT DISTINCT state FROM orders") == [("done",)]


def test_a_pass_forty_days_ahead_abandons_nothing(
    config: Config, storage: Storage, sim_server: SimulatorServer, db_url: str
) -> None:
    clock = FakeClock()
    track_all(storage, sim_server, clock)
    orders_pass(config, storage, clock)
    clock.step(days=40)
    orders_pass(config, storage, clock)
    assert rows(db_url, "SELECT DISTINCT state FROM orders") == [("active",)]
    assert rows(db_url, "SELECT count(*) FROM alerts") == [(0,)]
    clock.step(days=-40, minutes=5)
    orders_pass(config, storage, clock)
    assert rows(db_url, "SELECT DISTINCT state, overdue_checks FROM orders") == [("active", 0)]


def test_a_clock_that_stays_forty_days_ahead_abandons_on_the_third_check(
    config: Config, storage: Storage, sim_server: SimulatorServer, db_url: str
) -> None:
    clock = FakeClock()
    track_all(storage, sim_server, clock)
    for _ in range(3):
        assert rows(db_url, "SELECT DISTINCT state FROM orders") == [("active",)]
        clock.step(days=40)
        orders_pass(config, storage, clock)
    assert rows(db_url, "SELECT DISTINCT state FROM orders") == [("abandoned",)]
    assert rows(db_url, "SELECT count(*) FROM alerts WHERE event = 'order.abandoned'") == [
        (ORDERS,)
    ]


@pytest.mark.parametrize(
    "next_check_at", ["tomorrow", "9999-12-31 23:59:59", "2999-01-01 00:00:00", 1700000000]
)
def test_a_next_check_no_schedule_would_write_is_due_now(
    config: Config, storage: Storage, sim_server: SimulatorServer, db_url: str,
    next_check_at: object,
) -> None:  # fmt: skip
    clock = FakeClock()
    track_all(storage, sim_server, clock)
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE orders SET next_check_at = ?", (next_check_at,))
    result = orders_pass(config, storage, clock)
    assert f"checked {ORDERS} of {ORDERS} due" in result.message


def test_money_spent_while_the_clock_was_wrong_keeps_the_runway_finite(
    storage: Storage,
) -> None:
    clock = FakeClock()
    history = [
        (clock.now + timedelta(days=1), Decimal("100")),  # a snapshot from a clock ahead
        (clock.now, Decimal("90")),
    ]
    assert runway_hours(history, clock.now) is None  # no sensible window: unknown
