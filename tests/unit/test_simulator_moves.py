"""The simulator's benchmark control: ``move_on`` moves one order in ten a step on, a
different tenth at each call, so that a benchmark's steady sweep finds a tenth changed."""

from __future__ import annotations

from syncd.simulator import SimulatedProvider
from tests.conftest import TOKEN
from tests.fakes import FakeClock


def statuses(sim: SimulatedProvider, ids: list[int]) -> dict[int, str]:
    reply = sim.answer("status", {"orders": ",".join(map(str, ids))})
    assert isinstance(reply, dict)
    return {int(k): v["status"] for k, v in reply.items()}


def test_each_call_moves_a_different_tenth_of_the_orders_a_step_on() -> None:
    clock = FakeClock()
    sim = SimulatedProvider(
        dialect="key", token=TOKEN, clock=clock.monotonic, order_duration=1000.0
    )
    ids = sim.create_orders(100)
    before = statuses(sim, ids)
    assert set(before.values()) == {"Pending"}
    assert sim.move_on() == 10
    first = {i for i, s in statuses(sim, ids).items() if s != before[i]}
    assert len(first) == 10 and {i % 10 for i in first} == {0}
    assert sim.move_on() == 10
    after = statuses(sim, ids)
    second = {i for i, s in after.items() if s != before[i]} - first
    assert len(second) == 10 and {i % 10 for i in second} == {1}
    assert {after[i] for i in first | second} == {"Processing"}
