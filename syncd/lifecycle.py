"""An order's life: every rule for what an order becomes, as pure functions.

::

    queued ──judge──▶ rejected            (invalid: nothing is sent)
       │      └─────▶ queued + error      (waiting for funds)
       ▼
    submitting ──answer──▶ active | rejected | queued (surely not sent) | ambiguous
       │  (its sender died)──▶ ambiguous
       ▼
    active ──status answers──▶ active | done | missing | abandoned
    ambiguous ──an operator──▶ active | queued | abandoned

Each function takes an order as the database holds it now and returns what to write: an
``OrderUpdate`` (or, for the status sweep, one ``StatusUpdate`` per order) and the alert
it raises. The jobs hand them to the storage layer as planners; storage runs them inside
the transaction that writes their result, so a decision is always made against the row
it changes, and maps the result to columns. Nothing here touches the database, the
network or the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TypeGuard

from syncd import send_pause
from syncd.deadlines import CLOCK_SKEW
from syncd.errors import (
    AuthError,
    MalformedReplyError,
    ProviderError,
    RefusedError,
    TransientError,
)
from syncd.models import (
    Answer,
    Event,
    Order,
    OrderLookupError,
    OrderState,
    OrderStatus,
    Status,
    StoredPackage,
    UnreadableAnswer,
)
from syncd.order_types import REFERENCE, Refusal, Spelling, placement, sent_cost
from syncd.plans import (
    KEEP,
    AlertIntent,
    ClaimPlan,
    Funds,
    OrderChange,
    OrderUpdate,
    QueuedOrders,
    Settlement,
    StatusPlan,
    StatusUpdate,
    Step,
    Submission,
    SubmitOutcome,
    Verdict,
)
from syncd.status_extra import merged
from syncd.units import LARGEST, format_duration, money_text

MAX_BACKOFF = timedelta(hours=1)
MISSING_AFTER = 3  # "not found" answers in a row before an order is `missing`
OVERDUE_AFTER = 3  # checks in a row past give_up_after before an order is `abandoned`

# -- judging a queued order -------------------------------------------------------------


def is_whole(value: object) -> TypeGuard[int]:
    """A whole number above 0 that fits the database (a consumer's INSERT into SQLite can
    put any value in any column)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= LARGEST


def available_funds(funds: Funds | None) -> Decimal | None:
    """The last known balance minus the estimated cost of every order sent since it was
    read; None when no balance is known yet."""
    if funds is None:
        return None
    return funds.balance - sum(
        (sent_cost(rate, kind, quantity, params) for rate, kind, quantity, params in funds.spent),
        Decimal(0),
    )


def _malformed(order: Order) -> str | None:
    """What makes a row no order at all, before the catalog is asked (what its package's
    type needs is ``order_types``' to say)."""
    if order.problem is not None:
        return f"unreadable row: {order.problem}"
    if order.service_id is None:
        return "service_id is required"
    if not is_whole(order.service_id):
        return f"service_id must be a whole number above 0, not {order.service_id}"
    for name, rate in (("max_rate", order.max_rate), ("quoted_rate", order.quoted_rate)):
        if rate is not None and rate < 0:
            return f"{name} must not be negative, not {money_text(rate)}"
    return None


HELD = "held: "  # how a held order's error begins (syncd status counts them by it)
# How the error of an order waiting for funds begins: the submit job leaves those to the
# orders pass (``claim_queued``'s ``fresh_only``), as it does held ones.
WAITING_FOR_FUNDS = "waiting for funds: "


def price_hold(order: Order, rate: Decimal, guard: Decimal | None) -> str | None:
    """Why the package's ``rate`` is too dear for ``order``, or None when it is not.

    The order's own ``max_rate`` decides when it has one; otherwise the provider's
    ``price_guard`` (a percentage) allows that much above the rate quoted when the order
    was first judged. An order judged for the first time has that very rate as its quote.
    """
    shown = money_text(rate.normalize())
    if order.max_rate is not None:
        if rate > order.max_rate:
            return (
                f"{HELD}the package's rate {shown} is above the order's max_rate "
                f"{money_text(order.max_rate.normalize())}"
            )
        return None
    quoted = order.quoted_rate
    if guard is None or quoted is None or rate <= quoted * (1 + guard / 100):
        return None
    return (
        f"{HELD}the package's rate {shown} is more than {money_text(guard.normalize())}% "
        f"above the quoted rate {money_text(quoted.normalize())}"
    )


