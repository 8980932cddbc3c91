"""Refill and cancel calls against the simulator over real HTTP."""

from __future__ import annotations

import pytest

from syncd.models import (
    RefillState,
    RefillStatus,
    RequestRefused,
    RequestTaken,
)
from syncd.simulator import SimulatedProvider, SimulatorServer
from tests.unit.test_requests_client import TOKEN, client

pytestmark = pytest.mark.anyio


async def test_against_the_simulator_over_http() -> None:
    now = [0.0]
    sim = SimulatedProvider(
        dialect="key", token=TOKEN, clock=lambda: now[0], order_duration=10, refill_duration=100
    )
    done, running = sim.create_orders(1, service=100), sim.create_orders(1, service=102)
    now[0] = 20.0  # the first two are over (Completed unless their id says otherwise)
    cancellable = sim.create_orders(1, service=102)  # 102: refill and cancel allowed
    with SimulatorServer(sim) as server:
        async with client(url=server.url) as c:
            refills = await c.refill([*done, *running, 1])
            cancels = await c.cancel([*cancellable, 1])
            assert refills[1] == RequestRefused("Incorrect order ID")
            taken: list[int] = []
            for answer in refills.values():
                if isinstance(answer, RequestTaken):
                    assert answer.request_id is not None  # a refill is taken with its id
                    taken.append(answer.request_id)
            assert taken, refills
            first = await c.refill_statuses(taken)
            now[0] = 200.0
            later = await c.refill_statuses(taken)
    assert cancels[cancellable[0]] == RequestTaken(None)
    assert cancels[1] == RequestRefused("Incorrect order ID")
    assert all(
        isinstance(a, RefillState) and a.status is RefillStatus.PENDING for a in first.values()
    )
    assert all(
        isinstance(a, RefillState) and a.status in (RefillStatus.COMPLETED, RefillStatus.REJECTED)
        for a in later.values()
    )
