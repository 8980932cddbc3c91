"""Orders end to end: the CLI and the orders job, real HTTP to the simulator, a real database.

Every submission path has a test here, and so do the status sync's batch size,
concurrency, per-id errors, status spellings, and "no change, no row".
"""

from __future__ import annotations

import json
import math
import os
import pty
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncd.cli import main
from syncd.errors import StorageError
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.storage import Storage
from tests.conftest import write_config
from tests.fakes import FakeClock

Rows = Callable[[str], list[tuple[object, ...]]]


@pytest.fixture
def sql(db_url: str) -> Rows:
    def query(statement: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(statement).fetchall()

    return query


@pytest.fixture
def config(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    path = write_config(tmp_path / "syncd.toml", db_url, server.url, timeout="1s")
    assert main(["--config", str(path), "sync", "catalog"]) == 0
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def add(
    config: Path, *, package: int = 100, quantity: int = 100, link: str = "https://x.example/p"
) -> int:
    return run(config, "order", "add", "--provider", "sim", "--package", str(package),
               "--link", link, "--quantity", str(quantity))  # fmt: skip


def make_due(sql: Rows) -> None:
    sql("UPDATE orders SET next_check_at = '2000-01-01 00:00:00' WHERE state = 'active'")


def order_row(sql: Rows, order_id: int = 1) -> tuple[object, ...]:
    (row,) = sql(f"SELECT state, provider_order_id, error FROM orders WHERE id = {order_id}")
    return row


# -- submission ------------------------------------------------------------------------


def test_an_accepted_order_is_active_with_the_provider_id(
    config: Path, sql: Rows, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert add(config) == 0
    assert capsys.readouterr().out == "1\n"
    (provider_order_id,) = server.provider.orders
    assert order_row(sql) == ("active", provider_order_id, None)
    assert sql("SELECT state_old, state_new FROM order_changes ORDER BY id") == [
        ("queued", "submitting"),
        ("submitting", "active"),
    ]
    assert server.provider.count("add") == 1


@pytest.mark.parametrize(
    ("package", "quantity", "reason"),
    [
        (100, 10, "quantity 10 is outside 50..100000"),
        (999, 100, "unknown package 999"),
        (102, 5, "takes one comment per unit: 0 comment lines for quantity 5"),
    ],
)
def test_an_invalid_order_is_refused_by_order_add_with_no_row_and_nothing_sent(
    config: Path, sql: Rows, server: SimulatorServer, capsys: pytest.CaptureFixture[str],
    package: int, quantity: int, reason: str,
) -> None:  # fmt: skip
    capsys.readouterr()
    assert add(config, package=package, quantity=quantity) == 2
    out, err = capsys.readouterr()
    assert out == ""  # no local id: nothing was queued
    (line,) = err.splitlines()
    assert line.startswith("syncd: order refused, nothing queued or sent: ") and reason in line
    assert sql("SELECT count(*) FROM orders") == [(0,)]
    assert server.provider.count("add") == 0


@pytest.mark.parametrize(
    ("package", "quantity", "reason"),
    [(100, 10, "quantity 10 is outside 50..100000"), (999, 100, "unknown package 999")],
)
def test_an_invalid_row_a_program_inserts_is_rejected_with_its_reason(
    config: Path, sql: Rows, server: SimulatorServer, package: int, quantity: int, reason: str
) -> None:
    sql(f"INSERT INTO orders (provider, service_id, link, quantity) "
        f"VALUES ('sim', {package}, 'https://x', {quantity})")  # fmt: skip
    assert run(config, "sync", "orders") == 0
    state, provider_order_id, error = order_row(sql)
    assert (state, provider_order_id) == ("rejected", None) and reason in str(error)
    assert server.provider.count("add") == 0


def test_custom_comments_are_sent_one_per_line(
    config: Path, tmp_path: Path, server: SimulatorServer
) -> None:
    comments = tmp_path / "comments.txt"
    comments.write_text("Great!\r\nLove it\n\nSo good\nWow\nNice\n", encoding="utf-8")
    assert run(config, "order", "add", "--provider", "sim", "--package", "102", "--link", "https://x",
               "--quantity", "5", "--comments-file", str(comments)) == 0  # fmt: skip
    (sent,) = [c for c in server.provider.calls if c.action == "add"]
    assert sent.fields["custom_data"] == "Great!\nLove it\nSo good\nWow\nNice"


def test_an_order_the_provider_refuses_is_rejected(
    config: Path, sql: Rows, server: SimulatorServer
) -> None:
    server.provider.balance = Decimal("0.01")  # syncd does not know the balance yet
    assert add(config) == 1
    assert order_row(sql) == ("rejected", None, "Not enough funds on balance")
    assert server.provider.count("add") == 1


def test_an_order_beyond_the_known_balance_waits_in_the_queue(
    config: Path, sql: Rows, server: SimulatorServer
) -> None:
    server.provider.balance = Decimal("0.05")
    assert run(config, "sync", "balance") == 0
    assert add(config) == 1  # costs 0.09
    assert order_row(sql) == (
        "queued",
        None,
        "waiting for funds: estimated cost 0.09 is more than the balance left (see syncd status)",
    )
    assert server.provider.count("add") == 0
    server.provider.balance = Decimal("10")
    assert run(config, "sync", "balance") == 0
    assert run(config, "sync", "orders") == 0
    assert order_row(sql)[0] == "active"


def test_orders_sent_since_the_last_balance_count_against_it(
    config: Path, sql: Rows, server: SimulatorServer
) -> None:
    server.provider.balance = Decimal("0.20")
    assert run(config, "sync", "balance") == 0
    assert add(config) == 0  # 0.09
    assert add(config) == 0  # 0.18
    assert add(config) == 1  # 0.27 > 0.20: waits
    assert [r[0] for r in sql("SELECT state FROM orders ORDER BY id")] == [
        "active",
        "active",
        "queued",
    ]


def test_a_refused_connection_puts_the_order_back_in_the_queue(
    config: Path, tmp_path: Path, db_url: str, sql: Rows, server: SimulatorServer
) -> None:
    unreachable = write_config(tmp_path / "down.toml", db_url, "http://127.0.0.1:9/api/v2")
    assert add(unreachable) == 1
    state, _, error = order_row(sql)
    assert state == "queued" and str(error).startswith("not sent: cannot connect")
    assert run(config, "sync", "orders") == 0
    assert order_row(sql)[0] == "active"
    assert server.provider.count("add") == 1


@pytest.mark.parametrize(
    "fault", [Fault.TIMEOUT, Fault.HTML_502, Fault.RESET, Fault.TRUNCATED_JSON]
)
def test_a_failure_after_sending_is_ambiguous_and_never_resent(
    config: Path, sql: Rows, server: SimulatorServer, fault: Fault
) -> None:
    server.provider.inject(fault, actions=["add"], after_processing=True)
    assert add(config) == 1
    state, provider_order_id, error = order_row(sql)
    assert state == "ambiguous" and provider_order_id is None
    assert str(error).startswith("outcome unknown")
    ((event, payload),) = sql("SELECT event, payload FROM alerts")
    assert (
        event == "order.ambiguous" and "syncd order resolve 1" in json.loads(str(payload))["text"]
    )
    for _ in range(2):
        assert run(config, "sync", "orders") == 0
    assert server.provider.count("add") == 1 and len(server.provider.orders) == 1
    assert order_row(sql)[0] == "ambiguous"


def test_a_consumer_inserted_queued_row_is_submitted_by_the_next_orders_job(
    config: Path, sql: Rows, server: SimulatorServer
) -> None:
    sql(
        "INSERT INTO orders (provider, service_id, link, quantity)"
        " VALUES ('sim', 101, 'https://y', 20)"
    )
    assert run(config, "sync", "orders") == 0
    state, provider_order_id, _ = order_row(sql)
    assert state == "active" and provider_order_id in server.provider.orders


def test_kill_9_while_in_flight_is_ambiguous_and_sent_once(
    tmp_path: Path, db_url: str, sql: Rows, server: SimulatorServer
) -> None:
    slow = write_config(tmp_path / "slow.toml", db_url, server.url, timeout="60s")
    assert run(slow, "sync", "catalog") == 0
    server.provider.inject(Fault.TIMEOUT, actions=["add"], after_processing=True)
    sender = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(slow), "order", "add", "--provider", "sim",
         "--package", "100", "--link", "https://x", "--quantity", "100"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while server.provider.count("add") == 0:
            assert time.monotonic() < deadline and sender.poll() is None
            time.sleep(0.05)
        # In flight in a live process: another run leaves it alone.
        assert run(slow, "sync", "orders") == 0
        assert order_row(sql)[0] == "submitting"
    finally:
        os.kill(sender.pid, signal.SIGKILL)
        sender.wait()
    assert run(slow, "sync", "orders") == 0
    assert order_row(sql)[0] == "ambiguous"
    assert sql("SELECT event FROM alerts") == [("order.ambiguous",)]
    assert run(slow, "sync", "orders") == 0
    assert server.provider.count("add") == 1 and len(server.provider.orders) == 1


# -- settling ambiguous orders ---------------------------------------------------------


@pytest.fixture
def ambiguous(config: Path, server: SimulatorServer) -> int:
    server.provider.inject(Fault.HTML_502, actions=["add"], after_processing=True)
    assert add(config) == 1
    return 1


def test_resolve_with_the_provider_order_tracks_it(
    config: Path, sql: Rows, server: SimulatorServer, ambiguous: int
) -> None:
    (provider_order_id,) = server.provider.orders
    assert (
        run(config, "order", "resolve", str(ambiguous), "--provider-order", str(provider_order_id))
        == 0
    )
    assert order_row(sql) == ("active", provider_order_id, None)
    assert run(config, "sync", "orders") == 0
    assert sql("SELECT status FROM orders") == [("Pending",)]


def test_resolve_resend_queues_it_again(
    config: Path, sql: Rows, server: SimulatorServer, ambiguous: int
) -> None:
    assert run(config, "order", "resolve", str(ambiguous), "--resend") == 0
    assert order_row(sql)[0] == "queued"
    # Settling the order says nothing of the provider: sending stays paused a while.
    assert run(config, "sync", "orders") == 1
    state, _, error = order_row(sql)
    assert state == "queued" and str(error).startswith("waiting: sending to sim paused until")
    sql("UPDATE providers SET send_resume_at = '2000-01-01 00:00:00'")  # the wait is over
    assert run(config, "sync", "orders") == 0
    assert order_row(sql)[0] == "active" and server.provider.count("add") == 2
    assert sql("SELECT send_paused_at, send_pauses FROM providers") == [(None, 0)]


def test_resolve_abandon(config: Path, sql: Rows, ambiguous: int) -> None:
    assert run(config, "order", "resolve", str(ambiguous), "--abandon") == 0
    assert order_row(sql)[0] == "abandoned"


def test_only_ambiguous_orders_are_resolved(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add(config) == 0
    capsys.readouterr()
    assert run(config, "order", "resolve", "1", "--abandon") == 2
    assert (
        capsys.readouterr().err == "syncd: order 1 is active; only ambiguous orders are resolved\n"
    )
    assert run(config, "order", "resolve", "99", "--abandon") == 2


# -- status sync -----------------------------------------------------------------------


def track(config: Path, ids: list[int]) -> None:
    assert run(config, "order", "track", "--provider", "sim", *map(str, ids)) == 0


def test_no_status_call_carries_more_than_the_batch_size(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows
) -> None:
    config = write_config(tmp_path / "b.toml", db_url, server.url, extra="status_batch_size = 7")
    track(config, server.provider.create_orders(50))
    assert run(config, "sync", "orders") == 0
    calls = server.provider.status_calls()
    assert len(calls) == math.ceil(50 / 7)
    assert max(len(c.ids) for c in calls) == 7
    assert sorted(i for c in calls for i in c.ids) == sorted(str(i) for i in server.provider.orders)
    assert sql("SELECT count(*) FROM orders WHERE checked_at IS NOT NULL") == [(50,)]


def test_status_calls_in_flight_never_exceed_max_concurrency(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    config = write_config(
        tmp_path / "c.toml", db_url, server.url, extra="status_batch_size = 5\nmax_concurrency = 3"
    )
    track(config, server.provider.create_orders(60))
    server.provider.latency = 0.1
    assert run(config, "sync", "orders") == 0
    assert server.provider.max_in_flight == 3
    assert len(server.provider.status_calls()) == 12


def test_per_order_errors_of_every_shape_do_not_fail_the_batch(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    real = server.provider.create_orders(3)
    unknown = [900001, 900002, 900003, 900004]  # the simulator answers each in another shape
    track(config, real + unknown)
    assert run(config, "sync", "orders") == 0
    assert len(server.provider.status_calls()) == 1
    rows = sql(
        "SELECT provider_order_id, status, missing_checks, error FROM orders"
        " ORDER BY provider_order_id"
    )
    assert [r[1] for r in rows[:3]] == ["Pending"] * 3 and [r[2] for r in rows[:3]] == [0, 0, 0]
    assert [r[2] for r in rows[3:]] == [1, 1, 1, 1]
    assert {str(r[3]) for r in rows[3:]} == {
        "not found: Order Not found",
        "not found: Incorrect order ID",
        "not found: Order not found",
    }


SPELLINGS = {
    "Pending": "Pending", "Processing": "Processing", "In progress": "In progress",
    "In Progress": "In progress", "inprogress": "In progress", "in_progress": "In progress",
    "Active": "In progress", "Completed": "Completed", "Complete": "Completed",
    "Partial": "Partial", "Partially Completed": "Partial", "Canceled": "Canceled",
    "Cancelled": "Canceled", "Refunded": "Refunded", "Fail": "Failed", "Failed": "Failed",
    "Error": "Failed", "Awaiting moderation": "Unknown",
}  # fmt: skip


def test_each_status_spelling_is_stored_canonically_with_the_raw_text(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    ids = server.provider.create_orders(len(SPELLINGS))
    for order_id, spelling in zip(ids, SPELLINGS, strict=True):
        server.provider.pin_order(order_id, status=spelling, remains="0", charge="0.1")
    track(config, ids)
    assert run(config, "sync", "orders") == 0
    stored = dict(
        (raw, (status, state))
        for raw, status, state in sql("SELECT status_raw, status, state FROM orders")
    )
    for spelling, canonical in SPELLINGS.items():
        final = canonical in {"Completed", "Partial", "Canceled", "Refunded", "Failed"}
        assert stored[spelling] == (canonical, "done" if final else "active"), spelling


def test_a_second_pass_without_provider_changes_writes_no_change_rows(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    ids = server.provider.create_orders(5)
    for order_id in ids:
        server.provider.pin_order(order_id, status="In progress", start_counter="10", remains="50")
    track(config, ids)
    assert run(config, "sync", "orders") == 0
    changes = sql("SELECT count(*) FROM order_changes")
    make_due(sql)
    assert run(config, "sync", "orders") == 0
    assert len(server.provider.status_calls()) == 2
    assert sql("SELECT count(*) FROM order_changes") == changes
    server.provider.pin_order(ids[0], status="In progress", start_counter="10", remains="20")
    make_due(sql)
    assert run(config, "sync", "orders") == 0
    assert sql("SELECT remains_old, remains_new FROM order_changes ORDER BY id DESC LIMIT 1") == [
        (50, 20)
    ]


def test_finished_orders_are_no_longer_checked(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    (done, open_) = server.provider.create_orders(2)
    server.provider.pin_order(done, status="Completed", remains="0", charge="0.09")
    track(config, [done, open_])
    assert run(config, "sync", "orders") == 0
    assert sql(
        f"SELECT state, finished_at IS NOT NULL FROM orders WHERE provider_order_id = {done}"
    ) == [("done", 1)]
    make_due(sql)
    assert run(config, "sync", "orders") == 0
    assert server.provider.status_calls()[-1].ids == [str(open_)]


def test_three_not_found_checks_make_an_order_missing(config: Path, sql: Rows) -> None:
    track(config, [777777])
    for _ in range(3):
        make_due(sql)
        assert run(config, "sync", "orders") == 0
    assert sql("SELECT state, missing_checks FROM orders") == [("missing", 3)]
    assert sql("SELECT event FROM alerts") == [("order.missing",)]


def test_orders_older_than_give_up_after_are_abandoned(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    track(config, server.provider.create_orders(1))
    for _ in range(3):  # the third check in a row that finds it too old abandons it
        assert sql("SELECT state FROM orders") == [("active",)]
        sql("UPDATE orders SET created_at = '2000-01-01 00:00:00'")
        make_due(sql)
        assert run(config, "sync", "orders") == 0
    assert sql("SELECT state FROM orders") == [("abandoned",)]
    assert sql("SELECT event FROM alerts") == [("order.abandoned",)]


def test_a_failing_status_call_fails_the_job_and_leaves_the_rows(
    config: Path, server: SimulatorServer, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    track(config, server.provider.create_orders(3))
    before = sql("SELECT * FROM orders")
    server.provider.inject(Fault.HTML_502, actions=["status"], times=None)
    capsys.readouterr()
    assert run(config, "sync", "orders") == 1
    assert "orders job for sim failed: HTTP 502" in capsys.readouterr().err
    assert sql("SELECT * FROM orders") == before


def test_orders_progress_to_done_over_time(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock()  # the provider's: its orders take half a minute
    sim = SimulatedProvider(token="sim-token-5f3a9c", order_duration=30, clock=clock.monotonic)
    with SimulatorServer(sim) as server:
        config = write_config(tmp_path / "p.toml", db_url, server.url)
        assert run(config, "sync", "catalog") == 0
        for _ in range(3):
            assert add(config) == 0
        clock.advance(seconds=31)
        assert run(config, "sync", "orders") == 0
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT DISTINCT state FROM orders").fetchall() == [("done",)]


# -- listing and tracking --------------------------------------------------------------


def test_order_list_json_and_filters(
    config: Path, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add(config) == 0
    sql("INSERT INTO orders (provider, service_id, link, quantity) VALUES ('sim', 100, 'x', 1)")
    assert run(config, "sync", "orders") == 0
    capsys.readouterr()
    assert run(config, "order", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(o["id"], o["state"]) for o in listed] == [(2, "rejected"), (1, "active")]
    assert listed[1]["provider_order_id"] is not None and listed[0]["error"]
    assert run(config, "order", "list", "--state", "rejected", "--json") == 0
    assert [o["id"] for o in json.loads(capsys.readouterr().out)] == [2]
    assert run(config, "order", "list", "--limit", "1") == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # header and one order


def test_tracking_twice_keeps_one_row(config: Path, server: SimulatorServer, sql: Rows) -> None:
    ids = server.provider.create_orders(2)
    track(config, ids)
    track(config, ids)
    assert sql("SELECT count(*) FROM orders") == [(2,)]


def test_order_add_needs_a_synced_catalog(
    tmp_path: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh = write_config(tmp_path / "f.toml", db_url, server.url)
    assert add(fresh) == 2
    assert "never synced" in capsys.readouterr().err
    assert server.provider.count("add") == 0


def test_a_sweep_pages_through_times_written_by_hand(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows
) -> None:
    # Every row due at the same second, written without microseconds as a consumer would:
    # paging must still visit each order exactly once.
    config = write_config(tmp_path / "h.toml", db_url, server.url, extra="status_batch_size = 7")
    track(config, server.provider.create_orders(30))
    make_due(sql)
    assert run(config, "sync", "orders") == 0
    calls = server.provider.status_calls()
    assert len(calls) == math.ceil(30 / 7)
    assert sorted(i for c in calls for i in c.ids) == sorted(str(i) for i in server.provider.orders)


def test_a_long_sweep_shows_progress_on_a_terminal_only(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    ids = server.provider.create_orders(1500)
    sql(
        "INSERT INTO orders (provider, provider_order_id, state, next_check_at) VALUES "
        + ",".join(f"('sim', {i}, 'active', '2000-01-01 00:00:00')" for i in ids)
    )
    command = [sys.executable, "-m", "syncd", "--config", str(config), "sync", "orders"]
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=terminal, timeout=60, check=False
        )
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal is closed once everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert done.returncode == 0
    assert "checked 1,500 of 1,500 due" in drawn.decode()
    make_due(sql)
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_an_html_error_page_to_add_is_ambiguous_and_stops_the_queue(
    config: Path, sql: Rows, server: SimulatorServer
) -> None:
    for _ in range(2):
        sql(
            "INSERT INTO orders (provider, service_id, link, quantity)"
            " VALUES ('sim', 100, 'https://y', 100)"
        )
    server.provider.inject(Fault.HTML_200, actions=["add"], after_processing=True)
    assert run(config, "sync", "orders") == 1
    assert [r[0] for r in sql("SELECT state FROM orders ORDER BY id")] == ["ambiguous", "queued"]
    assert server.provider.count("add") == 1


@pytest.mark.parametrize(
    ("columns", "values"),
    [
        ("service_id, link, quantity", "100, 'https://y', 1.5"),
        ("service_id, link, quantity", "'abc', 'https://y', 100"),
        ("service_id, link, quantity", "100, 'https://y', 99999999999999999999"),
    ],
)
def test_a_consumer_row_of_the_wrong_types_is_rejected_not_a_crash(
    config: Path, sql: Rows, server: SimulatorServer, columns: str, values: str
) -> None:
    sql(f"INSERT INTO orders (provider, {columns}) VALUES ('sim', {values})")
    sql(
        "INSERT INTO orders (provider, service_id, link, quantity)"
        " VALUES ('sim', 100, 'https://ok', 100)"
    )
    assert run(config, "sync", "orders") == 0
    assert [r[0] for r in sql("SELECT state FROM orders ORDER BY id")] == ["rejected", "active"]
    assert server.provider.count("add") == 1


@pytest.mark.parametrize("number", ["99999999999999999999", "0", "-3", "x"])
def test_numbers_on_the_command_line_are_checked(
    config: Path, capsys: pytest.CaptureFixture[str], number: str
) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run(config, "order", "resolve", number, "--abandon")
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("syncd: ")


def test_resolving_with_a_provider_order_already_tracked_is_a_clear_error(
    config: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str], ambiguous: int
) -> None:
    (taken,) = server.provider.create_orders(1)
    track(config, [taken])
    capsys.readouterr()
    assert run(config, "order", "resolve", str(ambiguous), "--provider-order", str(taken)) == 2
    assert f"sim order {taken} is already local order 2" in capsys.readouterr().err


def test_a_failed_orders_job_does_not_stamp_orders_synced_at(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    track(config, server.provider.create_orders(1))
    server.provider.inject(Fault.HTML_502, actions=["status"], times=None)
    assert run(config, "sync", "orders") == 1
    assert sql("SELECT orders_synced_at FROM providers") == [(None,)]
    server.provider.clear_faults()
    assert run(config, "sync", "orders") == 0
    assert sql("SELECT orders_synced_at IS NOT NULL FROM providers") == [(1,)]


def test_a_database_failure_after_the_provider_accepted_loses_no_order_id(
    config: Path, sql: Rows, server: SimulatorServer, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    real = Storage.finish_submission
    failures = iter([StorageError("database error: database or disk is full")])

    def flaky(self: Storage, *args: Any, **kwargs: Any) -> None:
        if (error := next(failures, None)) is not None:
            raise error
        real(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "finish_submission", flaky)
    capsys.readouterr()
    assert add(config) == 1  # the job reports the database failure...
    (provider_order_id,) = server.provider.orders
    (line,) = capsys.readouterr().err.splitlines()  # ...with the provider's id, without -v
    assert line.startswith(
        f"syncd: sim took order 1 as its order {provider_order_id}, but the database failed "
        "while recording it (database error: database or disk is full)"
    )
    assert f"syncd order resolve 1 --provider-order {provider_order_id}" in line
    assert order_row(sql)[0] == "submitting"
    assert run(config, "sync", "orders") == 0  # ...and the next pass writes what it learnt
    assert order_row(sql) == ("active", provider_order_id, None)
    assert server.provider.count("add") == 1


def test_a_failure_to_record_health_never_costs_the_reply(
    config: Path, sql: Rows, server: SimulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise StorageError("database is locked by another program")

    monkeypatch.setattr(Storage, "apply_health", broken)
    assert add(config) == 0
    assert order_row(sql)[0] == "active"


def test_one_order_the_provider_chokes_on_does_not_stop_its_batch(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    ids = server.provider.create_orders(50)
    server.provider.poison_ids = {ids[17]}
    track(config, ids)
    assert run(config, "sync", "orders") == 0
    assert len(server.provider.status_calls()) <= 1 + 2 * math.ceil(math.log2(50))
    found = sql("SELECT provider_order_id, status FROM orders")
    rows = {order_id: status for order_id, status in found}
    assert rows.pop(ids[17]) is None and set(rows.values()) == {"Pending"}
    ((error,),) = sql(f"SELECT error FROM orders WHERE provider_order_id = {ids[17]}")
    assert "the provider fails on this order: Incorrect order ID" in str(error)


def test_a_provider_wide_error_object_still_fails_the_sweep(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    track(config, server.provider.create_orders(10))
    before = sql("SELECT * FROM orders")
    server.provider.inject(Fault.ERROR_STRING, actions=["status"], times=None)
    assert run(config, "sync", "orders") == 1
    assert len(server.provider.status_calls()) == 3  # the batch, then both halves
    assert sql("SELECT * FROM orders") == before


def test_status_counts_open_orders_by_state_and_points_at_ambiguous_ones(
    config: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add(config) == 0
    server.provider.inject(Fault.HTML_502, actions=["add"], after_processing=True)
    assert add(config) == 1
    capsys.readouterr()
    assert run(config, "status", "--json") == 0
    (provider,) = json.loads(capsys.readouterr().out)["providers"]
    assert provider["orders"] == {"queued": 0, "submitting": 0, "active": 1, "ambiguous": 1}
    assert provider["open_orders"] == 2
    assert run(config, "status") == 0
    assert (
        "  orders   2 open: 1 active, 1 ambiguous (settle them: syncd order list --state "
        "ambiguous, then syncd order resolve)" in capsys.readouterr().out.splitlines()
    )


def test_a_reader_that_goes_away_early_gets_no_traceback(
    config: Path, server: SimulatorServer
) -> None:
    track(config, server.provider.create_orders(2000))  # far more than a pipe holds
    command = [sys.executable, "-m", "syncd", "--config", str(config), "order", "list",
               "--json", "--limit", "0"]  # fmt: skip
    listing = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert listing.stdout is not None and listing.stderr is not None
    assert listing.stdout.readline() == b"[\n"
    listing.stdout.close()  # what `| head -1` does
    assert listing.wait(timeout=60) == 141
    assert listing.stderr.read() == b""


def test_a_comments_file_too_long_for_any_panel_is_refused_before_reading_it_all(
    config: Path, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert run(config, "order", "add", "--provider", "sim", "--package", "102", "--link", "x",
               "--quantity", "5", "--comments-file", "/dev/zero") == 2  # fmt: skip
    assert "is longer than 1 MiB" in capsys.readouterr().err
    assert sql("SELECT count(*) FROM orders") == [(0,)]


@pytest.mark.parametrize("value", ["\u0661\u0660", "1_0", "+5"])
def test_ids_and_quantities_on_the_command_line_are_plain_ascii_digits(
    config: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        run(config, "order", "add", "--provider", "sim", "--package", "100", "--link", "x",
            "--quantity", value)  # fmt: skip
    assert stopped.value.code == 2
    assert "not a whole number" in capsys.readouterr().err


def test_output_that_cannot_be_written_is_one_line(config: Path) -> None:
    with open("/dev/full", "w") as full:
        listed = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(config), "packages"],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert listed.returncode == 1
    assert listed.stderr.splitlines() == ["syncd: cannot write: No space left on device"]


def test_a_provider_failing_every_call_blames_no_single_order(
    config: Path, server: SimulatorServer, sql: Rows
) -> None:
    """The last batch of a sweep may hold one order: when the provider fails on it as on
    everything else, that is no strike towards `missing` for the order."""
    track(config, server.provider.create_orders(101))  # a batch of 100, then one of 1
    server.provider.inject(Fault.HTML_200, actions=["status"], times=None)
    assert run(config, "sync", "orders") == 1
    assert sql("SELECT count(*) FROM orders WHERE missing_checks > 0 OR error IS NOT NULL") == [
        (0,)
    ]


def test_the_sweep_summary_counts_given_up_orders_apart_from_finished_ones(
    config: Path, server: SimulatorServer, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done, kept, lost = server.provider.create_orders(3)
    server.provider.pin_order(done, status="Completed", charge="0.1", remains="0")
    track(config, [done, kept, lost])
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:  # a consumer's typo
        conn.execute(f"UPDATE orders SET provider_order_id = -5 WHERE provider_order_id = {lost}")
    capsys.readouterr()
    assert run(config, "sync", "orders") == 0
    assert "3 changed, 1 finished, 1 no longer tracked" in capsys.readouterr().out


def test_a_batch_the_database_refuses_stops_the_sweep_and_keeps_what_was_written(
    config: Path,
    server: SimulatorServer,
    sql: Rows,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The writer stops at the first batch the database refuses: the batches written
    before it stay, none after it is written, and the job fails with that error."""
    track(config, server.provider.create_orders(300))  # three batches
    real = Storage.apply_status_answers
    writes: list[int] = []

    def second_refused(self: Storage, *args: Any, **kwargs: Any) -> Any:
        writes.append(1)
        if len(writes) == 2:
            raise StorageError("database error: database or disk is full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Storage, "apply_status_answers", second_refused)
    capsys.readouterr()
    assert run(config, "sync", "orders") == 1
    assert "database or disk is full" in capsys.readouterr().err
    assert len(writes) == 2  # nothing more was written once the database refused
    assert sql("SELECT count(*) FROM orders WHERE checked_at IS NOT NULL") == [(100,)]
