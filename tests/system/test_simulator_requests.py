"""The simulator's refills and cancels (``key`` dialect) and its per-minute request limit,
spoken to over real HTTP with plain httpx."""

from __future__ import annotations

import email.utils
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from syncd.simulator import Fault, SimPackage, SimulatedProvider, SimulatorServer
from tests.conftest import TOKEN
from tests.fakes import FakeClock

BOTH = 108  # a service whose orders may be refilled and canceled (even, a multiple of 3)
NEITHER = 101  # one whose orders may be neither
CANCEL_ONLY = 105
ORDER_DURATION = 100.0
REFILL_DURATION = 50.0


class Panel:
    """A ``key``-dialect simulator on loopback with a clock the test moves."""

    def __init__(self, **options: object) -> None:
        self.clock = FakeClock()
        self.sim = SimulatedProvider(
            dialect="key",
            token=TOKEN,
            clock=self.clock.monotonic,
            order_duration=ORDER_DURATION,
            refill_duration=REFILL_DURATION,
            **options,  # type: ignore[arg-type]
        )
        self.server = SimulatorServer(self.sim)

    def __call__(self, **form: str) -> object:
        reply = httpx.post(self.server.url, data={"key": TOKEN, **form}, timeout=5)
        assert reply.status_code == 200, reply.text
        return reply.json()

    def finished(self, count: int, service: int = BOTH) -> dict[int, str]:
        """``count`` orders placed now and moved past their duration, by their final
        status as the status action tells it."""
        ids = self.sim.create_orders(count, service=service)
        self.clock.advance(seconds=ORDER_DURATION)
        answer = self(action="status", orders=",".join(map(str, ids)))
        assert isinstance(answer, dict)
        return {i: answer[str(i)]["status"] for i in ids}

    def delivered(self, service: int = BOTH) -> int:
        """An order that ended Completed (so it may be refilled)."""
        return next(i for i, s in self.finished(10, service).items() if s == "Completed")


@pytest.fixture
def panel() -> Iterator[Panel]:
    running = Panel()
    with running.server:
        yield running


# -- refill ----------------------------------------------------------------------------------


def test_a_refill_of_a_completed_order_answers_its_id(panel: Panel) -> None:
    order = panel.delivered()
    answer = panel(action="refill", order=str(order))
    assert isinstance(answer, dict) and set(answer) == {"refill"}
    refill = panel.sim.refills[int(answer["refill"])]
    assert answer["refill"] == str(refill.id)  # a string unless numbers go as JSON numbers
    assert refill.order == order and refill.id != order


def test_a_partial_order_may_be_refilled_too(panel: Panel) -> None:
    partial = next(i for i, s in panel.finished(10).items() if s == "Partial")
    assert "refill" in panel(action="refill", order=str(partial))  # type: ignore[operator]


def test_ids_are_numbers_when_numbers_go_as_json_numbers() -> None:
    panel = Panel(numbers_as_json=True)
    with panel.server:
        order = panel.delivered()
        single = panel(action="refill", order=str(order))
        assert isinstance(single, dict) and isinstance(single["refill"], int)
        (other,) = panel.sim.create_orders(1, service=NEITHER)
        batch = panel(action="refill", orders=f"{other},1")
        assert batch == [
            {"order": other, "refill": {"error": "Order not eligible for refill."}},
            {"order": 1, "refill": {"error": "Incorrect order ID"}},
        ]
        assert panel(action="cancel", orders=str(other)) == [
            {"order": other, "cancel": {"error": "Order cannot be canceled."}}
        ]


def test_the_success_shape_of_some_panels() -> None:
    panel = Panel(refill_success_shape=True)
    with panel.server:
        order = panel.delivered()
        answer = panel(action="refill", order=str(order))
        (refill,) = panel.sim.refills.values()
        assert answer == {"success": "Refill request has been received", "refill": str(refill.id)}
        # Refusals and batches keep their shapes.
        assert panel(action="refill", order="5") == {"error": "Incorrect order ID"}
        assert panel(action="refill", orders="5") == [
            {"order": "5", "refill": {"error": "Incorrect order ID"}}
        ]


