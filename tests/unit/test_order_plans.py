"""The order deciders: submission checks and status batches, as plain function calls."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from syncd.deadlines import CLOCK_SKEW
from syncd.errors import AuthError, MalformedReplyError, RefusedError, TransientError
from syncd.lifecycle import (
    MAX_BACKOFF,
    check_order,
    outcome_of,
    plan_status_batch,
    ran_ahead,
)
from syncd.models import (
    Answer,
    Event,
    Order,
    OrderLookupError,
    OrderState,
    OrderStatus,
    Package,
    Status,
    StoredPackage,
)
from syncd.order_types import comment_lines
from syncd.plans import StatusPlan, StatusUpdate, Verdict

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BASE = timedelta(minutes=2)
GIVE_UP = timedelta(days=30)


def order(**fields: object) -> Order:
    base = Order(
        id=1, provider="p", provider_order_id=500, service_id=7, link="https://x.example/p",
        quantity=100, custom_data=None, state=OrderState.ACTIVE, status=Status.PENDING,
        status_raw="Pending", charge=Decimal("0.09"), start_counter=None, remains=100,
        currency="USD", error=None, created_at=NOW - timedelta(hours=1),
        checked_at=NOW - BASE, next_check_at=NOW,
    )  # fmt: skip
    return replace(base, **fields)  # type: ignore[arg-type]


def package(**fields: object) -> StoredPackage:
    p = Package(7, "Followers", "Default", "Instagram", Decimal("0.90"), 50, 1000)
    return StoredPackage(replace(p, **fields), active=True, removed_at=None)  # type: ignore[arg-type]


def status(text: str = "In progress", **fields: object) -> OrderStatus:
    base = OrderStatus(Status.IN_PROGRESS, text, Decimal("0.09"), 600, 40, "USD")
    return replace(base, **fields)  # type: ignore[arg-type]


def plan(
    o: Order, answer: OrderStatus | OrderLookupError | None, now: datetime = NOW
) -> tuple[StatusPlan, StatusUpdate]:
    assert o.provider_order_id is not None  # only an order the provider took is asked about
    answers: dict[int, Answer] = {} if answer is None else {o.provider_order_id: answer}
    result = plan_status_batch([o], answers, now, base=BASE, give_up_after=GIVE_UP)
    (row,) = result.updates
    return result, row


# -- submission checks -----------------------------------------------------------------


def test_a_valid_order_is_sent_with_its_estimated_cost() -> None:
    decision = check_order(order(state=OrderState.QUEUED), package(), Decimal("10"))
    assert decision.verdict is Verdict.SEND and decision.cost == Decimal("0.09")


@pytest.mark.parametrize(
    ("fields", "stored", "reason"),
    [
        ({}, None, "unknown package 7"),
        ({"quantity": 49}, package(), "quantity 49 is outside 50..1000"),
        ({"quantity": 1001}, package(), "quantity 1001 is outside 50..1000"),
        ({"link": ""}, package(), "link must be one non-empty line"),
        ({"link": "https://a\nhttps://b"}, package(), "link must be one non-empty line"),
        ({"custom_data": "nice"}, package(), "does not take custom comments"),
        ({"quantity": 3, "custom_data": "a\nb"}, package(type="Custom Comments", min=1),
         "2 comment lines for quantity 3"),
        ({"quantity": 3}, package(type="Custom Comments", min=1), "0 comment lines for quantity 3"),
        ({"service_id": None}, package(), "service_id is required"),
        ({"link": None}, package(), "link is required"),
        ({"quantity": None}, package(), "quantity is required"),
    ],
)  # fmt: skip
def test_validation_rejects_before_anything_is_sent(
    fields: dict[str, object], stored: StoredPackage | None, reason: str
) -> None:
    decision = check_order(order(state=OrderState.QUEUED, **fields), stored, None)
    assert decision.verdict is Verdict.REJECT
    assert decision.reason is not None and reason in decision.reason


def test_a_removed_package_is_rejected() -> None:
    removed = replace(package(), active=False, removed_at=NOW)
    assert check_order(order(), removed, None).verdict is Verdict.REJECT


def test_comments_count_non_empty_lines_with_either_line_ending() -> None:
    assert comment_lines("a\r\nb\n\n  \nc\n") == ["a", "b", "c"]
    custom = package(type="Custom Comments", min=1)
    assert (
        check_order(order(quantity=3, custom_data="a\r\nb\nc\n"), custom, None).verdict
        is Verdict.SEND
    )


def test_an_order_the_known_balance_cannot_cover_waits() -> None:
    decision = check_order(order(quantity=1000), package(), Decimal("0.89"))
    assert decision.verdict is Verdict.WAIT
    assert decision.reason == (
        "waiting for funds: estimated cost 0.9 is more than the balance left (see syncd status)"
    )
    assert check_order(order(quantity=1000), package(), Decimal("0.90")).verdict is Verdict.SEND


def test_without_a_known_balance_funds_are_not_checked() -> None:
    assert check_order(order(quantity=1000), package(), None).verdict is Verdict.SEND


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (RefusedError("p", "Not enough funds"), OrderState.REJECTED),
        (AuthError("p", "token rejected"), OrderState.QUEUED),
        (TransientError("p", "refused", maybe_processed=False), OrderState.QUEUED),
        (TransientError("p", "timeout", maybe_processed=True), OrderState.AMBIGUOUS),
        (TransientError("p", "HTTP 502", maybe_processed=True), OrderState.AMBIGUOUS),
        (MalformedReplyError("p", "not JSON"), OrderState.AMBIGUOUS),
    ],
)
def test_where_a_failed_submission_goes(error: Exception, state: OrderState) -> None:
    assert outcome_of(error).state is state  # type: ignore[arg-type]


# -- status batches --------------------------------------------------------------------


def test_a_change_is_one_order_changes_row_and_is_checked_again_soon() -> None:
    result, row = plan(order(), status())
    (change,) = result.changes
    assert change.columns() == {
        "order_id": 1,
        "state_old": "active", "state_new": "active",
        "status_old": "Pending", "status_new": "In progress",
        "charge_old": Decimal("0.09"), "charge_new": Decimal("0.09"),
        "remains_old": 100, "remains_new": 40,
        "start_counter_old": None, "start_counter_new": 600,
    }  # fmt: skip
    assert row.next_check_at == NOW + BASE and row.checked_at == NOW


def test_no_change_writes_no_change_row_and_backs_off() -> None:
    same = order(status=Status.IN_PROGRESS, status_raw="In progress", start_counter=600, remains=40)
    result, row = plan(same, status())
    assert result.changes == []
    assert row.next_check_at == NOW + 2 * BASE


def test_backoff_doubles_up_to_an_hour_and_a_change_resets_it() -> None:
    same = order(status=Status.IN_PROGRESS, status_raw="In progress", start_counter=600, remains=40)
    intervals = []
    current = same
    now = NOW
    for _ in range(8):
        _, row = plan(current, status(), now)
        assert row.next_check_at is not None  # an order still running is checked again
        intervals.append(row.next_check_at - now)
        current = replace(current, checked_at=now, next_check_at=row.next_check_at)
        now = row.next_check_at
    assert intervals == [2 * BASE, 4 * BASE, 8 * BASE, 16 * BASE] + [MAX_BACKOFF] * 4
    _, row = plan(current, status(remains=10), now)
    assert row.next_check_at is not None
    assert row.next_check_at - now == BASE


def test_only_the_raw_spelling_changing_is_not_a_change() -> None:
    same = order(status=Status.IN_PROGRESS, status_raw="In progress", start_counter=600, remains=40)
    result, row = plan(same, status("inprogress"))
    assert result.changes == [] and row.status_raw == "inprogress"


@pytest.mark.parametrize(
    "final", [Status.COMPLETED, Status.PARTIAL, Status.CANCELED, Status.REFUNDED, Status.FAILED]
)
def test_final_statuses_finish_the_order(final: Status) -> None:
    result, row = plan(order(), status(final.value, status=final))
    assert row.state is OrderState.DONE and row.finished_at == NOW and row.next_check_at is None
    assert result.changes[0].new[0] == "done"


def test_unknown_status_stays_active() -> None:
    _, row = plan(order(), status("Queued at partner", status=Status.UNKNOWN))
    assert row.state is OrderState.ACTIVE and row.status is Status.UNKNOWN


def test_missing_fields_keep_what_was_known() -> None:
    _, row = plan(
        order(start_counter=10),
        status(charge=None, start_counter=None, remains=None, currency=None),
    )
    assert (row.charge, row.start_counter, row.remains, row.currency) == (
        Decimal("0.09"),
        10,
        100,
        "USD",
    )


def test_remains_outside_the_quantity_are_kept_as_sent() -> None:
    _, row = plan(order(), status(remains=-5))
    assert row.remains == -5
    _, row = plan(order(), status(remains=250))
    assert row.remains == 250


def test_three_not_found_in_a_row_make_the_order_missing_with_one_alert() -> None:
    current = order()
    alerts = []
    for _ in range(3):
        result, row = plan(current, OrderLookupError("Order not found"))
        alerts += result.alerts
        current = replace(current, missing_checks=row.missing_checks, state=row.state)
    assert current.state is OrderState.MISSING
    assert [a.event for a in alerts] == [Event.ORDER_MISSING]
    assert "not found by the provider 3 checks in a row" in alerts[0].text


def test_an_order_absent_from_the_reply_counts_as_not_found() -> None:
    _, row = plan(order(missing_checks=2), None)
    assert row.state is OrderState.MISSING
    assert row.error is not None and "absent" in row.error


def test_a_found_order_resets_the_not_found_count() -> None:
    _, row = plan(order(missing_checks=2), status())
    assert row.missing_checks == 0 and row.error is None


def test_an_open_order_older_than_give_up_after_is_abandoned_on_the_third_check() -> None:
    old = order(created_at=NOW - GIVE_UP)
    for seen in range(2):
        result, row = plan(replace(old, overdue_checks=seen), status())
        assert row.state is OrderState.ACTIVE and row.overdue_checks == seen + 1
        assert result.alerts == []
    result, row = plan(replace(old, overdue_checks=2), status())
    assert row.state is OrderState.ABANDONED and row.next_check_at is None
    assert [a.event for a in result.alerts] == [Event.ORDER_ABANDONED]
    assert "after 30d" in result.alerts[0].text


def test_a_check_within_give_up_after_forgets_the_overdue_checks() -> None:
    _, row = plan(order(overdue_checks=2), status())  # the clock came back
    assert row.state is OrderState.ACTIVE and row.overdue_checks == 0


def test_an_old_order_that_just_finished_is_done_not_abandoned() -> None:
    result, row = plan(
        order(created_at=NOW - 2 * GIVE_UP), status("Completed", status=Status.COMPLETED)
    )
    assert row.state is OrderState.DONE and result.alerts == []


def test_a_sweep_summary_tells_finished_orders_from_given_up_ones() -> None:
    from syncd.jobs.status import SweepCounts  # noqa: PLC0415

    counts = SweepCounts(due=6, checked=6, changed=4, finished=1, given_up=3, calls=1)
    assert counts.summary() == (
        "checked 6 of 6 due in 1 calls, 4 changed, 1 finished, 3 no longer tracked"
    )
    assert SweepCounts(due=1, checked=1, finished=1, calls=1).summary().endswith("1 finished")


@pytest.mark.parametrize(
    ("written", "ahead"),
    [
        ([], False),
        ([None, None], False),
        ([NOW - timedelta(days=1), NOW], False),
        ([NOW + CLOCK_SKEW], False),  # another host's clock may be this far ahead
        ([None, NOW + CLOCK_SKEW + timedelta(seconds=1)], True),
        ([NOW, NOW + timedelta(days=1)], True),
    ],
)
def test_a_time_beyond_the_clock_skew_says_a_clock_ran_ahead(
    written: list[datetime | None], ahead: bool
) -> None:
    assert ran_ahead(written, NOW) is ahead
