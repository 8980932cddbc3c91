"""Status sync: batched multi-status calls for every due active order.

``sync_statuses`` streams due orders from the database one batch at a time (memory does
not grow with the number of orders), keeps up to ``max_concurrency`` status calls in
flight, and writes each batch in one transaction; ``lifecycle.plan_status_batch`` decides,
inside that transaction, what the answers change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from syncd.errors import JobError, MalformedReplyError, ProviderError, RefusedError
from syncd.jobs.context import JobContext
from syncd.lifecycle import MAX_BACKOFF, Answer, is_whole, plan_status_batch
from syncd.models import Order, OrderLookupError, OrderState
from syncd.plans import StatusPlan

Answers = Mapping[int, Answer]
Progress = Callable[[int, int], None]  # (checked so far, due at the start)


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
                1 for update in written.updates if update.state is not OrderState.ACTIVE
            )
            if self.progress is not None:
                self.progress(self.counts.checked, self.counts.due)

    async def check(self, batch: list[tuple[int, object]]) -> StatusPlan:
        """One batch of (id, provider order id as stored): ask, then plan and write in one
        go. An id that is no id (a consumer's row) is not sent; the planner sets it aside."""
        asked_at = self.ctx.now()
        ids = [poid for _, poid in batch if is_whole(poid)]
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
