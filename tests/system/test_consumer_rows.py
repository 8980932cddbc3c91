"""Rows a consumer wrote are untrusted input.

A shop writes ``orders`` rows with its own code or the sqlite3 shell, which enforces no
foreign keys and stores any value in any column.  Whatever it writes, the orders job
finishes, every other order goes on, and the odd row alone gets an ``error``: examples of
each class seen in the wild first, then a property over any values in the columns a
consumer writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncd.cli import main
from syncd.deadlines import submission_lease
from syncd.jobs import runner, submit
from syncd.jobs.runner import run_pass
from syncd.simulator import SimulatedProvider, SimulatorServer
from syncd.storage import open_storage
from syncd.storage.rows import ORDER_FIELDS, read_order, read_orders
from tests.conftest import TOKEN, make_config, provider_config, write_config

Sql = Callable[..., list[tuple[object, ...]]]


@pytest.fixture
def config(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    path = write_config(tmp_path / "syncd.toml", db_url, server.url, timeout="1s")
    assert main(["--config", str(path), "sync", "catalog"]) == 0
    return path


@pytest.fixture
def sql(db_url: str) -> Sql:
    """SQL as a consumer sends it: its own connection, foreign keys not enforced."""

    def query(statement: str, *params: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(statement, params).fetchall()

    return query


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def insert(sql: Sql, **columns: object) -> int:
    values = {"provider": "sim", "service_id": 100, "link": "https://x.example/p",
              "quantity": 100} | columns  # fmt: skip
    names = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    sql(f"INSERT INTO orders ({names}) VALUES ({marks})", *values.values())
    ((last,),) = sql("SELECT max(id) FROM orders")
    assert isinstance(last, int)
    return last


def state_and_error(sql: Sql, order_id: int) -> tuple[object, str]:
    ((state, error),) = sql("SELECT state, error FROM orders WHERE id = ?", order_id)
    return state, str(error)


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"created_at": 1700000000}, "created_at: not a time: 1700000000"),
        ({"created_at": "2026-02-30 10:00:00"}, "created_at: not a time"),
        ({"quantity": -5}, "quantity must be a whole number above 0, not -5"),
        ({"quantity": "lots"}, "quantity: not a whole number: 'lots'"),
        ({"quantity": 2.5}, "quantity: not a whole number: 2.5"),
        ({"service_id": b"\x00"}, "service_id: not a whole number"),
        ({"link": b"\x00\x01"}, "link: not text"),
        ({"state": "QUEUED"}, "state 'QUEUED' is not a state; nothing was sent"),
        ({"state": "submitting"}, "state 'submitting' is syncd's own"),
        ({"provider": "nope"}, "unknown provider 'nope'"),
        ({"provider": 0, "state": "submitting"}, "unknown provider '0'"),
        ({"provider": "x" * 1_000_000}, f"unknown provider '{'x' * 100}…' (not in"),
    ],
)
def test_an_odd_queued_row_is_rejected_alone_and_the_next_order_is_sent(
    config: Path, sql: Sql, server: SimulatorServer, columns: dict[str, object], reason: str
) -> None:
    odd = insert(sql, **columns)
    fine = insert(sql, link="https://x.example/fine")
    assert run(config, "sync", "orders") == 0
    state, error = state_and_error(sql, odd)
    assert state == "rejected" and reason in error and len(error) < 300
    assert state_and_error(sql, fine)[0] == "active"
    assert [c.fields["link"] for c in server.provider.calls if c.action == "add"] == [
        "https://x.example/fine"
    ]
    assert run(config, "order", "list") == 0  # listing the odd row works too


def test_an_orders_pass_sends_what_was_queued_when_it_began_then_syncs_statuses(
    config: Path,
    sql: Sql,
    server: SimulatorServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A consumer queues an order each time one is sent, faster than the provider takes
    them: the pass sent without end and never reached the statuses. It now sends the
    orders queued when it began and goes on; the later ones wait for the next pass (or
    the daemon's submit job)."""
    first = [insert(sql, link=f"https://x.example/{n}") for n in range(3)]
    send_one = submit._send_one
    later: list[int] = []

    async def and_one_more(*args: Any) -> bool:
        stop = await send_one(*args)
        if len(later) < 50:  # a bound for the test, were the pass to run on
            later.append(insert(sql, link=f"https://x.example/later/{len(later)}"))
        return stop

    monkeypatch.setattr(submit, "_send_one", and_one_more)
    capsys.readouterr()
    assert run(config, "sync", "orders") == 0
    assert [state_and_error(sql, i)[0] for i in first] == ["active"] * 3
    assert len(later) == 3
    assert [state_and_error(sql, i)[0] for i in later] == ["queued"] * 3
    assert "checked 3 of 3 due" in capsys.readouterr().out


