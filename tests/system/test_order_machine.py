"""The order state machine against the simulator, driven by hypothesis through random
faults: lost answers, timeouts, unreadable replies, and processes killed in the middle of
a submission.

Invariants, after every step:
- the provider never takes one local order twice (each local order has its own link, so
  the provider's orders map back to it);
- no order the provider took is left ``queued`` or ``rejected``: it is ``submitting``
  (in flight), ``ambiguous`` (to settle by hand), or tracked (``active`` and after);
- every row is in a known state.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import tempfile
import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from syncd.clock import utcnow
from syncd.errors import ProviderError
from syncd.jobs.runner import make_client, run_pass
from syncd.lifecycle import check_order, resolution
from syncd.models import OrderState
from syncd.plans import Verdict
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.storage import open_storage
from tests.conftest import TOKEN, make_config, provider_config
from tests.helpers import claim_one

# A process that is surely gone: pids on Linux stay below 2**22.
DEAD_OWNER = f"{socket.gethostname()}:{2**22 + 17}:1"
FAULTS = st.sampled_from(
    [
        (Fault.HTML_502, False),
        (Fault.HTML_502, True),  # the provider took it, then its proxy failed
        (Fault.RESET, True),
        (Fault.RESET, False),
        (Fault.TIMEOUT, True),
        (Fault.TRUNCATED_JSON, True),
        (Fault.RATE_LIMIT, False),
        (Fault.ERROR_STRING, False),  # a refusal: nothing taken
    ]
)
GARBLED: st.SearchStrategy[object] = st.sampled_from(
    [None, "Order received", [], {"order": None}, {"order": "x"}]
)
KNOWN = {s.value for s in OrderState}


class ProviderTime:
    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds


class OrderMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.time = ProviderTime()
        self.sim = SimulatedProvider(
            token=TOKEN, balance=Decimal("1000000"), clock=self.time, retry_after=0
        )
        self.server = SimulatorServer(self.sim).start()
        self.dir = tempfile.TemporaryDirectory(prefix="syncd-machine-")
        self.db = Path(self.dir.name) / "syncd.db"
        url = f"sqlite:///{self.db}"
        self.provider = provider_config(self.server.url, timeout=timedelta(seconds=0.3))
        self.config = make_config(url, self.provider)
        self.storage = open_storage(url)
        self.storage.register_providers([("sim", self.server.url)])
        asyncio.run(run_pass(self.config, self.storage, ["catalog", "balance"]))

    def teardown(self) -> None:
        self.storage.close()
        self.server.stop()
        self.dir.cleanup()

    def rows(self, statement: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(statement).fetchall()

    # -- what the world does -------------------------------------------------------------

    @rule(consumer=st.booleans())
    def queue_an_order(self, consumer: bool) -> None:
        link = f"https://x.example/{uuid.uuid4().hex}"
        if consumer:
            with sqlite3.connect(self.db) as conn:
                conn.execute(
                    "INSERT INTO orders (provider, service_id, link, quantity) "
                    "VALUES ('sim', 100, ?, 100)",
                    (link,),
                )
        else:
            self.storage.queue_order(
                "sim", service_id=100, link=link, quantity=100, custom_data=None, now=utcnow()
            )

    @rule(fault=FAULTS, times=st.integers(1, 2))
    def the_provider_fails_the_next_adds(self, fault: tuple[Fault, bool], times: int) -> None:
        kind, after_processing = fault
        self.sim.inject(kind, times=times, actions=["add"], after_processing=after_processing)

    @rule(reply=GARBLED)
    def the_provider_answers_the_next_add_with_garbage(self, reply: object) -> None:
        self.sim.inject(Fault.REPLY, actions=["add"], after_processing=True, reply=reply)

    @rule(fault=st.sampled_from([Fault.HTML_502, Fault.TRUNCATED_JSON, Fault.ERROR_STRING]))
    def the_provider_fails_the_next_status_call(self, fault: Fault) -> None:
        self.sim.inject(fault, actions=["status"])

    @rule(seconds=st.sampled_from([1.0, 5.0, 30.0]))
    def time_passes_at_the_provider(self, seconds: float) -> None:
        self.time.seconds += seconds
        self.rows("UPDATE orders SET next_check_at = '2000-01-01 00:00:00' WHERE state = 'active'")

    @rule()
    def an_orders_pass(self) -> None:
        asyncio.run(run_pass(self.config, self.storage, ["orders"]))

    @rule(sends=st.booleans())
    def a_process_dies_in_the_middle_of_a_submission(self, sends: bool) -> None:
        """The submission of a killed process: claimed (committed ``submitting``), maybe
        sent, never recorded."""
        now = utcnow()
        claimed = claim_one(
            self.storage, "sim", after=0, only=None, owner=DEAD_OWNER,
            deadline=now + timedelta(minutes=5), now=now, decide=check_order,
        )  # fmt: skip
        if claimed is None or claimed[1].verdict is not Verdict.SEND or not sends:
            return
        order = claimed[0]
        assert order.service_id is not None and order.link is not None and order.quantity
        service_id, link, quantity = order.service_id, order.link, order.quantity

        async def send() -> None:
            async with make_client(self.provider) as client:
                await client.add(package=service_id, link=link, quantity=quantity)

        # The process dies right after: whatever the provider answered is lost.
        with contextlib.suppress(ProviderError):
            asyncio.run(send())

    @precondition(lambda self: bool(self.rows("SELECT 1 FROM orders WHERE state = 'ambiguous'")))
    @rule()
    def an_operator_settles_an_ambiguous_order_after_looking_at_the_panel(self) -> None:
        ((order_id, link),) = self.rows(
            "SELECT id, link FROM orders WHERE state = 'ambiguous' ORDER BY id LIMIT 1"
        )
        taken = [o.id for o in self.sim.orders.values() if o.link == link]
        update = (
            resolution("provider-order", taken[0], utcnow())
            if taken
            else resolution("resend", None, utcnow())
        )
        assert isinstance(order_id, int)
        self.storage.settle_order(order_id, OrderState.AMBIGUOUS, update, utcnow())

    # -- what must always hold -------------------------------------------------------------

    @invariant()
    def the_provider_never_takes_one_local_order_twice(self) -> None:
        taken = Counter(o.link for o in self.sim.orders.values())
        assert all(count == 1 for count in taken.values()), taken

    @invariant()
    def no_order_the_provider_took_is_queued_or_rejected(self) -> None:
        taken = {o.link for o in self.sim.orders.values()}
        for link, state in self.rows("SELECT link, state FROM orders"):
            assert state in KNOWN, state
            if link in taken:
                assert state not in ("queued", "rejected"), (link, state)


OrderMachine.TestCase.settings = settings(
    max_examples=max(10, settings().max_examples // 5), stateful_step_count=25, deadline=None
)
test_the_order_state_machine_under_faults = OrderMachine.TestCase
