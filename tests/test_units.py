"""Money, counts and durations: the one place that parses them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from syncd.jobs.balance import runway_hours
from syncd.models import Status, canonical_status
from syncd.units import money_text, parse_count, parse_duration, parse_money


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.27819", Decimal("0.27819")),
        (" 100.84292 ", Decimal("100.84292")),
        (Decimal("0.12345678"), Decimal("0.12345678")),
        (3, Decimal(3)),
        ("-1.5", Decimal("-1.5")),
    ],
)
def test_money_parses_exactly(value: object, expected: Decimal) -> None:
    parsed = parse_money(value)
    assert parsed == expected and isinstance(parsed, Decimal)
    assert str(parsed) == str(expected)


@pytest.mark.parametrize("value", [0.1, True, None, "", "abc", "NaN", "Infinity", [], {}])
def test_money_refuses_floats_and_non_amounts(value: object) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        parse_money(value)


@pytest.mark.parametrize(
    ("value", "expected"), [("600", 600), (600, 600), ("-3", -3), ("600.00", 600)]
)
def test_counts(value: object, expected: int) -> None:
    assert parse_count(value) == expected


def test_a_fractional_count_is_refused() -> None:
    with pytest.raises(ValueError, match="whole number"):
        parse_count("1.5")


def test_money_text_never_uses_exponents() -> None:
    assert money_text(Decimal("1E-8")) == "0.00000001"
    assert money_text(Decimal("1E+3")) == "1000"
    assert money_text(Decimal("0.30")) == "0.30"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("2m", timedelta(minutes=2)),
        ("1h", timedelta(hours=1)),
        ("30d", timedelta(days=30)),
        ("1h30m", timedelta(minutes=90)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["30", "1 h", "1w", "-5s", "0s", "", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


# Every status spelling seen in the wild, mapped to its canonical status.
SPELLINGS = {
    "Pending": Status.PENDING,
    "Processing": Status.PROCESSING,
    "In progress": Status.IN_PROGRESS,
    "In Progress": Status.IN_PROGRESS,
    "inprogress": Status.IN_PROGRESS,
    "in_progress": Status.IN_PROGRESS,
    "Active": Status.IN_PROGRESS,
    "Completed": Status.COMPLETED,
    "Complete": Status.COMPLETED,
    "Partial": Status.PARTIAL,
    "Partially Completed": Status.PARTIAL,
    "Canceled": Status.CANCELED,
    "Cancelled": Status.CANCELED,
    "Refunded": Status.REFUNDED,
    "Fail": Status.FAILED,
    "Failed": Status.FAILED,
    "Error": Status.FAILED,
}


@pytest.mark.parametrize(("raw", "status"), SPELLINGS.items())
def test_each_status_spelling_maps_to_its_canonical_value(raw: str, status: Status) -> None:
    assert canonical_status(raw) is status
    assert canonical_status(raw.upper()) is status


@pytest.mark.parametrize("raw", ["", "Queued?", "Done-ish", "Pending payment"])
def test_unknown_status_text_is_unknown_never_pending(raw: str) -> None:
    assert canonical_status(raw) is Status.UNKNOWN


def test_final_statuses() -> None:
    final = {s for s in Status if s.is_final}
    assert final == {
        Status.COMPLETED,
        Status.PARTIAL,
        Status.CANCELED,
        Status.REFUNDED,
        Status.FAILED,
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "not an amount: null"),
        (True, "not an amount: true"),
        ({"amount": 10}, "not an amount: an object"),
        (Decimal("1E+300"), "amount out of range: 1E+300"),
        ("\u0661\u0660", "not an amount: '\u0661\u0660'"),  # Arabic-Indic digits for 10
    ],
)
def test_a_refused_amount_is_named_in_the_terms_it_came_in(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_money(value)


def test_minus_zero_is_zero() -> None:
    assert money_text(parse_money("-0")) == "0"
    assert money_text(parse_money("-0.00")) == "0.00"


def test_a_balance_at_or_below_zero_has_no_runway() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    history = [(now - timedelta(hours=2), Decimal("5")), (now, Decimal("-1.5"))]
    assert runway_hours(history, now) == Decimal("0.0")


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0660", "1_0.5"])
def test_amounts_take_plain_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        parse_money(text)


@pytest.mark.parametrize("text", ["\u0663s", "\uff11s", "1_000s"])
def test_durations_take_plain_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_bytes_are_named_not_dumped() -> None:
    with pytest.raises(ValueError, match=r"not an amount: bytes$"):
        parse_money(b"10")
