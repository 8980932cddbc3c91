"""Submitting queued orders exactly once.

``submit_queued`` is the pipeline: claim one order (committed as ``submitting`` before any
byte leaves), send it, record the outcome. What each step writes is decided in
``syncd.lifecycle`` (``check_order``, ``claim``, ``outcome_of``, ``finish``). An order
whose fate is unknown becomes ``ambiguous`` and is never sent again by syncd.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import structlog

from syncd import deadlines, send_pause
from syncd.deadlines import farthest_lease
from syncd.errors import (
    JobError,
    ProviderError,
    RateLimitedError,
    SendInFlightError,
    SendPausedError,
    StorageError,
)
from syncd.jobs.context import JobContext
from syncd.lifecycle import (
    ambiguous_alert,
    check_order,
    finish,
    outcome_of,
    plan_claims,
    recover,
)
from syncd.models import Order, OrderState
from syncd.plans import AlertIntent, Submission, SubmitOutcome, Verdict
from syncd.process import owner, owner_is_gone
from syncd.provider.client import watch_attempts

# Queued orders judged in one transaction at most: a weekend's orders waiting for funds
# are looked at again in a few transactions, while the submit job still gets its turn
# between two of them.
JUDGED_AT_ONCE = 200


def submission_lease(ctx: JobContext) -> timedelta:
    """How long a submission is given before another host may call it ambiguous
    (``syncd.deadlines``). On this host the sender's pid is checked instead."""
    return deadlines.submission_lease(ctx.client.longest_call())


@dataclass
class SubmitCounts:
    """What a pass did, by what the database holds: each sent order counts in the state
    its outcome was recorded in."""

    accepted: list[int] = field(default_factory=list)
    rejected: int = 0
    waiting: int = 0
    held: int = 0
    requeued: int = 0
    ambiguous: int = 0
    paused: int = 0  # left queued because sending to the provider is paused
    # Left queued, untouched, because another call to the provider was in flight (another
    # process's: this process sends one at a time anyway).
    in_flight: int = 0
    failure: JobError | None = None  # why submitting stopped early, or must wait

    def sent(self, order_id: int, recorded: OrderState | None) -> None:
        match recorded:
            case OrderState.ACTIVE:
                self.accepted.append(order_id)
            case OrderState.REJECTED:
                self.rejected += 1
            case OrderState.QUEUED:
                self.requeued += 1
            case OrderState.AMBIGUOUS:
                self.ambiguous += 1

    def summary(self) -> str:
        parts = [f"{len(self.accepted)} submitted"]
        for name in ("rejected", "waiting", "held", "requeued", "ambiguous", "paused"):
            if count := getattr(self, name):
                parts.append(f"{count} {name}")
        if self.in_flight:
            parts.append("the rest wait for another process's call in flight")
        return ", ".join(parts)


async def submit_queued(
    ctx: JobContext, *, only: int | None = None, fresh_only: bool = False
) -> SubmitCounts:
    """Send the provider's queued orders (or just order ``only``), oldest first.

    Stops at the first failure that says the provider cannot take orders right now (it
    is unreachable, rejects the token, or left an order's fate unknown): sending the
    next one would only add to the damage. An unknown outcome also pauses sending to the
    provider (``syncd.send_pause``): later passes send nothing until the pause is due,
    then one order alone once ``balance`` answers; while orders wait on the pause, the
    pass fails with it.
    """
    return await _submit_queued(ctx, only, fresh_only)


