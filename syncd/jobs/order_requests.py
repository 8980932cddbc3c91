"""Refills and cancellations: send what is queued, exactly once, and track refills.

Run by the orders job after it submits orders (and by ``syncd order refill`` /
``cancel`` for the requests they queue). Queued requests of one kind are judged and
the one a call carries (``SENT_PER_CALL``) is committed ``submitting`` before the call
leaves; the answer settles it (``syncd.order_requests``). A call that fails stops
sending for this pass; what it settled is written first. Nothing is sent while an order
or request of the provider is in flight, whatever process sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from syncd import order_requests as rules
from syncd import send_pause
from syncd.deadlines import farthest_lease
from syncd.errors import JobError, ProviderError, StorageError
from syncd.jobs.context import JobContext
from syncd.jobs.submit import paused_failure as _paused
from syncd.jobs.submit import probe_trial, submission_lease
from syncd.models import RefillAnswer, RequestAnswer, RequestKind, UnreadableAnswer
from syncd.order_requests import Request, RequestState, Step
from syncd.process import owner, owner_is_gone


@dataclass
class RequestCounts:
    sent: dict[RequestState, int] = field(default_factory=dict)  # by the state each ended in
    rejected: int = 0  # by validation, nothing sent
    recovered: int = 0  # ambiguous after a crash
    checked: int = 0  # refills whose status was asked
    paused: int = 0  # left queued because sending to the provider is paused
    # Left queued, untouched, because another call to the provider was in flight.
    in_flight: int = 0
    failure: JobError | None = None

    def summary(self) -> str:
        parts = [f"{n} {state}" for state, n in sorted(self.sent.items()) if n]
        if self.rejected:
            parts.append(f"{self.rejected} rejected before sending")
        if self.recovered:
            parts.append(f"{self.recovered} ambiguous after a crash")
        if self.checked:
            parts.append(f"{self.checked} refills checked")
        if self.paused:
            parts.append(f"{self.paused} paused")
        if self.in_flight:
            parts.append("the rest wait for another call in flight")
        return "requests: " + ", ".join(parts) if parts else ""


async def send_requests(
    ctx: JobContext, *, only: Sequence[int] | None = None, counts: RequestCounts | None = None
) -> RequestCounts:
    counts = counts or RequestCounts()
    storage, name = ctx.storage, ctx.provider.name
    for key, (ids, outcomes) in list(_UNRECORDED.items()):
        if key[0] == name:  # answers this process could not write at the last pass
            await _finish(ctx, ids, outcomes)
            _UNRECORDED.pop(key, None)
    is_gone = partial(owner_is_gone, longest=farthest_lease())
    recover = partial(rules.plan_recovery, is_gone=is_gone)
    counts.recovered += len(await ctx.db(storage.recover_requests, name, ctx.now(), recover))
    if only is None:
        strays = await ctx.db(storage.apply_stray_requests, ctx.now(), rules.plan_strays)
        counts.rejected += strays
    lease = submission_lease(ctx)
    probed = False  # the harmless call before a paused provider's trial succeeded
    probe_failed: str | None = None  # why it failed: the waiting requests tell it
    probe_failure: JobError | None = None
    # One sender at a time per provider in this process, shared with the order submits:
    # the daemon's jobs take turns instead of finding each other's call in flight.
    turn = ctx.submit_lock or asyncio.Lock()
    for kind in RequestKind:
        offered = kind.value in ctx.client.dialect.offers
        # After a failed probe, one more claim writes why into the waiting rows.
        while not ctx.stop_requested and counts.failure in (None, probe_failure):
            async with turn:
                now = ctx.now()
                plan = partial(
                    rules.plan_claims, kind=kind, provider=name, offered=offered,
                    owner=owner(), deadline=now + lease, probed=probed, probe_failed=probe_failed,
                )  # fmt: skip
                claimed = await ctx.db(
                    storage.claim_requests, name, kind, now=now, limit=rules.MAX_PER_CALL,
                    plan=plan, only=only,
                )  # fmt: skip
                counts.rejected += len(claimed.rejected)
                for request in claimed.rejected:
                    ctx.log.info("request.rejected", request_id=request.id, kind=kind.value)
                if claimed.in_flight and not claimed.send:
                    # Another process's call is in flight: a later pass sends these.
                    counts.in_flight += len(claimed.in_flight)
                    break
                if claimed.paused and not claimed.send:
                    pause = await ctx.db(storage.send_pause, name)
                    gate = send_pause.gate(pause, ctx.now())
                    if probed or probe_failed is not None or gate is not send_pause.Gate.TRIAL:
                        counts.paused += len(claimed.paused)
                        break
                    counts.failure, probe_failed = await probe_trial(ctx)
                    probe_failure = counts.failure if probe_failed is not None else None
                    probed = counts.failure is None
                    continue
                if not claimed.send:
                    break
                await _send_batch(ctx, kind, claimed.send, counts)
    if counts.paused and counts.failure is None and probe_failed is None:
        counts.failure = await _paused(ctx, f"{counts.paused} queued requests wait")
    return counts


async def _send_batch(
    ctx: JobContext, kind: RequestKind, send: list[tuple[Request, int]], counts: RequestCounts
) -> None:
    """One call for the claimed requests, and its answers recorded (with the send pause
    they make)."""
    outcomes = await _send(ctx, kind, send, counts)
    # Logged before anything can wait on the database: whatever happens next, what the
    # provider answered (a refill's id above all) is on record.
    for request, step in outcomes:
        ctx.log.info(
            "request.answered", request_id=request.id, order_id=request.order_id,
            kind=kind.value, state=str(step.update.state),
            provider_request_id=step.update.written().get("provider_request_id"),
        )  # fmt: skip
    ids = [request.id for request, _ in outcomes]
    try:
        await _finish(ctx, ids, outcomes)
    except StorageError as exc:
        # Written again at the next pass of this process: until then the rows stay
        # `submitting` under it (nothing more is sent to the provider meanwhile); if it
        # dies first, recovery makes them ambiguous and the log line holds the answers.
        _UNRECORDED[(ctx.provider.name, tuple(ids))] = (ids, outcomes)
        raise StorageError(_unrecorded(outcomes, exc.detail)) from None
    unknown = []
    for request, step in outcomes:
        state = step.update.state
        if isinstance(state, RequestState):
            counts.sent[state] = counts.sent.get(state, 0) + 1
        if state is RequestState.AMBIGUOUS:
            unknown.append(request)
            ctx.log.warning(
                "request.ambiguous", request_id=request.id, order_id=request.order_id,
                kind=kind.value, reason=step.update.written().get("error"),
            )  # fmt: skip
        else:
            ctx.log.info("request.sent", request_id=request.id, kind=kind.value, state=str(state))
    if unknown:
        first = unknown[0]
        what = f"the {kind.value} of order {first.order_id} (request {first.id}) is ambiguous"
        counts.failure = await _paused(ctx, what)


# Answers this process could not write (the database failed right after the provider
# answered), by (provider, request ids): written at the start of its next requests pass.
_UNRECORDED: dict[tuple[str, tuple[int, ...]], tuple[list[int], list[tuple[Request, Step]]]] = {}


async def _finish(ctx: JobContext, ids: list[int], outcomes: list[tuple[Request, Step]]) -> None:
    """Write what the provider answered for the requests of one call, with the send
    pause it makes."""
    answered = partial(rules.plan_answers, steps={r.id: step for r, step in outcomes})
    await ctx.db(
        ctx.storage.finish_requests, ids, owner(), ctx.now(), answered,
        provider=ctx.provider.name, pause=rules.pause_after_call,
    )  # fmt: skip


async def _send(
    ctx: JobContext, kind: RequestKind, send: list[tuple[Request, int]], counts: RequestCounts
) -> list[tuple[Request, Step]]:
    ids = list(dict.fromkeys(poid for _, poid in send))
    ask = ctx.client.refill if kind is RequestKind.REFILL else ctx.client.cancel
    try:
        answers: dict[int, RequestAnswer] = await ask(ids)
    except ProviderError as exc:
        counts.failure = exc
        now = ctx.now()
        return [(request, rules.failed(request, exc, now)) for request, _ in send]
    now = ctx.now()
    base = ctx.provider.orders_interval
    return [
        (request, rules.answered(request, answers.get(poid), now, base)) for request, poid in send
    ]


def _unrecorded(outcomes: list[tuple[Request, Step]], reason: str) -> str:
    """What the provider answered, for an error line when the database failed to take
    it: the requests stay ``submitting`` under this process, and become ambiguous once
    it is gone; this line is then the only record of a refill's id."""
    said = []
    for request, step in outcomes:
        written = step.update.written()
        refill = written.get("provider_request_id")
        said.append(
            f"request {request.id} (order {request.order_id}): {written.get('state')}"
            + (f", refill {refill}" if refill is not None else "")
        )
    return f"the database failed while recording the provider's answers ({reason}): " + "; ".join(
        said
    )


async def track_refills(ctx: JobContext, counts: RequestCounts) -> None:
    """Ask the status of every refill due a check, 100 a call, until none is due."""
    while not ctx.stop_requested:
        due = await ctx.db(
            ctx.storage.due_refills, ctx.provider.name, ctx.now(), rules.MAX_PER_CALL
        )
        if not due:
            return
        asked = list(dict.fromkeys(r for _, r in due if r is not None))
        answers = await ctx.client.refill_statuses(asked) if asked else {}
        unreadable = UnreadableAnswer("provider_request_id holds no refill id: not asked")
        by_request: dict[int, RefillAnswer | None] = {
            request_id: unreadable if refill_id is None else answers.get(refill_id)
            for request_id, refill_id in due
        }
        plan = partial(
            rules.plan_refill_checks, answers=by_request, base=ctx.provider.orders_interval
        )
        await ctx.db(ctx.storage.apply_refill_statuses, list(by_request), ctx.now(), plan)
        counts.checked += len(due)
        if len(due) < rules.MAX_PER_CALL:
            return


__all__ = ["RequestCounts", "send_requests", "track_refills"]
