"""The simulator's books: every move of its balance is an entry, an order ending Partial or
Canceled is refunded what it did not deliver (once, on the first call after it ends,
whatever that call asks), and each order's status says what the books charged it."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.simulator import SimulatedProvider
from tests.conftest import TOKEN
from tests.fakes import FakeClock

DURATION = 10.0  # seconds an ordinary order takes
FINAL = {"Completed", "Partial", "Canceled", "Expired"}


def world(clock: FakeClock, *, balance: str = "100.00") -> SimulatedProvider:
    """A key-dialect simulator on ``clock``: a minute of an order's fields is a second,
    accounts post only when a test publishes."""
    return SimulatedProvider(
        dialect="key", token=TOKEN, clock=clock.monotonic, order_duration=DURATION,
        minute=1.0, post_interval=None, balance=Decimal(balance),
    )  # fmt: skip


def service(sim: SimulatedProvider, ptype: str, *, dripfeed: bool = False) -> int:
    return next(
        p.service for p in sim.packages.values() if p.type == ptype and p.dripfeed == dripfeed
    )


def add(sim: SimulatedProvider, service: int, **form: str) -> int:
    answer = sim.answer("add", {"service": str(service), **form})
    assert isinstance(answer, dict) and "order" in answer, answer
    order = answer["order"]
    assert isinstance(order, int)
    return order


def status(sim: SimulatedProvider, order: int) -> dict[str, Any]:
    answer = sim.answer("status", {"order": str(order)})
    assert isinstance(answer, dict)
    return answer


def balance(sim: SimulatedProvider) -> Decimal:
    answer = sim.answer("balance", {})
    assert isinstance(answer, dict)
    return Decimal(answer["balance"])


def assert_books_balance(sim: SimulatedProvider) -> None:
    """Each entry moves the balance by its amount, in the direction its kind says, and the
    opening balance plus every amount is the balance, as the next `balance` call answers
    it (before anything else makes the books catch up)."""
    answered = balance(sim)
    books = sim.books
    running = sim.opening
    for entry in books:
        running += entry.amount
        assert entry.balance_after == running, entry
        debit = entry.kind in ("charge", "surcharge", "spend")
        assert (entry.amount < 0) == debit and entry.amount != 0, entry
        assert (entry.order is None) == (entry.kind in ("topup", "spend")), entry
    assert [e.at for e in books] == sorted(e.at for e in books)
    assert running == answered == sim.balance
    refunds = Counter(e.order for e in books if e.kind == "refund")
    assert all(count == 1 for count in refunds.values()), refunds


def billed(sim: SimulatedProvider) -> list[int]:
    """The orders the books charged, by their charge entries."""
    return [e.order for e in sim.books if e.kind == "charge" and e.order is not None]


def test_a_mixed_run_keeps_books_that_balance_and_agree_with_every_status() -> None:
    clock = FakeClock()
    sim = world(clock)
    plain = [add(sim, 100, link="https://x", quantity="1000") for _ in range(13)]
    package = add(sim, service(sim, "Package"), link="https://x")
    drip = add(sim, service(sim, "Default", dripfeed=True), link="https://x", quantity="100",
               runs="3", interval="5")  # fmt: skip
    sub = add(sim, service(sim, "Subscriptions"), username="shop", min="50", max="60",
              old_posts="2")  # fmt: skip
    sim.top_up(Decimal("25.5"))
    clock.advance(seconds=6)  # the drip-feed's second run is placed, and it is canceled
    assert sim.answer("cancel", {"orders": str(drip)}) == [{"order": str(drip), "cancel": "1"}]
    sim.publish(sub)
    sim.spend(Decimal("3.25"))
    clock.advance(seconds=100)

    assert_books_balance(sim)
    replies = {order: status(sim, order) for order in [*plain, package, drip, sub]}
    assert {r["status"] for r in replies.values()} == {"Completed", "Partial", "Canceled", "Active"}
    for order, reply in replies.items():
        assert Decimal(reply["charge"]) == sim.order_cost(order), (order, reply)
    assert replies[drip]["status"] == "Partial" and replies[drip]["runs"] == "2"
    assert sim.order_cost(drip) == Decimal("0.15") * 200 / 1000  # the two runs placed
    assert sim.booked("topup") == Decimal("25.5") and sim.booked("spend") == Decimal("-3.25")
    assert sim.booked("surcharge") == -sim.order_cost(sub) < 0  # three posts' orders
    assert sim.booked("refund") > 0
    assert_books_balance(sim)


def test_a_refund_is_booked_once_whether_the_status_is_asked_or_only_the_balance() -> None:
    clock = FakeClock()
    sim = world(clock)
    orders = [add(sim, 100, link="https://x", quantity="1000") for _ in range(13)]
    charged = balance(sim)
    clock.advance(seconds=DURATION)

    # Nobody asked any order's status: the refunds are in the balance all the same.
    refunded = balance(sim)
    refunds = {e.order: e.amount for e in sim.books if e.kind == "refund"}
    assert refunded == charged + sum(refunds.values()) and refunds
    books = sim.books
    replies = {order: status(sim, order) for order in orders}
    assert sim.books == books and balance(sim) == refunded  # asking again books nothing
    for order, reply in replies.items():
        charge = Decimal(reply["charge"])
        assert charge == sim.order_cost(order)
        full = Decimal("0.90")
        assert (order in refunds) == (reply["status"] != "Completed")
        if reply["status"] == "Partial":
            assert 0 < charge < full and refunds[order] == full - charge
        elif reply["status"] == "Canceled":
            assert charge == 0 and refunds[order] == full


def test_a_refund_asked_for_by_its_status_first_is_not_booked_again() -> None:
    clock = FakeClock()
    sim = world(clock)
    orders = [add(sim, 100, link="https://x", quantity="1000") for _ in range(2)]
    clock.advance(seconds=DURATION)
    partial = status(sim, orders[1])
    assert partial["status"] == "Partial"
    clock.advance(seconds=DURATION)
    assert status(sim, orders[1]) == partial
    assert balance(sim) == Decimal("100.00") - Decimal("0.90") - Decimal(partial["charge"])
    assert len([e for e in sim.books if e.kind == "refund"]) == 1
    assert_books_balance(sim)


def test_a_cancel_refunds_the_whole_charge_at_once() -> None:
    clock = FakeClock()
    sim = world(clock)
    order = add(sim, 105, link="https://x", quantity="1000")  # a service that cancels
    clock.advance(seconds=DURATION / 2)
    charge = sim.order_cost(order)
    assert charge > 0 and status(sim, order)["charge"] == str(charge)
    assert sim.answer("cancel", {"orders": str(order)}) == [{"order": str(order), "cancel": "1"}]
    assert sim.order_cost(order) == 0 and balance(sim) == Decimal("100.00")
    assert status(sim, order)["charge"] == "0"
    assert [(e.kind, e.amount) for e in sim.books] == [("charge", -charge), ("refund", charge)]


def test_a_canceled_drip_feed_is_refunded_its_runs_not_placed_once_the_others_are_done() -> None:
    clock = FakeClock()
    sim = world(clock)
    drip = add(sim, service(sim, "Default", dripfeed=True), link="https://x", quantity="100",
               runs="4", interval="60")  # fmt: skip
    sim.answer("cancel", {"orders": str(drip)})
    assert sim.booked("refund") == 0  # its first run is still under way
    clock.advance(seconds=DURATION)
    assert sim.booked("refund") == Decimal("0.15") * 300 / 1000
    assert status(sim, drip)["charge"] == str(sim.order_cost(drip))
    assert_books_balance(sim)


def test_orders_the_books_never_charged_are_never_refunded() -> None:
    clock = FakeClock()
    sim = world(clock)
    elsewhere = sim.create_orders(13, service=100)  # placed elsewhere: some end short
    pinned = [add(sim, 100, link="https://x", quantity="1000") for _ in range(13)]
    for order in pinned:
        sim.pin_order(order, status="Partial", remains="500", charge="0.1")
    clock.advance(seconds=DURATION * 3)
    replies = [status(sim, order) for order in elsewhere + pinned]
    assert {r["status"] for r in replies} >= {"Partial", "Canceled"}
    assert [e.kind for e in sim.books] == ["charge"] * 13
    assert balance(sim) == Decimal("100.00") - 13 * Decimal("0.90")


def test_a_package_whose_id_falls_on_a_partial_completes() -> None:
    clock = FakeClock()
    sim = world(clock)
    packages = [add(sim, service(sim, "Package"), link="https://x") for _ in range(3)]
    clock.advance(seconds=DURATION)
    assert [status(sim, p)["status"] for p in packages] == ["Completed"] * 3
    assert sim.booked("refund") == 0


def test_top_ups_and_spends_are_booked_and_a_spend_beyond_the_balance_is_refused() -> None:
    sim = world(FakeClock(), balance="10.00")
    sim.top_up(Decimal("5"))
    sim.spend(Decimal("14.5"))
    with pytest.raises(ValueError, match=r"balance is 0\.50"):
        sim.spend(Decimal("0.51"))
    for refused in (sim.top_up, sim.spend):
        with pytest.raises(ValueError):
            refused(Decimal("0"))
    sim.balance = Decimal("3.00")  # as tests set it: a top-up of the difference
    sim.balance = Decimal("2.75")
    with pytest.raises(ValueError):
        sim.balance = Decimal("-1")
    assert [(e.kind, e.amount, e.balance_after) for e in sim.books] == [
        ("topup", Decimal("5"), Decimal("15.00")),
        ("spend", Decimal("-14.5"), Decimal("0.50")),
        ("topup", Decimal("2.50"), Decimal("3.00")),
        ("spend", Decimal("-0.25"), Decimal("2.75")),
    ]
    assert_books_balance(sim)
    sim.balance = Decimal("50")  # kept as written, as a provider would answer it
    sim.balance = Decimal("1e33")
    assert [str(e.balance_after) for e in sim.books[-2:]] == ["50", "1E+33"]
    assert_books_balance(sim)


# -- a property over random runs --------------------------------------------------------

PLAIN = st.tuples(st.just("plain"), st.integers(100, 139), st.integers(100, 4000))
TYPED = st.tuples(st.sampled_from(["package", "drip", "subscription"]), st.integers(1, 4),
                  st.integers(0, 3))  # fmt: skip
STEPS = st.lists(
    st.one_of(
        PLAIN,
        TYPED,
        st.tuples(st.just("advance"), st.floats(0, 30)),
        st.tuples(st.sampled_from(["cancel", "status", "publish"]), st.integers(0, 50)),
        st.tuples(st.sampled_from(["top_up", "spend"]), st.decimals("0.01", "60", places=2)),
        st.tuples(st.just("balance")),
    ),
    max_size=40,
)


def step(
    sim: SimulatedProvider, clock: FakeClock, orders: list[int], move: tuple[Any, ...]
) -> None:
    """Make ``move`` happen; an accepted order's id goes to ``orders``."""
    kind, *args = move
    if kind == "plain":
        package = sim.packages[args[0]]
        quantity = max(package.min, min(package.max, args[1]))
        form: dict[str, str] = {"link": "https://x", "quantity": str(quantity)}
        if package.type == "Custom Comments":  # one comment a unit
            form["comments"] = "\n".join(["nice"] * quantity)
        answer = sim.answer("add", {"service": str(package.service), **form})
    elif kind == "package":
        answer = sim.answer("add", {"service": str(service(sim, "Package")), "link": "x"})
    elif kind == "drip":
        answer = sim.answer("add", {
            "service": str(service(sim, "Default", dripfeed=True)), "link": "x",
            "quantity": "100", "runs": str(args[0] + 1), "interval": str(args[1] + 1)})  # fmt: skip
    elif kind == "subscription":
        answer = sim.answer("add", {
            "service": str(service(sim, "Subscriptions")), "username": "u", "min": "50",
            "max": "80", "posts": str(args[0]), "old_posts": str(args[1]), "delay": "2",
        })  # fmt: skip
    elif kind == "advance":
        clock.advance(seconds=args[0])
        return
    elif kind in ("cancel", "status", "publish"):
        if not orders:
            return
        order = orders[args[0] % len(orders)]
        if kind == "cancel":
            sim.answer("cancel", {"orders": str(order)})
        elif kind == "status":  # what it says it cost is what the books charged it
            assert Decimal(status(sim, order)["charge"]) == sim.order_cost(order)
        elif sim.orders[order].subscription is not None:
            sim.publish(order)
        return
    elif kind == "top_up":
        sim.top_up(args[0])
        return
    elif kind == "spend":
        before = sim.balance
        if args[0] > before:
            with pytest.raises(ValueError):
                sim.spend(args[0])
            assert sim.balance == before
        else:
            sim.spend(args[0])
        return
    else:
        balance(sim)
        return
    assert isinstance(answer, dict)
    if "order" in answer:
        orders.append(answer["order"])
    else:
        assert answer["error"] == "Not enough funds on balance"


