"""The status sweep when a provider answers a whole batch with nothing: the real client
(its provider answered by httpx's MockTransport), the real sweep and planner, and the
orders held in memory by a fake of the sweep's three storage calls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import cast

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import ProviderError, UnansweredError
from syncd.jobs.context import JobContext
from syncd.jobs.status import SweepCounts, sync_statuses
from syncd.lifecycle import MISSING_AFTER
from syncd.models import Order, OrderState, Status
from syncd.plans import StatusPlan
from syncd.provider import DIALECTS, ProviderClient
from syncd.secret import Secret
from syncd.storage import Storage
from tests.conftest import provider_config

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
URL = "https://panel.example/api/v2"


class SweepRows:
    """``count_due``, ``due_orders`` and ``apply_status_answers`` over orders in memory."""

    def __init__(self, orders: Sequence[Order]) -> None:
        self.orders = {o.id: o for o in orders}

    def count_due(self, provider: str, due_before: datetime, horizon: datetime) -> int:
        return len(self.orders)

    def due_orders(
        self, provider: str, due_before: datetime, after: object, limit: int
    ) -> tuple[list[tuple[int, object]], object]:
        if after is not None:
            return [], None
        page: list[tuple[int, object]] = []
        for o in list(self.orders.values())[:limit]:
            page.append((o.id, o.provider_order_id))
        return page, ("end", page[-1][0])

    def apply_status_answers(
        self, order_ids: Sequence[int], asked_at: datetime, plan_for: Callable[..., StatusPlan]
    ) -> StatusPlan:
        plan = plan_for([self.orders[i] for i in order_ids])
        for u in plan.updates:
            self.orders[u.order_id] = replace(
                self.orders[u.order_id], state=u.state, status=u.status, error=u.error,
                missing_checks=u.missing_checks, checked_at=u.checked_at,
                next_check_at=u.next_check_at,
            )  # fmt: skip
        return plan


def order(local_id: int, provider_order_id: int, missing_checks: int = 0) -> Order:
    return Order(
        id=local_id, provider="p", provider_order_id=provider_order_id, service_id=7,
        link="https://x.example/p", quantity=100, custom_data=None, state=OrderState.ACTIVE,
        status=Status.PENDING, status_raw="Pending", charge=Decimal("0.09"), start_counter=None,
        remains=100, currency="USD", error=None, created_at=NOW - timedelta(hours=1),
        checked_at=NOW - timedelta(minutes=2), next_check_at=NOW, missing_checks=missing_checks,
    )  # fmt: skip


Outcomes = list[tuple[str, ProviderError | None]]


def sweep(rows: SweepRows, reply: object, outcomes: Outcomes) -> SweepCounts:
    """One sweep of ``rows``, every status call answered with ``reply``; each call's
    outcome, as the provider's health is told it, lands in ``outcomes``."""

    async def observe(action: str, error: ProviderError | None) -> None:
        outcomes.append((action, error))

    async def run() -> SweepCounts:
        body = json.dumps(reply).encode()
        answer = httpx.MockTransport(lambda _: httpx.Response(200, content=body))
        client = ProviderClient(
            name="p", url=URL, token=Secret("sweep-token-31c7"), dialect=DIALECTS["api_token"],
            http=httpx.AsyncClient(transport=answer), attempts=1, observer=observe,
        )  # fmt: skip
        async with client:
            ctx = JobContext(
                provider_config(URL, name="p"), client, cast(Storage, rows), clock=lambda: NOW
            )
            return await sync_statuses(ctx)

    return asyncio.run(run())


