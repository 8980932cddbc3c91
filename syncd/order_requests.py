"""Every rule of a refill's or a cancellation's life, as pure functions.

A request is asked for by a consumer's INSERT into ``order_requests`` (``order_id``,
``kind``, ``state = 'queued'``) or by ``syncd order refill`` / ``cancel``. Its life:

- ``queued``: judged before anything is sent (``judge``); a request that breaks a rule
  is ``rejected`` with the reason in ``error``, nothing sent;
- ``submitting``: committed, with its sender, before the request leaves (exactly once,
  as for orders);
- then, by the provider's answer (``answered``): ``sent`` (a refill, whose status is
  then tracked), ``done`` (a cancellation taken: the order's own status sync shows it
  Canceled), ``rejected`` (the provider refused this one request), or ``ambiguous`` (the
  answer was lost or cannot be read: the provider may have it; a ``request.ambiguous``
  alert, and it is never sent again by itself);
- a refill ``sent`` is checked with batched ``refill_status`` calls, backing off like an
  order, until its status is final (``Completed`` or ``Rejected``): then ``done``.

The jobs hand the ``plan_*`` functions to storage as planners: storage reads the rows,
runs the planner inside its transaction, and writes the ``RequestPlan`` it returns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from syncd import send_pause
from syncd.errors import AuthError, ProviderError, RefusedError, TransientError
from syncd.lifecycle import MAX_BACKOFF, is_whole
from syncd.models import (
    Event,
    Order,
    OrderLookupError,
    OrderState,
    RefillAnswer,
    RefillState,
    RefillStatus,
    RequestAnswer,
    RequestKind,
    RequestRefused,
    RequestTaken,
    SendPause,
    Status,
    StoredPackage,
    UnreadableAnswer,
)
from syncd.plans import KEEP, AlertIntent, Keep
from syncd.send_pause import NOT_PAUSED


class RequestState(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    SENT = "sent"
    DONE = "done"
    REJECTED = "rejected"
    AMBIGUOUS = "ambiguous"


# A refill of an order in one of these blocks another: the provider still works on it,
# or may (ambiguous: nobody knows).
OPEN_STATES = (RequestState.SUBMITTING, RequestState.SENT, RequestState.AMBIGUOUS)
# A refill_status call reads up to this many refills: a read left unanswered settles
# nothing, so batching costs nothing.
MAX_PER_CALL = 100
# A refill or cancel call carries this many requests. Each changes something at the
# provider, and a call whose answer is lost leaves every request it carried ambiguous,
# for a person to check one by one on the provider's panel: a bulk cancel of 500 taking
# minutes is cheaper than 100 refills to resolve by hand. (The client still reads a reply
# about several orders: a provider may answer a one-order call that way.)
SENT_PER_CALL = 1


@dataclass(frozen=True, slots=True)
class Request:
    """An ``order_requests`` row as syncd reads it; unreadable values are None and named
    in ``problem`` (a consumer wrote the row)."""

    id: int
    order_id: int | None
    kind: RequestKind | str
    state: RequestState | str
    provider_request_id: int | None = None
    status: RefillStatus | None = None
    status_raw: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    sent_at: datetime | None = None
    checked_at: datetime | None = None
    next_check_at: datetime | None = None
    finished_at: datetime | None = None
    provider: str | None = None
    problem: str | None = None


REQUEST_FIELDS = tuple(f.name for f in fields(Request) if f.name != "problem")


@dataclass(frozen=True, slots=True)
class RequestUpdate:
    """The columns one step of a request's life writes; ``KEEP`` leaves one alone."""

    state: RequestState | Keep = KEEP
    provider_request_id: int | Keep | None = KEEP
    status: RefillStatus | Keep | None = KEEP
    status_raw: str | Keep | None = KEEP
    error: str | Keep | None = KEEP
    sent_at: datetime | Keep | None = KEEP
    checked_at: datetime | Keep | None = KEEP
    next_check_at: datetime | Keep | None = KEEP
    finished_at: datetime | Keep | None = KEEP
    provider: str | Keep | None = KEEP
    submit_owner: str | Keep | None = KEEP
    submit_deadline: datetime | Keep | None = KEEP

    def written(self) -> dict[str, Any]:
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not KEEP}


