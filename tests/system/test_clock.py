"""A clock that jumps: orders and alerts written while it was wrong are not stranded.

Real machines boot with a wrong clock and NTP steps it back, or an operator sets it by
hand. Each test runs real passes (real HTTP to the simulator, a real database) with a
clock the test moves, and the provider's own clock moved separately.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from syncd.config import Config
from syncd.jobs.balance import runway_hours
from syncd.jobs.runner import JobResult, ProviderRunner, run_pass
from syncd.lifecycle import MAX_BACKOFF, resolution
from syncd.models import OrderState, RequestKind
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.storage import Storage, open_storage
from syncd.storage.plain_orders import track_plainly
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


def orders_pass(
    config: Config, storage: Storage, clock: FakeClock, *, ok: bool = True
) -> JobResult:
    (result,) = asyncio.run(run_pass(config, storage, ["orders"], clock=clock))
    assert result.ok is ok, result.message
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


# -- a clock ahead for a while: nothing waits longer than its own interval ---------------------

INTERVAL = timedelta(minutes=2)  # the provider's orders_interval (the default)


def latest(db_url: str, column: str, table: str = "orders") -> datetime:
    """The latest value of a time column, as syncd wrote it (UTC without an offset)."""
    ((text,),) = rows(db_url, f"SELECT max({column}) FROM {table}")
    return datetime.fromisoformat(str(text)).replace(tzinfo=UTC)


def test_a_pass_less_than_an_hour_ahead_then_back_holds_no_order_past_its_interval(
    config: Config, storage: Storage, sim_server: SimulatorServer, db_url: str
) -> None:
    clock = FakeClock()
    track_all(storage, sim_server, clock)
    orders_pass(config, storage, clock)  # checked now, due again in 2 min
    clock.advance(seconds=INTERVAL.total_seconds())
    clock.step(minutes=50)  # under the back-off's hour: no schedule written looks absurd
    orders_pass(config, storage, clock)  # checked "50 min from now", due 4 min after that
    clock.step(minutes=-50)
    clock.advance(seconds=2 * INTERVAL.total_seconds())  # their interval, in real time
    result = orders_pass(config, storage, clock)
    assert f"checked {ORDERS} of {ORDERS} due" in result.message
    # Written with the real time again, and back on their interval from it.
    assert latest(db_url, "checked_at") == clock.now
    assert latest(db_url, "next_check_at") <= clock.now + MAX_BACKOFF


def test_a_failed_pass_ahead_then_a_restart_with_the_right_clock_holds_no_order(
    config: Config, storage: Storage, sim_server: SimulatorServer, db_url: str
) -> None:
    """`syncd sync orders` run once with a clock ahead, which fails after it checked the
    orders (an order sent meets a 502), then a daemon started with the right clock."""
    clock = FakeClock()
    track_all(storage, sim_server, clock)
    (catalog,) = asyncio.run(run_pass(config, storage, ["catalog"], clock=clock))
    assert catalog.ok, catalog.message
    orders_pass(config, storage, clock)
    package = next(iter(sim_server.provider.packages.values()))
    storage.queue_order(
        "sim", service_id=package.service, link="https://x.example/1", quantity=package.min,
        custom_data=None, now=clock(),
    )  # fmt: skip
    sim_server.provider.inject(Fault.HTML_502, actions=["add"], after_processing=True)
    clock.advance(seconds=INTERVAL.total_seconds())
    clock.step(minutes=50)
    failed = orders_pass(config, storage, clock, ok=False)
    assert "502" in failed.message
    assert rows(db_url, "SELECT count(*) FROM orders WHERE state = 'ambiguous'") == [(1,)]
    clock.step(minutes=-50)
    clock.advance(seconds=2 * INTERVAL.total_seconds())
    restarted = open_storage(db_url)
    try:
        result = orders_pass(config, restarted, clock)
    finally:
        restarted.close()
    assert f"checked {ORDERS} of {ORDERS} due" in result.message


@contextmanager
def refillable_orders(
    storage: Storage, db_url: str, provider_time: ProviderTime, count: int
) -> Iterator[tuple[SimulatedProvider, Config, FakeClock]]:
    """``count`` tracked orders the provider finished (refillable, their refills slow),
    synced once: the provider, the config and the fake clock of the test."""
    sim = SimulatedProvider(
        dialect="key", token=TOKEN, order_duration=10.0, refill_duration=10_000.0,
        clock=provider_time,
    )  # fmt: skip
    with SimulatorServer(sim) as server:
        config = make_config(db_url, provider_config(server.url, dialect="key"))
        clock = FakeClock()
        storage.register_providers([("sim", server.url)])
        storage.track_orders("sim", sim.create_orders(count, service=102), clock())
        provider_time.seconds = 60  # they are over: Completed or Partial, refillable
        orders_pass(config, storage, clock)
        yield sim, config, clock


def test_a_refill_checked_a_day_ahead_is_checked_again_within_its_interval(
    storage: Storage, db_url: str, provider_time: ProviderTime
) -> None:
    with refillable_orders(storage, db_url, provider_time, 3) as (sim, config, clock):
        refilled = [int(str(i)) for (i,) in rows(db_url, "SELECT id FROM orders")]
        storage.queue_requests(RequestKind.REFILL, refilled)
        orders_pass(config, storage, clock)  # sent; their status due in 2 min
        assert rows(db_url, "SELECT DISTINCT state FROM order_requests") == [("sent",)]
        clock.advance(seconds=INTERVAL.total_seconds())
        clock.step(days=1)
        orders_pass(config, storage, clock)
        assert sim.count("refill_status") == 1
        clock.step(days=-1)
        clock.advance(seconds=2 * INTERVAL.total_seconds())
        orders_pass(config, storage, clock)
        assert sim.count("refill_status") == 2
        assert latest(db_url, "checked_at", "order_requests") == clock.now


# -- a one-off command run with a clock ahead: the next pass brings its times back ----------

AHEAD = timedelta(seconds=3000)


def one_off(
    config: Config, storage: Storage, server: SimulatorServer, clock: FakeClock, what: str
) -> None:
    """What ``syncd order add`` / ``track`` / ``resolve --provider-order`` writes, run
    with ``clock`` (ahead): one order the provider holds, due "now" by that clock."""
    provider = config.providers[0]
    if what == "add":
        package = next(iter(server.provider.packages.values()))
        order_id = storage.queue_order(
            "sim", service_id=package.service, link="https://x.example/1",
            quantity=package.min, custom_data=None, now=clock(),
        )  # fmt: skip

        async def submit() -> None:
            async with ProviderRunner(provider, storage, clock=clock) as runner:
                await runner.submit(order_id)

        asyncio.run(submit())
    elif what == "track":  # the command's own driver connection, as `syncd order track`
        (poid,) = server.provider.create_orders(1)
        assert track_plainly(config.database.url, [("sim", provider.url)], "sim", [poid], clock())
    else:  # resolve an ambiguous order as a provider order
        (poid,) = server.provider.create_orders(1)
        with sqlite3.connect(config.database.url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "INSERT INTO orders (provider, service_id, link, quantity, state) "
                "VALUES ('sim', 1, 'https://x.example/2', 100, 'ambiguous')"
            )
        ((local,),) = rows(config.database.url, "SELECT max(id) FROM orders")
        update = resolution("provider-order", poid, clock())
        assert storage.settle_order(int(str(local)), OrderState.AMBIGUOUS, update, clock())
    assert rows(config.database.url, "SELECT state FROM orders") == [("active",)]


@pytest.mark.parametrize("what", ["add", "track", "resolve"])
def test_an_order_a_one_off_command_wrote_with_a_clock_ahead_is_checked_at_the_next_pass(
    config: Config, storage: Storage, sim_server: SimulatorServer, db_url: str,
    logged: list[MutableMapping[str, Any]], what: str,
) -> None:  # fmt: skip
    """The daemon is stopped; `syncd order add` (or track, or resolve) runs on a host whose
    clock is 50 minutes ahead; the daemon starts again with the right clock. No pass ran
    ahead, so only the command's own mark says a clock did."""
    clock = FakeClock()
    storage.register_providers([("sim", sim_server.url)])
    (catalog,) = asyncio.run(run_pass(config, storage, ["catalog"], clock=clock))
    assert catalog.ok, catalog.message
    clock.step(seconds=AHEAD.total_seconds())
    one_off(config, storage, sim_server, clock, what)
    clock.step(seconds=-AHEAD.total_seconds())
    clock.advance(seconds=INTERVAL.total_seconds())
    restarted = open_storage(db_url)
    try:
        result = orders_pass(config, restarted, clock)
    finally:
        restarted.close()
    assert "checked 1 of 1 due" in result.message
    ran_ahead = [e["orders"] for e in logged if e["event"] == "orders.clock_ran_ahead"]
    assert ran_ahead == [1]
    assert latest(db_url, "checked_at") == clock.now
    assert latest(db_url, "clock_mark", "providers") <= clock.now