async def submit_orders(ctx: JobContext) -> str:
    """The submit job: settle what a dead sender left ``submitting``, send what is queued,
    and fail the job when sending had to stop. The daemon runs it when a queue changes and
    when it takes a provider over (a dead holder's orders are settled then, not at the
    next orders pass)."""
    recovered = await recover_submissions(ctx)
    # Not the orders waiting for funds or held by the price guard (maybe thousands over a
    # weekend without money): the orders pass tries those again at its interval, not
    # every time a new order arrives. One put back after a failed attempt is tried again:
    # the job then fails while the provider still cannot take it.
    counts = await submit_queued(ctx, fresh_only=True)
    if counts.failure is not None:
        raise counts.failure
    if counts.in_flight:
        # Another process (a `syncd order add`, a one-shot pass, a second instance) has a
        # call in flight: no failure, and the pickup runs this job again shortly.
        raise SendInFlightError(f"{counts.summary()}: {send_pause.in_flight(ctx.provider.name)}")
    return counts.summary() + (f", {len(recovered)} ambiguous after a crash" if recovered else "")


async def recover_submissions(ctx: JobContext) -> list[int]:
    """Orders left ``submitting`` by a sender that died become ``ambiguous``, with an alert."""
    plan = partial(recover, is_gone=partial(owner_is_gone, longest=farthest_lease()))
    recovered = await ctx.db(ctx.storage.recover_submissions, ctx.provider.name, ctx.now(), plan)
    for order_id in recovered:
        ctx.log.warning("order.ambiguous", order_id=order_id, reason="sender died")
    return recovered


async def _submit_queued(ctx: JobContext, only: int | None, fresh_only: bool) -> SubmitCounts:
    counts = SubmitCounts()
    name = ctx.provider.name
    after = 0
    for (provider, order_id), (outcome, alert) in list(_UNRECORDED.items()):
        if provider == name:
            await _record(ctx, order_id, outcome, alert)
    lease = submission_lease(ctx)
    # One submitter at a time per provider in this process, taken for each order, not
    # for a whole pass: the daemon's submit job sends a new order between two orders
    # the orders pass judges (thousands may be waiting for funds).
    turn = ctx.submit_lock or asyncio.Lock()
    decide = partial(
        check_order,
        guard=ctx.provider.price_guard,
        dialect=ctx.client.dialect,
        today=ctx.now().date(),
    )
    if only is None and await ctx.db(ctx.storage.catalog_never_synced, name):
        # Every order would be rejected as naming an unknown package: they wait for the
        # first catalog sync instead (`syncd order add` refuses before that).
        return counts
    probed = False  # the harmless call before a paused provider's trial succeeded
    probe_failed: str | None = None  # why it failed: the waiting orders tell it
    # Whether a trial is due is asked once a pass, not before every order sent: a pause
    # that falls due during a pass (its orders were claimed as waiting) gets its trial
    # at the next one, which the pickup runs when the pause is due.
    trial_looked = False
    # An orders pass sends what was queued when it began: while consumers queue faster
    # than the provider takes orders, it would send forever and never sync a status.
    # Later orders are the submit job's (the daemon's pickup), or the next pass's.
    through = None if only is not None or fresh_only else await ctx.db(ctx.storage.newest_order_id)
    while not ctx.stop_requested:
        try:  # no order is claimed while the provider asks for a pause
            await ctx.client.pace.wait_pause(ctx.client.longest_pause)
        except RateLimitedError as exc:
            counts.failure = exc
            return counts
        async with turn:
            if not trial_looked and await _trial_due(ctx):
                counts.failure, probe_failed = await probe_trial(ctx)
                if isinstance(counts.failure, RateLimitedError):
                    return counts
                probed = counts.failure is None
            trial_looked = True
            now = ctx.now()
            plan = partial(
                plan_claims, decide=decide, owner=owner(), deadline=now + lease, probed=probed,
                probe_failed=probe_failed,
            )  # fmt: skip
            judged = await ctx.db(
                ctx.storage.claim_queued, name, after=after, only=only, now=now, plan=plan,
                fresh_only=fresh_only, through=through, limit=JUDGED_AT_ONCE,
            )  # fmt: skip
            if not judged:
                break
            after = judged[-1][0].id
            _count(ctx, judged, counts)
            order, decision = judged[-1]
            if (decision.reason or "").startswith(send_pause.IN_FLIGHT):
                break  # one call at a time per provider: a later pass sends it
            if decision.verdict is Verdict.SEND and await _send_one(ctx, order, decision, counts):
                return counts
    if probe_failed is not None:
        return counts  # failed with the probe; the waiting orders tell why
    if counts.paused and counts.failure is None:
        counts.failure = await paused_failure(ctx, f"{counts.paused} queued orders wait")
    return counts