NOT_FOUND = st.sampled_from(
    [
        {"error": "Incorrect order ID"},
        {"error": ["Order not found"]},
        {"errors": ["Order not found"]},
        {"errors": {"order": ["Order not found"]}},
        "Order not found",
    ]
)
FOUND: dict[str, str] = {"status": "In progress", "remains": "40", "charge": "0.09"}
UNREADABLE: dict[str, str] = {"status": "In progress", "charge": "NaN"}
# Keys beside the orders that are no order id, as some panels add.
UNRELATED = st.fixed_dictionaries(
    {},
    optional={
        "currency": st.just("USD"),
        "note": st.sampled_from(["", "ok"]),
        "0": st.booleans(),
        "errors": st.just([]),
    },
)
BATCHES = st.lists(st.integers(1, 10**9), min_size=2, max_size=8, unique=True)


@given(ids=BATCHES, data=st.data())
def test_a_reply_that_finds_none_of_several_orders_changes_no_order(
    ids: list[int], data: st.DataObject
) -> None:
    orders = [order(i, poid, data.draw(st.integers(0, 2))) for i, poid in enumerate(ids, 1)]
    reply: dict[str, object] = data.draw(UNRELATED)
    for poid in ids:
        if (entry := data.draw(st.none() | NOT_FOUND)) is not None:
            reply[str(poid)] = entry
    rows = SweepRows(orders)
    outcomes: Outcomes = []
    with pytest.raises(UnansweredError):
        sweep(rows, reply, outcomes)
    assert list(rows.orders.values()) == orders  # no state, no miss count moved
    ((action, error),) = outcomes  # one call, not halved into more
    assert action == "status" and isinstance(error, UnansweredError)


@given(ids=BATCHES, data=st.data())
def test_a_reply_that_answers_one_order_counts_the_others_not_found_as_before(
    ids: list[int], data: st.DataObject
) -> None:
    orders = [order(i, poid, data.draw(st.integers(0, 2))) for i, poid in enumerate(ids, 1)]
    entries: dict[int, object] = {data.draw(st.sampled_from(ids)): FOUND}
    for poid in ids:
        if poid not in entries:
            entries[poid] = data.draw(st.none() | NOT_FOUND | st.just(FOUND) | st.just(UNREADABLE))
    reply: dict[str, object] = data.draw(UNRELATED)
    reply |= {str(poid): entry for poid, entry in entries.items() if entry is not None}
    rows = SweepRows(orders)
    outcomes: Outcomes = []
    assert sweep(rows, reply, outcomes).checked == len(ids)
    assert outcomes == [("status", None)]
    for before in orders:
        after, entry = rows.orders[before.id], entries[cast(int, before.provider_order_id)]
        if entry is FOUND:
            assert (after.state, after.missing_checks) == (OrderState.ACTIVE, 0)
        elif entry is UNREADABLE:
            assert (after.state, after.missing_checks) == (OrderState.ACTIVE, before.missing_checks)
        else:  # said not found, or left out: one more miss, as ever
            assert after.missing_checks == before.missing_checks + 1
            gone = after.missing_checks >= MISSING_AFTER
            assert after.state is (OrderState.MISSING if gone else OrderState.ACTIVE)


def test_one_order_asked_alone_and_said_not_found_is_a_miss() -> None:
    rows = SweepRows([order(1, 500)])
    outcomes: Outcomes = []
    sweep(rows, {"500": {"error": "Incorrect order ID"}}, outcomes)
    assert rows.orders[1].missing_checks == 1
    assert rows.orders[1].error == "not found: Incorrect order ID"
    assert outcomes == [("status", None)]


@pytest.mark.parametrize("reply", [{}, {"errors": []}, {"currency": "USD"}])
def test_a_reply_naming_not_even_a_lone_order_changes_nothing(reply: object) -> None:
    rows = SweepRows([order(1, 500, missing_checks=2)])
    outcomes: Outcomes = []
    with pytest.raises(UnansweredError, match="names none of the 1 order asked"):
        sweep(rows, reply, outcomes)
    assert (rows.orders[1].state, rows.orders[1].missing_checks) == (OrderState.ACTIVE, 2)
    assert [type(error) for _, error in outcomes] == [UnansweredError]
