"""Rate limits end to end: ``requests_per_minute`` against a simulator that answers 429
past its own limit, over real HTTP, through ``syncd sync``.

A minute is long for a test: syncd's minute is shrunk to one second, and the simulator's
clock runs 72 times fast, so that its minute is 0.83 s. Requests travel over real HTTP
through threads: one may reach the simulator later than its turn came, and the one after
it on time. Syncd's own margin for that is a second in a minute, which is 17 ms in a
shrunk one, less than a loaded machine may stall a thread; the simulator's shorter minute
gives the test a margin of 0.18 s. (That the spacing itself is exact is for
test_pace.py, on a fake clock.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.jobs.runner import run_pass
from syncd.provider import pace
from syncd.provider.pace import MonotonicTimer
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.storage import open_storage
from tests.conftest import TOKEN, make_config, provider_config, write_config
from tests.fakes import FakeClock
from tests.helpers import wait_until

LIMIT = 12  # requests a "minute"
ORDERS = 24  # one status call each: with the catalog and the balance, 26 requests


FAST = 72  # the simulator's seconds in a real one


@pytest.fixture
def skipped() -> FakeClock:
    """Time the test lets pass at once on the simulator's clock, beyond the real time."""
    return FakeClock()


@pytest.fixture
def limited(skipped: FakeClock) -> Iterator[SimulatorServer]:
    def fast_clock() -> float:
        return time.monotonic() * FAST + skipped.monotonic()

    provider = SimulatedProvider(
        token=TOKEN, requests_per_minute=LIMIT, clock=fast_clock, order_duration=10**9
    )
    with SimulatorServer(provider) as running:
        yield running


@pytest.fixture
def short_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "MINUTE", 1.0)


def rows(db_url: str, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql).fetchall()


def prepared(
    tmp_path: Path, db_url: str, server: SimulatorServer, skipped: FakeClock, extra: str
) -> Path:
    config = write_config(
        tmp_path / "syncd.toml", db_url, server.url, extra=f"status_batch_size = 1\n{extra}"
    )
    ids = server.provider.create_orders(ORDERS)
    assert (
        main(["--config", str(config), "order", "track", "--provider", "sim", *map(str, ids)]) == 0
    )
    skipped.advance(minutes=1)  # a fresh minute for the pass: tracking may have asked something
    return config


