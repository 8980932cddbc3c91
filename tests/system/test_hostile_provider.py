"""A provider answering garbage, end to end: the CLI and the jobs over real HTTP to the
simulator, a real database.  Each test is one class of garbage seen from a real panel;
the promise is the same for all: the job finishes or fails with one line, the other
orders and packages go on, and nothing the provider may hold is recorded as refused.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.simulator import Fault, SimulatorServer
from tests.conftest import write_config


@pytest.fixture
def config(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    path = write_config(tmp_path / "syncd.toml", db_url, server.url, timeout="1s")
    assert main(["--config", str(path), "sync", "catalog"]) == 0
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def rows(db_url: str, statement: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute(statement).fetchall()


def add(config: Path, link: str = "https://x.example/p") -> int:
    return run(config, "order", "add", "--provider", "sim", "--package", "100",
               "--link", link, "--quantity", "100")  # fmt: skip


# -- add ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", [{"order": 5042, "error": None}, {"order": "5042", "errors": []},
                                   {"order": 5042, "error": ""}])  # fmt: skip
def test_an_order_id_with_an_empty_error_is_active(
    config: Path, db_url: str, server: SimulatorServer, reply: object
) -> None:
    server.provider.inject(Fault.REPLY, actions=["add"], after_processing=True, reply=reply)
    assert add(config) == 0
    assert rows(db_url, "SELECT state, provider_order_id, error FROM orders") == [
        ("active", 5042, None)
    ]


@pytest.mark.parametrize("reply", ["Order received", [], {"status": "success"}, None])
def test_an_unrecognisable_answer_to_add_is_ambiguous_never_rejected(
    config: Path, db_url: str, server: SimulatorServer, reply: object,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    server.provider.inject(Fault.REPLY, actions=["add"], after_processing=True, reply=reply)
    assert add(config) == 1
    assert "is ambiguous" in capsys.readouterr().err
    ((state, error),) = rows(db_url, "SELECT state, error FROM orders")
    assert state == "ambiguous" and str(error).startswith("outcome unknown")
    assert rows(db_url, "SELECT event FROM alerts WHERE event LIKE 'order.%'") == [
        ("order.ambiguous",)
    ]
    assert len(server.provider.orders) == 1  # the provider does hold it


# -- status entries ------------------------------------------------------------------------


def test_a_garbled_status_entry_keeps_tracking_with_the_error_on_the_order(
    config: Path, db_url: str, server: SimulatorServer
) -> None:
    assert add(config, "https://x.example/1") == 0
    assert add(config, "https://x.example/2") == 0
    garbled, fine = sorted(server.provider.orders)
    server.provider.pin_order(garbled, status="In progress", charge="NaN")
    for _ in range(4):  # more passes than the three "not found" that make an order missing
        rows(db_url, "UPDATE orders SET next_check_at = '2000-01-01 00:00:00'")
        assert run(config, "sync", "orders") == 0
    ((state, error, status),) = rows(
        db_url, f"SELECT state, error, status FROM orders WHERE provider_order_id = {garbled}"
    )
    assert state == "active" and status is None
    assert "unreadable answer" in str(error) and "charge" in str(error)
    assert rows(db_url, "SELECT count(*) FROM alerts WHERE event = 'order.missing'") == [(0,)]
    assert rows(db_url, f"SELECT status FROM orders WHERE provider_order_id = {fine}") != [(None,)]


NOT_FOUND = "every order 'Incorrect order ID'"


@pytest.mark.parametrize(
    "reply", [{}, {"errors": []}, {"currency": "USD", "page": 1}, NOT_FOUND], ids=str
)
def test_a_batch_answered_with_nothing_is_the_provider_failing_not_orders_missing(
    config: Path, db_url: str, server: SimulatorServer, reply: object
) -> None:
    ids = server.provider.create_orders(10)
    assert run(config, "order", "track", "--provider", "sim", *map(str, ids)) == 0
    assert run(config, "sync", "orders") == 0
    rows(db_url, "UPDATE orders SET next_check_at = '2000-01-01 00:00:00'")
    orders = "SELECT * FROM orders ORDER BY id"
    before = rows(db_url, orders)
    if reply == NOT_FOUND:  # a database failing over: it knows none of them for a while
        reply = {str(i): {"error": "Incorrect order ID"} for i in ids}
    server.provider.inject(Fault.REPLY, actions=["status"], times=None, reply=reply)
    for _ in range(3):  # each pass finds them due again: nothing was written
        assert run(config, "sync", "orders") == 1
    assert len(server.provider.status_calls()) == 1 + 3  # not halved in search of a culprit
    assert rows(db_url, orders) == before
    assert rows(db_url, "SELECT health, consecutive_failures FROM providers") == [("down", 3)]
    assert rows(db_url, "SELECT event FROM alerts") == [("provider.down",)]

    server.provider.clear_faults()
    assert run(config, "sync", "orders") == 0
    assert rows(db_url, "SELECT DISTINCT state, missing_checks, error FROM orders") == [
        ("active", 0, None)
    ]
    assert rows(db_url, "SELECT event FROM alerts ORDER BY id") == [
        ("provider.down",),
        ("provider.up",),
    ]


def test_orders_lost_among_orders_found_still_become_missing(
    config: Path, db_url: str, server: SimulatorServer
) -> None:
    (real,) = server.provider.create_orders(1)
    lost = [900001, 900002]
    assert run(config, "order", "track", "--provider", "sim", str(real), *map(str, lost)) == 0
    for _ in range(3):
        rows(db_url, "UPDATE orders SET next_check_at = '2000-01-01 00:00:00'")
        assert run(config, "sync", "orders") == 0
    assert rows(db_url, "SELECT provider_order_id, state FROM orders ORDER BY id") == [
        (real, "active"),
        (900001, "missing"),
        (900002, "missing"),
    ]
    assert rows(db_url, "SELECT health FROM providers") == [("up",)]


# -- characters no database stores -------------------------------------------------------------

# JSON escapes a provider may send: a lone surrogate no UTF-8 encodes, and NUL, which
# PostgreSQL text refuses. Written as they stand, either fails every pass that writes it.
UNSTORABLE = "\ud800 \x00"


def test_a_refusal_spelling_an_unstorable_character_is_a_rejection_not_a_crash(
    config: Path, db_url: str, server: SimulatorServer
) -> None:
    server.provider.inject(Fault.REPLY, actions=["add"], reply={"error": f"Bad link {UNSTORABLE}"})
    assert add(config) == 1
    assert rows(db_url, "SELECT state, error FROM orders") == [
        ("rejected", "Bad link \ufffd \ufffd")
    ]
    assert add(config, "https://x.example/next") == 0  # nothing else stopped


def test_a_status_spelling_an_unstorable_character_stops_no_sweep(
    config: Path, db_url: str, server: SimulatorServer
) -> None:
    assert add(config, "https://x.example/1") == 0
    assert add(config, "https://x.example/2") == 0
    odd, fine = sorted(server.provider.orders)
    server.provider.pin_order(odd, status=f"Paused{UNSTORABLE}", posts=UNSTORABLE, remains="5")
    rows(db_url, "UPDATE orders SET next_check_at = '2000-01-01 00:00:00'")
    assert run(config, "sync", "orders") == 0
    ((status_raw, extra, remains),) = rows(
        db_url,
        f"SELECT status_raw, status_extra, remains FROM orders WHERE provider_order_id = {odd}",
    )
    assert status_raw == "Paused\ufffd \ufffd" and remains == 5
    assert "\x00" not in str(extra) and "\\u0000" not in str(extra)
    assert rows(db_url, f"SELECT status FROM orders WHERE provider_order_id = {fine}") != [(None,)]


# -- numbers no provider could mean ------------------------------------------------------------


def test_one_absurd_rate_leaves_its_package_alone_and_updates_the_others(
    config: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    before = rows(db_url, "SELECT * FROM packages WHERE service_id = 101")
    server.provider.set_rate(101, Decimal("1e30"))
    server.provider.set_rate(103, Decimal("2.50"))
    capsys.readouterr()
    assert run(config, "sync", "catalog") == 0
    out = capsys.readouterr().out
    assert "1 unreadable entry left as they were (#101: rate: amount out of range" in out
    assert rows(db_url, "SELECT * FROM packages WHERE service_id = 101") == before
    assert rows(db_url, "SELECT rate FROM packages WHERE service_id = 103") == [("2.50",)]
    assert rows(db_url, "SELECT active FROM packages WHERE service_id = 101") == [(1,)]


@pytest.mark.parametrize("currency", [840, None, [], {"code": "USD"}, "", "U" * 50])
def test_a_balance_with_an_unreadable_currency_is_taken_and_the_currency_kept(
    config: Path, db_url: str, server: SimulatorServer, currency: object,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert run(config, "sync", "balance") == 0  # 100.00 USD
    server.provider.inject(
        Fault.REPLY, actions=["balance"], reply={"balance": "100.00", "currency": currency}
    )
    assert run(config, "sync", "balance") == 0  # the same amount, no currency switch
    server.provider.inject(
        Fault.REPLY, actions=["balance"], reply={"balance": "100.84", "currency": currency}
    )
    capsys.readouterr()
    assert run(config, "sync", "balance") == 0
    out = capsys.readouterr().out
    assert "100.84" in out and ("currency unknown" in out) == (currency not in (None, ""))
    assert rows(db_url, "SELECT balance, currency FROM providers") == [("100.84", "USD")]
    assert rows(db_url, "SELECT balance, currency FROM balance_snapshots ORDER BY id") == [
        ("100.00", "USD"),
        ("100.84", None),
    ]


@pytest.mark.parametrize("balance", ["1e33", "1e999999999999999999"])
def test_an_absurd_balance_fails_the_job_with_the_reason(
    config: Path, db_url: str, server: SimulatorServer, balance: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert run(config, "sync", "balance") == 0
    server.provider.balance = Decimal(balance)
    capsys.readouterr()
    assert run(config, "sync", "balance") == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("syncd: balance job for sim failed: balance: amount out of range")
    assert rows(db_url, "SELECT balance FROM providers") == [("100.00",)]
    assert run(config, "status") == 0
