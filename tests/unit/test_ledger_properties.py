"""The ledger against a model of a provider account (docs/ledger.md).

The provider debits an order's cost when it accepts it (its own rounding of the expected
cost, or exactly that), refunds a Partial or a cancel, debits a subscription's posts, takes
top-ups and spending behind syncd's back. syncd learns of each order change only when it
looks (an ``add`` answered, a status checked), some steps later, and writes the rows
``order_entry`` makes of what it saw; each balance poll runs ``reconcile`` over those rows,
as the storage does. The properties: every poll balances to the last unit with what is
held; once everything is seen the ledger says what happened; nothing but spending raises
``balance.drift``; and spending does, within two polls.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, ROUND_UP, Decimal
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from syncd.ledger import (
    ZERO,
    Counted,
    Entry,
    Kind,
    LedgerState,
    Recent,
    Tolerance,
    expected_cost,
    order_entry,
    reconcile,
)
from syncd.lifecycle import MAX_BACKOFF
from syncd.models import Balance, Event
from syncd.plans import AlertIntent

P = "p"
START = datetime(2026, 12, 1, tzinfo=UTC)
POLL = timedelta(minutes=5)  # balance_interval
LOOKBACK = MAX_BACKOFF + timedelta(minutes=1) + POLL  # as the balance job: orders_interval 1m
CENT = Decimal("0.01")


@dataclass
class Account:
    """One order as the provider holds it, and as syncd has seen it."""

    expected: Decimal  # what syncd counts it at when sent
    charge: Decimal  # what the provider charged it, all told
    subscription: bool
    answered: bool = False  # syncd has written its send
    seen: Decimal | None = None  # the charge syncd last saw
    rows: list[Decimal] = field(default_factory=list)


@dataclass
class Row:
    kind: Kind
    order_id: int | None
    amount: Decimal
    balance_after: Decimal
    at: datetime


class World:
    """A provider account and syncd's ledger of it."""

    def __init__(self, balance: Decimal, tolerance: Tolerance) -> None:
        self.balance = balance
        self.tolerance = tolerance
        self.orders: list[Account] = []
        self.rows: list[Row] = []
        self.state = LedgerState()
        self.opening = ZERO
        self.now = START
        self.topups = ZERO
        self.spent = ZERO
        self.alerts: list[tuple[int, AlertIntent]] = []
        self.polls = 0
        self.last_poll = START
        self.in_flight_at_last_poll = False

    # -- the provider ------------------------------------------------------------------

    def send(self, rate: Decimal, quantity: int, rounding: str, subscription: bool) -> None:
        kind = "Subscriptions" if subscription else "Default"
        params = {"username": "u", "min": 1, "max": 9} if subscription else None
        expected = expected_cost(rate, kind, quantity, params)
        assert expected is not None
        if rounding == "exact":
            charge = expected
        else:
            charge = expected.quantize(CENT, ROUND_UP if rounding == "up" else ROUND_HALF_UP)
        self.orders.append(Account(expected, charge, subscription))
        self.balance -= charge

    def refund(self, index: int, share: Decimal) -> None:
        """A Partial (``share`` of the charge back) or a cancel (``share`` 1)."""
        order = self.orders[index]
        if order.subscription:
            return
        back = (order.charge * share).quantize(CENT) if share < 1 else order.charge
        back = min(back, order.charge)
        order.charge -= back
        self.balance += back

    def post(self, index: int, price: Decimal) -> None:
        """A subscription picks up a post: charged as it goes."""
        order = self.orders[index]
        if order.subscription:
            order.charge += price
            self.balance -= price

    def topup(self, amount: Decimal) -> None:
        self.balance += amount
        self.topups += amount

    def spend(self, amount: Decimal) -> None:
        self.balance -= amount
        self.spent += amount

    # -- syncd -------------------------------------------------------------------------

    def answer(self, index: int) -> None:
        """The ``add`` of the order is answered: syncd writes its send."""
        order = self.orders[index]
        if order.answered:
            return
        order.answered = True
        self.write(order_entry(P, index, sent=order.expected, charge_old=None,
                               charge_new=None, counted=None))  # fmt: skip

    def check(self, index: int) -> None:
        """syncd asks the order's status: it sees the charge as it is now."""
        order = self.orders[index]
        if not order.answered or order.seen == order.charge:
            return
        counted = Counted(len(order.rows), sum(order.rows, ZERO)) if order.rows else None
        made = order_entry(P, index, sent=None, charge_old=order.seen,
                           charge_new=order.charge, counted=counted)  # fmt: skip
        order.seen = order.charge
        self.write(made)

    def write(self, made: Entry | None) -> None:
        if made is None or not self.state.opened:
            return
        assert made.order_id is not None
        self.orders[made.order_id].rows.append(made.amount)
        self.append([made])

    def append(self, entries: list[Entry]) -> None:
        for e in entries:
            self.rows.append(Row(e.kind, e.order_id, e.amount, self.running + e.amount, self.now))

    @property
    def running(self) -> Decimal:
        return self.rows[-1].balance_after if self.rows else self.opening

    def unseen(self, index: int) -> Decimal:
        """What the provider moved on this order that the ledger does not count yet
        (negative: a debit)."""
        order = self.orders[index]
        if not order.answered:
            return -order.charge
        return -(sum(order.rows, ZERO) + order.charge)

    def poll(self) -> None:
        self.now += POLL
        self.polls += 1
        start = self.now - LOOKBACK

        last = self.last_poll  # rows written after it are new

        def recent() -> list[Recent]:
            return [Recent(r.kind, r.amount, r.at > last) for r in self.rows if r.at >= start]

        # As the storage reads it: the running balance is the last row's, orders' included.
        state = replace(self.state, balance=self.running)
        result = reconcile(P, state, Balance(self.balance, "USD"), now=self.now,
                           recent=recent, tolerance=self.tolerance)  # fmt: skip
        if result.opened:
            self.opening = result.state.balance
        self.append(result.entries)
        self.state = result.state
        self.alerts += [(self.polls, alert) for alert in result.alerts]
        if result.state.gap == 0:  # as the storage: "new" is since the last poll holding nothing
            self.last_poll = self.now
        self.in_flight_at_last_poll = any(self.unseen(i) < 0 for i in range(len(self.orders)))
        self.now += timedelta(seconds=1)  # rows written after the poll come after it

    # -- checks ------------------------------------------------------------------------

    def assert_balanced(self) -> None:
        """(a) the ledger, with what it holds, is the balance to the last unit; every
        ``balance_after`` continues the one before."""
        assert self.state.balance == self.running
        assert self.running + self.state.gap == self.balance
        before = self.opening
        for row in self.rows:
            assert row.balance_after == before + row.amount
            before = row.balance_after