def test_a_single_refill_refused_for_each_reason(panel: Panel) -> None:
    delivered = panel.delivered()
    odd = next(i for i, s in panel.finished(10, NEITHER).items() if s == "Completed")
    (running,) = panel.sim.create_orders(1, service=BOTH)
    assert panel(action="status", order=str(running))["status"] == "Pending"  # type: ignore[index]
    assert panel(action="refill", order="77") == {"error": "Incorrect order ID"}
    assert panel(action="refill", order="x1") == {"error": "Incorrect order ID"}
    assert panel(action="refill") == {"error": "Incorrect order ID"}
    not_eligible = {"error": "Order not eligible for refill."}
    assert panel(action="refill", order=str(odd)) == not_eligible  # the package has no refill
    assert panel(action="refill", order=str(running)) == not_eligible  # not final yet
    assert "refill" in panel(action="refill", order=str(delivered))  # type: ignore[operator]
    assert panel(action="refill", order=str(delivered)) == {
        "error": "A refill for this order is already pending."
    }
    assert [r.order for r in panel.sim.refills.values()].count(delivered) == 1


def test_a_batch_of_refills_answers_one_entry_per_id_in_the_order_asked(panel: Panel) -> None:
    statuses = panel.finished(20)
    completed = [i for i, s in statuses.items() if s == "Completed"]
    canceled = next(i for i, s in statuses.items() if s == "Canceled")
    first, second = completed[:2]
    (odd,) = panel.sim.create_orders(1, service=NEITHER)
    ids = [second, 999, canceled, odd, first, second, "abc"]
    answer = panel(action="refill", orders=",".join(map(str, ids)))
    refills = sorted(panel.sim.refills.values(), key=lambda r: r.id)
    assert [(r.order) for r in refills] == [second, first]
    not_eligible = {"error": "Order not eligible for refill."}
    assert answer == [
        {"order": str(second), "refill": str(refills[0].id)},
        {"order": "999", "refill": {"error": "Incorrect order ID"}},
        {"order": str(canceled), "refill": not_eligible},  # ended Canceled: nothing delivered
        {"order": str(odd), "refill": not_eligible},
        {"order": str(first), "refill": str(refills[1].id)},
        {"order": str(second), "refill": {"error": "A refill for this order is already pending."}},
        {"order": "abc", "refill": {"error": "Incorrect order ID"}},
    ]


def test_more_than_max_ids_refills_fail_the_whole_call() -> None:
    panel = Panel(max_ids=3)
    with panel.server:
        assert panel(action="refill", orders="1,2,3,4") == {"error": "Maximum 3 orders per request"}
        assert panel(action="refill_status", refills="1,2,3,4") == {
            "error": "Maximum 3 refills per request"
        }
        assert panel(action="cancel", orders="1,2,3,4") == {"error": "Maximum 3 orders per request"}
        assert len(panel(action="refill", orders="1,2,3")) == 3  # type: ignore[arg-type]


def test_a_refill_goes_pending_in_progress_completed_as_time_passes(panel: Panel) -> None:
    order = next(i for i, s in panel.finished(20).items() if s == "Completed" and i % 7 != 3)
    answer = panel(action="refill", order=str(order))
    assert isinstance(answer, dict)
    refill = answer["refill"]
    seen = []
    for after in (0.0, 4.9, 5.0, 49.9, 50.0, 500.0):
        panel.clock.at(ORDER_DURATION + after)
        seen.append(panel(action="refill_status", refill=refill))
    assert seen == [
        {"status": "Pending"},
        {"status": "Pending"},
        {"status": "In progress"},
        {"status": "In progress"},
        {"status": "Completed"},
        {"status": "Completed"},
    ]
    assert panel.sim.refill_status(int(refill)) == "Completed"
    # A finished refill no longer blocks the next one.
    assert "refill" in panel(action="refill", order=str(order))  # type: ignore[operator]


def test_refills_of_orders_whose_id_is_3_modulo_7_end_rejected(panel: Panel) -> None:
    statuses = panel.finished(30)
    unlucky = next(i for i, s in statuses.items() if s in ("Completed", "Partial") and i % 7 == 3)
    lucky = next(i for i, s in statuses.items() if s in ("Completed", "Partial") and i % 7 != 3)
    batch = panel(action="refill", orders=f"{unlucky},{lucky}")
    assert isinstance(batch, list)
    ids = [entry["refill"] for entry in batch]
    assert panel(action="refill_status", refills=",".join(ids)) == [
        {"refill": ids[0], "status": "Pending"},
        {"refill": ids[1], "status": "Pending"},
    ]
    panel.clock.advance(seconds=REFILL_DURATION)
    assert panel(action="refill_status", refills=",".join(ids)) == [
        {"refill": ids[0], "status": "Rejected"},
        {"refill": ids[1], "status": "Completed"},
    ]