@dataclass(frozen=True, slots=True)
class RequestChange:
    """A ``request_changes`` row: a request's state or status moved."""

    request_id: int
    order_id: int
    state_old: str | None
    state_new: str | None
    status_old: str | None
    status_new: str | None


@dataclass(frozen=True, slots=True)
class Step:
    update: RequestUpdate
    alert: AlertIntent | None = None


@dataclass(frozen=True)
class RequestPlan:
    """What a planner decided for some requests, read in the transaction that writes it:
    each one's update, the feed rows and alerts those make, and the orders made due at
    once (a cancellation taken: the next status sweep shows it)."""

    now: datetime
    updates: list[tuple[Request, RequestUpdate]] = field(default_factory=list)
    changes: list[RequestChange] = field(default_factory=list)
    alerts: list[AlertIntent] = field(default_factory=list)
    due_orders: list[int] = field(default_factory=list)

    def add(self, request: Request, step: Step) -> None:
        self.updates.append((request, step.update))
        if (change := change_of(request, step.update)) is not None:
            self.changes.append(change)
        if step.alert is not None:
            self.alerts.append(step.alert)


@dataclass(frozen=True)
class RequestClaims(RequestPlan):
    """A claimed batch: the plan, with (request, the order's provider id) for each to
    send, and the requests rejected or set aside instead."""

    send: list[tuple[Request, int]] = field(default_factory=list)
    rejected: list[Request] = field(default_factory=list)
    # Left queued because sending to the provider is paused (the reason in ``error``).
    paused: list[Request] = field(default_factory=list)
    # Left queued, untouched, because another call that changes something at the
    # provider is in flight (``send_pause.in_flight``): a later pass takes them.
    in_flight: list[Request] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class QueuedRequest:
    """A queued request as the claim reads it, with what judging it needs: its order,
    the package that order names, whether another refill of that order is open, and
    whether the row holds a provider request id (readable or not)."""

    request: Request
    order: Order
    package: StoredPackage | None
    refill_open: bool
    holds_id: bool


@dataclass(frozen=True, slots=True)
class StrayRequest:
    """A request no pass may take as it is, with its order (if any) and whether that
    order's provider is configured."""

    request: Request
    order: Order | None
    provider_known: bool


IsGone = Callable[[str | None, datetime | None, datetime], bool]


