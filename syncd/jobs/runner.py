"""The job coordinator: which jobs there are, and one runner per provider that runs them.

``JOBS`` is the one table of the jobs a provider has, in the order ``syncd sync all`` runs
them, with each one's interval; the daemon schedules from it, ``syncd sync`` runs from it.
Each job's entry point is ``<verb>_<thing>(ctx) -> str`` (``sync_catalog``,
``submit_orders``...): it fetches, hands its pure planner to one ``apply_...`` storage
call per transaction (the contract is on ``syncd.storage.Storage``), and returns a
one-line summary for people. The steps a job takes are named the same way
(``send_requests``, ``track_refills``); a "request" is a refill or a cancellation,
an HTTP exchange with a provider is a "call".

A ``ProviderRunner`` owns what every job of one provider needs (its client, whose calls
keep the provider's health, and the job context) and all the bookkeeping around a job:
the ``jobs`` row, the log context naming provider and job, and the log lines. It logs a
failure when a job starts failing and once when it recovers, not on every pass of a
provider that stays down (the repeats go to debug). A job that raises a ``JobError`` is
recorded and reported as a failed ``JobResult``; anything else is a bug: it is logged
with its traceback, and still recorded and reported as a failure naming the exception, so
that ``syncd status`` shows it and the other jobs and providers go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

import structlog

from syncd.clock import utcnow
from syncd.config import Config, ProviderConfig
from syncd.errors import (
    DatabaseGoneError,
    JobError,
    LeaseLostError,
    ProviderError,
    RateLimitedError,
    SendInFlightError,
    SendPausedError,
    StorageError,
)
from syncd.jobs.alerts import check, deliver_alerts
from syncd.jobs.balance import sync_balance
from syncd.jobs.catalog import sync_catalog
from syncd.jobs.context import JobContext
from syncd.jobs.health import HealthTracker, plan_health
from syncd.jobs.leases import keep_renewed, wait_for_lease
from syncd.jobs.order_requests import RequestCounts, send_requests
from syncd.jobs.orders import sync_orders
from syncd.jobs.submit import SubmitCounts, recover_submissions, submit_orders, submit_queued
from syncd.limits import Shared
from syncd.models import Lease
from syncd.process import settle_heap
from syncd.provider import DIALECTS, ProviderClient
from syncd.provider.pace import Decide, Pace

if TYPE_CHECKING:
    from syncd.metrics import Metrics
from syncd.storage import Storage, fenced

log = structlog.get_logger("syncd.jobs")
T = TypeVar("T")


@dataclass(frozen=True)
class JobSpec:
    """One job of a provider: what runs, and how often the daemon runs it."""

    name: str
    run: Callable[[JobContext], Awaitable[str]]
    interval: Callable[[ProviderConfig], timedelta]


JOBS: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec("catalog", sync_catalog, lambda p: p.catalog_interval),
        JobSpec("balance", sync_balance, lambda p: p.balance_interval),
        JobSpec("orders", sync_orders, lambda p: p.orders_interval),
    )
}
# Sending queued orders on its own, woken as soon as one is queued (``jobs.pickup``), so
# that a new order never waits behind a status sweep. Not run at an interval and not in
# ``syncd sync``: the orders job sends what is queued too, before its sweep.
SUBMIT = JobSpec("submit", submit_orders, lambda p: p.orders_interval)
ALERTS = "alerts"  # serves every provider: delivered after the provider jobs
# What `syncd sync all` runs, in this order.
SYNC_ORDER = (*JOBS, ALERTS)
ALERTS_INTERVAL = timedelta(seconds=30)
# Seconds until the pickup runs a submit job again that left orders queued because
# another process's call to the provider was in flight (a call takes seconds).
IN_FLIGHT_RETRY = 2.0


@dataclass(frozen=True)
class JobResult:
    provider: str | None  # None for the alerts job, which serves every provider
    job: str
    ok: bool
    message: str  # a summary on success, the reason on failure
    # A failure because sending to the provider is paused: when the pause is due; a
    # submit run deferred while another process's call was in flight: when to run again.
    resume_at: datetime | None = None


class StoredLedger:
    """A provider's pace kept in the database: every process sharing it takes its turns
    from the same rows (``syncd.storage.pacing``)."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def apply(self, provider: str, keys: Sequence[str], decide: Decide[T]) -> T:
        return await asyncio.to_thread(self._storage.apply_pace, provider, keys, decide)

    async def look(self, provider: str) -> tuple[Shared, float]:
        return await asyncio.to_thread(self._storage.look_pace, provider)


def shared_pace(provider: ProviderConfig, storage: Storage | None) -> Pace:
    """The provider's pace, kept in the database when there is one."""
    return Pace(
        provider.name,
        provider.requests_per_minute,
        limits=dict(provider.limits),
        ledger=StoredLedger(storage) if storage is not None else None,
        concurrency=provider.max_concurrency + 1,
    )