def held_alert(order: Order, decision: Submission) -> AlertIntent | None:
    """``order.held``, once: when an order becomes held, not at every pass that finds it
    still held (its error already says so)."""
    if decision.verdict is not Verdict.HOLD or (order.error or "").startswith(HELD):
        return None
    reason = (decision.reason or "").removeprefix(HELD)
    return AlertIntent(
        Event.ORDER_HELD,
        order.provider,
        f"order {order.id} for {order.provider} is held, not sent: {reason}; it goes out "
        "by itself once the rate falls or its max_rate is raised",
        {"order_id": order.id, "service_id": order.service_id, "reason": reason,
         "rate": _money_or_none(decision.rate), "max_rate": _money_or_none(order.max_rate),
         "quoted_rate": _money_or_none(order.quoted_rate)},
    )  # fmt: skip


def _money_or_none(amount: Decimal | None) -> str | None:
    return None if amount is None else money_text(amount)


def check_order(
    order: Order,
    package: StoredPackage | None,
    available: Decimal | None,
    guard: Decimal | None = None,
    *,
    dialect: Spelling = REFERENCE,
    today: date | None = None,
) -> Submission:
    """Validate a queued order against the local catalog, what its package's type needs
    under the provider's ``dialect`` (``order_types``), its price guard and the funds
    known to be left. A verdict to send carries the form fields to send.

    ``available`` is the last known balance minus what orders sent since cost, or None
    when no balance is known yet (then funds are not checked). ``guard`` is the
    provider's ``price_guard`` in percent, None when off.
    """
    if (malformed := _malformed(order)) is not None:
        return Submission(Verdict.REJECT, malformed)
    if package is None:
        return Submission(
            Verdict.REJECT, f"unknown package {order.service_id} (not in the catalog)"
        )
    if not package.active:
        return Submission(Verdict.REJECT, f"package {order.service_id} is no longer offered")
    p = package.package
    placed = placement(
        p, link=order.link, quantity=order.quantity, custom_data=order.custom_data,
        params=order.params, dialect=dialect, today=today,
    )  # fmt: skip
    if isinstance(placed, Refusal):
        return Submission(Verdict.REJECT, placed.reason)
    if (held := price_hold(order, p.rate, guard)) is not None:
        return Submission(Verdict.HOLD, held, rate=p.rate)
    cost = placed.cost(p.rate)
    if available is not None and available < cost:
        return Submission(
            Verdict.WAIT,
            # Without the figure left, which moves with every order sent: a reason that
            # stays the same is not written again at every pass.
            f"{WAITING_FOR_FUNDS}estimated cost {money_text(cost.normalize())} is more "
            "than the balance left (see syncd status)",
            cost,
            p.rate,
        )
    return Submission(Verdict.SEND, None, cost, p.rate, placed.fields)


def judge(
    order: Order,
    package: StoredPackage | None,
    funds: Funds | None,
    guard: Decimal | None = None,
    *,
    dialect: Spelling = REFERENCE,
) -> Submission:
    """``check_order`` against the funds as stored: the last balance read, less what the
    orders sent since cost."""
    return check_order(order, package, available_funds(funds), guard, dialect=dialect)


Decide = Callable[[Order, StoredPackage | None, Decimal | None], Submission]


