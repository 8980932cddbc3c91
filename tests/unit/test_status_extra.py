"""Status answers beyond the common fields: drip-feed runs and child orders, a
subscription's posts and expiry, the statuses of both; read from hostile replies without
a crash, kept in ``status_extra``, and every change of them one change row."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.lifecycle import plan_status_batch
from syncd.models import Order, OrderState, OrderStatus, Status, canonical_status
from syncd.plans import KEEP
from syncd.provider.replies import parse_status, parse_statuses
from syncd.status_extra import (
    FIELDS,
    ORDERS_KEPT,
    TEXT_KEPT,
    merged,
    read_extra,
    stored_extra,
)
from syncd.storage.rows import ORDER_FIELDS, read_order, read_orders
from syncd.units import LARGEST
from tests.unit.test_replies import JSON

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TOKEN = "tok-3f9a1c77e2b4d5"


def scrub(text: str) -> str:
    return text.replace(TOKEN, "***")


def extra(**fields: object) -> dict[str, Any] | None:
    return read_extra(fields, scrub)


# -- statuses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("In progess", Status.IN_PROGRESS),  # a provider's typo
        ("in_progess", Status.IN_PROGRESS),
        ("Cancelled", Status.CANCELED),
        ("Canceled", Status.CANCELED),
        ("Active", Status.IN_PROGRESS),
        ("Paused", Status.PAUSED),
        ("PAUSED", Status.PAUSED),
        ("Completed", Status.COMPLETED),
        ("Expired", Status.EXPIRED),
        ("expired", Status.EXPIRED),
        ("Expiring", Status.UNKNOWN),
    ],
)
def test_status_spellings_fold_to_one_status(raw: str, status: Status) -> None:
    assert canonical_status(raw) is status


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("Active", OrderState.ACTIVE),
        ("Paused", OrderState.ACTIVE),
        ("In progess", OrderState.ACTIVE),
        ("Completed", OrderState.DONE),
        ("Expired", OrderState.DONE),
        ("Canceled", OrderState.DONE),
        ("Cancelled", OrderState.DONE),
    ],
)
def test_subscription_statuses_keep_it_active_or_end_it(raw: str, state: OrderState) -> None:
    answer = parse_status({"status": raw, "posts": "4", "expiry": "25/12/2026"})
    (update,) = plan([stored()], answer).updates
    assert update.state is state
    assert update.status_raw == raw


# -- reading the fields --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "read"),
    [
        ({"runs": 3}, {"runs": 3}),
        ({"runs": "3"}, {"runs": 3}),
        ({"runs": "3 / 10"}, {"runs": 3, "runs_total": 10}),
        ({"runs": "3/10"}, {"runs": 3, "runs_total": 10}),
        ({"runs": "3 of 10"}, {"runs": 3, "runs_total": 10}),
        ({"runs": Decimal("3.0")}, {"runs": 3}),
        ({"runs": "three"}, {"runs": "three"}),  # kept as the provider's text
        ({"runs": [1, 2]}, None),  # a list is no count: dropped
        ({"runs": True}, None),
        ({"orders": [901, "902", " 903 "]}, {"orders": [901, 902, 903]}),
        ({"orders": "901,902, 903"}, {"orders": [901, 902, 903]}),
        ({"orders": "901"}, {"orders": [901]}),
        ({"orders": 901}, {"orders": [901]}),
        ({"orders": [901, "x", None, {"a": 1}, -4, 0]}, {"orders": [901]}),
        ({"orders": "null"}, None),
        ({"orders": []}, None),
        ({"orders": "soon"}, {"orders": "soon"}),
        ({"posts": 4}, {"posts": 4}),
        ({"posts": "12"}, {"posts": 12}),
        ({"posts": -1}, {"posts": "-1"}),
        ({"posts": str(LARGEST + 1)}, {"posts": str(LARGEST + 1)}),
        ({"posts": {"n": 4}}, None),
        ({"expiry": "25/12/2026"}, {"expiry": "2026-12-25"}),
        ({"expiry": "5/1/2027"}, {"expiry": "2027-01-05"}),
        ({"expiry": "25.12.2026"}, {"expiry": "2026-12-25"}),
        ({"expiry": "2026-12-25"}, {"expiry": "2026-12-25"}),
        ({"expiry": "2026-12-25 10:00:00"}, {"expiry": "2026-12-25"}),
        ({"expiry": "null"}, None),
        ({"expiry": ""}, None),
        ({"expiry": "00/00/0000"}, None),
        ({"expiry": "31/02/2026"}, {"expiry": "31/02/2026"}),  # no such day: kept as text
        ({"expiry": "12/25/2026"}, {"expiry": "12/25/2026"}),  # m/d/Y is no d/m/Y
        ({"expiry": 20261225}, None),
        ({"status": "Pending", "charge": "1"}, None),
    ],
)
def test_each_field_reads_to_its_canonical_value(
    fields: dict[str, object], read: dict[str, object] | None
) -> None:
    assert read_extra(fields, scrub) == read


def test_a_long_list_of_child_orders_is_cut_and_says_how_long_it_was() -> None:
    read = extra(orders=",".join(str(i) for i in range(1, ORDERS_KEPT + 51)))
    assert read is not None
    assert read["orders"] == list(range(1, ORDERS_KEPT + 1))
    assert read["orders_total"] == ORDERS_KEPT + 50


def test_text_kept_is_one_line_cut_short_and_never_shows_the_token() -> None:
    read = extra(runs=f"ran {TOKEN}\n" + "x" * 5000, expiry=f"when\t{TOKEN}")
    assert read is not None
    assert len(read["runs"]) <= TEXT_KEPT and "\n" not in read["runs"]
    assert TOKEN not in json.dumps(read)
    assert read["expiry"] == "when ***"


EXTRA_REPLIES = st.fixed_dictionaries(
    {},
    optional={
        "runs": JSON | st.from_regex(r"\s*[0-9]{1,25}\s*(/|of|out of)?\s*[0-9]{0,25}\s*"),
        "orders": JSON
        | st.lists(st.integers() | st.text(max_size=25), max_size=30)
        | st.from_regex(r"[0-9, ;]{0,60}"),
        "posts": JSON | st.integers() | st.decimals(allow_nan=True),
        "expiry": JSON | st.from_regex(r"[0-9]{1,4}[/.\-][0-9]{1,4}[/.\-][0-9]{1,5}( .*)?"),
    },
)


def _check_canonical(read: dict[str, Any]) -> None:
    assert set(read) <= {*FIELDS, "runs_total", "orders_total"}
    for key, value in read.items():
        if isinstance(value, str):
            assert len(value) <= TEXT_KEPT and "\n" not in value
        elif key == "orders":
            assert isinstance(value, list) and 0 < len(value) <= ORDERS_KEPT
            assert all(type(i) is int and 0 < i <= LARGEST for i in value)
        else:
            assert type(value) is int and 0 <= value <= LARGEST
    assert json.loads(json.dumps(read)) == read  # stores as JSON as it is


@given(EXTRA_REPLIES)
def test_any_value_of_the_fields_reads_to_a_canonical_object_or_none(
    reply: dict[str, Any],
) -> None:
    read = read_extra(reply, scrub)
    if read is None:
        return
    assert read  # never an empty object: nothing to keep is None
    _check_canonical(read)


@given(EXTRA_REPLIES, st.sampled_from(["Pending", "In progess", "Paused", "Expired", "Active"]))
def test_a_multi_status_entry_with_any_extra_fields_is_still_its_status(
    fields: dict[str, Any], status: str
) -> None:
    reply = {"7": {"status": status, "charge": "0.5", "remains": "3", **fields}}
    (answer,) = parse_statuses(reply, [7], scrub=scrub).values()
    assert isinstance(answer, OrderStatus)
    assert answer.status is canonical_status(status)
    assert answer.extra == read_extra(fields, scrub)
    if answer.extra is not None:
        _check_canonical(answer.extra)


def test_an_answer_without_extra_fields_carries_none() -> None:
    answer = parse_status({"status": "Pending", "charge": "0.1", "remains": "5"})
    assert answer.extra is None


# -- the stored column ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        (None, None),
        ('{"runs": 3}', {"runs": 3}),
        ({"runs": 3}, {"runs": 3}),  # a driver that parses JSON
        (b'{"posts": 1}', {"posts": 1}),
        ("null", None),
    ],
)
def test_the_stored_column_reads_back(stored: object, read: object) -> None:
    assert stored_extra(stored) == read


@pytest.mark.parametrize("garbage", ["{runs", "[1, 2]", "3", "NaN", "x" * 300_000, 42])
def test_garbage_a_consumer_wrote_is_a_problem_of_the_row_never_a_crash(garbage: object) -> None:
    with pytest.raises(ValueError) as caught:
        stored_extra(garbage)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 100
    row = [stored_row_value(name) for name in ORDER_FIELDS]
    row[ORDER_FIELDS.index("status_extra")] = garbage
    for order in (read_order(row), *read_orders([row])):
        assert order.status_extra is None
        assert order.problem is not None and "status_extra" in order.problem


@given(JSON | st.text(max_size=40))
def test_any_stored_value_reads_or_is_refused(value: object) -> None:
    try:
        read = stored_extra(value if not isinstance(value, Decimal) else str(value))
    except ValueError:
        return
    assert read is None or isinstance(read, dict)


def stored_row_value(name: str) -> object:
    """A row as SQLite returns an active order's columns."""
    return {
        "id": 1, "provider": "p", "provider_order_id": 501, "service_id": 7,
        "link": "https://x.example/p", "quantity": 100, "state": "active",
        "status": "Pending", "status_raw": "Pending", "charge": "0.09", "remains": 100,
        "currency": "USD", "created_at": "2026-11-25 11:00:00.000000",
        "missing_checks": 0, "overdue_checks": 0,
    }.get(name)  # fmt: skip