def change_of(request: Request, update: RequestUpdate) -> RequestChange | None:
    """The feed row an update makes, or None when neither state nor status moves."""
    written = update.written()
    old_state, old_status = _text(request.state), _text(request.status)
    new_state = _text(written.get("state", request.state))
    new_status = _text(written.get("status", request.status))
    if (old_state, old_status) == (new_state, new_status):
        return None
    return RequestChange(
        request.id, request.order_id or 0, old_state, new_state, old_status, new_status
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# -- judging ---------------------------------------------------------------------------------


def judge(
    request: Request,
    order: Order | None,
    package: StoredPackage | None,
    *,
    offered: bool,
    refill_open: bool,
) -> str | None:
    """Why ``request`` must not be sent (it is rejected with this), or None to send it.

    ``offered``: the provider's dialect offers this kind; ``refill_open``: another refill
    of the same order is still open (sent and not final, being sent, or ambiguous).
    """
    if request.problem is not None:
        return f"unreadable row: {request.problem}"
    if not isinstance(request.kind, RequestKind):
        return f"kind must be refill or cancel, not {request.kind!r}"
    if order is None:
        return f"order {request.order_id} does not exist"
    if not offered:
        return f"provider {order.provider} offers no {request.kind} (its API dialect has none)"
    if order.problem is not None:
        return f"order {order.id} cannot be read: {order.problem}"
    if not is_whole(order.provider_order_id):
        return f"order {order.id} has no provider order id: it was never sent"
    flag = None if package is None else getattr(package.package, request.kind.value)
    if flag is False:
        return f"package {order.service_id} does not allow a {request.kind}"
    if request.kind is RequestKind.REFILL:
        if order.state is not OrderState.DONE or order.status not in (
            Status.COMPLETED,
            Status.PARTIAL,
        ):
            shown = str(order.state) + (f", {order.status.value}" if order.status else "")
            return (
                f"only a finished order (Completed or Partial) is refilled; "
                f"order {order.id} is {shown}"
            )
        if refill_open:
            return f"another refill of order {order.id} is still open"
        return None
    if order.state is not OrderState.ACTIVE:
        return f"only an order in progress is cancelled; order {order.id} is {order.state}"
    return None


def already_sent(request: Request) -> Step:
    """A queued request that carries a provider request id already (a consumer queued a
    request again): the provider may hold it, so it is never sent again by itself."""
    reason = "queued with a provider_request_id already: the provider may hold it"
    return _ambiguous(request, RequestUpdate(provider=request.provider), reason)


def stray(request: Request, order: Order | None, *, provider_known: bool) -> str | None:
    """Why a row no provider's pass would take as it is must be rejected (None: it is no
    stray): a queued request naming no order, an unknown kind or an order of a provider
    nobody configured; a state that is no state; a ``submitting`` or ``sent`` row that
    syncd did not write that way."""
    state = request.state
    if not isinstance(state, RequestState):
        return f"state {state!r} is not a state (queued, to ask); nothing was sent"
    if state is RequestState.QUEUED:
        unusable = order is None or not isinstance(request.kind, RequestKind) or request.problem
        reason = judge(request, order, None, offered=True, refill_open=False)
        if unusable and reason is not None:
            return reason
        if order is not None and not provider_known:
            return (
                f"unknown provider {order.provider!r} (not in the configuration); nothing was sent"
            )
        return None
    if state is RequestState.SENT and (
        request.kind is not RequestKind.REFILL or request.provider_request_id is None
        or request.provider is None
    ):  # fmt: skip
        return "state 'sent' is syncd's own (a refill it sent and tracks): insert queued rows"
    return None


def claim(
    request: Request, reason: str | None, *, provider: str, owner: str, deadline: datetime,
    now: datetime,
) -> RequestUpdate:  # fmt: skip
    """What judging writes: rejected with ``reason``, or ``submitting`` by ``owner``."""
    if reason is not None:
        return RequestUpdate(
            state=RequestState.REJECTED, error=reason, finished_at=now, provider=provider
        )
    return RequestUpdate(
        state=RequestState.SUBMITTING, error=None, provider=provider, submit_owner=owner,
        submit_deadline=deadline,
    )  # fmt: skip


def plan_claims(
    rows: Sequence[QueuedRequest], now: datetime, *, kind: RequestKind, provider: str,
    offered: bool, owner: str, deadline: datetime, pause: SendPause = NOT_PAUSED,
    busy: bool = False, probed: bool = False, probe_failed: str | None = None,
) -> RequestClaims:  # fmt: skip
    """Judge one call's worth of queued requests of ``kind``, oldest first: each is
    ``submitting`` by ``owner`` or ``rejected``; one that holds a provider request id
    already is set aside (``already_sent``). A call carries ``SENT_PER_CALL`` requests:
    judging stops at the first one to send past that.

    Nothing is sent while an order or a request of the provider is being sent
    (``busy``, by this process or another): the first request to send is left queued,
    untouched (``in_flight``), and judging stops there. While sending to the provider
    is paused (``pause``), a request that would be sent stays queued with the pause in
    its ``error``. Once the pause is due for its trial and the harmless call succeeded
    (``probed``), the call carries the first such request alone (``probe_failed``: why
    that call failed, told in the waiting requests' ``error``)."""
    plan = RequestClaims(now)
    held = send_pause.holds(
        pause, provider, now, probed=probed, busy=busy, probe_failed=probe_failed
    )
    opened: set[int] = set()  # orders a request of this batch is already about
    for row in rows:
        # The provider it is judged for: alerts and later passes name it.
        request, order = replace(row.request, provider=provider), row.order
        if request.provider_request_id is not None or row.holds_id:
            plan.add(request, already_sent(request))
            plan.rejected.append(request)
            continue
        if order.id in opened:
            reason: str | None = f"another {kind} of order {order.id} is in this batch"
        else:
            reason = judge(
                request, order, row.package, offered=offered,
                refill_open=kind is RequestKind.REFILL and row.refill_open,
            )  # fmt: skip
        if reason is None and held is not None:
            if request.error != held:
                plan.add(request, Step(RequestUpdate(error=held)))
            plan.paused.append(request)
            continue
        if reason is None and held is None and busy:
            plan.in_flight.append(request)
            break  # one call at a time per provider: the rest wait for its answer
        if reason is None and len(plan.send) >= SENT_PER_CALL:
            break  # a trial goes alone, and so does every call: the rest wait
        update = claim(request, reason, provider=provider, owner=owner, deadline=deadline, now=now)
        plan.add(request, Step(update))
        if reason is None:
            opened.add(order.id)
            assert order.provider_order_id is not None
            plan.send.append((request, order.provider_order_id))
        else:
            plan.rejected.append(request)
    return plan


def plan_strays(rows: Sequence[StrayRequest], now: datetime) -> RequestPlan:
    """Settle each request no pass would take as it is: a ``submitting`` row nobody
    claimed (``recover``), else rejected with its reason (``stray``)."""
    plan = RequestPlan(now)
    for row in rows:
        request = row.request
        if request.state is RequestState.SUBMITTING:
            step = recover(request, None, None, now, lambda *_: True)
            if step is not None:
                plan.add(request, step)
            continue
        reason = stray(request, row.order, provider_known=row.provider_known)
        if reason is not None:
            update = RequestUpdate(
                state=RequestState.REJECTED, error=reason, finished_at=now, next_check_at=None
            )
            plan.add(request, Step(update))
    return plan


def plan_recovery(
    rows: Sequence[tuple[Request, str | None, datetime | None]], now: datetime, *,
    is_gone: IsGone,
) -> RequestPlan:  # fmt: skip
    """``submitting`` requests (with their sender and its deadline) whose sender died
    become ambiguous (``recover``)."""
    plan = RequestPlan(now)
    for request, owner, deadline in rows:
        if (step := recover(request, owner, deadline, now, is_gone)) is not None:
            plan.add(request, step)
    return plan


def plan_answers(
    rows: Sequence[Request], now: datetime, *, steps: Mapping[int, Step]
) -> RequestPlan:
    """Write what the provider answered (``steps``, by request id) for the rows still
    this sender's; an order whose cancellation was taken is made due, so that the next
    status sweep shows it."""
    plan = RequestPlan(now)
    for request in rows:
        step = steps[request.id]
        plan.add(request, step)
        taken = request.kind is RequestKind.CANCEL and step.update.state is RequestState.DONE
        if taken and request.order_id is not None:
            plan.due_orders.append(request.order_id)
    return plan


def pause_after_call(pause: SendPause, plan: RequestPlan) -> SendPause | None:
    """The provider's send pause after one refill or cancel call, by what its answers
    made of its requests (``send_pause.after_requests``); None: unchanged."""
    answered = []
    for request, update in plan.updates:
        written = update.written()
        kind = request.kind.value if isinstance(request.kind, RequestKind) else str(request.kind)
        what = f"the {kind} of order {request.order_id} (request {request.id})"
        answered.append((what, written.get("state", request.state), written.get("error")))
    return send_pause.after_requests(pause, answered, plan.now)


def plan_refill_checks(
    rows: Sequence[Request], now: datetime, *, answers: Mapping[int, RefillAnswer | None],
    base: timedelta,
) -> RequestPlan:  # fmt: skip
    """Each sent refill's row after its ``refill_status`` answer (``checked``)."""
    plan = RequestPlan(now)
    for request in rows:
        plan.add(request, Step(checked(request, answers[request.id], now, base)))
    return plan


# -- the provider's answer ------------------------------------------------------------------


def answered(
    request: Request, answer: RequestAnswer | None, now: datetime, base: timedelta
) -> Step:
    """What one request becomes by the provider's answer about it (None: the reply left
    it out, so the provider may or may not have it). A refill taken is first checked
    ``base`` (the orders interval) later."""
    done = RequestUpdate(sent_at=now, submit_owner=None, submit_deadline=None)
    if isinstance(answer, RequestTaken):
        if request.kind is RequestKind.CANCEL:
            return Step(replace(done, state=RequestState.DONE, error=None, finished_at=now))
        sent = replace(
            done, state=RequestState.SENT, provider_request_id=answer.request_id,
            status=RefillStatus.PENDING, error=None, next_check_at=now + base,
        )  # fmt: skip
        return Step(sent)
    if isinstance(answer, RequestRefused):
        return Step(
            replace(done, state=RequestState.REJECTED, error=answer.message, finished_at=now)
        )
    reason = (
        "the provider's answer left this order out"
        if answer is None
        else f"the provider's answer about it cannot be read: {answer.message}"
    )
    return _ambiguous(request, done, reason)


def failed(request: Request, error: ProviderError, now: datetime) -> Step:
    """What a request becomes when its whole call failed: back to ``queued`` when the
    call surely never arrived (or the token was refused), ``rejected`` when the provider
    refused the call, else ``ambiguous``: it may have been taken."""
    release = RequestUpdate(submit_owner=None, submit_deadline=None)
    if isinstance(error, AuthError) or (
        isinstance(error, TransientError) and not error.maybe_processed
    ):
        return Step(replace(release, state=RequestState.QUEUED, error=f"not sent: {error.detail}"))
    if isinstance(error, RefusedError):
        return Step(
            replace(release, state=RequestState.REJECTED, error=error.detail, finished_at=now)
        )
    return _ambiguous(request, replace(release, sent_at=now), error.detail)


def recover(
    request: Request, owner: str | None, deadline: datetime | None, now: datetime,
    is_gone: Any,
) -> Step | None:  # fmt: skip
    """A ``submitting`` request found at the start of a pass: rejected when syncd never
    claimed it (a consumer wrote the state), ambiguous when its sender died, left alone
    while the sender lives."""
    if owner is None:
        never = "state 'submitting' is syncd's own: insert queued rows; nothing was sent"
        return Step(RequestUpdate(state=RequestState.REJECTED, finished_at=now, error=never))
    if not is_gone(owner, deadline, now):
        return None
    reason = "the process sending it stopped before the provider answered"
    return _ambiguous(request, RequestUpdate(submit_owner=None, submit_deadline=None), reason)


def _ambiguous(request: Request, base: RequestUpdate, reason: str) -> Step:
    update = replace(base, state=RequestState.AMBIGUOUS, error=f"outcome unknown: {reason}")
    kind = request.kind.value if isinstance(request.kind, RequestKind) else str(request.kind)
    alert = AlertIntent(
        Event.REQUEST_AMBIGUOUS,
        request.provider or "",
        f"the {kind} of order {request.order_id} (request {request.id}) may or may not have "
        f"reached {request.provider} ({reason}); check the provider's panel. syncd will "
        "not send it again by itself",
        {"request_id": request.id, "order_id": request.order_id, "kind": kind,
         "reason": reason},
    )  # fmt: skip
    return Step(update, alert)


# -- a refill's status -----------------------------------------------------------------------


def checked(
    request: Request, answer: RefillAnswer | None, now: datetime, base: timedelta
) -> RequestUpdate:
    """A refill's row after a ``refill_status`` answer: a final status ends it
    (``done``); any other answer keeps it ``sent`` and backs off like an order: ``base``
    (the orders interval) after a change, doubling up to an hour while nothing changes.
    An answer left out or unreadable is recorded in ``error``."""
    wait = _next_wait(request, base)
    if isinstance(answer, RefillState):
        moved = answer.status is not request.status
        if answer.status.is_final:
            return RequestUpdate(
                state=RequestState.DONE, status=answer.status, status_raw=answer.status_raw,
                error=None, checked_at=now, next_check_at=None, finished_at=now,
            )  # fmt: skip
        return RequestUpdate(
            status=answer.status, status_raw=answer.status_raw, error=None, checked_at=now,
            next_check_at=now + (base if moved else wait),
        )  # fmt: skip
    if isinstance(answer, OrderLookupError | UnreadableAnswer):
        why = answer.message
    else:
        why = "the provider's answer left this refill out"
    return RequestUpdate(error=f"status not read: {why}", checked_at=now, next_check_at=now + wait)


def _next_wait(request: Request, base: timedelta) -> timedelta:
    if request.checked_at is None or request.next_check_at is None:
        return base
    return min(MAX_BACKOFF, max(base, 2 * (request.next_check_at - request.checked_at)))