def test_with_requests_per_minute_the_limit_is_never_hit(
    tmp_path: Path,
    db_url: str,
    limited: SimulatorServer,
    skipped: FakeClock,
    short_minute: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = prepared(tmp_path, db_url, limited, skipped, f"requests_per_minute = {LIMIT}")
    before = limited.provider.busiest_minute

    assert main(["--config", str(config), "sync"]) == 0

    sim = limited.provider
    assert sim.rate_limited == 0
    assert sim.busiest_minute <= LIMIT
    assert sim.count("status") == ORDERS  # all of the work, at the pace asked
    assert rows(db_url, "SELECT count(*) FROM orders WHERE checked_at IS NOT NULL") == [(ORDERS,)]
    assert "deferred" not in capsys.readouterr().out
    assert before <= LIMIT


def test_without_it_429s_defer_the_pass_but_fail_nothing(
    tmp_path: Path,
    db_url: str,
    limited: SimulatorServer,
    skipped: FakeClock,
    short_minute: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The control: the same work unpaced runs into the limit. Each 429 is waited for
    (instantly here: the autouse fixture's timer), and when the provider keeps asking
    for more than a call may wait, the job defers the rest; nothing fails, the provider
    stays up, and the orders not reached stay due for the next pass."""
    config = prepared(tmp_path, db_url, limited, skipped, "")

    assert main(["--config", str(config), "sync"]) == 0

    assert limited.provider.rate_limited > 0
    out = capsys.readouterr().out
    assert "deferred: " in out and "rate limited" in out
    assert rows(db_url, "SELECT health, consecutive_failures FROM providers") == [("up", 0)]
    assert rows(db_url, "SELECT count(*) FROM jobs WHERE failing_since IS NOT NULL") == [(0,)]
    assert rows(db_url, "SELECT count(*) FROM alerts WHERE event = 'provider.down'") == [(0,)]
    # What was answered is written; what was not waits, still due.
    checked = rows(db_url, "SELECT count(*) FROM orders WHERE checked_at IS NOT NULL")[0][0]
    assert isinstance(checked, int) and checked < ORDERS
    assert rows(db_url, "SELECT count(*) FROM orders WHERE state = 'active'") == [(ORDERS,)]


def test_a_429s_retry_after_is_honoured_in_real_time(
    tmp_path: Path, db_url: str, server: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pace, "TIMER", MonotonicTimer())
    config = write_config(tmp_path / "syncd.toml", db_url, server.url)
    server.provider.retry_after = 1
    server.provider.inject(Fault.RATE_LIMIT, actions={"balance"}, times=1)

    started = time.monotonic()
    assert main(["--config", str(config), "sync", "balance"]) == 0
    elapsed = time.monotonic() - started

    assert server.provider.count("balance") == 2
    assert elapsed >= 0.95
    assert rows(db_url, "SELECT balance FROM providers") == [("100.00",)]


def test_an_http_date_retry_after_is_read_as_a_wait(
    tmp_path: Path, db_url: str, instant_pauses: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = SimulatedProvider(token=TOKEN, requests_per_minute=1, retry_after_date=True)
    with SimulatorServer(provider) as server:
        config = write_config(tmp_path / "syncd.toml", db_url, server.url)
        assert main(["--config", str(config), "sync"]) == 0
    # The catalog took the minute's one request; the balance was told to come back at a
    # date a minute ahead: longer than a call waits, so the job defers without a wait.
    assert provider.rate_limited == 1
    assert provider.count("balance") == 0
    said = re.search(
        r"balance sim: deferred: HTTP 429 rate limited, Retry-After (\d+)s", capsys.readouterr().out
    )
    assert said is not None and 55 <= int(said[1]) <= 61
    assert instant_pauses.slept == []
    assert rows(db_url, "SELECT health FROM providers") == [("up",)]


def test_an_order_met_by_a_long_429_stays_queued_and_is_sent_next_pass(
    tmp_path: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 429 is a request the provider did not process: the order goes back to queued
    (never ambiguous), the pass is deferred, not failed, and the first pass after the
    pause sends it."""
    config = write_config(tmp_path / "syncd.toml", db_url, server.url)
    assert main(["--config", str(config), "sync", "catalog"]) == 0
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "INSERT INTO orders (provider, service_id, link, quantity, state) "
            "VALUES ('sim', 100, 'https://example.com/p', 100, 'queued')"
        )
    server.provider.retry_after = 3600
    server.provider.inject(Fault.RATE_LIMIT, actions={"add"}, times=1)

    assert main(["--config", str(config), "sync", "orders"]) == 0
    assert "deferred: HTTP 429 rate limited, Retry-After 3600s" in capsys.readouterr().out
    ((state, error),) = rows(db_url, "SELECT state, error FROM orders")
    assert state == "queued" and "not sent" in str(error)
    assert server.provider.orders == {}  # nothing reached the provider
    assert rows(db_url, "SELECT count(*) FROM jobs WHERE failing_since IS NOT NULL") == [(0,)]

    # A new process remembers the pause (the database keeps it, at most 10 minutes of it):
    # it sends nothing, and asks the provider nothing, until the pause has passed.
    calls = len(server.provider.calls)
    assert main(["--config", str(config), "sync", "orders"]) == 0
    assert re.search(r"asked to wait (599|600)s more", capsys.readouterr().out)
    assert rows(db_url, "SELECT state FROM orders") == [("queued",)]
    assert len(server.provider.calls) == calls

    # The pause has passed (its end moved into the past, as time passing would):
    # the next pass sends the order.
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE call_pace SET paused_until = '2000-01-01 00:00:00.000000'")
    assert main(["--config", str(config), "sync", "orders"]) == 0
    assert rows(db_url, "SELECT state FROM orders") == [("active",)]
    assert len(server.provider.orders) == 1


def test_an_order_waiting_for_its_turn_when_syncd_stops_goes_back_to_the_queue(
    tmp_path: Path, db_url: str, server: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one request a minute the second order waits a minute for its turn, claimed.
    Stopped then (SIGTERM and Ctrl-C cancel the job), it never left: queued again, not
    ambiguous at the next start."""
    monkeypatch.setattr(pace, "TIMER", MonotonicTimer())
    config_path = write_config(tmp_path / "syncd.toml", db_url, server.url)
    assert main(["--config", str(config_path), "sync", "catalog"]) == 0
    for n in range(2):  # as a consumer inserts them
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "INSERT INTO orders (provider, service_id, link, quantity) "
                f"VALUES ('sim', 100, 'https://x.example/{n}', 100)"
            )
    provider = provider_config(server.url, requests_per_minute=1)
    storage = open_storage(db_url)

    def state_by_id() -> list[tuple[object, ...]]:
        return rows(db_url, "SELECT state FROM orders ORDER BY id")

    try:

        async def stopped_midway() -> None:
            job = asyncio.create_task(run_pass(make_config(db_url, provider), storage, ["orders"]))
            # The first sent; the second claimed, waiting its turn a minute away.
            sent_one = [("active",), ("submitting",)]
            await asyncio.to_thread(wait_until, lambda: state_by_id() == sent_one)
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job

        asyncio.run(stopped_midway())
    finally:
        storage.close()
    states = rows(db_url, "SELECT state, error FROM orders ORDER BY id")
    assert states == [("active", None), ("queued", "not sent: syncd stopped")]
    assert server.provider.count("add") == 1


def test_orders_queued_before_the_first_catalog_wait_for_it(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    config_path = write_config(tmp_path / "syncd.toml", db_url, server.url)
    assert main(["--config", str(config_path), "sync", "balance"]) == 0  # no catalog yet
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "INSERT INTO orders (provider, service_id, link, quantity) "
            "VALUES ('sim', 100, 'https://x.example/p', 100)"
        )
    assert main(["--config", str(config_path), "sync", "orders"]) == 0
    assert rows(db_url, "SELECT state, error FROM orders") == [("queued", None)]
    assert main(["--config", str(config_path), "sync", "catalog"]) == 0
    assert main(["--config", str(config_path), "sync", "orders"]) == 0
    assert rows(db_url, "SELECT state FROM orders") == [("active",)]


def test_a_balance_without_its_time_leaves_funds_unchecked(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    config_path = write_config(tmp_path / "syncd.toml", db_url, server.url)
    assert main(["--config", str(config_path), "sync", "catalog"]) == 0
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE providers SET balance = '100', balance_checked_at = NULL")
        conn.execute(
            "INSERT INTO orders (provider, service_id, link, quantity) "
            "VALUES ('sim', 100, 'https://x.example/p', 100)"
        )
    assert main(["--config", str(config_path), "sync", "orders"]) == 0
    assert rows(db_url, "SELECT state FROM orders") == [("active",)]