def test_a_stored_extra_text_reads_on_the_fast_path_too() -> None:
    row = [stored_row_value(name) for name in ORDER_FIELDS]
    row[ORDER_FIELDS.index("status_extra")] = '{"runs": 2, "orders": [9]}'
    (order,) = read_orders([row])
    assert order.status_extra == {"runs": 2, "orders": [9]} and order.problem is None


# -- planning ------------------------------------------------------------------------------


def stored(status_extra: dict[str, Any] | None = None) -> Order:
    return Order(
        id=1, provider="p", provider_order_id=501, service_id=7, link="https://x.example/p",
        quantity=100, custom_data=None, state=OrderState.ACTIVE, status=Status.IN_PROGRESS,
        status_raw="In progress", charge=Decimal("0.09"), start_counter=None, remains=100,
        currency="USD", error=None, created_at=NOW - timedelta(hours=1),
        checked_at=NOW - timedelta(minutes=2), next_check_at=NOW, status_extra=status_extra,
    )  # fmt: skip


def plan(orders: list[Order], answer: OrderStatus) -> Any:
    return plan_status_batch(
        orders, {501: answer}, NOW, base=timedelta(minutes=2), give_up_after=timedelta(days=30)
    )


def answer_with(**fields: object) -> OrderStatus:
    return parse_status({"status": "In progress", "charge": "0.09", "remains": "100", **fields})