def plan_claims(
    queued: QueuedOrders,
    now: datetime,
    *,
    decide: Decide,
    owner: str,
    deadline: datetime,
    probed: bool = False,
    probe_failed: str | None = None,
) -> ClaimPlan:
    """Judge queued orders in turn with ``decide`` (``check_order`` with the provider's
    price guard) and say what each writes (``claim``) and which newly held one raises
    ``order.held``. Judging stops at the first order to send: judging spends nothing,
    so the funds read once hold for every order judged before it, and that order is
    sent before the next is judged.

    While sending to the provider is paused (``syncd.send_pause``), an order that would
    be sent waits instead, with the pause in its ``error``; once the pause is due for
    its trial and the harmless call succeeded (``probed``), the first one goes alone
    (``probe_failed``: why that call failed, told in the waiting orders' ``error``).

    Paused or not, nothing is sent while an order or request of the provider is being
    sent (``queued.busy``, by this process or another): the first order to send is
    judged ``WAIT`` with ``send_pause.in_flight`` as its reason and judging stops there,
    with nothing written for it (its ``error`` does not churn); a later pass takes it."""
    available = available_funds(queued.funds)
    plan = ClaimPlan(now)
    provider = queued.provider
    if provider is None:
        provider = queued.orders[0].provider if queued.orders else ""
    paused = send_pause.holds(
        queued.pause, provider, now, probed=probed, busy=queued.busy, probe_failed=probe_failed
    )
    for order in queued.orders:
        if order.provider != provider:  # read by a name the database found equal
            decision = Submission(Verdict.REJECT, _unknown_provider(order))
        else:
            decision = decide(order, queued.package(order), available)
        if decision.verdict is Verdict.SEND and paused is not None:
            decision = Submission(Verdict.WAIT, paused, decision.cost, decision.rate)
        elif decision.verdict is Verdict.SEND and queued.busy:
            waits = Submission(Verdict.WAIT, send_pause.in_flight(provider), decision.cost)
            plan.judged.append((order, waits))
            break
        update = claim(order, decision, owner=owner, deadline=deadline, now=now)
        if update is not None:
            plan.updates.append((order, update))
        if (alert := held_alert(order, decision)) is not None:
            plan.alerts.append(alert)
        plan.judged.append((order, decision))
        if decision.verdict is Verdict.SEND:
            break
    return plan


def claim(
    order: Order, decision: Submission, *, owner: str, deadline: datetime, now: datetime
) -> OrderUpdate | None:
    """What judging a queued order writes: rejected, still waiting (with its reason), or
    ``submitting`` owned by ``owner`` until ``deadline``. None: waiting for the reason it
    was already waiting for, so nothing changes."""
    if decision.verdict is Verdict.REJECT:
        return OrderUpdate(state=OrderState.REJECTED, error=decision.reason, finished_at=now)
    # The rate syncd first saw the order at is its quote (unless the consumer wrote one).
    quote = decision.rate if order.quoted_rate is None and decision.rate is not None else KEEP
    if decision.verdict in (Verdict.WAIT, Verdict.HOLD):
        if decision.reason == order.error and quote is KEEP:
            return None
        return OrderUpdate(error=decision.reason, quoted_rate=quote)
    return OrderUpdate(
        state=OrderState.SUBMITTING,
        quoted_rate=quote,
        error=None,
        submitted_at=now,
        submit_owner=owner,
        submit_deadline=deadline,
    )


# -- after sending --------------------------------------------------------------------------


def outcome_of(error: ProviderError) -> SubmitOutcome:
    """Where an order goes when its ``add`` call failed: rejected when the provider
    refused it, back to queued when the request surely never arrived, else ambiguous."""
    if isinstance(error, RefusedError):
        return SubmitOutcome(OrderState.REJECTED, error=error.detail)
    if isinstance(error, AuthError) or (
        isinstance(error, TransientError) and not error.maybe_processed
    ):
        return SubmitOutcome(OrderState.QUEUED, error=f"not sent: {error.detail}")
    assert isinstance(error, TransientError | MalformedReplyError)
    return SubmitOutcome(OrderState.AMBIGUOUS, error=f"outcome unknown: {error.detail}")


def ambiguous_alert(order: Order, reason: str) -> AlertIntent:
    return AlertIntent(
        Event.ORDER_AMBIGUOUS,
        order.provider,
        f"order {order.id} for {order.provider} may or may not have been placed ({reason}); "
        f"check the provider's panel, then run: syncd order resolve {order.id} "
        "--provider-order N | --resend | --abandon",
        {"order_id": order.id, "service_id": order.service_id, "link": order.link,
         "quantity": order.quantity, "reason": reason},
    )  # fmt: skip