def make_client(
    provider: ProviderConfig,
    storage: Storage | None = None,
    clock: Callable[[], datetime] = utcnow,
    pace: Pace | None = None,
    metrics: Metrics | None = None,
) -> ProviderClient:
    """A client for ``provider``; with ``storage``, every call's outcome keeps the
    provider's health (and raises provider.down / up / auth_failed / throttled /
    unthrottled) and the provider's pace is kept there, shared with every process.
    ``pace`` is shared by every client of the provider in this process; without one, the
    client has its own."""
    observer = None
    if storage is not None:

        async def record(name: str, error: ProviderError | None, now: datetime) -> None:
            decide = partial(
                plan_health, name, error=error, now=now, throttled_after=provider.throttled_after
            )
            await asyncio.to_thread(
                partial(storage.apply_health, name, now, decide, answered=error is None)
            )

        observer = HealthTracker(provider.name, record, clock)
    return ProviderClient(
        name=provider.name,
        url=provider.url,
        token=provider.token,
        dialect=DIALECTS[provider.dialect],
        timeout=provider.timeout.total_seconds(),
        max_connections=provider.max_concurrency + 1,
        observer=observer,
        pace=pace or shared_pace(provider, storage),
        on_request=partial(metrics.request_done, provider.name) if metrics else None,
    )


