"""The ``ledger`` feed: its rows from order changes, and the reconciliation at each poll.

Order changes reach the ledger through ``order_writes.log_changes_with``, which every
write of ``order_changes`` goes through: the rows an order's sending or a change of its
charge make are written in the same transaction, in the feeds' turn, so the ledger never
misses a change nor counts one twice. A row's ``balance_after`` continues the running
balance of its provider's current ledger (the last row's, or the balance it opened at),
read after the turn is taken, when no other writer can add a row before this one.

The rules are ``syncd.ledger``'s; this module reads what they need and writes what they
return.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from syncd.ledger import (
    ZERO,
    Counted,
    Entry,
    Kind,
    LedgerState,
    Recent,
    Reconciliation,
    expected_cost,
    order_entry,
)
from syncd.models import OrderState
from syncd.plans import OrderChange
from syncd.storage.base import take_feed_turn
from syncd.storage.driver import Driver, chunks
from syncd.storage.ledger_days import catch_up
from syncd.storage.values import read_money, read_time, readable

# The rows that can turn out to be late: a refund inside a top-up, a surcharge inside drift.
_LATE = frozenset({Kind.REFUND.value, Kind.SURCHARGE.value})
# An order is sent (its cost debited) when it leaves these states for one of the next.
_UNSENT = frozenset({OrderState.SUBMITTING, OrderState.AMBIGUOUS})
_SENT = frozenset({OrderState.ACTIVE, OrderState.DONE})
_INSERT = (
    "INSERT INTO ledger (provider, at, kind, order_id, amount, currency, balance_after) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_STATE = (
    "SELECT ledger_opened_at, ledger_currency, ledger_opening, ledger_since_id, ledger_gap, "
    "ledger_balanced_at, ledger_drift, drifting, ledger_polled_id FROM providers WHERE name = ?"
)
_RUNNING = "SELECT balance_after FROM ledger WHERE provider = ? AND id > ? ORDER BY id DESC LIMIT 1"


def _sends(change: OrderChange) -> bool:
    return change.old[0] in _UNSENT and change.new[0] in _SENT


def _moves_charge(change: OrderChange) -> bool:
    return change.old[2] != change.new[2] and change.new[2] is not None


@dataclass(frozen=True, slots=True)
class _Order:
    provider: str
    cost: Decimal | None  # what it is expected to cost, for an order being sent
    currency: str | None  # the currency its status named, if any


def prepare(
    d: Driver, changes: Sequence[OrderChange], unsent: Collection[int] = ()
) -> dict[int, _Order]:
    """What the ledger needs of the orders whose change may make a row (read before the
    feeds' turn: these rows are this transaction's own). ``unsent``: orders the caller
    knows syncd never sent (tracked): their first charge makes no row, so a sweep of
    tracked orders reads nothing here."""
    wanted = [
        c.order_id
        for c in changes
        if _sends(c) or (_moves_charge(c) and not (c.old[2] is None and c.order_id in unsent))
    ]
    if not wanted:
        return {}
    found: dict[int, _Order] = {}
    rows = [
        row
        for some in chunks(wanted)
        for row in d.run(
            "SELECT o.id, o.provider, o.quantity, o.params, p.rate, p.type, o.currency "  # noqa: S608
            "FROM orders o "
            "LEFT JOIN packages p ON p.provider = o.provider AND p.service_id = o.service_id "
            f"WHERE {d.ids_in('o.id', len(some))}",
            d.id_params(some),
        )
    ]
    for order_id, provider, quantity, params, rate, kind, currency in rows:
        money = readable(read_money, rate)
        cost = None
        if money is not None and isinstance(kind, str):
            cost = expected_cost(money, kind, quantity, params)
        found[int(order_id)] = _Order(
            str(provider), cost, currency if isinstance(currency, str) else None
        )
    return found


def lock_providers(d: Driver, providers: Collection[str]) -> None:
    """Take, before the feeds' turn, the lock on each provider's row that the foreign
    key checks of its ledger rows (and day rows) would take after it: on MariaDB a share
    lock, which waits for a transaction that wrote the row (a sending, which then waits
    for the turn)."""
    if not d.backend.parent_lock_sql:  # the check's lock waits for no writer there
        return
    for name in sorted(providers):
        d.run(f"SELECT name FROM providers WHERE name = ?{d.backend.parent_lock_sql}", (name,))  # noqa: S608


def write_order_rows(
    d: Driver, changes: Sequence[OrderChange], orders: Mapping[int, _Order], now: datetime
) -> None:
    """The ledger rows of ``changes``, in the feeds' turn (the caller has taken it). The
    running balance is read only for a provider that gets a row."""
    if not orders:
        return
    ledgers = {p: _current(d, p) for p in {o.provider for o in orders.values()}}
    moved = [c.order_id for c in changes if c.order_id in orders and not _sends(c)]
    counted = _counted(d, moved, ledgers, orders)
    entries = []
    for c in changes:
        order = orders.get(c.order_id)
        ledger = ledgers[order.provider] if order is not None else None
        if order is None or ledger is None:
            continue  # its provider's ledger has not opened: its first poll opens it
        if order.currency and ledger.currency and order.currency.upper() != ledger.currency:
            continue  # a charge in another currency is no amount of this ledger
        sent = _sends(c)
        if sent and order.cost is None:
            continue  # no package to price it: its first known charge is not counted
        held = counted.get(c.order_id)
        if held is _FOREIGN:
            continue  # counted in a ledger of another currency, closed since
        entry = order_entry(
            order.provider, c.order_id,
            sent=order.cost if sent else None,
            charge_old=readable(read_money, c.old[2]),
            charge_new=readable(read_money, c.new[2]),
            counted=held,
        )  # fmt: skip
        if entry is not None:
            entries.append(entry)
    opened: dict[str, _Opened] = {}
    for provider in {e.provider for e in entries}:
        ledger = ledgers[provider]
        assert ledger is not None  # an entry is made only in an open ledger
        running = _running(d, provider, ledger.since_id, ledger.opening)
        # A balance garbled by hand is no ground to count on: the next poll opens anew.
        if running is not None:
            opened[provider] = _Opened(ledger.currency, ledger.since_id, running)
    append(d, [e for e in entries if e.provider in opened], now, opened)


@dataclass(frozen=True, slots=True)
class _Current:
    """A provider's current ledger as ``providers`` holds it."""

    currency: str | None
    since_id: int
    opening: object  # as stored