def finish(
    order: Order,
    outcome: SubmitOutcome,
    *,
    owned: bool,
    holder: int | None,
    alert: AlertIntent | None,
    now: datetime,
) -> tuple[Step | None, AlertIntent | None]:
    """What the provider's answer to a sent order writes, given the row as it is now.

    ``owned``: the row still names this process as its sender. ``holder``: another local
    order that already holds the provider order id the answer named. Returns the step to
    write (None when the row is no longer this process's to write) and, when it is not,
    the alert that must still be raised.

    An accepted order is recorded even if another process has meanwhile declared it
    ambiguous: the provider's order id settles the question. An answer naming an order
    id another row holds cannot be recorded (the id is unique) and the provider did take
    *something*: ambiguous, for a person to look at. An accepted order that was settled
    by hand before the answer came raises an alert: a second order may exist.
    """
    ambiguous_now = order.state is OrderState.AMBIGUOUS and outcome.state is OrderState.ACTIVE
    if not owned or (order.state is not OrderState.SUBMITTING and not ambiguous_now):
        if outcome.state is not OrderState.ACTIVE:
            return None, None
        why = (
            f"{order.provider} took it as its order {outcome.provider_order_id} "
            f"after it had been settled here (it is {order.state} now); look for "
            "a second order at the provider"
        )
        return None, ambiguous_alert(order, why)
    result, raised = outcome, alert
    if holder is not None:
        why = (
            f"outcome unknown: {order.provider} answered with its order "
            f"{outcome.provider_order_id}, which local order {holder} already holds"
        )
        result, raised = SubmitOutcome(OrderState.AMBIGUOUS, error=why), ambiguous_alert(order, why)
    update = OrderUpdate(state=result.state, error=result.error)
    if result.state is OrderState.ACTIVE:
        update = _with(update, provider_order_id=result.provider_order_id, next_check_at=now)
    elif result.state is OrderState.REJECTED:
        update = _with(update, finished_at=now)
    elif result.state is OrderState.QUEUED:
        update = _with(update, submitted_at=None)
    if result.state is not OrderState.AMBIGUOUS:  # an ambiguous row keeps its sender's mark
        update = _with(update, submit_owner=None, submit_deadline=None)
    return Step(update, raised), None


def recover(
    order: Order,
    owner: str | None,
    deadline: datetime | None,
    now: datetime,
    is_gone: Callable[[str | None, datetime | None, datetime], bool],
) -> Step | None:
    """What becomes of a ``submitting`` row found at the start of a pass: rejected when
    syncd never claimed it (no owner: a consumer wrote the state, nothing was sent),
    ambiguous with an alert when its sender died, left alone (None) while it lives."""
    if owner is None:
        return Step(
            OrderUpdate(
                state=OrderState.REJECTED,
                error="state 'submitting' is syncd's own: insert queued rows; nothing was sent",
                finished_at=now,
            )
        )
    if not is_gone(owner, deadline, now):
        return None
    reason = "the process sending it stopped before the provider answered"
    update = OrderUpdate(state=OrderState.AMBIGUOUS, error=f"outcome unknown: {reason}")
    return Step(update, ambiguous_alert(order, reason))


def resolution(action: str, provider_order_id: int | None, now: datetime) -> OrderUpdate:
    """What ``syncd order resolve`` writes to settle an ambiguous order."""
    settled = OrderUpdate(error=None, submit_owner=None, submit_deadline=None)
    if action == "provider-order":
        return _with(
            settled, state=OrderState.ACTIVE, provider_order_id=provider_order_id,
            next_check_at=now,
        )  # fmt: skip
    if action == "resend":
        return _with(settled, state=OrderState.QUEUED, submitted_at=None, provider_order_id=None)
    if action == "abandon":
        return _with(settled, state=OrderState.ABANDONED, finished_at=now)
    raise ValueError(action)


def _with(update: OrderUpdate, **columns: object) -> OrderUpdate:
    return OrderUpdate(**(update.written() | columns))


# -- rows no job would take ----------------------------------------------------------------

_UNSENT = (OrderState.QUEUED, OrderState.SUBMITTING)