def _count(ctx: JobContext, judged: list[tuple[Order, Submission]], counts: SubmitCounts) -> None:
    """Count (and log) the orders judged and not sent."""
    for order, decision in judged:
        if decision.verdict is Verdict.REJECT:
            counts.rejected += 1
            ctx.log.info("order.rejected", order_id=order.id, reason=decision.reason)
        elif decision.verdict is Verdict.WAIT:
            if (decision.reason or "").startswith(send_pause.IN_FLIGHT):
                counts.in_flight += 1
            elif (decision.reason or "").startswith(send_pause.WAITING):
                counts.paused += 1
            else:
                counts.waiting += 1
        elif decision.verdict is Verdict.HOLD:
            counts.held += 1
            ctx.log.info("order.held", order_id=order.id, reason=decision.reason)


async def _send_one(
    ctx: JobContext, order: Order, decision: Submission, counts: SubmitCounts
) -> bool:
    """Send one claimed order (the fields its verdict carries) and record its outcome;
    whether the pass must stop."""
    assert decision.fields is not None  # a verdict to send carries what it sends
    outcome, failure = await _send(ctx, order, decision.fields)
    alert = (
        ambiguous_alert(order, outcome.error or "")
        if outcome.state is OrderState.AMBIGUOUS
        else None
    )
    recorded = await _record(ctx, order.id, outcome, alert)
    counts.sent(order.id, recorded)
    if recorded is OrderState.AMBIGUOUS:
        # What the database holds, which may not be what the provider said: an order id
        # another local order holds already is no order taken.
        stored = await ctx.db(ctx.storage.order, order.id)
        error = stored.error if stored is not None else outcome.error
        ctx.log.warning("order.ambiguous", order_id=order.id, reason=error)
        counts.failure = await paused_failure(ctx, f"order {order.id} is ambiguous ({error})")
        return True
    if recorded is not None:
        ctx.log.info(
            "order.submitted", order_id=order.id, state=recorded.value,
            provider_order_id=outcome.provider_order_id, error=outcome.error,
        )  # fmt: skip
    if failure is not None:
        counts.failure = failure
        return True
    return False


async def _trial_due(ctx: JobContext) -> bool:
    """Whether the provider's pause is due for its trial and something is queued."""
    pause = await ctx.db(ctx.storage.send_pause, ctx.provider.name)
    if send_pause.gate(pause, ctx.now()) is not send_pause.Gate.TRIAL:
        return False
    return bool(await ctx.db(ctx.storage.queued_fingerprints, [ctx.provider.name]))


async def probe_trial(ctx: JobContext) -> tuple[JobError | None, str | None]:
    """The harmless call a paused provider must answer before its trial: (None, None)
    when it answered, else the failure of the pass and, unless the provider only asked
    for a pause (429), why the call failed: the rows left waiting carry it in their
    ``error``."""
    try:
        await ctx.client.balance()
    except RateLimitedError as exc:
        return exc, None
    except ProviderError as exc:
        what = f"the balance call before a trial failed: {exc.detail}"
        return await paused_failure(ctx, what), exc.detail
    ctx.log.info("send.trial", reason="the balance call answered: one goes alone")
    return None, None


async def paused_failure(ctx: JobContext, what: str) -> SendPausedError:
    """The failure of a pass that stopped or waits on the provider's send pause."""
    pause = await ctx.db(ctx.storage.send_pause, ctx.provider.name)
    now = ctx.now()
    if not pause.paused:
        return SendPausedError(what)
    text = send_pause.paused_text(ctx.provider.name, pause, now)
    return SendPausedError(f"{what}: {text}", resume_at=pause.resume_at)