def test_the_documented_cancel_of_a_queued_order_stops_it_and_a_fixed_row_is_sent(
    config: Path, sql: Sql, server: SimulatorServer
) -> None:
    cancelled = insert(sql)
    fixed = insert(sql, quantity=1)
    sql("UPDATE orders SET state = 'abandoned', error = 'cancelled by the shop', "
        "finished_at = CURRENT_TIMESTAMP WHERE id = ? AND state = 'queued'", cancelled)  # fmt: skip
    assert run(config, "sync", "orders") == 0
    assert state_and_error(sql, cancelled) == ("abandoned", "cancelled by the shop")
    assert state_and_error(sql, fixed)[0] == "rejected"
    sql("UPDATE orders SET quantity = 100, state = 'queued' WHERE id = ?", fixed)
    assert run(config, "sync", "orders") == 0
    assert state_and_error(sql, fixed) == ("active", "None")
    assert server.provider.count("add") == 1


def test_an_active_row_without_a_provider_order_id_is_missing_alone(
    config: Path, sql: Sql, server: SimulatorServer
) -> None:
    (placed,) = server.provider.create_orders(1)
    assert run(config, "order", "track", "--provider", "sim", str(placed)) == 0
    odd = insert(sql, state="active")
    assert run(config, "sync", "orders") == 0
    state, error = state_and_error(sql, odd)
    assert state == "missing" and "no readable provider_order_id" in error
    assert sql("SELECT event FROM alerts") == [("order.missing",)]
    assert sql("SELECT status FROM orders WHERE provider_order_id = ?", placed) != [(None,)]
    assert all(c.fields.get("orders") == str(placed) for c in server.provider.status_calls())


def test_an_active_row_created_in_the_year_9999_is_tracked_without_overflow(
    config: Path, sql: Sql, server: SimulatorServer
) -> None:
    (placed,) = server.provider.create_orders(1)
    odd = insert(sql, state="active", provider_order_id=placed, created_at="9999-12-31 23:59:59")
    assert run(config, "sync", "orders") == 0
    assert state_and_error(sql, odd) == ("active", "None")


def test_an_active_row_with_unreadable_money_is_healed_by_the_next_answer(
    config: Path, sql: Sql, server: SimulatorServer
) -> None:
    (placed,) = server.provider.create_orders(1)
    odd = insert(sql, state="active", provider_order_id=placed, charge="abc")
    assert run(config, "sync", "orders") == 0
    state, error = state_and_error(sql, odd)
    assert state == "active" and "unreadable row: charge: not an amount: 'abc'" in error
    ((charge,),) = sql("SELECT charge FROM orders WHERE id = ?", odd)
    assert Decimal(str(charge)) >= 0  # the provider's charge replaced it
    sql("UPDATE orders SET next_check_at = '2000-01-01 00:00:00'")
    assert run(config, "sync", "orders") == 0
    assert state_and_error(sql, odd) == ("active", "None")


def test_a_submission_claimed_by_a_host_whose_clock_ran_a_day_ahead_is_not_stranded(
    config: Path, sql: Sql
) -> None:
    odd = insert(sql, state="submitting", submit_owner="otherhost:123:1",
                 submit_deadline="2999-01-01 00:00:00")  # fmt: skip
    assert run(config, "sync", "orders") == 0
    state, error = state_and_error(sql, odd)
    assert state == "ambiguous" and "stopped before the provider answered" in error