def plan_stray(
    order: Order, *, provider_known: bool, holds_id: bool, now: datetime
) -> Settlement | None:
    """What becomes of a row no job would take as it is, or None when it is fine.

    A shop writes ``orders`` rows by hand, and some can never be sent or checked as they
    are: a ``state`` that is no state, a provider nobody configured, a queued row that
    already carries a provider order id (a "retry" of an order the provider may well
    hold). Left alone they would sit unnoticed forever, or worse, be sent again.
    ``holds_id``: the row has something in ``provider_order_id``, readable or not.
    A settled row is finished, unless it is ambiguous (a person settles that).
    """
    if not isinstance(order.state, OrderState):
        if not holds_id:
            return _settled(OrderState.REJECTED, f"{order.problem}; nothing was sent", now)
        return _unknown(order, f"{order.problem}, with a provider order id")
    if order.state in _UNSENT:
        if holds_id:
            # Sending it would place a second order if the provider holds this one.
            return _unknown(
                order,
                f"{order.state} with a provider order id already: the provider may hold it "
                "(resolve with --provider-order if it does, --resend if it does not)",
            )
        if not provider_known:
            return _settled(OrderState.REJECTED, _unknown_provider(order), now)
    elif order.state is OrderState.ACTIVE and not provider_known:
        reason = f"unknown provider {order.provider!r} (not in the configuration)"
        alert = order_alert(Event.ORDER_MISSING, order, f"cannot be checked: {reason}")
        return _settled(OrderState.MISSING, f"{reason}: it cannot be checked", now, alert)
    return None


def _unknown_provider(order: Order) -> str:
    return f"unknown provider {order.provider!r} (not in the configuration); nothing was sent"


def _settled(
    state: OrderState, error: str, now: datetime, alert: AlertIntent | None = None
) -> Settlement:
    return Settlement(OrderUpdate(state=state, error=error, finished_at=now), error, alert)


def _unknown(order: Order, reason: str) -> Settlement:
    error = f"outcome unknown: {reason}"
    return Settlement(
        OrderUpdate(state=OrderState.AMBIGUOUS, error=error), error, ambiguous_alert(order, reason)
    )


# -- status answers ------------------------------------------------------------------------


def plan_status_batch(
    orders: Sequence[Order],
    answers: Mapping[int, Answer],
    now: datetime,
    *,
    base: timedelta,
    give_up_after: timedelta,
) -> StatusPlan:
    """Decide what a batch of answers changes.

    Final statuses end tracking (``done``); a third "not found" in a row makes an order
    ``missing``; an answer that cannot be read changes nothing but the order's ``error``
    (it is no "not found", and tracking goes on).  An active row without a readable
    provider order id cannot be checked at all: it is ``missing`` at once.

    An order older than ``give_up_after`` is ``abandoned`` on the third check in a row
    that finds it so: one pass with a clock that jumped ahead abandons nothing.  An order
    that did not change is checked again after twice its last interval (from ``base`` up
    to an hour); any change brings it back to ``base``.
    """
    updates: list[StatusUpdate] = []
    changes: list[OrderChange] = []
    alerts: list[AlertIntent] = []
    for order in orders:
        update, change, alert = _check(order, answers, now, base, give_up_after)
        updates.append(update)
        if change is not None:
            changes.append(change)
        if alert is not None:
            alerts.append(alert)
    return StatusPlan(now, updates, changes, alerts)


@dataclass(frozen=True, slots=True)
class StatusJudge:
    """How one status batch's answers are judged, for the transaction that writes them:
    ``plan`` checks orders in full (``plan_status_batch``); ``repeated`` finds, from the
    raw reply and the row's values, the orders whose answer repeats their row and that
    need nothing but a new check time. ``clock`` is read once per transaction."""

    answers: Mapping[int, Answer]
    clock: Callable[[], datetime]
    base: timedelta
    give_up_after: timedelta

    def __call__(self, orders: list[Order]) -> StatusPlan:
        return self.plan(orders, self.clock())

    def plan(self, orders: list[Order], now: datetime) -> StatusPlan:
        return plan_status_batch(
            orders, self.answers, now, base=self.base, give_up_after=self.give_up_after
        )

    def repeated(self, provider_order_id: object, row: Repeat, now: datetime) -> datetime | None:
        """The next check of an active order whose answer says just what its row holds
        (``REPEAT_FIELDS`` of the row, read); None when the order needs the full check."""
        repeats = getattr(self.answers, "repeats", None)  # a reply read by read_statuses
        held = provider_order_id
        if repeats is None or type(held) is not int or not 0 < held <= LARGEST:
            return None
        if not repeats(held, row[:6]):
            return None
        return repeated_due(row, now, base=self.base, give_up_after=self.give_up_after)