# Outcomes this process could not write (the database failed right after the provider
# answered), written again at the start of the next submission pass. Until then the row
# stays `submitting` under this live process; if the process dies first, the next run
# makes it ambiguous, and the log line below holds the provider's order id.
_UNRECORDED: dict[tuple[str, int], tuple[SubmitOutcome, AlertIntent | None]] = {}


async def _record(
    ctx: JobContext, order_id: int, outcome: SubmitOutcome, alert: AlertIntent | None
) -> OrderState | None:
    """Record a sent order's outcome; the state written (None: the row was no longer
    this sender's to write)."""
    key = (ctx.provider.name, order_id)
    try:
        recorded = await ctx.db(
            ctx.storage.finish_submission,
            order_id, owner(), outcome, now=ctx.now(), alert=alert, plan=finish,
        )  # fmt: skip
    except asyncio.CancelledError:
        # Shutting down while the database is locked: what the provider said goes with
        # this process, so the log must carry it (the row turns ambiguous on restart).
        _log_unrecorded(ctx, order_id, outcome, "shutting down")
        raise
    except StorageError as exc:
        _UNRECORDED[key] = (outcome, alert)
        _log_unrecorded(ctx, order_id, outcome, exc.detail)
        # The message is all a one-shot command shows without -v: it must carry what the
        # provider said, above all the id of an order it took.
        raise StorageError(unrecorded(ctx.provider.name, order_id, outcome, exc.detail)) from None
    _UNRECORDED.pop(key, None)
    if recorded is None and outcome.state is OrderState.ACTIVE:
        ctx.log.error(
            "order.answer_after_settlement",
            order_id=order_id,
            provider_order_id=outcome.provider_order_id,
        )
    return recorded


def _log_unrecorded(ctx: JobContext, order_id: int, outcome: SubmitOutcome, why: str) -> None:
    ctx.log.error(
        "order.outcome_unrecorded",
        order_id=order_id,
        state=outcome.state.value,
        provider_order_id=outcome.provider_order_id,
        error=outcome.error,
        reason=why,
    )


def unrecorded(provider: str, order_id: int, outcome: SubmitOutcome, reason: str) -> str:
    """Why an order's outcome is not in the database yet, and what it was."""
    if outcome.state is OrderState.ACTIVE:
        what = f"{provider} took order {order_id} as its order {outcome.provider_order_id}"
        fallback = (
            f"; should this process stop first: syncd order resolve {order_id} "
            f"--provider-order {outcome.provider_order_id}"
        )
    else:
        what = f"order {order_id} is {outcome.state.value} ({outcome.error})"
        fallback = ""
    return (
        f"{what}, but the database failed while recording it ({reason}); the next orders "
        f"pass of this process records it{fallback}"
    )


async def _send(
    ctx: JobContext, order: Order, fields: Mapping[str, str]
) -> tuple[SubmitOutcome, ProviderError | None]:
    """Send one claimed order: its outcome, and the error that should stop the loop."""
    assert order.service_id is not None
    try:
        with (
            structlog.contextvars.bound_contextvars(order_id=order.id),
            watch_attempts() as began_sending,
        ):
            try:
                provider_order_id = await ctx.client.add(package=order.service_id, fields=fields)
            except asyncio.CancelledError:
                # Stopped (SIGTERM, Ctrl-C) while it waited for its turn: nothing left,
                # so it goes back to the queue rather than turning ambiguous on restart.
                if not began_sending():
                    unsent = SubmitOutcome(OrderState.QUEUED, error="not sent: syncd stopped")
                    await _record(ctx, order.id, unsent, None)
                raise
    except ProviderError as exc:
        outcome = outcome_of(exc)
        return outcome, (None if outcome.state is OrderState.REJECTED else exc)
    return SubmitOutcome(OrderState.ACTIVE, provider_order_id=provider_order_id), None
