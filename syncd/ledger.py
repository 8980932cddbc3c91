"""The money ledger: every move of a provider's balance, explained (docs/ledger.md).

Two sources write it. Orders: an order sent is counted at what it is expected to cost
(the provider debits at ``add``, syncd learns the charge only from a later status), its
first known charge trues that up, and every later change of the charge is a refund or a
surcharge. Balance polls: the balance's move that the orders do not explain is a
top-up (a rise) or drift (a fall), once it has lasted from one poll to the next.

Everything here is pure: the storage reads the rows, these functions decide, the storage
writes what they return.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Final

from syncd.models import Balance, Event, LedgerRecord, LedgerStretch
from syncd.order_types import TYPES, sent_cost, type_key
from syncd.plans import AlertIntent
from syncd.units import MONEY_PLACES, amount_text, money_text, parse_money

ZERO: Final = Decimal(0)
# An amount every backend's money column keeps exactly: 12 places, below 10^12 in size as
# a provider's amounts are, with room for a ledger's sums.
_PLACE: Final = Decimal(1).scaleb(-MONEY_PLACES)
LARGEST_COST: Final = Decimal(10) ** 15


class Kind(enum.StrEnum):
    CHARGE = "charge"  # an order sent, at its expected cost
    REFUND = "refund"  # a known charge lowered (a Partial, a cancel)
    SURCHARGE = "surcharge"  # a known charge raised (a subscription's next post)
    TOPUP = "topup"  # a rise the orders do not explain (negative: one found to be a refund)
    DRIFT = "drift"  # a fall the orders do not explain (positive: one found to be a charge)


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger row to write; ``amount`` is signed as the balance moves (a debit is
    negative). The storage adds ``at``, ``currency`` and ``balance_after``."""

    provider: str
    kind: Kind
    order_id: int | None
    amount: Decimal


def expected_cost(
    rate: Decimal, package_type: str, quantity: object, params: object
) -> Decimal | None:
    """What the provider debits when it accepts an order: rate x quantity / 1000 (every
    run of a drip-feed counted), a package's price for a type without a quantity. A
    subscription is charged post by post as it picks posts up, so nothing at ``add``.
    Rounded half up to ``MONEY_PLACES`` (the first known charge trues it up); None when
    it is no amount of money (a rate and quantity no provider bills), so not counted."""
    if TYPES.get(type_key(package_type)) is TYPES["subscriptions"]:
        return ZERO
    cost = sent_cost(rate, package_type, quantity, params)
    if not cost.is_finite() or cost < 0 or cost >= LARGEST_COST:
        return None
    exponent = cost.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_PLACES:
        return cost.quantize(_PLACE, ROUND_HALF_UP)
    return cost


@dataclass(frozen=True, slots=True)
class Counted:
    """What the current ledger holds of one order: how many rows, and their sum (negative:
    what it is counted to cost)."""

    rows: int
    total: Decimal


def order_entry(
    provider: str,
    order_id: int,
    *,
    sent: Decimal | None,
    charge_old: Decimal | None,
    charge_new: Decimal | None,
    counted: Counted | None,
) -> Entry | None:
    """The row one order change makes, if any.

    ``sent``: the order has just been accepted by the provider and costs that much (a
    ``charge``). Otherwise a change of the charge the provider reports, measured against
    what the ledger counts for the order (``counted``): less is a ``refund``, more a
    ``surcharge``, its first known charge included (an order first seen Partial was
    refunded the part it did not deliver; one a subscription's posts charged was
    surcharged). An order the ledger never counted (tracked from elsewhere, sent before
    the ledger opened) is measured against the charge known before, since only a change
    of it moves money now. A charge that is not a sum of money (negative) moves nothing
    here."""
    if sent is not None:
        return Entry(provider, Kind.CHARGE, order_id, ZERO - sent) if sent >= 0 else None
    if charge_new is None or charge_new < 0 or charge_new == charge_old:
        return None
    if counted is not None and counted.rows:
        before = -counted.total
    elif charge_old is not None and charge_old >= 0:
        before = charge_old
    else:
        return None  # its cost was paid before the ledger knew of it
    if charge_new == before:
        return None
    kind = Kind.REFUND if charge_new < before else Kind.SURCHARGE
    return Entry(provider, kind, order_id, before - charge_new)


# -- reconciliation at each balance poll -------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerState:
    """A provider's ledger between polls (syncd's own columns of ``providers``)."""

    opened: bool = False
    currency: str | None = None
    balance: Decimal = ZERO  # the running balance: the last row's balance_after
    # The unexplained amount seen at the last poll, not written yet: it is written when the
    # next poll sees it still (a charge or refund syncd had not seen yet is gone by then).
    gap: Decimal = ZERO
    balanced_at: datetime | None = None  # the last poll at which nothing was unexplained
    drift: Decimal = ZERO  # unexplained falls written since then (negative)
    drifting: bool = False  # balance.drift raised, not cleared