def test_a_refill_a_one_off_command_sent_with_a_clock_ahead_is_checked_within_its_interval(
    storage: Storage, db_url: str, provider_time: ProviderTime
) -> None:
    """`syncd order refill` on a host 50 minutes ahead sends the refill and makes its
    first status check due 2 minutes after that "now"; the daemon, started with the
    right clock, checks it within its interval all the same."""
    with refillable_orders(storage, db_url, provider_time, 1) as (sim, config, clock):
        clock.advance(seconds=INTERVAL.total_seconds())
        clock.step(seconds=AHEAD.total_seconds())
        ((order_id,),) = rows(db_url, "SELECT id FROM orders")
        request_ids = storage.queue_requests(RequestKind.REFILL, [int(str(order_id))])

        async def send() -> None:
            async with ProviderRunner(config.providers[0], storage, clock=clock) as runner:
                await runner.send_requests(request_ids)

        asyncio.run(send())
        assert rows(db_url, "SELECT state FROM order_requests") == [("sent",)]
        clock.step(seconds=-AHEAD.total_seconds())
        clock.advance(seconds=INTERVAL.total_seconds())
        orders_pass(config, storage, clock)
        assert sim.count("refill_status") == 1
        assert latest(db_url, "checked_at", "order_requests") == clock.now
