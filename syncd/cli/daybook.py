"""The money ledger by UTC day, as ``syncd report`` shows it and accounting reads it.

Per provider, currency and day: the opening balance, what was spent (``charge`` and
``surcharge`` rows, as a positive amount), refunds, top-ups, drift (a fall, as a positive
amount) and the closing balance, so that

    closing = opening - charges + refunds + topups - drift

holds exactly. A pure function of the rows ``Storage.ledger_window`` reads: tested on
fixtures.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal

from syncd.ledger import stretch_of
from syncd.models import LedgerRecord, LedgerStretch, LedgerWindow

ZERO = Decimal(0)
COLUMNS = ("provider", "currency", "day", "opening", "charges", "refunds", "topups", "drift",
           "closing")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Day:
    provider: str
    currency: str | None
    day: date
    opening: Decimal
    charges: Decimal = ZERO  # spent: charge and surcharge rows, positive
    refunds: Decimal = ZERO
    topups: Decimal = ZERO
    drift: Decimal = ZERO  # fallen unexplained, positive
    closing: Decimal = ZERO

    def balances(self) -> bool:
        """Whether the day adds up: closing = opening - charges + refunds + topups - drift."""
        moved = -self.charges + self.refunds + self.topups - self.drift
        return self.closing == self.opening + moved

    def taking(self, row: LedgerRecord | LedgerStretch) -> Day:
        """This day with ``row`` (or a stretch of rows) added."""
        s = row if isinstance(row, LedgerStretch) else stretch_of(row)
        return replace(
            self,
            charges=self.charges if s.charges is None else self.charges + s.charges,
            refunds=self.refunds if s.refunds is None else self.refunds + s.refunds,
            topups=self.topups if s.topups is None else self.topups + s.topups,
            drift=self.drift if s.drift is None else self.drift + s.drift,
            closing=s.balance_after,
        )


def _opening(row: LedgerRecord | LedgerStretch) -> Decimal:
    """The balance before ``row`` (before a stretch's first row)."""
    return row.opening if isinstance(row, LedgerStretch) else row.balance_after - row.amount


def _last_id(row: LedgerRecord | LedgerStretch) -> int:
    return row.last_id if isinstance(row, LedgerStretch) else row.id


def follows(row: LedgerRecord | LedgerStretch, before: LedgerRecord | LedgerStretch | None) -> bool:
    """Whether ``row`` continues the ledger ``before`` belongs to: the same currency, and
    its balance before it is that row's balance after. A currency switch starts a new
    ledger, and so does a ledger opened again in a currency it had before (EUR, USD, EUR:
    the second EUR ledger opens at the balance of its day, not where the first stopped)."""
    return (
        before is not None
        and before.currency == row.currency
        and _opening(row) == before.balance_after
    )


def days(window: LedgerWindow, today: date) -> list[Day]:
    """One line per day, currency and ledger that has rows, in the order written; when the
    current ledger has no row in the window, one more line for ``today`` at its balance.

    A line opens at the balance after the row before it (the one before the window for
    the first), or, where a new ledger starts (the provider's first rows, a currency
    switch), at its first row's balance before it: ``balance_after - amount``. Rows go in
    id order, the order their balances follow each other; a row is counted on the day it
    was written, or, written a moment before a row that came ahead of it (two processes
    around midnight), on that row's day, so that a day's rows are consecutive and its
    line adds up.

    A stretch (``LedgerStretch``: rows of one day that continue each other) counts as its
    rows would one by one: they all fall on the same line, the first decides which."""
    lines: list[Day] = []
    before = window.before
    for row in window.rows:
        on = max(row.at.date(), lines[-1].day) if lines else row.at.date()
        line = lines[-1] if lines else None
        if not follows(row, before):
            line = None  # a new ledger: its own line, even on the same day
            opening = _opening(row)
        else:
            assert before is not None
            opening = before.balance_after
        if line is None or line.day != on or line.currency != row.currency:
            lines.append(Day(window.provider, row.currency, on, opening, closing=opening))
        lines[-1] = lines[-1].taking(row)
        before = row
    current = [r for r in window.rows if _last_id(r) > window.since_id]
    if window.opened and window.balance is not None and not current:
        lines.append(Day(window.provider, window.currency, today, window.balance,
                         closing=window.balance))  # fmt: skip
    return lines
