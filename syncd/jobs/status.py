"""Status sync: batched multi-status calls for every due active order.

``plan_status_batch`` is the decider (pure). ``sync_statuses`` streams due orders from the
database one batch at a time (memory does not grow with the number of orders), keeps up
to ``max_concurrency`` status calls in flight, and writes each batch in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeGuard, TypeVar

from syncd.errors import JobError, MalformedReplyError, ProviderError, RefusedError
from syncd.jobs.context import JobContext
from syncd.models import Event, Order, OrderLookupError, OrderState, OrderStatus, UnreadableAnswer
from syncd.plans import AlertIntent, StatusPlan, diff_order, tracked_values
from syncd.provider.replies import Answer
from syncd.units import LARGEST, format_duration

MAX_BACKOFF = timedelta(hours=1)
MISSING_AFTER = 3  # "not found" answers in a row before an order is `missing`
OVERDUE_AFTER = 3  # checks in a row past give_up_after before an order is `abandoned`

T = TypeVar("T")
Answers = Mapping[int, Answer]
Progress = Callable[[int, int], None]  # (checked so far, due at the start)


def plan_status_batch(
    orders: Sequence[Order],
    answers: Answers,
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
    updates: list[dict[str, Any]] = []
    changes = []
    alerts = []
    for order in orders:
        held = order.provider_order_id
        answer = answers.get(held) if held is not None and _is_order_id(held) else None
        old = tracked_values(order)
        values, state, alert = _judge(order, answer)
        row: dict[str, Any] = {
            "b_id": order.id,
            "status": order.status,
            "status_raw": order.status_raw,
            "charge": order.charge,
            "start_counter": order.start_counter,
            "remains": order.remains,
            "currency": order.currency,
            "error": None,
            "checked_at": now,
            "missing_checks": 0,
        } | values
        overdue = (
            state is OrderState.ACTIVE
            and order.created_at is not None
            # A difference, not a sum: a created_at in the year 9999 must not overflow.
            and now - order.created_at >= give_up_after
        )
        row["overdue_checks"] = order.overdue_checks + 1 if overdue else 0
        if overdue and row["overdue_checks"] >= OVERDUE_AFTER:
            state = OrderState.ABANDONED
            status = row["status"] or "unconfirmed"
            alert = order_alert(
                Event.ORDER_ABANDONED,
                order,
                f"is still {status} after {format_duration(give_up_after)}",
            )
        if alert is not None:
            alerts.append(alert)
        row["state"] = state
        change = diff_order(order.id, old, row)
        if change is not None:
            changes.append(change)
        row["finished_at"] = now if state is not OrderState.ACTIVE else None
        not_found = answer is None or isinstance(answer, OrderLookupError)
        row["next_check_at"] = (
            now + _interval(order, base=base, reset=change is not None or not_found)
            if state is OrderState.ACTIVE
            else None
        )
        updates.append(row)
    return StatusPlan(now, updates, changes, alerts)


def _judge(
    order: Order, answer: Answer | None
) -> tuple[dict[str, Any], OrderState, AlertIntent | None]:
    """What one answer says about one order: the values it changes, the state it puts
    the order in, and the alert that raises, if any."""
    if order.provider_order_id is None or not _is_order_id(order.provider_order_id):
        reason = "no readable provider_order_id, so it cannot be checked"
        if order.provider_order_id is not None:
            reason = f"provider_order_id {order.provider_order_id}, which is no order id"
        if order.problem:
            reason += f" ({order.problem})"
        alert = order_alert(Event.ORDER_MISSING, order, f"has {reason}")
        return {"error": reason}, OrderState.MISSING, alert
    if isinstance(answer, OrderStatus):
        values = {
            "status": answer.status,
            "status_raw": answer.status_raw,
            "charge": _newer(answer.charge, order.charge),
            "start_counter": _newer(answer.start_counter, order.start_counter),
            "remains": _newer(answer.remains, order.remains),
            "currency": answer.currency or order.currency,
            # What could not be read of the row is kept in sight until the answer heals it.
            "error": f"unreadable row: {order.problem}" if order.problem else None,
        }
        return values, OrderState.DONE if answer.status.is_final else OrderState.ACTIVE, None
    if isinstance(answer, UnreadableAnswer):
        values = {
            "error": f"unreadable answer: {answer.message}",
            "missing_checks": order.missing_checks,
        }
        return values, OrderState.ACTIVE, None
    reason = answer.message if answer is not None else "absent from the provider's reply"
    checks = order.missing_checks + 1
    values = {"missing_checks": checks, "error": f"not found: {reason}"}
    if checks < MISSING_AFTER:
        return values, OrderState.ACTIVE, None
    what = f"was not found by the provider {MISSING_AFTER} checks in a row ({reason})"
    return values, OrderState.MISSING, order_alert(Event.ORDER_MISSING, order, what)


def _is_order_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= LARGEST


def _newer(sent: T | None, known: T | None) -> T | None:
    return known if sent is None else sent


def _interval(order: Order, *, base: timedelta, reset: bool) -> timedelta:
    if reset or order.checked_at is None or order.next_check_at is None:
        return base
    return min(MAX_BACKOFF, max(base, 2 * (order.next_check_at - order.checked_at)))


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


@dataclass
class SweepCounts:
    due: int = 0
    checked: int = 0
    changed: int = 0
    finished: int = 0
    calls: int = 0

    def summary(self) -> str:
        return (
            f"checked {self.checked} of {self.due} due in {self.calls} calls, "
            f"{self.changed} changed, {self.finished} finished"
        )


async def sync_statuses(ctx: JobContext, progress: Progress | None = None) -> SweepCounts:
    """One sweep over the provider's due active orders. Raises the first provider error
    (after the batches already in flight are written); rows of a failed batch stay as
    they were and are due again next time."""
    provider = ctx.provider
    # A little early rather than one whole pass late: jitter may start a pass a moment
    # before an order's next_check_at.
    now = ctx.now()
    due_before = now + provider.orders_interval / 10
    # No schedule syncd writes reaches past this; a later next_check_at is a clock's error.
    horizon = now + MAX_BACKOFF + provider.orders_interval
    due = await ctx.db(ctx.storage.count_due, provider.name, due_before, horizon)
    return await _Sweep(ctx, due_before, SweepCounts(due=due), progress).run()


class _Sweep:
    """A producer reads due orders a page at a time; ``max_concurrency`` workers each
    send one batch, plan its answers and write them, then take the next."""

    def __init__(
        self, ctx: JobContext, due_before: datetime, counts: SweepCounts, progress: Progress | None
    ) -> None:
        self.ctx = ctx
        self.provider = ctx.provider
        self.due_before = due_before
        self.counts = counts
        self.progress = progress
        self.batches: asyncio.Queue[list[tuple[int, object]] | None] = asyncio.Queue(
            maxsize=self.provider.max_concurrency
        )
        self.write_lock = asyncio.Lock()  # one writer at a time: no busy-waiting on our own
        self.failures: list[JobError] = []

    async def run(self) -> SweepCounts:
        workers = (self.work() for _ in range(self.provider.max_concurrency))
        await asyncio.gather(self.produce(), *workers)
        if self.failures:
            raise self.failures[0]
        return self.counts

    async def produce(self) -> None:
        size = self.provider.status_batch_size
        cursor = None
        try:
            while not self.failures and not self.ctx.stop_requested:
                # One read fills every worker: fewer queries and thread hops per order.
                page, cursor = await self.ctx.db(
                    self.ctx.storage.due_orders,
                    self.provider.name,
                    self.due_before,
                    cursor,
                    size * self.provider.max_concurrency,
                )
                if not page:
                    break
                for start in range(0, len(page), size):
                    await self.batches.put(page[start : start + size])
        finally:
            for _ in range(self.provider.max_concurrency):
                await self.batches.put(None)

    async def work(self) -> None:
        while (batch := await self.batches.get()) is not None:
            if self.failures:
                continue  # drain: the sweep stops at the first failure
            try:
                written = await self.check(batch)
            except JobError as exc:
                self.failures.append(exc)
                continue
            self.counts.checked += len(written.updates)
            self.counts.changed += len(written.changes)
            self.counts.finished += sum(
                1 for row in written.updates if row["state"] is not OrderState.ACTIVE
            )
            if self.progress is not None:
                self.progress(self.counts.checked, self.counts.due)

    async def check(self, batch: list[tuple[int, object]]) -> StatusPlan:
        """One batch of (id, provider order id as stored): ask, then plan and write in one
        go. An id that is no id (a consumer's row) is not sent; the planner sets it aside."""
        asked_at = self.ctx.now()
        ids = [poid for _, poid in batch if _is_order_id(poid)]
        answers = await self.ask(ids) if ids else {}

        def plan(rows: list[Order]) -> StatusPlan:
            return plan_status_batch(
                rows,
                answers,
                self.ctx.now(),
                base=self.provider.orders_interval,
                give_up_after=self.provider.give_up_after,
            )

        async with self.write_lock:
            return await self.ctx.db(
                self.ctx.storage.apply_status_answers, [i for i, _ in batch], asked_at, plan
            )

    async def call(self, ids: list[int]) -> Answers:
        self.counts.calls += 1
        return await self.ctx.client.statuses(ids)

    async def ask(self, ids: list[int]) -> Answers:
        try:
            return await self.call(ids)
        except (RefusedError, MalformedReplyError) as exc:
            return await self.narrow(ids, exc)

    async def narrow(self, ids: list[int], error: ProviderError) -> Answers:
        """A call that failed as a whole: find the order it fails on by halving it, so that
        one order the provider chokes on does not stop every other order of the batch.
        When both halves fail too, it is the provider, not an order: the error stands."""
        if len(ids) == 1:
            return {ids[0]: OrderLookupError(f"the provider fails on this order: {error.detail}")}
        middle = len(ids) // 2
        answers: dict[int, Answer] = {}
        failed: list[tuple[list[int], ProviderError]] = []
        for half in (ids[:middle], ids[middle:]):
            try:
                answers |= await self.call(half)
            except (RefusedError, MalformedReplyError) as half_error:
                failed.append((half, half_error))
        if len(failed) == 2:
            raise error
        for half, why in failed:
            answers |= await self.narrow(half, why)
        return answers
