"""The send pause's rules: when sending to a provider pauses, how long it waits, what a
trial may claim, and what lifts it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from syncd import order_requests as requests
from syncd import send_pause
from syncd.errors import TransientError
from syncd.lifecycle import plan_claims
from syncd.models import (
    Order,
    OrderState,
    Package,
    RequestKind,
    SendPause,
    Status,
    StoredPackage,
)
from syncd.order_requests import QueuedRequest, Request, RequestState, RequestUpdate
from syncd.plans import QueuedOrders, Submission, Verdict
from syncd.send_pause import FIRST_WAIT, LONGEST_WAIT, NOT_PAUSED, Gate, Outcome

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_the_wait_doubles_from_a_minute_up_to_a_quarter_of_an_hour() -> None:
    waits = [send_pause.wait_after(n) for n in range(1, 7)]
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 8, 15, 15)]
    assert send_pause.wait_after(10**9) == LONGEST_WAIT  # a count written by hand


def test_an_unknown_outcome_pauses_and_another_doubles_the_wait_from_the_same_start() -> None:
    first = send_pause.after(NOT_PAUSED, Outcome.UNKNOWN, "order 3's outcome was unknown", NOW)
    assert first == SendPause(NOW, NOW + FIRST_WAIT, 1, "order 3's outcome was unknown")
    later = NOW + timedelta(minutes=1)
    second = send_pause.after(first, Outcome.UNKNOWN, "order 4's outcome was unknown", later)
    assert second == SendPause(NOW, later + 2 * FIRST_WAIT, 2, "order 4's outcome was unknown")


def test_a_clear_answer_lifts_the_pause_and_a_call_never_sent_leaves_it() -> None:
    paused = SendPause(NOW, NOW + FIRST_WAIT, 3, "why")
    assert send_pause.after(paused, Outcome.CLEAR, "", NOW) == NOT_PAUSED
    assert send_pause.after(paused, Outcome.NOT_SENT, "", NOW) is None
    assert send_pause.after(NOT_PAUSED, Outcome.CLEAR, "", NOW) is None  # nothing to write


def test_the_state_recorded_says_what_a_call_tells_of_the_provider() -> None:
    assert send_pause.order_outcome(OrderState.AMBIGUOUS) is Outcome.UNKNOWN
    assert send_pause.order_outcome(OrderState.ACTIVE) is Outcome.CLEAR
    assert send_pause.order_outcome(OrderState.REJECTED) is Outcome.CLEAR
    assert send_pause.order_outcome(OrderState.QUEUED) is Outcome.NOT_SENT
    assert send_pause.requests_outcome(["sent", "ambiguous"]) is Outcome.UNKNOWN
    assert send_pause.requests_outcome(["rejected", "done"]) is Outcome.CLEAR
    assert send_pause.requests_outcome(["queued"]) is Outcome.NOT_SENT


def test_a_trial_needs_the_wait_over_a_harmless_call_answered_and_nothing_else_in_flight() -> None:
    paused = SendPause(NOW, NOW + FIRST_WAIT, 1, "order 3's outcome was unknown")
    assert send_pause.gate(NOT_PAUSED, NOW) is Gate.OPEN
    assert send_pause.gate(paused, NOW) is Gate.CLOSED
    due = NOW + FIRST_WAIT
    assert send_pause.gate(paused, due) is Gate.TRIAL
    assert send_pause.holds(NOT_PAUSED, "sim", NOW, probed=False, busy=True) is None
    assert send_pause.holds(paused, "sim", due, probed=True, busy=False) is None
    for probed, busy in ((False, False), (True, True)):
        reason = send_pause.holds(paused, "sim", due, probed=probed, busy=busy)
        assert reason is not None and reason.startswith(send_pause.WAITING)
    waiting = send_pause.holds(paused, "sim", NOW, probed=True, busy=False)
    assert waiting == (
        "waiting: sending to sim paused until 2026-11-25 12:01:00 UTC after order 3's "
        "outcome was unknown"
    )


def order(order_id: int) -> Order:
    return Order(
        id=order_id, provider="sim", provider_order_id=None, service_id=7,
        link="https://x.example/p", quantity=100, custom_data=None, state=OrderState.QUEUED,
        status=None, status_raw=None, charge=None, start_counter=None, remains=None,
        currency=None, error=None, created_at=NOW,
    )  # fmt: skip


def send_all(*_: object) -> Submission:
    return Submission(Verdict.SEND, None, Decimal("0.09"), Decimal("0.90"))


def claims(pause: SendPause, *, probed: bool, busy: bool = False) -> list[Verdict]:
    queued = QueuedOrders([order(1), order(2)], lambda _: None, None, pause, busy)
    plan = plan_claims(
        queued, NOW, decide=send_all, owner="me", deadline=NOW + FIRST_WAIT, probed=probed
    )
    return [decision.verdict for _, decision in plan.judged]


def test_while_paused_every_order_waits_with_the_pause_in_its_error() -> None:
    paused = SendPause(NOW, NOW + FIRST_WAIT, 1, "order 3's outcome was unknown")
    queued = QueuedOrders([order(1), order(2)], lambda _: None, None, paused, False)
    plan = plan_claims(queued, NOW, decide=send_all, owner="me", deadline=NOW)
    assert [d.verdict for _, d in plan.judged] == [Verdict.WAIT, Verdict.WAIT]
    errors = [update.error for _, update in plan.updates]
    assert errors == [send_pause.waiting_reason("sim", paused, NOW)] * 2
    assert claims(NOT_PAUSED, probed=False) == [Verdict.SEND]


def test_a_due_pause_sends_one_order_only_after_the_probe_and_alone() -> None:
    due = SendPause(NOW - 2 * FIRST_WAIT, NOW - FIRST_WAIT, 1, "why")
    assert claims(due, probed=True) == [Verdict.SEND]  # the first, and judging stops
    assert claims(due, probed=False) == [Verdict.WAIT, Verdict.WAIT]
    assert claims(due, probed=True, busy=True) == [Verdict.WAIT, Verdict.WAIT]


def finished_order(order_id: int) -> Order:
    return replace(
        order(order_id), provider_order_id=500 + order_id, state=OrderState.ACTIVE,
        status=Status.IN_PROGRESS,
    )  # fmt: skip


def queued_cancel(request_id: int) -> QueuedRequest:
    offered = Package(7, "Likes", "Default", "Social", Decimal("0.90"), 10, 1000, cancel=True)
    package = StoredPackage(offered, True, None)
    request = Request(request_id, request_id, RequestKind.CANCEL, RequestState.QUEUED)
    return QueuedRequest(request, finished_order(request_id), package, False, holds_id=False)


def request_claims(
    pause: SendPause, *, probed: bool, busy: bool = False, probe_failed: str | None = None
) -> requests.RequestClaims:
    return requests.plan_claims(
        [queued_cancel(n) for n in (1, 2, 3)], NOW, kind=RequestKind.CANCEL, provider="sim",
        offered=True, owner="me", deadline=NOW, pause=pause, busy=busy, probed=probed,
        probe_failed=probe_failed,
    )  # fmt: skip


def test_requests_wait_while_paused_and_a_due_trial_carries_one_request_alone() -> None:
    paused = SendPause(NOW, NOW + FIRST_WAIT, 1, "why")
    held = request_claims(paused, probed=True)
    assert held.send == [] and [r.id for r in held.paused] == [1, 2, 3]
    assert {u.error for _, u in held.updates} == {send_pause.waiting_reason("sim", paused, NOW)}
    due = SendPause(NOW - 2 * FIRST_WAIT, NOW - FIRST_WAIT, 1, "why")
    trial = request_claims(due, probed=True)
    assert [r.id for r, _ in trial.send] == [1] and trial.paused == []
    assert [r.id for r, _ in trial.updates] == [1]  # the others are left as they are


def test_every_refill_or_cancel_call_carries_one_request() -> None:
    """A lost answer leaves every request of its call ambiguous: one a call, always."""
    plan = request_claims(NOT_PAUSED, probed=False)
    assert [r.id for r, _ in plan.send] == [1]
    assert [r.id for r, _ in plan.updates] == [1]  # the others are left as they are


def test_nothing_is_claimed_while_another_call_to_the_provider_is_in_flight() -> None:
    """Paused or not: the one call in flight answers (and pauses) before the next."""
    orders = QueuedOrders([order(1), order(2)], lambda _: None, None, NOT_PAUSED, True)
    plan = plan_claims(orders, NOW, decide=send_all, owner="me", deadline=NOW)
    assert [(o.id, d.verdict) for o, d in plan.judged] == [(1, Verdict.WAIT)]
    assert plan.judged[0][1].reason == send_pause.in_flight("sim")
    assert plan.updates == []  # untouched: its error does not churn
    held = request_claims(NOT_PAUSED, probed=False, busy=True)
    assert held.send == [] and held.updates == [] and [r.id for r in held.in_flight] == [1]


def test_a_failed_probe_is_told_in_the_error_of_every_waiting_row() -> None:
    due = SendPause(NOW - 2 * FIRST_WAIT, NOW - FIRST_WAIT, 1, "order 3's outcome was unknown")
    reason = send_pause.waiting_reason("sim", due, NOW, probe_failed="cannot connect")
    assert "the trial failed: cannot connect" in reason and reason.startswith("waiting:")
    orders = QueuedOrders([order(1), order(2)], lambda _: None, None, due, False)
    plan = plan_claims(orders, NOW, decide=send_all, owner="me", deadline=NOW,
                       probe_failed="cannot connect")  # fmt: skip
    assert [u.error for _, u in plan.updates] == [reason, reason]
    held = request_claims(due, probed=False, probe_failed="cannot connect")
    assert {u.error for _, u in held.updates} == {reason}


def test_a_call_that_left_a_request_unknown_pauses_naming_it() -> None:
    request = Request(7, 5, RequestKind.REFILL, RequestState.SUBMITTING, provider="sim")
    lost = requests.RequestPlan(NOW)
    lost.add(request, requests.failed(request, _lost(), NOW))
    paused = requests.pause_after_call(NOT_PAUSED, lost)
    assert paused is not None and paused.resume_at == NOW + FIRST_WAIT
    assert paused.reason == "the refill of order 5 (request 7)'s outcome was unknown (reset)"
    taken = requests.RequestPlan(NOW)
    taken.add(request, requests.Step(RequestUpdate(state=RequestState.SENT)))
    assert requests.pause_after_call(paused, taken) == NOT_PAUSED


def _lost() -> TransientError:
    return TransientError("sim", "reset", maybe_processed=True)


# A fault spell: for ``length`` seconds every call that changes something has an unknown
# outcome (``balance`` may answer all along); orders arrive at the given seconds.
@given(
    length=st.floats(min_value=0, max_value=FIRST_WAIT.total_seconds() - 0.001),
    start=st.floats(min_value=0, max_value=600),
    arrivals=st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=60),
    probe_answers=st.booleans(),
)
def test_a_spell_shorter_than_the_first_wait_leaves_at_most_one_unknown_outcome(
    length: float, start: float, arrivals: list[float], probe_answers: bool
) -> None:
    pause, unknown = NOT_PAUSED, 0
    queue: list[float] = []
    for moment in sorted(arrivals):  # a pass at each arrival sends what it may
        queue.append(moment)
        now = NOW + timedelta(seconds=moment)
        in_spell = start <= moment < start + length
        while queue:
            gate = send_pause.gate(pause, now)
            probed = gate is Gate.TRIAL and (probe_answers or not in_spell)
            if send_pause.holds(pause, "sim", now, probed=probed, busy=False) is not None:
                break
            queue.pop(0)
            outcome = Outcome.UNKNOWN if in_spell else Outcome.CLEAR
            unknown += outcome is Outcome.UNKNOWN
            pause = send_pause.after(pause, outcome, "why", now) or pause
            if gate is Gate.TRIAL and outcome is Outcome.CLEAR:
                continue  # the trial answered: the queue goes on
            if outcome is Outcome.UNKNOWN:
                break
    assert unknown <= 1


def test_a_pause_whose_start_cannot_be_read_is_still_a_pause_wherever_it_is_read() -> None:
    """`syncd status` and the claims decode the same four columns: a start garbled by
    hand neither lifts the pause for the claims nor hides it from status."""
    from syncd.storage.overview import stored_pause  # noqa: PLC0415

    resume = "2026-12-06 10:00:00.000000"
    garbled = stored_pause("yesterday-ish", resume, "1", "order 9's outcome was unknown")
    assert garbled.paused and garbled.resume_at == datetime(2026, 12, 6, 10, tzinfo=UTC)
    assert not stored_pause(None, None, "0", None).paused


def test_an_order_of_another_provider_read_with_these_is_rejected_not_sent() -> None:
    """A database that compares names loosely (MariaDB: 'sim ' equals 'sim') can hand
    the claim a row of another name; it is rejected, and the next order goes."""
    stray = replace(order(1), provider="sim ")
    queued = QueuedOrders([stray, order(2)], lambda _: None, None, NOT_PAUSED, False, "sim")
    plan = plan_claims(queued, NOW, decide=send_all, owner="me", deadline=NOW)
    assert [(o.id, d.verdict) for o, d in plan.judged] == [(1, Verdict.REJECT), (2, Verdict.SEND)]
    update = plan.updates[0][1]
    assert update.state is OrderState.REJECTED
    assert update.error == "unknown provider 'sim ' (not in the configuration); nothing was sent"