def test_a_live_submission_of_a_host_with_a_longer_timeout_is_waited_for(
    config: Path, sql: Sql
) -> None:
    # Another host with timeout = "2m" claims for about 9 minutes: it is alive, not late.
    odd = insert(sql, state="submitting", submit_owner="otherhost:123:1",
                 submit_deadline=(datetime.now(UTC) + timedelta(minutes=9))
                 .strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
    assert run(config, "sync", "orders") == 0
    assert state_and_error(sql, odd) == ("submitting", "None")


def test_a_live_submission_of_the_slowest_provider_syncd_accepts_is_waited_for(
    config: Path, sql: Sql
) -> None:
    # timeout = "1h", requests_per_minute = 1: a call may wait hours for its turn, and
    # the sender's deadline says so; this host must not call the order ambiguous.
    slow = provider_config("https://panel.example/api/v2", timeout=timedelta(hours=1),
                           requests_per_minute=1, max_concurrency=64)  # fmt: skip
    lease = submission_lease(runner.make_client(slow).longest_call())
    odd = insert(sql, state="submitting", submit_owner="otherhost:123:1",
                 submit_deadline=(datetime.now(UTC) + lease - timedelta(minutes=1))
                 .strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
    assert run(config, "sync", "orders") == 0
    assert state_and_error(sql, odd) == ("submitting", "None")


def test_a_queued_row_that_already_has_a_provider_order_id_is_never_sent_again(
    config: Path, sql: Sql, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, "order", "add", "--provider", "sim", "--package", "100",
               "--link", "https://x.example/p", "--quantity", "100") == 0  # fmt: skip
    (placed,) = server.provider.orders
    sql("UPDATE orders SET state = 'queued' WHERE id = 1")  # a shop "retrying" the order
    inserted = insert(sql, provider_order_id=880010)  # one that names an id outright
    assert run(config, "sync", "orders") == 0
    assert server.provider.count("add") == 1
    for order_id, held in ((1, placed), (inserted, 880010)):
        state, error = state_and_error(sql, order_id)
        assert state == "ambiguous" and "with a provider order id already" in error
        assert sql("SELECT provider_order_id FROM orders WHERE id = ?", order_id) == [(held,)]
    assert sql("SELECT event FROM alerts") == [("order.ambiguous",), ("order.ambiguous",)]
    capsys.readouterr()
    assert run(config, "order", "resolve", "1", "--provider-order", str(placed)) == 0
    assert run(config, "order", "resolve", str(inserted), "--resend") == 0
    assert run(config, "sync", "orders") == 0
    assert server.provider.count("add") == 2  # the resent one only
    assert state_and_error(sql, 1)[0] == state_and_error(sql, inserted)[0] == "active"


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ({"provider": "nope", "provider_order_id": 5043}, "unknown provider 'nope'"),
        ({"provider": b"evil", "provider_order_id": 5043}, "unknown provider"),
        ({"provider_order_id": -3}, "provider_order_id -3, which is no order id"),
    ],
)
def test_an_active_row_that_cannot_be_checked_is_missing_at_once(
    config: Path, sql: Sql, server: SimulatorServer, columns: dict[str, object], reason: str
) -> None:
    odd = insert(sql, state="active", **columns)
    assert run(config, "sync", "orders") == 0
    state, error = state_and_error(sql, odd)
    assert state == "missing" and reason in error
    assert sql("SELECT event FROM alerts") == [("order.missing",)]
    assert server.provider.count("status") == 0  # nothing blamed on the provider


