"""The money ledger through the real storage, on every backend: the rows order changes
write (an order sent, its statuses), their ids and ``balance_after`` chain with several
writers at once, a poll that opens a new ledger on a currency switch, and money with
many decimal places kept exact."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.jobs.balance import plan_balance
from syncd.jobs.catalog import plan_catalog
from syncd.ledger import LedgerState, Recent, Reconciliation, Tolerance, reconcile
from syncd.lifecycle import check_order, finish, plan_status_batch
from syncd.models import Balance, Event, OrderState, OrderStatus, Package, Status
from syncd.plans import BalancePlan, StatusPlan, SubmitOutcome
from syncd.storage import Storage, open_storage
from tests.helpers import claim_one

P = "p"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LOOKBACK = timedelta(hours=1, minutes=6)
# Twelve decimal places, the most a provider's amount may have: rate x quantity / 1000
# then has fifteen.
RATE = Decimal("0.123456789012")
_ids = itertools.count(1000)


def setup(storage: Storage, rate: Decimal = RATE, provider: str = P) -> None:
    storage.register_providers([(provider, "https://panel.example/api/v2")])
    package = Package(7, "Followers", "Default", "Instagram", rate, 1, 1_000_000)
    storage.apply_catalog_reply(
        provider, lambda stored: plan_catalog(provider, stored, [package], NOW)
    )


def poll(
    storage: Storage,
    amount: str,
    currency: str | None = "USD",
    *,
    at: datetime = NOW,
    provider: str = P,
) -> Reconciliation:
    """A balance poll as the balance job makes it."""
    fetched = Balance(Decimal(amount), currency)

    def decide(last: Balance | None, was_low: bool) -> BalancePlan:
        return plan_balance(provider, last, fetched, at)

    def explain(state: LedgerState, recent: Callable[[], list[Recent]]) -> Reconciliation:
        return reconcile(provider, state, fetched, now=at, recent=recent, tolerance=Tolerance())

    plan = storage.apply_balance(provider, decide, (LOOKBACK, explain))
    assert isinstance(plan.ledger, Reconciliation)
    return plan.ledger


def send(
    storage: Storage, quantity: int, *, at: datetime = NOW, owner: str = "me", provider: str = P
) -> int:
    """Queue an order, claim it and record the provider's acceptance: its send."""
    order_id = storage.queue_order(
        provider,
        service_id=7,
        link="https://x.example/p",
        quantity=quantity,
        custom_data=None,
        now=at,
    )
    claimed = claim_one(
        storage, provider, after=0, only=order_id, owner=owner, deadline=at + timedelta(minutes=1),
        now=at, decide=check_order,
    )  # fmt: skip
    assert claimed is not None and claimed[0].id == order_id, claimed
    state = storage.finish_submission(
        order_id, owner, SubmitOutcome(OrderState.ACTIVE, next(_ids)),
        now=at, alert=None, plan=finish,
    )  # fmt: skip
    assert state is OrderState.ACTIVE, (claimed, storage.order(order_id))
    return order_id


def answer(
    storage: Storage, charges: dict[int, str], *, at: datetime, currency: str = "USD"
) -> None:
    """A status batch: each order (local id) charged that much, in ``currency``."""
    provider_ids = {}
    for order_id in charges:
        order = storage.order(order_id)
        assert order is not None and order.provider_order_id is not None
        provider_ids[order.provider_order_id] = order_id
    answers = {
        pid: OrderStatus(Status.IN_PROGRESS, "In progress", Decimal(charges[oid]), 0, 5, currency)
        for pid, oid in provider_ids.items()
    }

    def plan(rows: list[Any]) -> StatusPlan:
        return plan_status_batch(
            rows, answers, at, base=timedelta(minutes=2), give_up_after=timedelta(days=30)
        )

    storage.apply_status_answers(sorted(charges), at, plan)


def rows(storage: Storage) -> list[dict[str, Any]]:
    with storage.engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT id, provider, kind, order_id, amount, currency, balance_after "
                "FROM ledger ORDER BY id"
            )
        ).mappings()
        # Money as exact decimals whatever the driver hands back (text, Decimal).
        return [
            dict(r) | {"amount": Decimal(str(r["amount"])), "ba": Decimal(str(r["balance_after"]))}
            for r in found
        ]