# The fields of an order's row that tell whether a check of it repeats it, in the order
# ``StatusJudge.repeated`` takes them (the first six: ``StatusAnswers.repeats``'s).
REPEAT_FIELDS = (
    "status", "status_raw", "charge", "start_counter", "remains", "currency", "error",
    "missing_checks", "overdue_checks", "finished_at", "created_at", "checked_at",
    "next_check_at",
)  # fmt: skip
Repeat = tuple[
    Status | None,
    str | None,
    Decimal | None,
    int | None,
    int | None,
    str | None,
    str | None,
    int,
    int,
    datetime | None,
    datetime | None,
    datetime | None,
    datetime | None,
]


def repeated_due(
    row: Repeat, now: datetime, *, base: timedelta, give_up_after: timedelta
) -> datetime | None:
    """When an active order whose answer repeats what its row holds (``StatusAnswers
    .repeats``) is next due, if that is all its check writes besides ``checked_at``:
    ``_check``'s outcome for it, reached without building the order. None when the check
    does more (a status that ends tracking, an error or counter to clear, an order past
    ``give_up_after``): the sweep then checks the order in full.

    Most of a sweep is such orders, so their cost is this and one shared UPDATE."""
    status, _, _, _, _, _, error, missing_checks, overdue_checks, finished_at = row[:10]
    created_at, checked_at, next_check_at = row[10:]
    if status is not None and status.is_final:
        return None
    if error is not None or missing_checks or overdue_checks or finished_at is not None:
        return None
    if created_at is not None and now - created_at >= give_up_after:
        return None
    return now + _backoff(checked_at, next_check_at, base)


def _check(
    order: Order,
    answers: Mapping[int, Answer],
    now: datetime,
    base: timedelta,
    give_up_after: timedelta,
) -> tuple[StatusUpdate, OrderChange | None, AlertIntent | None]:
    """One order's answer: its update, its change, its alert. (A sweep runs this for
    every order it checks: the common answer, a status, is read inline.)"""
    held = order.provider_order_id
    readable = type(held) is int and 0 < held <= LARGEST
    answer = answers.get(held) if readable else None  # type: ignore[arg-type]
    if readable and type(answer) is OrderStatus:
        state = OrderState.DONE if answer.status.is_final else OrderState.ACTIVE
        status: Status | None = answer.status
        status_raw: str | None = answer.status_raw
        # A value the answer leaves out keeps the one known.
        charge = order.charge if answer.charge is None else answer.charge
        start_counter = (
            order.start_counter if answer.start_counter is None else answer.start_counter
        )
        remains = order.remains if answer.remains is None else answer.remains
        currency = answer.currency or order.currency
        extra = order.status_extra
        if answer.extra is not None:  # drip-feed or subscription fields: rare
            extra = merged(extra, answer.extra)
        # What could not be read of the row is kept in sight until the answer heals it.
        error = f"unreadable row: {order.problem}" if order.problem else None
        missing_checks, alert = 0, None
    else:
        read = _read_answer(order, answer)
        state, status, status_raw, charge = read.state, read.status, read.status_raw, read.charge
        start_counter, remains, currency = read.start_counter, read.remains, read.currency
        error, missing_checks, alert = read.error, read.missing_checks, read.alert
        extra = order.status_extra
    overdue = (
        state is OrderState.ACTIVE
        and order.created_at is not None
        # A difference, not a sum: a created_at in the year 9999 must not overflow.
        and now - order.created_at >= give_up_after
    )
    overdue_checks = order.overdue_checks + 1 if overdue else 0
    if overdue and overdue_checks >= OVERDUE_AFTER:
        state = OrderState.ABANDONED
        what = f"is still {status or 'unconfirmed'} after {format_duration(give_up_after)}"
        alert = order_alert(Event.ORDER_ABANDONED, order, what)
    before = (
        order.state, order.status, order.charge, order.remains, order.start_counter,
        order.status_extra,
    )  # fmt: skip
    after = (state, status, charge, remains, start_counter, extra)
    change = None if before == after else OrderChange(order.id, before, after)
    if state is OrderState.ACTIVE:
        not_found = answer is None or type(answer) is OrderLookupError
        reset = change is not None or not_found
        next_check_at, finished_at = now + _interval(order, base=base, reset=reset), None
    else:
        next_check_at, finished_at = None, now
    update = StatusUpdate(
        order.id, state, status, status_raw, charge, start_counter, remains, currency, error,
        now, next_check_at, finished_at, missing_checks, overdue_checks,
        KEEP if extra is order.status_extra else extra,
    )  # fmt: skip
    return update, change, alert


