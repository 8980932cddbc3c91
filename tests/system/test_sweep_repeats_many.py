"""The sweep's short way over replies of several orders: ``StatusAnswers.repeats`` reads
each charge and currency text once per reply, so one text is judged against several rows
(a charge '0.1' for rows holding '0.1' and '0.10', a currency 'usd' for 'USD' and 'usd'),
and counts in the spellings providers send. Each row must be left exactly as the full
check leaves its twin (``test_sweep_repeats`` shows the way, one order a reply)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from syncd.models import Order
from syncd.provider.replies import parse_statuses, read_statuses
from syncd.storage import Storage
from tests.system.test_sweep_repeats import NOW, PLAIN, judge, storage, twins

__all__ = ["storage"]  # the module's database, shared with test_sweep_repeats

CHARGES = ["0.1", "0.10", "0.27819", " 0.1", "1E-1", "abc", None]
CURRENCIES = ["USD", "usd", " USD", "", None, "EUR", "₽"]
COUNTS = [
    " 12", "12.0", "0012", "\uff11\uff12", str(2**63), 2**63, "-0", True, 1e2, 100, "100", 12, "12",
    None, 0, "0",
]  # fmt: skip


def kept(storage: Storage, order_id: int) -> Order:
    order = storage.order(order_id)
    assert order is not None
    return dataclasses.replace(order, id=0, provider_order_id=0)


@settings(max_examples=settings().max_examples * 3)  # the profile's, thrice: many shapes
@given(data=st.data())
def test_one_reply_for_several_orders_leaves_each_as_the_full_check(
    storage: Storage, data: st.DataObject
) -> None:
    rows: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    # One charge and one currency text the reply gives for several orders, whatever each
    # row holds: read once, judged against each.
    charge, currency = data.draw(st.sampled_from(CHARGES)), data.draw(st.sampled_from(CURRENCIES))
    for _ in range(data.draw(st.integers(1, 5))):
        row = {
            **PLAIN,
            "charge": data.draw(st.sampled_from(CHARGES)),
            "currency": data.draw(st.sampled_from(CURRENCIES)),
            "start_counter": data.draw(st.sampled_from([None, 12, 100, 0, "12", 2**63 - 1])),
            "remains": data.draw(st.sampled_from([None, 12, 100, 0])),
        }
        rows.append(row)

        def like(name: str, *others: object, row: dict[str, Any] = row) -> object:
            """Mostly what the row holds, as it is or as text."""
            same = row[name]
            return data.draw(st.sampled_from([same, same, str(same), *others]))

        entries.append({
            "status": "In progress",
            "charge": like("charge", charge, charge, *CHARGES),
            "currency": like("currency", currency, currency, *CURRENCIES),
            "start_counter": like("start_counter", *COUNTS),
            "remains": like("remains", *COUNTS),
        })  # fmt: skip
    made = [twins(storage, row) for row in rows]
    asked = NOW - timedelta(seconds=1)
    plans = []
    for way, parse in ((0, read_statuses), (1, parse_statuses)):
        ids = [pair[way] for pair in made]
        reply = {str(held): entry for (_, held), entry in zip(ids, entries, strict=True)}
        answers = parse(reply, [held for _, held in ids])
        plans.append(storage.apply_status_answers([i for i, _ in ids], asked, judge(answers, NOW)))
    quick, whole = plans
    event(f"{quick.repeated} of {len(made)} the short way")
    for (short, _), (full, _) in made:
        assert kept(storage, short) == kept(storage, full)
    assert len(quick.updates) + quick.repeated == len(whole.updates)