def provider_state(storage: Storage) -> dict[str, Any]:
    with storage.engine.connect() as conn:
        return dict(
            conn.execute(
                sa.text(
                    "SELECT ledger_since_id, ledger_currency, ledger_opening FROM providers "
                    "WHERE name = :p"
                ),
                {"p": P},
            )
            .mappings()
            .one()
        )


def assert_chained(found: list[dict[str, Any]], opening: Decimal) -> None:
    """Ids one after another, and each provider's ``balance_after`` the one before plus
    its amount."""
    ids = [r["id"] for r in found]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    before: dict[str, Decimal] = {}
    for row in found:
        last = before.get(row["provider"], opening)
        assert row["ba"] == last + row["amount"], row
        before[row["provider"]] = row["ba"]


def test_order_changes_write_gap_free_rows_with_an_exact_balance_chain(
    any_storage: Storage,
) -> None:
    setup(any_storage)
    assert poll(any_storage, "100.00").opened
    first, second = send(any_storage, 1001), send(any_storage, 250)
    # 0.123580245801012 has fifteen places: counted at the twelve money has.
    cost_first = Decimal("0.123580245801")
    later = NOW + timedelta(minutes=3)
    answer(any_storage, {first: "0.1236", second: "0.0309"}, at=later)
    answer(any_storage, {first: "0.0500"}, at=later + timedelta(minutes=3))  # a Partial
    found = rows(any_storage)
    assert [(r["kind"], r["order_id"]) for r in found] == [
        ("charge", first), ("charge", second), ("surcharge", first), ("surcharge", second),
        ("refund", first),
    ]  # fmt: skip
    assert found[0]["amount"] == -cost_first
    assert found[2]["amount"] == cost_first - Decimal("0.1236")
    assert found[4]["amount"] == Decimal("0.0736")
    assert {r["currency"] for r in found} == {"USD"}
    assert_chained(found, Decimal("100.00"))
    # Each order's rows come to minus what it was charged, to the last place.
    assert sum(r["amount"] for r in found if r["order_id"] == first) == Decimal("-0.0500")
    assert sum(r["amount"] for r in found if r["order_id"] == second) == Decimal("-0.0309")
    # The provider's balance now is what the ledger says: the next poll finds nothing.
    result = poll(any_storage, money(found[-1]["ba"]), at=later + timedelta(minutes=5))
    assert result.entries == [] and result.state.gap == 0


def money(value: Decimal) -> str:
    return format(value.normalize(), "f")


def test_two_writers_at_once_keep_ids_gap_free_and_the_chain_exact(any_db_url: str) -> None:
    """Each writer sends for a provider of its own (a provider takes one ``add`` at a
    time), so their rows interleave in the one feed."""
    writers = [open_storage(any_db_url, busy_timeout=5.0) for _ in range(2)]
    names = ["p0", "p1"]
    try:
        for name in names:
            setup(writers[0], Decimal("1.5"), provider=name)
            poll(writers[0], "1000.00", provider=name)
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                storage = writers[n]
                for k in range(8):
                    at = NOW + timedelta(minutes=k)
                    order_id = send(storage, 100 + k, at=at, owner=f"w{n}", provider=names[n])
                    answer(storage, {order_id: "0.2"}, at=at + timedelta(seconds=30))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], [str(e) for e in errors]
        found = rows(writers[0])
        assert len(found) == 2 * 8 * 2  # a send and a charge for each order
        assert_chained(found, Decimal("1000.00"))
        for name in names:
            last = [r for r in found if r["provider"] == name][-1]
            assert last["ba"] == Decimal("1000.00") - 8 * Decimal("0.2")
    finally:
        for storage in writers:
            storage.close()