@dataclass(frozen=True, slots=True)
class _Opened:
    currency: str | None
    since_id: int
    balance: Decimal  # the running balance now


_FOREIGN = Counted(-1, ZERO)


def _current(d: Driver, provider: str) -> _Current | None:
    """The provider's current ledger, read in the turn; None when it has not opened."""
    rows = d.run(_STATE, (provider,))
    if not rows or rows[0][0] is None:
        return None
    _, currency, opening, since, *_ = rows[0]
    return _Current(currency, int(since or 0), opening)


def _running(d: Driver, provider: str, since_id: int, opening: object) -> Decimal | None:
    """The current ledger's running balance: its last row's, or its opening; None when
    that cannot be read (a row garbled by hand)."""
    last = d.run(_RUNNING, (provider, since_id))
    return readable(read_money, last[0][0]) if last else readable(read_money, opening)


def _counted(
    d: Driver,
    order_ids: Sequence[int],
    ledgers: Mapping[str, _Current | None],
    orders: Mapping[int, _Order],
) -> dict[int, Counted]:
    """What the ledger holds of each order: rows of its provider's current ledger, or
    ``_FOREIGN`` when it has rows of an earlier one only."""
    rows: dict[int, list[Decimal]] = defaultdict(list)
    older: set[int] = set()
    for some in chunks(order_ids):
        for order_id, row_id, amount in d.run(
            f"SELECT order_id, id, amount FROM ledger WHERE {d.ids_in('order_id', len(some))}",  # noqa: S608
            d.id_params(some),
        ):
            ledger = ledgers.get(orders[int(order_id)].provider)
            if ledger is not None and int(row_id) > ledger.since_id:
                rows[int(order_id)].append(readable(read_money, amount) or ZERO)
            else:
                older.add(int(order_id))
    counted = {i: Counted(len(a), sum(a, ZERO)) for i, a in rows.items()}
    return counted | {i: _FOREIGN for i in older if i not in counted}


def append(
    d: Driver, entries: Iterable[Entry], now: datetime, ledgers: Mapping[str, _Opened]
) -> None:
    """Insert ``entries``, each ``balance_after`` continuing its provider's running
    balance, and take them into the ledger by day."""
    running = {p: s.balance for p, s in ledgers.items()}
    at, money, rows = d.time(now), d.money, []
    for e in entries:
        running[e.provider] += e.amount
        rows.append(
            (e.provider, at, e.kind.value, e.order_id, money(e.amount),
             ledgers[e.provider].currency, money(running[e.provider]))
        )  # fmt: skip
    d.run_many(_INSERT, rows)
    # The ledger by day follows in this transaction (``ledger_days``): it never
    # disagrees with the rows.
    for provider in sorted({row[0] for row in rows}):
        catch_up(d, provider)