def test_refill_status_of_unknown_refills(panel: Panel) -> None:
    order = panel.delivered()
    pinned = panel.sim.create_refill(order, status="Rejected")
    assert panel(action="refill_status", refill="12") == {"error": "Refill not found"}
    assert panel(action="refill_status", refill=str(order)) == {"error": "Refill not found"}
    assert panel(action="refill_status") == {"error": "Refill not found"}
    assert panel(action="refill_status", refills=f"{pinned},3,zz") == [
        {"refill": str(pinned), "status": "Rejected"},
        {"refill": "3", "status": {"error": "Refill not found"}},
        {"refill": "zz", "status": {"error": "Refill not found"}},
    ]


def test_tests_may_create_refills_outside_the_rules(panel: Panel) -> None:
    (running,) = panel.sim.create_orders(1, service=NEITHER)
    made = panel.sim.create_refill(running)
    assert panel.sim.refills[made].order == running
    assert panel.sim.refill_status(made) == "Pending"
    assert panel(action="refill_status", refill=str(made)) == {"status": "Pending"}
    panel.sim.refills[made].pinned = "Canceled"
    assert panel(action="refill_status", refill=str(made)) == {"status": "Canceled"}
    with pytest.raises(KeyError):
        panel.sim.create_refill(1)


def test_an_open_refill_made_elsewhere_blocks_a_new_one(panel: Panel) -> None:
    order = panel.delivered()
    open_one = panel.sim.create_refill(order, status="In progress")
    blocked = {"error": "A refill for this order is already pending."}
    assert panel(action="refill", order=str(order)) == blocked
    panel.sim.refills[open_one].pinned = "Completed"
    assert "refill" in panel(action="refill", order=str(order))  # type: ignore[operator]


# -- cancel ----------------------------------------------------------------------------------


def test_a_batch_of_cancels_answers_one_entry_per_id(panel: Panel) -> None:
    finished = panel.delivered()
    (not_cancelable,) = panel.sim.create_orders(1, service=NEITHER)
    first, second = panel.sim.create_orders(2, service=BOTH)
    ids = f"9,{first},{not_cancelable},{finished},{second},{first}"
    assert panel(action="cancel", orders=ids) == [
        {"order": "9", "cancel": {"error": "Incorrect order ID"}},
        {"order": str(first), "cancel": "1"},
        {"order": str(not_cancelable), "cancel": {"error": "Order cannot be canceled."}},
        {"order": str(finished), "cancel": {"error": "Order cannot be canceled."}},
        {"order": str(second), "cancel": "1"},
        {"order": str(first), "cancel": {"error": "Order cannot be canceled."}},  # done already
    ]
    assert panel(action="cancel") == {"error": "Incorrect order ID"}


def test_a_canceled_order_shows_canceled_with_nothing_charged(panel: Panel) -> None:
    (order,) = panel.sim.create_orders(1, service=BOTH)
    panel.clock.at(ORDER_DURATION / 2)
    before = panel(action="status", order=str(order))
    assert isinstance(before, dict) and before["status"] == "In progress"
    assert before["charge"] != "0"
    balance = panel.sim.balance

    assert panel(action="cancel", orders=str(order)) == [{"order": str(order), "cancel": "1"}]
    quantity = panel.sim.orders[order].quantity
    for moment in (ORDER_DURATION / 2, ORDER_DURATION * 5):  # at once, and for good
        panel.clock.at(moment)
        assert panel(action="status", order=str(order)) == {
            "charge": "0",
            "start_counter": before["start_counter"],
            "status": "Canceled",
            "remains": str(quantity),
            "currency": "USD",
        }
        assert panel(action="status", orders=str(order))[str(order)]["status"] == "Canceled"  # type: ignore[index]
    assert panel.sim.balance == balance  # placed elsewhere, never charged: nothing refunded
    # Long past its duration it would have ended Completed; canceled, it has nothing to refill.
    assert panel(action="refill", order=str(order)) == {"error": "Order not eligible for refill."}


def test_a_pinned_order_keeps_its_pin_when_canceled(panel: Panel) -> None:
    (order,) = panel.sim.create_orders(1, service=BOTH)
    panel.sim.pin_order(order, status="Processing", remains="10", charge="0.5")
    assert panel(action="cancel", orders=str(order)) == [{"order": str(order), "cancel": "1"}]
    assert panel(action="status", order=str(order)) == {
        "status": "Processing",
        "remains": "10",
        "charge": "0.5",
    }
    assert panel.sim.orders[order].canceled
    assert panel(action="cancel", orders=str(order)) == [
        {"order": str(order), "cancel": {"error": "Order cannot be canceled."}}
    ]


def test_pinned_statuses_count_by_what_they_mean(panel: Panel) -> None:
    (order,) = panel.sim.create_orders(1, service=BOTH)
    panel.sim.pin_order(order, status="Partially Completed", remains="5")
    assert panel(action="cancel", orders=str(order)) == [
        {"order": str(order), "cancel": {"error": "Order cannot be canceled."}}
    ]
    assert "refill" in panel(action="refill", order=str(order))  # type: ignore[operator]


