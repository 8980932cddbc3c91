"""syncd's ledger against the provider's own books, through `syncd run` and real HTTP.

The simulator keeps a true account (every debit, refund and top-up it makes). A daemon
runs normal traffic for many balance intervals: orders of several types, Partial ones,
cancellations, refills, a drip-feed, a package, a top-up. Its ledger must then equal the
simulator's books to the last unit, with no drift. Then a second client spends 3 % of
the balance on the same key, and ``balance.drift`` must name that amount within two
balance intervals.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import httpx

from syncd.simulator import SimulatedProvider, SimulatorServer
from tests.conftest import TOKEN, write_config
from tests.helpers import Daemon

BALANCE_INTERVAL = 2.0
DRIP = 140  # the default catalog's Default service with drip-feed
PACKAGE = 141  # its Package
CANCELABLE = 105  # a Default service that can be canceled
REFILLABLE = 100  # a Default service with refill
TRAFFIC_SECONDS = 18.0


def _rows(db: Path, statement: str, *params: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(statement, params).fetchall()


def _queue(db: Path, service: int, quantity: int | None, params: dict[str, str] | None) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO orders (provider, service_id, link, quantity, params) "
            "VALUES ('sim', ?, ?, ?, ?)",
            (service, f"https://example.com/p/{time.monotonic_ns()}", quantity,
             json.dumps(params) if params else None),
        )  # fmt: skip


def _ask(db: Path, order_id: int, kind: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO order_requests (order_id, kind) VALUES (?, ?)", (order_id, kind))


def _wait(done: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def test_the_ledger_equals_the_providers_books_and_spending_behind_its_back_raises_drift(
    tmp_path: Path,
) -> None:
    db = tmp_path / "syncd.db"
    sim = SimulatedProvider(token=TOKEN, dialect="key", order_duration=3.0, minute=0.2)
    with SimulatorServer(sim) as server:
        config = write_config(
            tmp_path / "syncd.toml", f"sqlite:///{db}", server.url, timeout="5s",
            extra='dialect = "key"\norders_interval = "1s"\n'
            f'balance_interval = "{BALANCE_INTERVAL:.0f}s"',
        )  # fmt: skip
        daemon = Daemon(config, tmp_path, log_to=tmp_path / "daemon.log")
        try:
            _wait(lambda: _opened(db), 20, "the ledger opened at the first balance poll")
            _traffic(db, sim)
            # Quiet: every order final, everything seen, two polls more.
            _wait(lambda: _all_final(db), 30, "every order final")
            _wait(lambda: _settled(db, sim), 20, "the ledger at the provider's balance")
            _check_books(db, sim)

            # A second client on the same key spends 3 % of the balance.
            before = len(daemon.logged())
            spent = _spend_behind_the_back(server.url, sim)
            _wait(lambda: _drift_alerts(db), 3 * BALANCE_INTERVAL + 4, "balance.drift")
            # Its log line follows the commit that wrote it.
            _wait(lambda: "alert.raised" in daemon.logged()[before:], 5, "alert.raised logged")
            # The polls logged from the spend on, up to the one that raised the alert (its
            # alert.raised comes before its balance.synced line).
            events = daemon.logged()[before:]
            polls = events[: events.index("alert.raised")].count("balance.synced") + 1
        finally:
            daemon.stop()
    ((payload,),) = _drift_alerts(db)
    data = json.loads(str(payload))["data"]
    assert Decimal(data["amount"]) == spent
    assert data["currency"] == "USD"
    # Two polls see the fall, so it is raised within two balance intervals: the second
    # poll after the spend, or the third when one was in flight as the spend was made
    # (its balance read before it). Counted in polls, not seconds.
    assert 2 <= polls <= 3, events


def _opened(db: Path) -> bool:
    try:
        rows = _rows(db, "SELECT ledger_opened_at FROM providers WHERE name = 'sim'")
    except sqlite3.OperationalError:
        return False  # not migrated yet
    return bool(rows and rows[0][0])


def _traffic(db: Path, sim: SimulatedProvider) -> None:
    """Orders of several types for TRAFFIC_SECONDS, a cancel and a refill now and then,
    a top-up half way."""
    start = time.monotonic()
    step = 0
    topped_up = False
    while time.monotonic() - start < TRAFFIC_SECONDS:
        step += 1
        if step % 7 == 0:
            _queue(db, DRIP, 100, {"runs": "3", "interval": "1"})
        elif step % 11 == 0:
            _queue(db, PACKAGE, None, None)
        else:
            service = (CANCELABLE, REFILLABLE, 101, 104)[step % 4]
            _queue(db, service, 100 + 37 * (step % 9), None)
        if step % 5 == 0:  # cancel the newest sent cancelable order
            found = _rows(
                db,
                "SELECT id FROM orders WHERE service_id = ? AND state = 'active' "
                "ORDER BY id DESC LIMIT 1",
                CANCELABLE,
            )
            if found:
                _ask(db, int(found[0][0]), "cancel")  # type: ignore[call-overload]
        if step % 9 == 0:  # a refill of a completed order costs nothing
            found = _rows(
                db,
                "SELECT id FROM orders WHERE service_id = ? AND status = 'Completed' LIMIT 1",
                REFILLABLE,
            )
            if found:
                _ask(db, int(found[0][0]), "refill")  # type: ignore[call-overload]
        if not topped_up and time.monotonic() - start > TRAFFIC_SECONDS / 2:
            sim.top_up(Decimal("25.00"))
            topped_up = True
        time.sleep(0.4)


def _all_final(db: Path) -> bool:
    open_ = _rows(db, "SELECT COUNT(*) FROM orders WHERE state NOT IN ('done', 'rejected')")
    return open_[0][0] == 0


def _running(db: Path) -> Decimal | None:
    rows = _rows(db, "SELECT balance_after FROM ledger WHERE provider = 'sim' ORDER BY id DESC")
    return Decimal(str(rows[0][0])) if rows else None


def _settled(db: Path, sim: SimulatedProvider) -> bool:
    gap = _rows(db, "SELECT ledger_gap FROM providers WHERE name = 'sim'")[0][0]
    return _running(db) == sim.balance and Decimal(str(gap or 0)) == 0


def _check_books(db: Path, sim: SimulatedProvider) -> None:
    per_order: dict[int, Decimal] = defaultdict(Decimal)
    per_kind: dict[str, Decimal] = defaultdict(Decimal)
    for kind, order_id, amount in _rows(db, "SELECT kind, order_id, amount FROM ledger"):
        per_kind[str(kind)] += Decimal(str(amount))
        if order_id is not None:
            per_order[int(order_id)] += Decimal(str(amount))  # type: ignore[call-overload]
    sent = _rows(db, "SELECT id, provider_order_id FROM orders WHERE provider_order_id IS NOT NULL")
    assert len(sent) >= 30, len(sent)  # traffic, not a handful
    for order_id, provider_order_id in sent:
        cost = sim.order_cost(int(provider_order_id))  # type: ignore[call-overload]
        assert per_order[int(order_id)] == -cost, (order_id, per_order[int(order_id)], cost)  # type: ignore[call-overload]
    assert per_kind["refund"] == sim.booked("refund") > 0
    assert per_kind["topup"] == sim.booked("topup") == Decimal("25.00")
    assert per_kind["drift"] == 0
    assert _drift_alerts(db) == []
    ((polls,),) = _rows(db, "SELECT COUNT(*) FROM balance_snapshots")
    assert isinstance(polls, int) and polls >= 8, polls  # many balance intervals, each one a change
    assert _running(db) == sim.balance


def _spend_behind_the_back(url: str, sim: SimulatedProvider) -> Decimal:
    """An `add` on the same key from another client, 3 % of the balance, held In
    progress so that no refund of it comes back during the test."""
    rate = sim.packages[103].rate  # per 1000
    quantity = int(sim.balance * Decimal("0.03") / rate * 1000)
    reply = httpx.post(
        url,
        data={"key": TOKEN, "action": "add", "service": "103", "link": "https://example.com/x",
              "quantity": str(quantity)},
    )  # fmt: skip
    order = int(reply.json()["order"])
    sim.orders[order].pinned = {"status": "In progress"}
    return sim.order_cost(order)


def _drift_alerts(db: Path) -> list[tuple[object, ...]]:
    return _rows(db, "SELECT payload FROM alerts WHERE event = 'balance.drift'")