@given(STEPS)
def test_any_run_keeps_books_that_balance_and_every_status_charge_is_its_cost(
    moves: list[tuple[Any, ...]],
) -> None:
    clock = FakeClock()
    sim = world(clock, balance="50.00")
    orders: list[int] = []
    for move in moves:
        entries = len(sim.books)
        step(sim, clock, orders, move)
        assert_books_balance(sim)
        if move[0] in ("balance", "status", "advance"):
            # Nothing but a refund or a post's order is booked unasked.
            assert {e.kind for e in sim.books[entries:]} <= {"refund", "surcharge"}
    assert set(billed(sim)) <= set(orders)

    clock.advance(seconds=1000)  # every order ends; the balance alone books their ends
    answered = balance(sim)
    books = sim.books
    assert answered == (books[-1].balance_after if books else sim.opening)
    for order in orders:
        reply = status(sim, order)
        # A subscription whose account posts no more stays Active, charged post by post.
        assert reply["status"] in FINAL | {"Active"}, reply
        assert Decimal(reply["charge"]) == sim.order_cost(order), (order, reply)
    assert sim.books == books  # everything due was booked before any status was asked
    assert_books_balance(sim)


def test_a_canceled_drip_feed_whose_run_is_canceled_too_is_refunded_at_once() -> None:
    clock = FakeClock()
    sim = world(clock)
    drip = add(sim, service(sim, "Default", dripfeed=True), link="https://x", quantity="100",
               runs="2", interval="60")  # fmt: skip
    sim.answer("cancel", {"orders": str(drip)})
    (run,) = status(sim, drip)["orders"]
    sim.answer("cancel", {"orders": str(run)})  # its service cancels, runs too
    assert balance(sim) == Decimal("100.00")  # nothing delivered: all of it back
    assert status(sim, drip)["status"] == "Canceled" and sim.order_cost(drip) == 0
