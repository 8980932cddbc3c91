"""Rate limits end to end: ``requests_per_minute`` against a simulator that answers 429
past its own limit, over real HTTP, through ``syncd sync``.

A minute is long for a test: here the simulator's clock runs sixty times fast, and
syncd's minute is shrunk to one second, so "12 requests a minute" is 12 a second on both
sides.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.provider import pace
from syncd.provider.pace import MonotonicTimer
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from tests.conftest import TOKEN, InstantTimer, write_config

LIMIT = 12  # requests a "minute"
ORDERS = 24  # one status call each: with the catalog and the balance, 26 requests


def fast_clock() -> float:
    return time.monotonic() * 60  # the simulator's minute passes in one second


@pytest.fixture
def limited() -> Iterator[SimulatorServer]:
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


def prepared(tmp_path: Path, db_url: str, server: SimulatorServer, extra: str) -> Path:
    config = write_config(
        tmp_path / "syncd.toml", db_url, server.url, extra=f"status_batch_size = 1\n{extra}"
    )
    ids = server.provider.create_orders(ORDERS)
    assert (
        main(["--config", str(config), "order", "track", "--provider", "sim", *map(str, ids)]) == 0
    )
    time.sleep(1.1)  # a fresh minute for the pass: tracking may have asked something
    return config


def test_with_requests_per_minute_the_limit_is_never_hit(
    tmp_path: Path,
    db_url: str,
    limited: SimulatorServer,
    short_minute: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = prepared(tmp_path, db_url, limited, f"requests_per_minute = {LIMIT}")
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
    short_minute: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The control: the same work unpaced runs into the limit. Each 429 is waited for
    (instantly here: the autouse fixture's timer), and when the provider keeps asking
    for more than a call may wait, the job defers the rest; nothing fails, the provider
    stays up, and the orders not reached stay due for the next pass."""
    config = prepared(tmp_path, db_url, limited, "")

    assert main(["--config", str(config), "sync"]) == 0

    assert limited.provider.rate_limited > 0
    out = capsys.readouterr().out
    assert "deferred: rate limited" in out
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
    tmp_path: Path, db_url: str, instant_pauses: InstantTimer, capsys: pytest.CaptureFixture[str]
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
    (never ambiguous), the pass is deferred, not failed, and the next pass sends it."""
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

    # A new process has no memory of the pause (the provider will say again if need be).
    assert main(["--config", str(config), "sync", "orders"]) == 0
    assert rows(db_url, "SELECT state FROM orders") == [("active",)]
    assert len(server.provider.orders) == 1
