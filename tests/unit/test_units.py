"""Money, counts and durations: the one place that parses them."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd import models, units
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
        Status.EXPIRED,
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


# -- the fast paths of parse_money and parse_count: the long way's answers, only sooner --

# Text shaped like numbers, near every bound: digit counts around 12 whole digits and 12
# places and around 19 digits, signs, spaces, exponents, points with nothing beside them,
# digits that are not ASCII.
NUMBERISH = st.one_of(
    st.from_regex(r"\A[ +-]?[0-9]{0,20}(\.[0-9]{0,16})?([eE][+-]?[0-9]{1,3})? ?\Z"),
    st.text(alphabet="0123456789.-+eE _\u0663\u00b2\uff11\t", max_size=30),
    st.integers(min_value=0, max_value=10**20).map(str),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)
VALUES = st.one_of(
    NUMBERISH,
    st.text(max_size=40),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.floats(),
)


def outcome(parse: Callable[[object], object], value: object) -> tuple[str, str]:
    """What parsing ``value`` gives: the result's type and exact text, or the refusal."""
    try:
        parsed = parse(value)
    except ValueError as exc:
        return ("refused", str(exc))
    return (type(parsed).__name__, str(parsed))


@given(VALUES)
def test_parse_money_answers_as_the_long_way_does(value: object) -> None:
    assert outcome(parse_money, value) == outcome(units._money, value)


@given(VALUES)
def test_parse_count_answers_as_the_long_way_does(value: object) -> None:
    assert outcome(parse_count, value) == outcome(units._count, value)


@pytest.mark.parametrize(
    "text",
    [
        "999999999999.999999999999",  # the largest plain amount
        "1000000000000",  # 13 whole digits: out of range
        "0.0000000000001",  # 13 places: too precise
        "0.00",
        "007",
        "5.",
        ".5",
        "\u0663",
        "\u00b2",
        "\uff11",
    ],
)
def test_plain_amounts_at_the_bounds_answer_as_the_long_way_does(text: str) -> None:
    assert outcome(parse_money, text) == outcome(units._money, text)


@pytest.mark.parametrize(
    "value",
    ["999999999999999999", "9223372036854775807", "9223372036854775808", "0" * 30 + "1",
     "\u0663", "\u00b2", units.LARGEST, units.LARGEST + 1, -units.LARGEST, -units.LARGEST - 1,
     True, False],
)  # fmt: skip
def test_counts_at_the_bounds_answer_as_the_long_way_does(value: object) -> None:
    assert outcome(parse_count, value) == outcome(units._count, value)


# -- canonical_status remembers texts, within a bound ---------------------------------------


@given(st.text(max_size=60))
def test_a_remembered_status_is_the_one_worked_out(raw: str) -> None:
    worked_out = models._STATUS_SPELLINGS.get(models._fold(raw), Status.UNKNOWN)
    assert canonical_status(raw) is worked_out
    assert canonical_status(raw) is worked_out  # the second time from memory, if kept


def test_a_provider_sending_a_new_status_text_each_time_cannot_grow_the_memory() -> None:
    limit = models._SEEN_STATUSES_LIMIT
    for n in range(10 * limit):
        assert canonical_status(f"Processing {n}") is Status.UNKNOWN
        assert len(models._SEEN_STATUSES) <= limit
        assert canonical_status("Partially Completed") is Status.PARTIAL
    assert canonical_status("x" * 10_000) is Status.UNKNOWN
    assert "x" * 10_000 not in models._SEEN_STATUSES  # long texts are not kept at all


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=12, min_value=-(10**18), max_value=10**18
    ),
    st.integers(0, 20),
)
def test_an_amount_prints_alike_however_many_zeros_it_carries(amount: Decimal, zeros: int) -> None:
    """The commands print 0.05, 0.0500 (a provider's) and 0.050000000000 (MariaDB's) as
    one text: exact, never in exponent form, no zero after the point that adds nothing."""
    padded = Decimal(f"{money_text(amount)}{'0' * zeros if '.' in money_text(amount) else ''}")
    shown = units.shown_money(amount)
    assert units.shown_money(padded) == shown
    assert Decimal(shown) == amount
    assert "E" not in shown and "e" not in shown and shown != "-0"
    if "." in shown:
        assert not shown.endswith(("0", "."))
    assert units.shown_amount(amount, "USD") == f"{shown} USD"