# -- the catalog's flags, the other dialect, faults -----------------------------------------


def test_the_catalog_shows_the_flags_the_rules_apply(panel: Panel) -> None:
    catalog = panel(action="services")
    assert isinstance(catalog, list)
    flags = {int(p["service"]): (p["refill"], p["cancel"]) for p in catalog}
    assert flags[BOTH] == (True, True) and flags[NEITHER] == (False, False)
    assert flags[CANCEL_ONLY] == (False, True) and flags[100] == (True, False)
    assert all(flags[s] == (p.refill, p.cancel) for s, p in panel.sim.packages.items())

    # Set flags win over the parity of the id (601 would have neither, 606 both).
    panel.sim.add_package(
        SimPackage(601, "Both", "Default", "New", Decimal("1"), 10, 100, refill=True, cancel=True)
    )
    panel.sim.add_package(SimPackage(602, "Parity", "Default", "New", Decimal("1"), 10, 100))
    panel.sim.add_package(
        SimPackage(606, "No refill", "Default", "New", Decimal("1"), 10, 100, refill=False)
    )
    catalog = panel(action="services")
    assert isinstance(catalog, list)
    flags = {int(p["service"]): (p["refill"], p["cancel"]) for p in catalog}
    assert (flags[601], flags[602], flags[606]) == ((True, True), (True, False), (False, True))
    running = panel.sim.create_orders(1, service=601)[0]
    assert panel(action="cancel", orders=str(running)) == [{"order": str(running), "cancel": "1"}]
    done = next(i for i, s in panel.finished(10, 601).items() if s == "Completed")
    assert "refill" in panel(action="refill", order=str(done))  # type: ignore[operator]
    done = next(i for i, s in panel.finished(10, 606).items() if s == "Completed")
    assert panel(action="refill", order=str(done)) == {"error": "Order not eligible for refill."}


def test_the_api_token_dialect_has_no_refill_or_cancel() -> None:
    sim = SimulatedProvider(token=TOKEN)
    with SimulatorServer(sim) as server:
        (order,) = sim.create_orders(1, service=BOTH)
        sim.create_refill(order)

        def call(**form: str) -> object:
            return httpx.post(server.url, data={"api_token": TOKEN, **form}).json()

        refused = {"error": "Incorrect request"}
        assert call(action="refill", order=str(order)) == refused
        assert call(action="refill", orders=str(order)) == refused
        assert call(action="refill_status", refill="4101") == refused
        assert call(action="cancel", orders=str(order)) == refused
    assert len(sim.refills) == 1 and not sim.orders[order].canceled
    assert sim.count("refill") == 0 and sim.count("unknown:refill") == 2
    assert "refill" not in sim.actions


def test_faults_and_counts_know_the_new_actions(panel: Panel) -> None:
    assert set(panel.sim.actions) == {
        "packages", "balance", "status", "add", "refill", "refill_status", "cancel",
    }  # fmt: skip
    order = panel.delivered()
    panel.sim.inject(Fault.HTML_502, actions={"refill"})
    assert panel(action="balance") == {"balance": "100.00", "currency": "USD"}
    failed = httpx.post(panel.server.url, data={"key": TOKEN, "action": "refill", "order": order})
    assert failed.status_code == 502 and panel.sim.refills == {}  # struck before processing
    panel.sim.inject(Fault.HTML_502, actions={"refill"}, after_processing=True)
    failed = httpx.post(panel.server.url, data={"key": TOKEN, "action": "refill", "order": order})
    assert failed.status_code == 502 and len(panel.sim.refills) == 1  # made, then the 502

    (running,) = panel.sim.create_orders(1, service=BOTH)
    panel.sim.inject(Fault.RESET, actions={"cancel"})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(panel.server.url, data={"key": TOKEN, "action": "cancel", "orders": running})
    assert not panel.sim.orders[running].canceled
    panel.sim.inject(Fault.ERROR_STRING, actions={"refill_status"})
    assert panel(action="refill_status", refill="4101") == {
        "error": "Service temporarily unavailable"
    }
    assert (panel.sim.count("refill"), panel.sim.count("cancel")) == (2, 1)
    assert panel.sim.count("refill_status") == 1


# -- the per-minute request limit -----------------------------------------------------------


def limited(limit: int, **options: object) -> tuple[SimulatorServer, FakeClock]:
    clock = FakeClock()
    sim = SimulatedProvider(
        token=TOKEN,
        clock=clock.monotonic,
        requests_per_minute=limit,
        **options,  # type: ignore[arg-type]
    )
    return SimulatorServer(sim), clock