# -- the reconciliation at a balance poll ------------------------------------------------

# Given the ledger's state and a way to read its recent rows (read only when needed).
Planner = Callable[[LedgerState, Callable[[], list[Recent]]], Reconciliation]


def reconcile_in(
    d: Driver, provider: str, now: datetime, lookback: timedelta, plan: Planner
) -> Reconciliation:
    """Read the provider's ledger state (its row locked by the caller), take the feeds'
    turn, let ``plan`` decide and write what it returns."""
    take_feed_turn(d.conn)
    rows = d.run(_STATE, (provider,))
    if not rows:
        raise LookupError(provider)
    opened_at, currency, opening, since, gap, balanced_at, drift, drifting, polled = rows[0]
    since_id, polled_id = int(since or 0), int(polled or 0)
    running = _running(d, provider, since_id, opening) if opened_at is not None else None
    # Not opened, or its balance garbled by hand: this poll opens a new ledger.
    opened = running is not None
    state = LedgerState(
        opened, currency, running or ZERO,
        gap=readable(read_money, gap) or ZERO,
        balanced_at=readable(read_time, balanced_at),
        drift=readable(read_money, drift) or ZERO,
        drifting=bool(drifting),
    )  # fmt: skip

    def recent() -> list[Recent]:
        return _recent(d, provider, since_id, now - lookback, polled_id)

    result = plan(state, recent)
    after = result.state
    if result.opened:
        since_id = _newest(d)
    append(d, result.entries, now, {provider: _Opened(after.currency, since_id, running or ZERO)})
    values: dict[str, Any] = {
        "ledger_gap": d.money(after.gap),
        # Rows after this id are "new" to the next poll: since the last poll that held
        # nothing, so that a refund written while a larger fall was held still undoes the
        # top-up it was taken for once the rest of the fall is explained.
        "ledger_polled_id": _newest(d) if after.gap == 0 else polled_id,
        "ledger_balanced_at": d.time(after.balanced_at),
        "ledger_drift": d.money(after.drift),
        "drifting": after.drifting,
    }
    if result.opened:
        values |= {
            "ledger_opened_at": d.time(now),
            "ledger_currency": after.currency,
            "ledger_opening": d.money(after.balance),
            "ledger_since_id": since_id,
        }
    assignments = ", ".join(f"{name} = ?" for name in values)
    d.run(f"UPDATE providers SET {assignments} WHERE name = ?", (*values.values(), provider))  # noqa: S608
    return result


def _newest(d: Driver) -> int:
    """The highest ledger id (in the feeds' turn: no row can come in below it)."""
    newest = d.run("SELECT MAX(id) FROM ledger")
    return int(newest[0][0] or 0) if newest else 0


def _recent(
    d: Driver, provider: str, since_id: int, start: datetime, polled_id: int
) -> list[Recent]:
    """The current ledger's rows written since ``start``, oldest first; those with an id
    above ``polled_id`` were written since the last poll."""
    rows = d.run(
        "SELECT id, kind, amount, order_id FROM ledger WHERE provider = ? AND id > ? "
        "AND at >= ? ORDER BY id",
        (provider, since_id, d.time(start)),
    )
    moved = sorted({
        int(order_id) for row_id, kind, _, order_id in rows
        if order_id is not None and int(row_id) > polled_id and kind in _LATE
    })  # fmt: skip
    first: dict[int, int] = {}
    for some in chunks(moved):
        first |= {
            int(order_id): int(row_id)
            for order_id, row_id in d.run(
                "SELECT order_id, MIN(id) FROM ledger "  # noqa: S608
                f"WHERE {d.ids_in('order_id', len(some))} GROUP BY order_id",
                d.id_params(some),
            )
        }
    recent = []
    for row_id, kind, amount, order_id in rows:
        try:
            known = Kind(kind)
        except ValueError:
            continue  # a row someone wrote by hand
        origin = first.get(int(order_id), int(row_id)) if order_id is not None else None
        recent.append(
            Recent(
                known, readable(read_money, amount) or ZERO, int(row_id) > polled_id,
                id=int(row_id), origin=origin,
            )
        )  # fmt: skip
    return recent