# Amounts with up to five decimal places, as providers write rates; quantities as panels send.
rates = st.decimals(Decimal("0.0001"), Decimal("25"), places=4)
money = st.decimals(CENT, Decimal("50"), places=2)
shares = st.sampled_from([Decimal("0.1"), Decimal("0.25"), Decimal("0.5"), Decimal("1")])
index = st.integers(0, 50)
actions = st.one_of(
    st.tuples(st.just("send"), rates, st.integers(10, 5000),
              st.sampled_from(["exact", "up", "half"]), st.booleans(), st.booleans()),
    st.tuples(st.just("answer"), index),
    st.tuples(st.just("check"), index),
    st.tuples(st.just("refund"), index, shares),
    st.tuples(st.just("post"), index, money),
    st.tuples(st.just("topup"), money),
    st.tuples(st.just("spend"), money),
    st.tuples(st.just("poll")),
    st.tuples(st.just("poll")),
)  # fmt: skip
opening_balances = st.decimals(Decimal("10"), Decimal("5000"), places=6)


def run(world: World, action: tuple[Any, ...], *, spending: bool = True) -> None:
    """One step; an order named by index is taken modulo the orders sent."""
    name, *args = action
    if name == "send":
        rate, quantity, rounding, subscription, answered = args
        world.send(rate, quantity, rounding, subscription)
        if answered:
            world.answer(len(world.orders) - 1)
    elif name in {"answer", "check", "refund", "post"}:
        if not world.orders:
            return
        i = args[0] % len(world.orders)
        if name == "answer":
            world.answer(i)
        elif name == "check":
            world.check(i)
        elif name == "refund":
            world.refund(i, args[1])
        else:
            world.post(i, args[1])
    elif name == "topup":
        world.topup(args[0])
    elif name == "spend":
        if spending:
            world.spend(args[0])
    else:
        world.poll()
        world.assert_balanced()