def post(server: SimulatorServer, **form: str) -> httpx.Response:
    return httpx.post(server.url, data={"api_token": TOKEN, **form}, timeout=5)


def test_past_the_limit_requests_are_answered_429_and_not_processed() -> None:
    server, clock = limited(3)
    with server:
        sim = server.provider
        add = {"action": "add", "package": "100", "link": "https://x", "quantity": "100"}
        assert post(server, **add).status_code == 200
        clock.at(10)
        assert post(server, action="balance").status_code == 200
        assert post(server, action="packages").status_code == 200
        clock.at(15.5)
        refused = post(server, **add)
        assert refused.status_code == 429
        assert refused.json() == {"error": "Too many requests"}
        assert refused.headers["retry-after"] == "45"  # the slot of t=0 frees at t=60
        assert len(sim.orders) == 1 and sim.count("add") == 1  # never reached the API
        assert post(server, action="status", order="1").headers["retry-after"] == "45"
        assert (sim.rate_limited, sim.busiest_minute) == (2, 3)


def test_the_window_slides_one_request_at_a_time() -> None:
    server, clock = limited(3)
    with server:
        sim = server.provider
        for moment in (0, 20, 40):
            clock.at(moment)
            assert post(server, action="balance").status_code == 200
        clock.at(50)
        assert post(server, action="balance").headers["retry-after"] == "10"
        clock.at(60)  # the request of t=0 is a minute old: its slot is free
        assert post(server, action="balance").status_code == 200
        clock.at(61)
        assert post(server, action="balance").headers["retry-after"] == "19"  # t=20's slot
        clock.at(80)
        assert post(server, action="balance").status_code == 200
        clock.at(300)  # a quiet spell empties the window
        for _ in range(3):
            assert post(server, action="balance").status_code == 200
        assert post(server, action="balance").status_code == 429
        assert (sim.rate_limited, sim.busiest_minute) == (3, 3)


def test_retry_after_is_at_least_a_second() -> None:
    server, clock = limited(1)
    with server:
        assert post(server, action="balance").status_code == 200
        clock.at(0.25)
        assert post(server, action="balance").headers["retry-after"] == "60"  # 59.75 s
        clock.at(59.7)
        assert post(server, action="balance").headers["retry-after"] == "1"  # 0.3 s, rounded up


def test_retry_after_as_an_http_date() -> None:
    server, clock = limited(2, retry_after_date=True)
    with server:
        post(server, action="balance")
        post(server, action="balance")
        clock.at(30)
        before = datetime.now(UTC)
        refused = post(server, action="balance")
        after = datetime.now(UTC)
    assert refused.status_code == 429
    header = refused.headers["retry-after"]
    assert header.endswith(" GMT") and not header.strip().isdigit()
    when = email.utils.parsedate_to_datetime(header)
    # 30 s from now, rounded up to the whole second an HTTP date can say.
    assert before.timestamp() + 30 <= when.timestamp() <= after.timestamp() + 31


def test_without_a_limit_the_busiest_minute_is_still_counted() -> None:
    clock = FakeClock()
    sim = SimulatedProvider(token=TOKEN, clock=clock.monotonic)
    with SimulatorServer(sim) as server:
        for moment in (0, 1, 2, 30, 59.9, 60, 61, 62.5, 200):
            clock.at(moment)
            assert post(server, action="balance").status_code == 200
    # The windows ending at 59.9, 60, 61 and 62.5 hold five each; none holds six.
    assert sim.busiest_minute == 5 and sim.rate_limited == 0


def test_the_injected_rate_limit_fault_is_not_the_limit() -> None:
    server, _ = limited(5)
    with server:
        server.provider.inject(Fault.RATE_LIMIT)
        assert post(server, action="balance").status_code == 429
        assert server.provider.rate_limited == 0 and server.provider.busiest_minute == 1


def test_a_limit_needs_at_least_one_request() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        SimulatedProvider(requests_per_minute=0)


def test_run_alone_it_takes_a_request_limit() -> None:
    command = [sys.executable, "-m", "syncd.simulator", "--token", TOKEN,
               "--requests-per-minute", "2"]  # fmt: skip
    simulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().split()[1]
        codes = [
            httpx.post(url, data={"api_token": TOKEN, "action": "balance"}).status_code
            for _ in range(3)
        ]
    finally:
        simulator.terminate()
        out, _ = simulator.communicate(timeout=10)
    assert codes == [200, 200, 429]
    assert "busiest_minute=2 rate_limited=1" in out
