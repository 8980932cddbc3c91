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

from syncd.errors import (
    JobError,
    MalformedReplyError,
    ProviderError,
    RefusedError,
    UnansweredError,
)
from syncd.jobs.context import JobContext
from syncd.lifecycle import MAX_BACKOFF, StatusJudge, is_whole
from syncd.models import Answer, OrderLookupError, OrderState

Answers = Mapping[int, Answer]
Progress = Callable[[int, int], None]  # (checked so far, due at the start)


@dataclass
class SweepCounts:
    due: int = 0
    checked: int = 0
    changed: int = 0
    finished: int = 0  # done: the provider says they are over
    given_up: int = 0  # missing or abandoned: syncd stopped tracking them
    calls: int = 0

    def summary(self) -> str:
        given_up = f", {self.given_up} no longer tracked" if self.given_up else ""
        return (
            f"checked {self.checked} of {self.due} due in {self.calls} calls, "
            f"{self.changed} changed, {self.finished} finished{given_up}"
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


_Answered = tuple[list[int], datetime, Answers]  # local ids, when asked, the answers


class _Sweep:
    """A producer reads due orders a page at a time; ``max_concurrency`` askers each send
    one batch and hand its answers to one writer, which plans and writes them batch by
    batch. The askers go on asking while a batch is written, so the provider always has
    ``max_concurrency`` calls in flight; a writer that falls behind holds them back (its
    queue is short), so answers never pile up in memory."""

    def __init__(
        self, ctx: JobContext, due_before: datetime, counts: SweepCounts, progress: Progress | None
    ) -> None:
        self.ctx = ctx
        self.provider = ctx.provider
        self.due_before = due_before
        self.counts = counts
        self.progress = progress
        concurrency = self.provider.max_concurrency
        self.batches: asyncio.Queue[list[tuple[int, object]] | None] = asyncio.Queue(concurrency)
        self.answered: asyncio.Queue[_Answered | None] = asyncio.Queue(concurrency)
        self.failures: list[JobError] = []
        self.write_failed = False
        self.provider_answered = False  # the provider answered a status call of this sweep

    async def run(self) -> SweepCounts:
        askers = [self.ask_batches() for _ in range(self.provider.max_concurrency)]

        async def ask_all() -> None:
            try:
                await asyncio.gather(self.produce(), *askers)
            finally:
                await self.answered.put(None)

        await asyncio.gather(ask_all(), self.write())
        if self.failures:
            raise self.failures[0]
        return self.counts

    async def produce(self) -> None:
        size = self.provider.status_batch_size
        cursor = None
        try:
            while not self.failures and not self.ctx.stop_requested:
                # One read fills every asker: fewer queries and thread hops per order.
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

    async def ask_batches(self) -> None:
        """One batch of (id, provider order id as stored) at a time: ask, hand over. An id
        that is no id (a consumer's row) is not sent; the planner sets it aside."""
        while (batch := await self.batches.get()) is not None:
            if self.failures:
                continue  # drain: the sweep stops at the first failure
            asked_at = self.ctx.now()
            ids = [poid for _, poid in batch if is_whole(poid)]
            try:
                answers = await self.ask(ids) if ids else {}
            except JobError as exc:
                self.failures.append(exc)
                continue
            await self.answered.put(([i for i, _ in batch], asked_at, answers))

    async def write(self) -> None:
        """Plan and write each answered batch in its own transaction, in turn. The batches
        answered before a failure are still written."""
        while (answered := await self.answered.get()) is not None:
            order_ids, asked_at, answers = answered
            if self.write_failed:
                continue  # the database failed, or the lease is gone: the rest waits

            judge = StatusJudge(
                answers,
                self.ctx.now,
                base=self.provider.orders_interval,
                give_up_after=self.provider.give_up_after,
            )
            try:
                written = await self.ctx.db(
                    self.ctx.storage.apply_status_answers, order_ids, asked_at, judge
                )
            except JobError as exc:
                self.failures.append(exc)
                self.write_failed = True
                continue
            self.counts.checked += len(written.updates) + written.repeated
            self.counts.changed += len(written.changes)
            for update in written.updates:
                if update.state is OrderState.DONE:
                    self.counts.finished += 1
                elif update.state is not OrderState.ACTIVE:
                    self.counts.given_up += 1
            if self.progress is not None:
                self.progress(self.counts.checked, self.counts.due)

    async def call(self, ids: list[int]) -> Answers:
        self.counts.calls += 1
        answers = await self.ctx.client.statuses(ids)
        self.provider_answered = True
        return answers

    async def ask(self, ids: list[int]) -> Answers:
        try:
            return await self.call(ids)
        except (RefusedError, MalformedReplyError) as exc:
            if len(ids) == 1 and not self.provider_answered:
                # A batch of one order (the last of a sweep, or the only one due) that
                # fails with no other answer to compare: nothing says it is the order's
                # fault rather than the provider's, so no order is blamed for it.
                raise
            if isinstance(exc, UnansweredError) and len(ids) > 1:
                # Not one order of several answered: the provider failing, not an order
                # it chokes on. Halving would only end in blaming orders one by one.
                raise
            return await self.narrow(ids, exc)

    async def narrow(self, ids: list[int], error: ProviderError) -> Answers:
        """A call that failed as a whole: find the order it fails on by halving it, so that
        one order the provider chokes on does not stop every other order of the batch.
        When both halves fail too, it is the provider, not an order: the error stands. A
        half whose reply answers none of its orders (``UnansweredError``) fails like a
        refused one."""
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