def test_a_row_in_no_state_with_a_provider_order_id_is_ambiguous(
    config: Path, sql: Sql, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = insert(sql, state="Active", provider_order_id=777)
    assert run(config, "sync", "orders") == 0
    state, error = state_and_error(sql, odd)
    assert state == "ambiguous" and "with a provider order id" in error
    assert sql("SELECT event FROM alerts") == [("order.ambiguous",)]
    capsys.readouterr()
    assert run(config, "order", "resolve", str(odd), "--provider-order", "777") == 0
    assert state_and_error(sql, odd)[0] == "active"


def test_a_job_that_raises_anything_is_shown_failing_with_the_reason(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def broken(_ctx: object) -> str:
        raise KeyError("QUEUED")

    monkeypatch.setitem(runner.JOBS, "balance", replace(runner.JOBS["balance"], run=broken))
    capsys.readouterr()
    assert run(config, "sync", "all") == 1
    err = capsys.readouterr().err
    assert "balance job for sim failed: internal error (KeyError: 'QUEUED')" in err
    assert run(config, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    (provider,) = status["providers"]
    assert provider["jobs"]["balance"]["ok"] is False
    assert "KeyError" in provider["jobs"]["balance"]["last_error"]
    assert provider["jobs"]["orders"]["ok"] is True  # the other jobs went on


# -- any values in the columns a consumer writes --------------------------------------------

SQLITE_VALUES = (
    st.none()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=8)
    | st.sampled_from(["queued", "active", "done", "submitting", "QUEUED", "sim", "100",
                      "2026-02-30 10:00:00", "9999-12-31 23:59:59", "1970-01-01", "\x1b[2J"])
)  # fmt: skip
CONSUMER_COLUMNS = ("provider", "service_id", "link", "quantity", "custom_data", "state",
                    "created_at", "provider_order_id", "next_check_at", "charge")  # fmt: skip
KNOWN_STATES = {"queued", "submitting", "active", "done", "rejected", "ambiguous", "missing",
                "abandoned"}  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SimulatorServer]]:
    """One simulator and database for every generated case (each case starts from an
    empty orders table): a pass per case stays cheap."""
    sim = SimulatedProvider(token=TOKEN, balance=Decimal("100000000"))
    path = tmp_path_factory.mktemp("consumer") / "syncd.db"
    with SimulatorServer(sim) as server:
        yield path, server


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({}, optional=dict.fromkeys(CONSUMER_COLUMNS,
                                                                     SQLITE_VALUES)),
                     min_size=1, max_size=3))  # fmt: skip
def test_any_consumer_row_is_settled_alone_and_the_other_orders_progress(
    world: tuple[Path, SimulatorServer], rows: list[dict[str, object]]
) -> None:
    path, server = world
    url = f"sqlite:///{path}"
    config = make_config(url, provider_config(server.url, timeout=timedelta(seconds=1)))
    storage = open_storage(url)
    try:
        asyncio.run(run_pass(config, storage, ["catalog"]))
        with sqlite3.connect(path) as conn:
            conn.execute("DELETE FROM order_changes")
            conn.execute("DELETE FROM alert_deliveries")
            conn.execute("DELETE FROM orders")
            for row in rows:
                names = ", ".join(row) or "provider"
                values = list(row.values()) or ["sim"]
                marks = ", ".join("?" for _ in values)
                # NOT NULL or a duplicate provider order id: SQLite refuses the row.
                with contextlib.suppress(sqlite3.IntegrityError):
                    conn.execute(f"INSERT INTO orders ({names}) VALUES ({marks})", values)
            conn.execute(
                "INSERT INTO orders (provider, service_id, link, quantity) "
                "VALUES ('sim', 100, 'https://x.example/valid', 100)"
            )
            (valid,) = conn.execute("SELECT max(id) FROM orders").fetchone()
        results = asyncio.run(run_pass(config, storage, ["orders"]))
    finally:
        storage.close()
    assert [r.ok for r in results] == [True], results
    with sqlite3.connect(path) as conn:
        settled = conn.execute("SELECT id, state, error FROM orders").fetchall()
    for order_id, state, error in settled:
        assert state in KNOWN_STATES, (order_id, state)
        assert state != "submitting"
        if state in ("queued", "rejected", "ambiguous", "missing"):
            assert error, (order_id, state)
    assert (valid, "active", None) in settled


