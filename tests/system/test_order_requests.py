"""Refills and cancellations end to end: the CLI and consumer INSERTs, real HTTP to the
simulator's `key` dialect, a real database, and the `request_changes` feed."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import sqlalchemy as sa

from syncd.cli import main
from syncd.errors import StorageError
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.storage import Storage
from tests.conftest import TOKEN, Rows, write_config
from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def panel(clock: FakeClock) -> Iterator[SimulatorServer]:
    provider = SimulatedProvider(
        dialect="key", token=TOKEN, clock=clock.monotonic, order_duration=10, refill_duration=100
    )
    with SimulatorServer(provider) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, db_url: str, panel: SimulatorServer) -> Path:
    path = write_config(tmp_path / "syncd.toml", db_url, panel.url, extra='dialect = "key"')
    assert run(path, "sync", "catalog") == 0
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def tracked(config: Path, panel: SimulatorServer, sql: Rows, count: int, service: int) -> list[int]:
    """Orders placed at the provider and tracked here; their local ids."""
    ids = panel.provider.create_orders(count, service=service)
    assert run(config, "order", "track", "--provider", "sim", *map(str, ids)) == 0
    marks = ",".join("?" * len(ids))
    rows = sql(f"SELECT id FROM orders WHERE provider_order_id IN ({marks}) ORDER BY id", *ids)
    return [int(str(i)) for (i,) in rows]


def finished(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock, count: int
) -> list[int]:
    """Finished orders of package 102 (it allows refills and cancels): Completed or
    Partial, as the simulator ends them by their ids."""
    local = tracked(config, panel, sql, count, service=102)
    clock.advance(seconds=20)
    assert run(config, "sync", "orders") == 0
    done = sql("SELECT id FROM orders WHERE state = 'done' AND status IN ('Completed', 'Partial')")
    refillable = [i for (i,) in done if i in local]
    assert refillable == local, "the simulator ended one of them otherwise"
    return refillable


def requests(sql: Rows) -> list[tuple[object, ...]]:
    return sql("SELECT id, order_id, kind, state, provider_request_id, status, error "
               "FROM order_requests ORDER BY id")  # fmt: skip


def feed(sql: Rows, request_id: object) -> list[tuple[object, ...]]:
    return sql(
        "SELECT state_old, state_new, status_old, status_new FROM request_changes "
        "WHERE request_id = ? ORDER BY id",
        request_id,
    )


def test_a_refill_is_sent_and_tracked_to_completed(
    config: Path,
    panel: SimulatorServer,
    sql: Rows,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    order_id = finished(config, panel, sql, clock, 1)[0]
    capsys.readouterr()
    assert run(config, "order", "refill", str(order_id)) == 0
    out = capsys.readouterr().out
    assert f"of order {order_id}: sent, refill 4101" in out
    ((request_id, _, kind, state, refill_id, status, error),) = requests(sql)
    assert (kind, state, refill_id, status, error) == ("refill", "sent", 4101, "Pending", None)
    assert panel.provider.count("refill") == 1

    clock.advance(seconds=500)  # the refill is over at the provider; and its check is due here
    sql("UPDATE order_requests SET next_check_at = '2000-01-01 00:00:00.000000'")
    assert run(config, "sync", "orders") == 0
    assert requests(sql)[0][3:6] == ("done", 4101, "Completed")
    assert feed(sql, request_id) == [
        ("queued", "submitting", None, None),
        ("submitting", "sent", None, "Pending"),
        ("sent", "done", "Pending", "Completed"),
    ]
    assert panel.provider.count("refill_status") == 1

    capsys.readouterr()
    assert run(config, "changes", "requests") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["state_new"], r["status_new"]) for r in lines] == [
        ("submitting", None), ("sent", "Pending"), ("done", "Completed"),
    ]  # fmt: skip

    capsys.readouterr()
    assert run(config, "order", "list") == 0
    assert "[refill done (Completed)]" in capsys.readouterr().out
    assert run(config, "order", "list", "--json") == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in listed["requests"]] == ["done"]

    assert run(config, "order", "show", str(order_id), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["requests"][0]["status"] == "Completed"
    assert [c["state_new"] for c in shown["changes"]][-1] == "done"


def test_validation_rejects_before_anything_is_sent(
    config: Path,
    panel: SimulatorServer,
    sql: Rows,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (no_refill,) = finished(config, panel, sql, clock, 1)
    (running,) = tracked(config, panel, sql, 1, service=102)  # not finished: no refill
    sql("INSERT INTO order_requests (order_id, kind) VALUES (?, 'refill')", no_refill)
    assert run(config, "sync", "orders") == 0  # that one goes
    assert run(config, "order", "refill", str(running), str(no_refill)) == 1
    out = capsys.readouterr().out
    assert f"of order {running}: rejected (only a finished order" in out
    assert (
        f"of order {no_refill}: rejected (another refill of order {no_refill} is still open)" in out
    )
    assert panel.provider.count("refill") == 1  # the consumer's, only


def test_unknown_orders_are_refused_whole_by_the_cli(
    config: Path, panel: SimulatorServer, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    (one,) = tracked(config, panel, sql, 1, service=102)
    assert run(config, "order", "cancel", str(one), "999") == 2
    assert "no order 999; nothing was queued or sent" in capsys.readouterr().err
    assert requests(sql) == []


def test_each_refill_goes_in_its_own_call_and_is_settled_alone(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock
) -> None:
    """One request a call: a lost answer leaves one request ambiguous, not a batch."""
    local = finished(config, panel, sql, clock, 3)
    panel.provider.inject(Fault.REPLY, actions={"refill"}, reply={"refill": 777})
    panel.provider.inject(
        Fault.REPLY, actions={"refill"}, reply={"error": "Order not eligible for refill."}
    )
    panel.provider.inject(Fault.RESET, actions={"refill"}, after_processing=True)
    for order_id in local:
        sql("INSERT INTO order_requests (order_id, kind) VALUES (?, 'refill')", order_id)
    # The last one's answer is lost: it is ambiguous, which pauses sending to the
    # provider and fails the job.
    assert run(config, "sync", "orders") == 1
    got = {row[1]: row[3:] for row in requests(sql)}
    assert got[local[0]] == ("sent", 777, "Pending", None)
    assert got[local[1]][0] == "rejected" and "not eligible" in str(got[local[1]][3])
    assert got[local[2]][0] == "ambiguous"
    (alert,) = sql("SELECT payload FROM alerts WHERE event = 'request.ambiguous'")
    assert json.loads(str(alert[0]))["data"]["order_id"] == local[2]
    assert panel.provider.count("refill") == 3  # one call each


def test_a_lost_answer_is_ambiguous_and_never_resent(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock
) -> None:
    (order_id,) = finished(config, panel, sql, clock, 1)
    panel.provider.inject(Fault.RESET, actions={"refill"}, after_processing=True)
    assert run(config, "order", "refill", str(order_id)) == 1
    ((request_id, _, _, state, _, _, error),) = requests(sql)
    assert state == "ambiguous" and "outcome unknown" in str(error)
    assert len(sql("SELECT id FROM alerts WHERE event = 'request.ambiguous'")) == 1
    assert run(config, "sync", "orders") == 0
    assert panel.provider.count("refill") == 1  # not sent again
    assert feed(sql, request_id)[-1][:2] == ("submitting", "ambiguous")


def test_a_cancel_is_done_and_the_order_then_shows_canceled(
    config: Path, panel: SimulatorServer, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    (order_id,) = tracked(config, panel, sql, 1, service=102)
    assert run(config, "sync", "orders") == 0  # active, Pending
    assert run(config, "order", "cancel", str(order_id)) == 0
    assert f"cancel of order {order_id}: done" in capsys.readouterr().out
    # Made due by the cancel: the next pass checks it, though its schedule said later.
    assert run(config, "sync", "orders") == 0
    assert sql("SELECT state, status FROM orders WHERE id = ?", order_id) == [("done", "Canceled")]


def test_the_reference_dialect_refuses_and_sends_nothing(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    config = write_config(tmp_path / "syncd.toml", db_url, server.url)
    assert run(config, "sync", "catalog") == 0
    ids = server.provider.create_orders(1)
    assert run(config, "order", "track", "--provider", "sim", str(ids[0])) == 0
    ((order_id,),) = sql("SELECT id FROM orders")
    assert run(config, "order", "refill", str(order_id)) == 1
    assert "offers no refill" in capsys.readouterr().out
    assert server.provider.count("unknown:refill") == 0
    assert [c.action for c in server.provider.calls if "refill" in c.action] == []


@pytest.mark.parametrize(
    ("order_id", "kind", "error"),
    [
        ("999", "refill", "order 999 does not exist"),
        ("abc", "refill", "order_id"),
        (None, "refill", "order_id"),
        ("{order}", "REFILL", "kind must be refill or cancel"),
        ("{order}", "topup", "kind must be refill or cancel"),
    ],
)
def test_odd_consumer_rows_are_rejected_alone(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock,
    order_id: str | None, kind: str, error: str,
) -> None:  # fmt: skip
    (order,) = finished(config, panel, sql, clock, 1)
    odd = None if order_id is None else order_id.replace("{order}", str(order))
    if odd is None:  # the database itself refuses a request for no order at all
        with pytest.raises(sqlite3.IntegrityError):
            sql("INSERT INTO order_requests (order_id, kind) VALUES (NULL, ?)", kind)
        return
    sql("INSERT INTO order_requests (order_id, kind) VALUES (?, ?)", odd, kind)
    sql("INSERT INTO order_requests (order_id, kind) VALUES (?, 'refill')", order)
    assert run(config, "sync", "orders") == 0
    (odd_row, good_row) = requests(sql)
    assert good_row[3] == "sent"
    assert odd_row[3] == "rejected" and error in str(odd_row[6])
    assert len(feed(sql, odd_row[0])) == 1  # queued -> rejected, one feed row


def test_a_request_left_submitting_by_a_dead_sender_becomes_ambiguous(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock
) -> None:
    (order_id,) = finished(config, panel, sql, clock, 1)
    host = socket.gethostname()
    sql("INSERT INTO order_requests (order_id, kind, state, provider, submit_owner) "
        "VALUES (?, 'refill', 'submitting', 'sim', ?)", order_id, f"{host}:999999:1")  # fmt: skip
    sql("INSERT INTO order_requests (order_id, kind, state, provider) "
        "VALUES (?, 'cancel', 'submitting', 'sim')", order_id)  # fmt: skip
    assert run(config, "sync", "orders") == 0
    (dead, never) = requests(sql)
    assert dead[3] == "ambiguous" and "stopped before the provider answered" in str(dead[6])
    assert never[3] == "rejected" and "syncd's own" in str(never[6])
    assert len(sql("SELECT id FROM alerts WHERE event = 'request.ambiguous'")) == 1
    assert panel.provider.count("refill") == panel.provider.count("cancel") == 0


def test_requests_on_postgresql(
    tmp_path: Path, pg_url: str, panel: SimulatorServer, clock: FakeClock
) -> None:
    engine = sa.create_engine(pg_url)

    def pg(statement: str, **params: object) -> list[tuple[object, ...]]:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []

    try:
        config = write_config(tmp_path / "pg.toml", pg_url, panel.url, extra='dialect = "key"')
        assert run(config, "sync", "catalog") == 0
        ids = panel.provider.create_orders(2, service=102)
        assert run(config, "order", "track", "--provider", "sim", *map(str, ids)) == 0
        clock.advance(seconds=20)
        assert run(config, "sync", "orders") == 0
        (first, second) = [i for (i,) in pg("SELECT id FROM orders ORDER BY id")]
        assert run(config, "order", "refill", str(first)) == 0
        for _ in range(2):  # the same order twice in one pass: one goes
            pg("INSERT INTO order_requests (order_id, kind) VALUES (:o, 'refill')", o=second)
        assert run(config, "sync", "orders") == 0
        states = pg("SELECT order_id, state FROM order_requests ORDER BY id")
        assert states == [(first, "sent"), (second, "sent"), (second, "rejected")]
        clock.advance(seconds=500)
        pg("UPDATE order_requests SET next_check_at = now() - interval '1 day'")
        assert run(config, "sync", "orders") == 0
        done = pg("SELECT state FROM order_requests WHERE state = 'done'")
        assert len(done) == 2
        feed_ids = [cast(int, i) for (i,) in pg("SELECT id FROM request_changes ORDER BY id")]
        assert feed_ids == sorted(set(feed_ids)) and len(feed_ids) == 2 * 3 + 1
    finally:
        engine.dispose()


# -- what a black-box attack found --------------------------------------------------------


def test_a_request_queued_again_with_its_refill_id_is_never_sent_again(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock
) -> None:
    (order_id,) = finished(config, panel, sql, clock, 1)
    assert run(config, "order", "refill", str(order_id)) == 0
    sql("UPDATE order_requests SET state = 'queued'")  # a shop "retrying" a done request
    sql("INSERT INTO order_requests (order_id, kind, provider_request_id) "
        "VALUES (?, 'refill', 5555)", order_id)  # fmt: skip
    assert run(config, "sync", "orders") == 0
    rows = requests(sql)
    assert [(r[3], r[4]) for r in rows] == [("ambiguous", 4101), ("ambiguous", 5555)]
    assert panel.provider.count("refill") == 1
    providers = sql("SELECT provider FROM alerts WHERE event = 'request.ambiguous'")
    assert providers == [("sim",), ("sim",)]


def test_rows_in_syncds_own_states_or_none_are_rejected_and_block_nothing(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock
) -> None:
    (order_id,) = finished(config, panel, sql, clock, 1)
    for state in ("submitting", "sent", "QUEUED", "garbage"):
        sql("INSERT INTO order_requests (order_id, kind, state) VALUES (?, 'refill', ?)",
            order_id, state)  # fmt: skip
    assert run(config, "sync", "orders") == 0
    errors = [(r[3], str(r[6])) for r in requests(sql)]
    assert [state for state, _ in errors] == ["rejected"] * 4
    assert "syncd's own" in errors[0][1] and "syncd's own" in errors[1][1]
    assert "is not a state" in errors[2][1] and "is not a state" in errors[3][1]
    assert run(config, "order", "refill", str(order_id)) == 0  # nothing blocks it now


def test_a_request_for_an_order_of_an_unconfigured_provider_is_rejected(
    config: Path, panel: SimulatorServer, sql: Rows
) -> None:
    sql("INSERT INTO orders (provider, provider_order_id, state, status) "
        "VALUES ('ghost', 777, 'done', 'Completed')")  # fmt: skip
    ((ghost,),) = sql("SELECT id FROM orders WHERE provider = 'ghost'")
    sql("INSERT INTO order_requests (order_id, kind) VALUES (?, 'refill')", ghost)
    assert run(config, "sync", "orders") == 0
    ((state, error),) = sql("SELECT state, error FROM order_requests")
    assert state == "rejected" and "unknown provider 'ghost'" in str(error)


def test_three_cancels_of_one_order_in_one_pass_send_one(
    config: Path, panel: SimulatorServer, sql: Rows
) -> None:
    (order_id,) = tracked(config, panel, sql, 1, service=102)
    assert run(config, "sync", "orders") == 0
    for _ in range(3):
        sql("INSERT INTO order_requests (order_id, kind) VALUES (?, 'cancel')", order_id)
    assert run(config, "sync", "orders") == 0
    states = [r[3] for r in requests(sql)]
    assert states == ["done", "rejected", "rejected"]
    assert panel.provider.count("cancel") == 1


@pytest.mark.parametrize(
    "reply",
    [
        {"refill": "9001", "error": "Refill queued twice"},
        [{"order": "{poid}", "refill": 9001, "error": "Refill queued twice"}],
    ],
)
def test_a_refill_id_beside_an_error_is_ambiguous_not_rejected(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock, reply: object
) -> None:
    local = finished(config, panel, sql, clock, 2)
    if isinstance(reply, list):  # the batch form: two orders asked at once
        poid = sql("SELECT provider_order_id FROM orders WHERE id = ?", local[0])[0][0]
        reply = [{**reply[0], "order": poid}]
        asked = local
    else:
        asked = local[:1]
    panel.provider.inject(Fault.REPLY, actions={"refill"}, reply=reply)
    assert run(config, "order", "refill", *map(str, asked)) == 1
    rows = requests(sql)
    assert rows[0][3] == "ambiguous" and "outcome unknown" in str(rows[0][6])
    assert "outcome unknown: outcome unknown" not in str(rows[0][6])


def test_a_database_failure_after_the_answer_names_the_refill_ids(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (order_id,) = finished(config, panel, sql, clock, 1)

    def locked(*_: object, **__: object) -> None:
        raise StorageError("database is locked by another program (tried 3 times)")

    monkeypatch.setattr(Storage, "finish_requests", locked)
    assert run(config, "order", "refill", str(order_id)) == 1
    err = capsys.readouterr().err
    assert "database is locked" in err and "submitting, refill 4101" not in err
    assert f"(order {order_id}): sent, refill 4101" in err


def test_an_ambiguous_request_settled_by_hand_as_documented_is_tracked(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock
) -> None:
    (order_id,) = finished(config, panel, sql, clock, 1)
    panel.provider.inject(Fault.RESET, actions={"refill"}, after_processing=True)
    assert run(config, "order", "refill", str(order_id)) == 1
    ((request_id, *_),) = requests(sql)
    # docs/schema.md, "Settling an ambiguous request": the panel shows refill 4101.
    sql("UPDATE order_requests SET state = 'sent', provider_request_id = 4101, "
        "status = 'Pending', next_check_at = CURRENT_TIMESTAMP, error = NULL "
        "WHERE id = ? AND state = 'ambiguous'", request_id)  # fmt: skip
    clock.advance(seconds=500)
    assert run(config, "sync", "orders") == 0
    assert requests(sql)[0][3:6] == ("done", 4101, "Completed")


def test_a_sent_refill_whose_id_was_written_over_says_why_it_is_not_checked(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock
) -> None:
    (order_id,) = finished(config, panel, sql, clock, 1)
    assert run(config, "order", "refill", str(order_id)) == 0
    sql("UPDATE order_requests SET provider_request_id = 'abc', next_check_at = '2000-01-01'")
    assert run(config, "sync", "orders") == 0
    ((state, error),) = sql("SELECT state, error FROM order_requests")
    assert state == "sent" and "holds no refill id" in str(error)
    assert panel.provider.count("refill_status") == 0


def test_requests_left_queued_after_a_failed_call_say_so_not_a_call_in_flight(
    config: Path, panel: SimulatorServer, sql: Rows, clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """One request a call: when the first call's answer is lost, sending stops there.
    The request left queued waits for that reason, not for another process's call."""
    first, second = finished(config, panel, sql, clock, 2)
    capsys.readouterr()
    panel.provider.inject(Fault.RESET, actions={"refill"}, after_processing=True)
    assert run(config, "order", "refill", str(first), str(second)) == 1
    out = capsys.readouterr().out
    assert f"refill of order {second}: queued (not sent: sending stopped at an earlier" in out
    assert "in flight" not in out
    assert panel.provider.count("refill") == 1