def test_a_currency_switch_opens_a_new_ledger_and_later_rows_chain_from_it(
    any_storage: Storage,
) -> None:
    setup(any_storage, Decimal("2"))
    poll(any_storage, "100.00")
    old = send(any_storage, 1000)  # 2.00 USD
    later = NOW + timedelta(minutes=5)
    switched = poll(any_storage, "50.00", "EUR", at=later)
    assert switched.opened and switched.entries == [] and switched.alerts == []
    state = provider_state(any_storage)
    assert state["ledger_currency"] == "EUR"
    assert Decimal(str(state["ledger_opening"])) == Decimal("50.00")
    assert state["ledger_since_id"] == rows(any_storage)[-1]["id"]
    new = send(any_storage, 500, at=later + timedelta(minutes=1))  # 1.00 in the new ledger
    # The old order's charge was paid in the old ledger: its change writes nothing here.
    answer(any_storage, {old: "1.50", new: "1.10"}, at=later + timedelta(minutes=3), currency="EUR")
    found = [r for r in rows(any_storage) if r["id"] > state["ledger_since_id"]]
    assert [(r["kind"], r["order_id"], r["amount"], r["currency"]) for r in found] == [
        ("charge", new, Decimal("-1"), "EUR"),
        ("surcharge", new, Decimal("-0.10"), "EUR"),
    ]
    assert_chained(found, Decimal("50.00"))
    # And the new ledger balances against the new currency's balance.
    result = poll(any_storage, "48.90", "EUR", at=later + timedelta(minutes=10))
    assert result.entries == [] and result.state.gap == 0 and result.alerts == []


def test_drift_is_written_and_raised_through_the_storage(any_storage: Storage) -> None:
    setup(any_storage)
    poll(any_storage, "100.00")
    any_storage.set_webhooks([("ops", None)])
    poll(any_storage, "90.00", at=NOW + timedelta(minutes=5))
    result = poll(any_storage, "90.00", at=NOW + timedelta(minutes=10))
    assert [(e.kind.value, e.amount) for e in result.entries] == [("drift", Decimal("-10.00"))]
    (delivery,) = any_storage.pending_deliveries("ops", 0, 10)
    assert delivery.event == Event.BALANCE_DRIFT.value
    found = rows(any_storage)
    assert [(r["kind"], r["order_id"], r["ba"]) for r in found] == [
        ("drift", None, Decimal("90.00"))
    ]


def test_a_charge_in_another_currency_writes_no_row(any_storage: Storage) -> None:
    """A status naming another currency than the ledger's: its charge is no amount of
    this ledger (adding EUR to USD is never done)."""
    setup(any_storage)
    assert poll(any_storage, "100.00").opened
    order_id = send(any_storage, 1000)
    order = any_storage.order(order_id)
    assert order is not None and order.provider_order_id is not None
    answers = {
        order.provider_order_id: OrderStatus(
            Status.PARTIAL, "Partial", Decimal("0.05"), 0, 500, "EUR"
        )
    }
    later = NOW + timedelta(minutes=3)

    def plan(found: list[Any]) -> StatusPlan:
        return plan_status_batch(
            found, answers, later, base=timedelta(minutes=2), give_up_after=timedelta(days=30)
        )

    any_storage.apply_status_answers([order_id], later, plan)
    assert [r["kind"] for r in rows(any_storage)] == ["charge"]


def test_a_running_balance_garbled_by_hand_opens_a_new_ledger(any_storage: Storage) -> None:
    """The last row's balance_after edited to text that is no amount: orders write no
    row counted from 0, and the next poll opens a new ledger at the balance rather than
    read a top-up of all of it."""
    setup(any_storage)
    assert poll(any_storage, "100.00").opened
    first = send(any_storage, 1000)
    if any_storage.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite's money column (text) can hold an amount garbled by hand")
    with any_storage.engine.begin() as conn:
        conn.execute(sa.text("UPDATE ledger SET balance_after = 'abc'"))
    send(any_storage, 500)
    assert [r["order_id"] for r in rows_raw(any_storage)] == [first]
    result = poll(any_storage, "99.50", at=NOW + timedelta(minutes=5))
    assert result.opened and result.entries == []
    assert not any(r["kind"] == "topup" for r in rows_raw(any_storage))


def rows_raw(storage: Storage) -> list[dict[str, Any]]:
    with storage.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.text("SELECT id, kind, order_id, amount, balance_after FROM ledger ORDER BY id")
            ).mappings()
        ]