# -- syncd's own tables, garbled by hand -------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE providers SET balance = 'abc'",
        "UPDATE providers SET balance = x'00ff', currency = x'01'",
        "UPDATE providers SET catalog_synced_at = 'garbage', orders_synced_at = 12345",
        "UPDATE jobs SET last_success_at = 'garbage', failing_since = 'x'",
        "INSERT INTO balance_snapshots (provider, balance, observed_at) VALUES ('sim', 'abc', 'x')",
    ],
)
def test_status_and_the_balance_job_read_past_values_garbled_by_hand(
    config: Path, sql: Sql, capsys: pytest.CaptureFixture[str], statement: str
) -> None:
    assert run(config, "sync", "balance") == 0
    sql(statement)
    capsys.readouterr()
    assert run(config, "status") == 0
    assert run(config, "status", "--json") == 0
    assert run(config, "sync", "balance") == 0
    assert run(config, "sync", "balance") == 0
    assert "Traceback" not in capsys.readouterr().err


# Texts a row may hold in more than one column: a time where another row has its charge,
# an amount where a time belongs, a state's spelling, digits.
TIMES = ("2026-11-27 01:02:03.000000", "2026-11-27 01:02:03")
SHARED_TEXTS = st.sampled_from([
    *TIMES, "5", "1.00", "1.0", "0.27819", "active", "Pending", "abc", "", "NaN", "1e400",
    " 7 ",
])  # fmt: skip
STORED_VALUES = st.one_of(
    st.none(), SHARED_TEXTS, st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=3), st.text(max_size=8),
    st.binary(max_size=4), st.datetimes(timezones=st.just(UTC)),
)  # fmt: skip
_TIME_FIELDS = ("created_at", "submitted_at", "checked_at", "next_check_at", "finished_at")
_TEXT_FIELDS = ("status", "status_raw", "link", "custom_data", "currency", "error")


def _column(name: str) -> st.SearchStrategy[object]:
    """Mostly what syncd writes in ``name`` (so that whole rows take the fast way),
    sometimes anything at all."""
    kind: st.SearchStrategy[object]
    if name in _TIME_FIELDS:
        kind = st.sampled_from([None, *TIMES])
    elif name == "charge":
        kind = st.sampled_from([None, "5", "1.00", "1.0", TIMES[0]])
    elif name == "state":
        kind = st.sampled_from(["active", "queued", "Active", "done"])
    elif name == "provider":
        kind = st.just("p")
    elif name in _TEXT_FIELDS:
        kind = st.one_of(st.none(), SHARED_TEXTS)
    else:
        kind = st.one_of(st.none(), st.integers(-5, 10**6))
    return st.integers(0, 19).flatmap(lambda n: kind if n else STORED_VALUES)  # 1 in 20: anything


ROWS = st.lists(st.tuples(*(_column(name) for name in ORDER_FIELDS)).map(list), max_size=6)


def _plain_row(number: int, **values: object) -> list[object]:
    row: list[object] = [None] * len(ORDER_FIELDS)
    for name, value in {"id": number, "provider": "p", "state": "active", **values}.items():
        row[ORDER_FIELDS.index(name)] = value
    return row


@given(ROWS)
@example([_plain_row(1, checked_at=TIMES[1]), _plain_row(2, charge=TIMES[1])])
@example([_plain_row(1, provider=None)])  # NOT NULL, yet a row read must not raise
@example([_plain_row(1, quantity=-(2**63))])  # a BIGINT, but past what syncd reads
def test_a_batch_is_read_as_each_row_alone_would_be(rows: list[list[object]]) -> None:
    """The status sweep reads its batches with ``read_orders`` (plain rows fast, values
    they share read once): it must read every row exactly as ``read_order`` does, digits
    of an amount included, whatever the other rows of the batch hold."""
    for number, row in enumerate(rows):
        row[ORDER_FIELDS.index("id")] = number + 1
    assert [repr(o) for o in read_orders(rows)] == [repr(read_order(r)) for r in rows]
