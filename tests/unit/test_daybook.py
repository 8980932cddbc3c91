"""The ledger by day (``syncd report``): lines computed by hand, and every line adding up
whatever the rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from syncd.cli.daybook import Day, days
from syncd.models import LedgerRecord, LedgerWindow

D1 = datetime(2026, 12, 1, 10, tzinfo=UTC)
TODAY = date(2026, 12, 5)


def rows(*spec: tuple[datetime, str, str, str | None], start: Decimal = Decimal("100.00"),
         first_id: int = 10) -> list[LedgerRecord]:  # fmt: skip
    """Chained rows: each balance_after the previous one's plus its amount."""
    balance, made = start, []
    for n, (at, kind, amount, currency) in enumerate(spec):
        balance += Decimal(amount)
        made.append(LedgerRecord(first_id + n, at, kind, Decimal(amount), currency, balance))
    return made


def window(
    found: list[LedgerRecord], before: LedgerRecord | None = None, **kw: object
) -> LedgerWindow:
    return LedgerWindow("sim", tuple(found), before, **kw)  # type: ignore[arg-type]


def test_a_day_opens_where_the_last_row_before_it_closed_and_adds_up() -> None:
    before = LedgerRecord(9, D1 - timedelta(days=3), "topup", Decimal("100.00"), "USD",
                          Decimal("100.00"))  # fmt: skip
    found = rows(
        (D1, "charge", "-10.00", "USD"),
        (D1 + timedelta(hours=1), "charge", "0.50", "USD"),  # trued up: charged 9.50
        (D1 + timedelta(hours=2), "refund", "2.00", "USD"),
        (D1 + timedelta(days=2), "surcharge", "-1.25", "USD"),
        (D1 + timedelta(days=2, hours=1), "topup", "50.00", "USD"),
        (D1 + timedelta(days=2, hours=2), "drift", "-3.00", "USD"),
    )  # fmt: skip
    lines = days(
        window(found, before, opened=True, currency="USD", balance=found[-1].balance_after), TODAY
    )
    assert lines == [
        Day("sim", "USD", date(2026, 12, 1), Decimal("100.00"), Decimal("9.50"),
            Decimal("2.00"), Decimal(0), Decimal(0), Decimal("92.50")),
        Day("sim", "USD", date(2026, 12, 3), Decimal("92.50"), Decimal("1.25"),
            Decimal(0), Decimal("50.00"), Decimal("3.00"), Decimal("138.25")),
    ]  # fmt: skip
    assert all(line.balances() for line in lines)


def test_the_ledgers_first_row_opens_at_its_balance_before_it() -> None:
    found = rows((D1, "charge", "-0.27", "USD"), start=Decimal("42.00"))
    (line,) = days(window(found), TODAY)
    assert (line.opening, line.charges, line.closing) == (
        Decimal("42.00"),
        Decimal("0.27"),
        Decimal("41.73"),
    )


def test_a_currency_switch_starts_a_new_ledger_never_added_across() -> None:
    eur = rows((D1, "charge", "-5.00", "EUR"), start=Decimal("100"))
    usd = rows((D1 + timedelta(hours=1), "charge", "-1.00", "USD"), start=Decimal("50"),
               first_id=20)  # fmt: skip
    again = rows((D1 + timedelta(hours=2), "refund", "1.00", "EUR"), start=Decimal("80"),
                 first_id=30)  # fmt: skip
    lines = days(window([*eur, *usd, *again], opened=True, currency="EUR",
                        balance=Decimal("81"), since_id=25), TODAY)  # fmt: skip
    assert [(x.currency, x.opening, x.closing) for x in lines] == [
        ("EUR", Decimal("100"), Decimal("95.00")),
        ("USD", Decimal("50"), Decimal("49.00")),
        ("EUR", Decimal("80"), Decimal("81.00")),  # opened again at 80: not 95 + 1
    ]
    assert all(line.balances() for line in lines)


def test_a_window_without_rows_shows_the_current_balance_once() -> None:
    before = LedgerRecord(9, D1, "charge", Decimal("-1"), "USD", Decimal("12.34"))
    (line,) = days(window([], before, opened=True, currency="USD", balance=Decimal("12.34"),
                          since_id=3), TODAY)  # fmt: skip
    assert line == Day("sim", "USD", TODAY, Decimal("12.34"), closing=Decimal("12.34"))
    # The ledger switched to USD since its last row (EUR): the new ledger's balance.
    (line,) = days(window([], before, opened=True, currency="GBP", balance=Decimal("7"),
                          since_id=9), TODAY)  # fmt: skip
    assert (line.currency, line.opening, line.closing) == ("GBP", Decimal("7"), Decimal("7"))
    assert days(window([]), TODAY) == []  # never opened: nothing to show


def test_a_row_written_a_moment_late_around_midnight_keeps_the_days_consecutive() -> None:
    midnight = datetime(2026, 12, 2, tzinfo=UTC)
    found = rows((midnight + timedelta(seconds=1), "charge", "-1", "USD"),
                 (midnight - timedelta(seconds=1), "charge", "-2", "USD"))  # fmt: skip
    (line,) = days(window(found), TODAY)
    assert line.day == date(2026, 12, 2) and line.charges == 3 and line.balances()


KINDS = st.sampled_from(["charge", "surcharge", "refund", "topup", "drift"])
AMOUNTS = st.decimals(min_value=-1000, max_value=1000, places=5, allow_nan=False)


@given(st.lists(st.tuples(st.integers(0, 4 * 24), KINDS, AMOUNTS,
                          st.sampled_from(["USD", "USD", "EUR"])), max_size=40),
       AMOUNTS)  # fmt: skip
def test_every_line_adds_up_and_the_lines_follow_each_other(
    spec: list[tuple[int, str, Decimal, str]], start: Decimal
) -> None:
    found = rows(*((D1 + timedelta(hours=h), k, str(a), c) for h, k, a, c in sorted(
        spec, key=lambda s: s[0])), start=start)  # fmt: skip
    lines = days(window(found), TODAY)
    assert all(line.balances() for line in lines)
    assert sum(line.closing - line.opening for line in lines) == sum(
        (r.amount for r in found), Decimal(0)
    )  # every row counted, once
    for a, b in pairwise(lines):
        assert b.day >= a.day and (b.day, b.currency) != (a.day, a.currency)
        assert b.opening == a.closing  # the rows chain: no money appears between lines