@dataclass(frozen=True, slots=True)
class Recent:
    """A row written within the look-back (``reconcile``), oldest first; ``new``: written
    since the last poll that held nothing unexplained. ``id`` is its ledger id, and for a
    refund or surcharge ``origin`` is the id of its order's first row (None: unknown, so
    taken as older than any)."""

    kind: Kind
    amount: Decimal
    new: bool = False
    id: int = 0
    origin: int | None = None


@dataclass(frozen=True, slots=True)
class Tolerance:
    """``drift_tolerance``: a share of the balance (``percent``) or an amount."""

    percent: Decimal | None = Decimal("0.5")
    amount: Decimal | None = None

    def __str__(self) -> str:
        return money_text(self.amount) if self.amount is not None else f"{self.percent}%"

    def of(self, balance: Decimal) -> Decimal:
        """The tolerance at this balance: never below one unit of the balance's last
        decimal place (0.01 for "12.34")."""
        exponent = balance.as_tuple().exponent
        unit = Decimal(1).scaleb(min(0, exponent) if isinstance(exponent, int) else 0)
        if self.amount is not None:
            return max(self.amount, unit)
        # A share written to the balance's own places, rounded up: 4.95125 of 990.25 is 4.96.
        share = (abs(balance) * (self.percent or ZERO) / 100).quantize(unit, ROUND_CEILING)
        return max(share, unit)


def parse_tolerance(text: str) -> Tolerance:
    """``"0.5%"`` of the balance, or an amount such as ``"2.50"``."""
    spelled = text.strip()
    if spelled.endswith("%"):
        percent = parse_money(spelled[:-1].strip())
        if not ZERO <= percent <= 100:
            raise ValueError("a percentage must be between 0% and 100%")
        return Tolerance(percent=percent)
    value = parse_money(spelled)
    if value < 0:
        raise ValueError("must not be negative")
    return Tolerance(percent=None, amount=value)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    entries: list[Entry]
    state: LedgerState
    opened: bool = False  # a new ledger began at this poll (the first, or a new currency)
    cleared: bool = False  # balance.drift was raised and the ledger balances again
    alerts: list[AlertIntent] = field(default_factory=list)


def reconcile(
    provider: str,
    state: LedgerState,
    observed: Balance,
    *,
    now: datetime,
    recent: Callable[[], Sequence[Recent]],
    tolerance: Tolerance,
) -> Reconciliation:
    """Explain the balance ``observed`` now against the ledger's running balance.

    1. A first poll, or a currency other than the ledger's, opens a new ledger at the
       balance: nothing before it is counted in the new currency.
    2. A fall that top-ups written within the look-back (``recent()``, its rows oldest
       first, read only when something is unexplained) and the refunds written after
       them since the last poll that held nothing account for in full (once those have
       explained a rise the last poll held, and only refunds of orders charged before the
       top-up) was a refund syncd had not seen yet, taken for a top-up: a ``topup`` row
       with a negative amount undoes it. A larger fall is not split: all of it goes on.
       A rise likewise undoes drift, with the surcharges.
    3. What is left and was already seen at the last poll, in the same direction, is
       written: as much as both polls saw, as ``topup`` or ``drift``. The rest is held.
    4. Drift written since the ledger last balanced beyond the tolerance raises
       ``balance.drift`` once; it clears at a poll where nothing is unexplained.
    """
    amount = observed.amount
    switched = observed.currency is not None and observed.currency != state.currency
    if not state.opened or switched:
        opened = LedgerState(True, observed.currency or state.currency, amount, balanced_at=now)
        return Reconciliation([], opened, opened=True, cleared=state.drifting)
    entries: list[Entry] = []
    gap = amount - state.balance
    drift = state.drift
    rows = recent() if gap else ()
    if gap < 0:
        # Refunds first explain a rise the last poll held: that one was never a top-up.
        undoable = _undoable(rows, Kind.TOPUP, _late_refunds, max(ZERO, state.gap))
        taken = -gap if -gap <= undoable else ZERO
        if taken > 0:
            entries.append(Entry(provider, Kind.TOPUP, None, -taken))
            gap += taken
    elif gap > 0:
        undoable = -_undoable(rows, Kind.DRIFT, _late_charges, max(ZERO, -state.gap))
        taken = gap if gap <= undoable else ZERO
        if taken > 0:
            entries.append(Entry(provider, Kind.DRIFT, None, taken))
            gap -= taken
            drift = min(ZERO, drift + taken)
    held = state.gap
    if gap * held > 0:  # seen at both polls, in the same direction
        settled = min(gap, held) if gap > 0 else max(gap, held)
        entries.append(Entry(provider, Kind.TOPUP if settled > 0 else Kind.DRIFT, None, settled))
        gap -= settled
        if settled < 0:
            drift += settled
    running = state.balance + sum((e.amount for e in entries), ZERO)
    balanced = gap == 0 and not any(e.kind is Kind.DRIFT and e.amount < 0 for e in entries)
    after = LedgerState(
        True, state.currency, running, gap,
        balanced_at=now if balanced else state.balanced_at,
        drift=ZERO if balanced else drift,
        drifting=state.drifting and not balanced,
    )  # fmt: skip
    alerts: list[AlertIntent] = []
    limit = tolerance.of(amount)
    if not after.drifting and -after.drift > limit:
        after = replace(after, drifting=True)
        alerts.append(
            _drift_alert(provider, observed, after, since=state.balanced_at, now=now, limit=limit)
        )
    return Reconciliation(entries, after, cleared=state.drifting and balanced, alerts=alerts)