@dataclass(slots=True)
class _Reading:
    """What an answer other than a status says of one order."""

    state: OrderState
    status: Status | None
    status_raw: str | None
    charge: Decimal | None
    start_counter: int | None
    remains: int | None
    currency: str | None
    error: str | None = None
    missing_checks: int = 0
    alert: AlertIntent | None = None


def _read_answer(order: Order, answer: Answer | None) -> _Reading:
    read = _Reading(
        OrderState.ACTIVE, order.status, order.status_raw, order.charge, order.start_counter,
        order.remains, order.currency,
    )  # fmt: skip
    held = order.provider_order_id
    if held is None or not is_whole(held):
        error = "no readable provider_order_id, so it cannot be checked"
        if held is not None:
            error = f"provider_order_id {held}, which is no order id"
        if order.problem:
            error += f" ({order.problem})"
        read.state, read.error = OrderState.MISSING, error
        read.alert = order_alert(Event.ORDER_MISSING, order, f"has {error}")
    elif isinstance(answer, UnreadableAnswer):
        read.error = f"unreadable answer: {answer.message}"
        read.missing_checks = order.missing_checks
    else:
        assert answer is None or isinstance(answer, OrderLookupError)
        reason = answer.message if answer is not None else "absent from the provider's reply"
        read.missing_checks = order.missing_checks + 1
        read.error = f"not found: {reason}"
        if read.missing_checks >= MISSING_AFTER:
            what = f"was not found by the provider {MISSING_AFTER} checks in a row ({reason})"
            read.state = OrderState.MISSING
            read.alert = order_alert(Event.ORDER_MISSING, order, what)
    return read


def ran_ahead(written: Iterable[datetime | None], now: datetime) -> bool:
    """Whether a clock that ran ahead wrote one of these times (when a provider's orders
    were last synced, when its jobs last ran, the latest time written into its orders or
    requests, a one-off command's included): one lies further ahead of ``now`` than
    hosts' clocks may disagree (``CLOCK_SKEW``).

    That clock also wrote the ``checked_at`` and ``next_check_at`` of every order (and
    refill) it checked, and an order due "four minutes after a check a day from now"
    would wait a day. When this says so, the pass first brings every check time of the
    provider that lies in the future back to ``now``: those orders are due at once, and
    back on their interval from the real time after one check. The marks are a few rows
    read at each pass; the rows of every order are only looked at when one of them says
    a clock ran ahead."""
    future = now + CLOCK_SKEW
    return any(at is not None and at > future for at in written)


def _interval(order: Order, *, base: timedelta, reset: bool) -> timedelta:
    return base if reset else _backoff(order.checked_at, order.next_check_at, base)


def _backoff(
    checked_at: datetime | None, next_check_at: datetime | None, base: timedelta
) -> timedelta:
    """The interval after a check that found nothing new: twice the last, from ``base``
    up to ``MAX_BACKOFF``."""
    if checked_at is None or next_check_at is None:
        return base
    return min(MAX_BACKOFF, max(base, 2 * (next_check_at - checked_at)))


def order_alert(event: Event, order: Order, what: str) -> AlertIntent:
    """An alert about one order that syncd stops tracking."""
    held = order.provider_order_id
    which = f"{order.provider} order {held}" if held is not None else order.provider
    return AlertIntent(
        event,
        order.provider,
        f"order {order.id} ({which}) {what}; syncd stopped tracking it",
        {
            "order_id": order.id,
            "provider_order_id": order.provider_order_id,
            "status": order.status,
        },
    )