class ProviderRunner:
    """Runs the jobs of one provider, for as long as it is open (``async with``)."""

    def __init__(
        self,
        provider: ProviderConfig,
        storage: Storage,
        *,
        clock: Callable[[], datetime] = utcnow,
        force: bool = False,
        stopping: asyncio.Event | None = None,
        progress: Callable[[int, int], None] | None = None,
        lease: Lease | None = None,
        submit_lock: asyncio.Lock | None = None,
        pace: Pace | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.provider = provider
        self.storage = storage
        self.lease = lease  # every write of its jobs checks it (fencing)
        self.client = make_client(provider, storage, clock, pace, metrics)
        settle_heap()  # everything a job needs exists now
        self.context = JobContext(
            provider, self.client, storage, force=force, clock=clock, stopping=stopping,
            progress=progress, submit_lock=submit_lock,
        )  # fmt: skip

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.client.aclose()

    async def run(self, job: str) -> JobResult:
        """One run of ``job``, recorded in ``jobs`` and logged."""
        # Every log line of the job, from any layer or worker thread, names provider and job.
        with (
            structlog.contextvars.bound_contextvars(provider=self.provider.name, job=job),
            self._fenced(),
        ):
            return await self._run(job)

    async def submit(self, order_id: int) -> SubmitCounts:
        """Send one queued order now (``syncd order add``), outside any job run."""
        with (
            structlog.contextvars.bound_contextvars(provider=self.provider.name, job=SUBMIT.name),
            self._fenced(),
        ):
            # A row a dead sender left `submitting` is settled first, as every pass does:
            # otherwise it would pass for a call in flight and hold this order back.
            await recover_submissions(self.context)
            return await submit_queued(self.context, only=order_id)

    async def send_requests(self, request_ids: Sequence[int]) -> RequestCounts:
        """Send these queued refills or cancellations now (``syncd order refill`` /
        ``cancel``), outside any job run."""
        with (
            structlog.contextvars.bound_contextvars(provider=self.provider.name, job="requests"),
            self._fenced(),
        ):
            await recover_submissions(self.context)  # as for an order, above
            return await send_requests(self.context, only=request_ids)

    def _fenced(self) -> AbstractContextManager[None]:
        return fenced(self.lease) if self.lease is not None else nullcontext()

    async def _run(self, job: str) -> JobResult:
        ctx = self.context
        try:
            await ctx.db(ctx.storage.record_job_start, self.provider.name, job, ctx.now())
            spec = SUBMIT if job == SUBMIT.name else JOBS[job]
            summary = await spec.run(ctx)
        except LeaseLostError as exc:
            return self._fenced_out(job, exc)
        except RateLimitedError as exc:
            return self._deferred(job, exc)
        except SendInFlightError as exc:
            return self._deferred(job, exc, again_in=IN_FLIGHT_RETRY)
        except SendPausedError as exc:
            failed = await self._failed(job, exc.detail)
            return replace(failed, resume_at=exc.resume_at) if not failed.ok else failed
        except JobError as exc:
            return await self._failed(job, exc.detail)  # the context names the provider
        except DatabaseGoneError:
            raise  # no failure of this job's: the process stops
        except Exception as exc:  # a bug: reported, recorded, and the daemon goes on
            reason = f"internal error ({type(exc).__name__}: {exc}); please report it"
            ctx.log.exception("job.bug", error=reason)
            return await self._failed(job, reason)
        try:
            recovered = await ctx.db(
                ctx.storage.record_job_success, self.provider.name, job, ctx.now()
            )
        except LeaseLostError as exc:
            return self._fenced_out(job, exc)
        except StorageError as exc:
            # The job's own writes are committed; only the bookkeeping row is late.
            ctx.log.error("job.record_failed", error=str(exc))
            recovered = False
        if recovered:
            ctx.log.info("job.recovered", summary=summary)
        ctx.log.info("job.finished", status="ok", summary=summary)
        return JobResult(self.provider.name, job, ok=True, message=summary)

    def _fenced_out(self, job: str, exc: LeaseLostError) -> JobResult:
        """Another instance works for this provider now: this run stops, writes nothing
        more (not even its ``jobs`` row, which is the new holder's), and is no failure of
        the provider's."""
        self.context.log.warning("job.fenced", reason=exc.detail)
        return JobResult(self.provider.name, job, ok=False, message=exc.detail)

    def _deferred(
        self, job: str, exc: RateLimitedError | SendInFlightError, again_in: float | None = None
    ) -> JobResult:
        """The provider asks for a longer pause than a call may wait, or another
        process's call to it is in flight: what is written stays written, the rest waits
        for the next pass (``again_in`` seconds: the daemon's pickup runs the submit job
        again then). No failure of the job (its ``jobs`` row keeps its last outcome), nor
        of the provider's health."""
        message = f"deferred: {exc.detail}"
        self.context.log.info("job.finished", status="deferred", reason=exc.detail)
        again = None if again_in is None else self.context.now() + timedelta(seconds=again_in)
        return JobResult(self.provider.name, job, ok=True, message=message, resume_at=again)

    async def _failed(self, job: str, reason: str) -> JobResult:
        ctx = self.context
        try:
            already = await ctx.db(
                ctx.storage.record_job_failure, self.provider.name, job, ctx.now(), reason
            )
        except LeaseLostError as exc:
            return self._fenced_out(job, exc)
        except StorageError as exc:
            ctx.log.error("job.record_failed", error=str(exc))
            already = False
        # A provider that stays down is logged once, when it starts failing; the repeats
        # would bury every other line of the journal.
        report = ctx.log.debug if already else ctx.log.warning
        report("job.finished", status="error", error=reason, failing_before=already)
        return JobResult(self.provider.name, job, ok=False, message=reason)


async def run_pass(
    config: Config,
    storage: Storage,
    jobs: Sequence[str],
    *,
    provider: str | None = None,
    force: bool = False,
    clock: Callable[[], datetime] = utcnow,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
    wait: float = 60.0,
) -> list[JobResult]:
    """One pass of ``jobs`` (in order) for each selected provider, providers in parallel;
    then, if asked, one ``alerts`` pass that delivers what the others raised.

    Each provider's jobs run under its lease, like a daemon's: when a running ``syncd
    run`` holds it, the pass waits up to ``wait`` seconds for it, then fails naming the
    holder."""
    selected = config.select(provider)
    await asyncio.to_thread(storage.register_providers, [(p.name, p.url) for p in config.providers])
    per_provider_jobs = [job for job in jobs if job != ALERTS]
    ttl = config.cluster.lease_ttl.total_seconds()

    async def for_provider(p: ProviderConfig) -> list[JobResult]:
        if not per_provider_jobs:
            return []
        lease = await wait_for_lease(storage, p.name, ttl, wait)
        if isinstance(lease, str):
            why = f"{p.name} is being worked on by {lease} (a running syncd); waited {wait:g}s"
            return [JobResult(p.name, job, ok=False, message=why) for job in per_provider_jobs]
        shows = progress(p.name) if progress is not None else None
        renewing = asyncio.create_task(keep_renewed(storage, lease, ttl))
        try:
            async with ProviderRunner(
                p, storage, clock=clock, force=force, progress=shows, lease=lease
            ) as runner:
                return [await runner.run(job) for job in per_provider_jobs]
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing
            # Not let go (the database went away): it runs out after its time anyway.
            with suppress(StorageError):
                await asyncio.to_thread(storage.release_lease, lease)

    per_provider = await asyncio.gather(*(for_provider(p) for p in selected))
    results = [result for results in per_provider for result in results]
    if ALERTS in jobs:
        results.append(await run_alerts(config, storage, clock))
    return results


async def run_alerts(
    config: Config, storage: Storage, clock: Callable[[], datetime] = utcnow
) -> JobResult:
    with structlog.contextvars.bound_contextvars(job=ALERTS):
        return await _run_alerts(config, storage, clock)


async def _run_alerts(config: Config, storage: Storage, clock: Callable[[], datetime]) -> JobResult:
    alerts_log = log
    try:
        counts = await deliver_alerts(
            storage, {w.name: w for w in config.webhooks}, clock, asyncio.to_thread
        )
        summary = check(counts)
    except JobError as exc:
        alerts_log.warning("job.finished", status="error", error=exc.detail)
        return JobResult(None, ALERTS, ok=False, message=exc.detail)
    alerts_log.info("job.finished", status="ok", summary=summary)
    return JobResult(None, ALERTS, ok=True, message=summary)