def _undoable(
    recent: Sequence[Recent], kind: Kind, late: Callable[[Recent], Decimal], held: Decimal
) -> Decimal:
    """How much of the ``kind`` rows in ``recent`` the rows written since the last poll
    can account for: their net sum, at most what ``late`` counts of those new rows, less
    what they explain of the difference the last poll ``held`` (in their direction). Only
    a row written since the last poll that held nothing can have made this poll's
    difference, only one written after a ``kind`` row can have been inside it, and only
    one whose order existed when that row was written: a refund of an order placed
    after a top-up was never taken for that top-up."""
    undo = [(i, row) for i, row in enumerate(recent) if row.kind is kind]
    news = [(j, row) for j, row in enumerate(recent) if row.new and late(row) > 0]

    def inside(j: int, row: Recent, i: int, other: Recent) -> bool:
        return i < j and (row.origin is None or row.origin < other.id)

    since = sum((late(r) for j, r in news if any(inside(j, r, i, u) for i, u in undo)), ZERO)
    since = max(ZERO, since - held)
    net = sum((u.amount for i, u in undo if any(inside(j, r, i, u) for j, r in news)), ZERO)
    if kind is Kind.TOPUP:
        return max(ZERO, min(net, since))
    return min(ZERO, max(net, -since))


def _late_refunds(row: Recent) -> Decimal:
    return row.amount if row.kind is Kind.REFUND else ZERO


def _late_charges(row: Recent) -> Decimal:
    return -row.amount if row.kind is Kind.SURCHARGE else ZERO


def _drift_alert(
    provider: str,
    observed: Balance,
    state: LedgerState,
    *,
    since: datetime | None,
    now: datetime,
    limit: Decimal,
) -> AlertIntent:
    fell = -state.drift
    window = (
        f"between {since:%Y-%m-%d %H:%M:%S} and {now:%Y-%m-%d %H:%M:%S} UTC" if since else "so far"
    )
    return AlertIntent(
        Event.BALANCE_DRIFT,
        provider,
        f"{provider} balance fell {amount_text(fell, observed.currency)} more than its orders "
        f"explain {window} (tolerance {money_text(limit)})",
        {
            "amount": money_text(fell),
            "currency": observed.currency,
            "balance": money_text(observed.amount),
            "expected": money_text(observed.amount + fell),
            "tolerance": money_text(limit),
            "since": since.isoformat() if since else None,
            "until": now.isoformat(),
        },
    )


# -- stretches: the ledger by day, summed as it is written (``ledger_days``) -------------


def stretch_of(row: LedgerRecord) -> LedgerStretch:
    """One row as a stretch of its own."""
    return taken(LedgerStretch(row.id, row.id, row.at, row.currency,
                               row.balance_after - row.amount, row.balance_after, rows=0),
                 row)  # fmt: skip


def continues(stretch: LedgerStretch, row: LedgerRecord) -> bool:
    """Whether ``row`` belongs to ``stretch``: the row after its last, written on its
    day, in its currency, its balance before it the stretch's balance after."""
    return (
        row.currency == stretch.currency
        and row.at.date() == stretch.at.date()
        and row.balance_after - row.amount == stretch.balance_after
    )


def taken(stretch: LedgerStretch, row: LedgerRecord) -> LedgerStretch:
    """``stretch`` with ``row`` added: each sum as the report's day adds the row to its
    own (a charge's negative amount counted as a positive charge, drift likewise), so
    that a day adds up the same whether it reads the rows or the stretches."""
    kind, amount = row.kind, row.amount
    sums: dict[str, Decimal] = {}
    if kind in (Kind.CHARGE, Kind.SURCHARGE):
        sums["charges"] = _or_zero(stretch.charges) - amount
    elif kind == Kind.REFUND:
        sums["refunds"] = _or_zero(stretch.refunds) + amount
    elif kind == Kind.TOPUP:
        sums["topups"] = _or_zero(stretch.topups) + amount
    else:
        sums["drift"] = _or_zero(stretch.drift) - amount
    return replace(stretch, last_id=row.id, balance_after=row.balance_after,
                   rows=stretch.rows + 1, **sums)  # type: ignore[arg-type]  # fmt: skip


def _or_zero(amount: Decimal | None) -> Decimal:
    return ZERO if amount is None else amount
