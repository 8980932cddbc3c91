"""The pictures ``syncd status`` draws on a terminal: a balance sparkline over 7 days and
the spend per day, from balance snapshots; checked against values worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from syncd.cli.render import daily, overview_text, sparkline
from syncd.models import ProviderOverview

NOW = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def ago(days: int, hour: int = 12) -> datetime:
    return (NOW - timedelta(days=days)).replace(hour=hour)


HISTORY = [
    (ago(9), Decimal("100")),  # before the window: the balance the first days start from
    (ago(5), Decimal("90")),  # 10 spent on day -5
    (ago(5, 18), Decimal("85.5")),  # 4.5 more that day
    (ago(3), Decimal("185.5")),  # a top-up: no spend
    (ago(1), Decimal("180")),  # 5.5 spent
    (ago(0, 9), Decimal("170")),  # 10 spent today
]


def test_daily_balances_and_spend_match_the_hand_worked_figures() -> None:
    days = daily(HISTORY, NOW)
    assert [end for end, _ in days] == [
        Decimal("100"), Decimal("85.5"), Decimal("85.5"), Decimal("185.5"),
        Decimal("185.5"), Decimal("180"), Decimal("170"),
    ]  # fmt: skip
    assert [spent for _, spent in days] == [0, Decimal("14.5"), 0, 0, 0, Decimal("5.5"), 10]


def test_the_sparkline_runs_from_the_lowest_to_the_highest_bar() -> None:
    assert sparkline([Decimal(1), Decimal(5), Decimal(9)]) == "▁▄█"
    assert sparkline([None, Decimal(3), Decimal(3)]) == " ▁▁"
    assert sparkline([None, None]) == ""


@given(st.lists(st.one_of(st.none(), st.decimals(-(10**6), 10**6, places=2)), max_size=20))
def test_a_sparkline_has_one_bar_per_value_the_extremes_at_the_ends(values: list) -> None:  # type: ignore[type-arg]
    line = sparkline(values)
    known = [v for v in values if v is not None]
    if not known:
        assert line == ""
        return
    assert len(line) == len(values)
    assert line[values.index(max(known))] in "▁█"
    if max(known) > min(known):
        assert line[values.index(max(known))] == "█" and line[values.index(min(known))] == "▁"


def test_status_on_a_terminal_shows_them_and_a_pipe_does_not() -> None:
    p = ProviderOverview(
        name="sim", url="https://x", currency="USD", balance=Decimal("170"),
        balance_checked_at=NOW, health="up", last_error=None, catalog_synced_at=NOW,
        active_packages=3, open_orders=0, orders={}, jobs=(), history=tuple(HISTORY),
    )  # fmt: skip
    shown = overview_text([p], now=NOW, pictures=True)
    # (v - 85.5) / 100 * 7 bars: 100 → 1, 180 → 6, 170 → 5 (whole bars, rounded down)
    assert "  balance 7d  ▂▁▁██▇▆  (oldest first)" in shown
    assert "  spent/day   0 14.5 0 0 0 5.5 10" in shown
    assert "balance 7d" not in overview_text([p], now=NOW)