def test_new_runs_are_one_change_row_with_the_old_and_new_extra() -> None:
    result = plan([stored({"runs": 2, "orders": [9]})], answer_with(runs="3 / 10", orders="9,10"))
    (update,) = result.updates
    assert update.status_extra == {"runs": 3, "runs_total": 10, "orders": [9, 10]}
    (change,) = result.changes
    columns = change.columns()
    assert columns["extra_old"] == {"runs": 2, "orders": [9]}
    assert columns["extra_new"] == {"runs": 3, "runs_total": 10, "orders": [9, 10]}
    assert columns["status_old"] == columns["status_new"] == Status.IN_PROGRESS


@pytest.mark.parametrize(
    "answer",
    [
        answer_with(),  # no extra fields: the known ones are kept
        answer_with(runs="2"),  # the same again
        answer_with(runs=[]),  # junk: dropped
    ],
)
def test_an_unchanged_extra_writes_nothing(answer: OrderStatus) -> None:
    result = plan([stored({"runs": 2})], answer)
    (update,) = result.updates
    assert update.status_extra is KEEP
    assert result.changes == []


def test_a_field_the_answer_leaves_out_keeps_its_last_value() -> None:
    result = plan([stored({"posts": 3, "expiry": "2026-12-25"})], answer_with(posts=4))
    (update,) = result.updates
    assert update.status_extra == {"posts": 4, "expiry": "2026-12-25"}


def test_the_first_extra_of_an_order_is_a_change_from_none() -> None:
    result = plan([stored()], answer_with(posts="0", expiry="null"))
    (change,) = result.changes
    assert change.columns()["extra_old"] is None
    assert change.columns()["extra_new"] == {"posts": 0}


def test_merged_is_the_same_object_when_nothing_moved() -> None:
    known = {"runs": 1}
    assert merged(known, {"runs": 1}) is known
    assert merged(known, None) is known
    assert merged(None, {"runs": 1}) == {"runs": 1}


def test_a_total_goes_with_the_count_it_came_with() -> None:
    old = {"runs": 3, "runs_total": 10, "orders": [1, 2], "orders_total": 1500, "posts": 4}
    assert merged(old, {"runs": 4}) == {"runs": 4, "orders": [1, 2], "orders_total": 1500,
                                        "posts": 4}  # fmt: skip
    assert merged(old, {"orders": [7]}) == {"runs": 3, "runs_total": 10, "orders": [7],
                                            "posts": 4}  # fmt: skip
    assert merged(old, {"runs": 5, "runs_total": 10}) == old | {"runs": 5}
    assert merged(old, {"posts": 4}) is old