def see_everything(world: World) -> None:
    for i in range(len(world.orders)):
        world.answer(i)
        world.check(i)


@given(opening_balances, st.lists(actions, max_size=60))
def test_every_poll_balances_to_the_last_unit_with_what_it_holds(
    opening: Decimal, steps: list[tuple[Any, ...]]
) -> None:
    world = World(opening, Tolerance())
    world.poll()
    for step in steps:
        run(world, step)
    world.poll()
    world.assert_balanced()


@given(opening_balances, st.lists(actions, max_size=60))
def test_once_everything_is_seen_the_ledger_says_what_happened(
    opening: Decimal, steps: list[tuple[Any, ...]]
) -> None:
    """(b) Everything seen and two more polls: nothing held, the ledger is the balance,
    each order's rows are minus its charge, and top-ups and drift are what happened
    behind syncd's back."""
    world = World(opening, Tolerance())
    world.poll()
    for step in steps:
        run(world, step)
    see_everything(world)
    world.poll()
    world.poll()
    world.assert_balanced()
    assert world.state.gap == 0 and world.running == world.balance
    for order in world.orders:
        assert sum(order.rows, ZERO) == -order.charge
    unexplained = sum((r.amount for r in world.rows if r.kind in {Kind.TOPUP, Kind.DRIFT}), ZERO)
    assert unexplained == world.topups - world.spent


# Polls after which an order change the provider made, still unseen, is looked at: well
# within the look-back.
CREDITS_SEEN_WITHIN = 9


@given(opening_balances, st.lists(actions, max_size=80))
def test_without_spending_behind_its_back_the_ledger_raises_no_drift(
    opening: Decimal, steps: list[tuple[Any, ...]]
) -> None:
    """(c) No spending behind syncd's back, and every change seen in time: no
    ``balance.drift``.

    "In time" is narrower for a debit than for money back. A fall still unexplained at a
    second poll is drift by the rule, whatever it was: balances alone cannot tell an add
    answered (or a post charged) late from spending. So a debit syncd has not seen at one
    poll is seen before the next, and two polls in a row never both catch one (two adds
    in flight at consecutive polls look like one fall that lasted). Money back (a refund,
    a first charge below the expected cost) is seen within the look-back."""
    world = World(opening, Tolerance(percent=ZERO))  # any drift at all raises it
    world.poll()
    unseen_since: dict[int, int] = {}
    for step in [*steps, ("poll",), ("poll",)]:
        if step[0] == "poll":
            for i in range(len(world.orders)):
                if world.unseen(i) > 0:
                    unseen_since.setdefault(i, world.polls)
                else:
                    unseen_since.pop(i, None)
                late = world.polls - unseen_since.get(i, world.polls) >= CREDITS_SEEN_WITHIN
                if late or (world.in_flight_at_last_poll and world.unseen(i) < 0):
                    world.answer(i)
                    world.check(i)
        run(world, step, spending=False)
    assert [a for _, a in world.alerts] == []


@given(
    opening_balances,
    st.lists(st.tuples(rates, st.integers(10, 5000), st.booleans()), max_size=8),
    st.lists(money, max_size=3),
    st.integers(0, 3),
    money,
)
def test_spending_behind_its_back_raises_drift_within_two_polls_naming_the_amount(
    opening: Decimal,
    sent: list[tuple[Decimal, int, bool]],
    topups: list[Decimal],
    quiet: int,
    spent: Decimal,
) -> None:
    """(d) Orders seen as they go, top-ups settled, polls that balance; then one spend
    beyond the tolerance: ``balance.drift`` at the second poll, naming that amount."""
    world = World(opening, Tolerance())
    world.poll()
    for rate, quantity, exact in sent:
        world.send(rate, quantity, "exact" if exact else "up", subscription=False)
        see_everything(world)
    for amount in topups:
        world.topup(amount)
        world.poll()
        world.poll()
    for _ in range(quiet):
        world.poll()
    assert world.state.gap == 0 and world.alerts == []
    world.spend(spent)
    assume(spent > world.tolerance.of(world.balance))
    world.poll()
    world.poll()
    ((at, alert),) = world.alerts
    assert at == world.polls and alert.event is Event.BALANCE_DRIFT
    assert Decimal(alert.data["amount"]) == spent
    assert Decimal(alert.data["balance"]) == world.balance
