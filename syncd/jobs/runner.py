"""Run jobs for providers, record each outcome, and never let one job stop another.

A job that raises a ``JobError`` is logged, recorded in ``jobs`` and reported as a failed
``JobResult``.  Anything else is a bug: it is logged with its traceback, and still
recorded and reported as a failure naming the exception, so that ``syncd status`` shows
the job failing and the other jobs and providers go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import structlog

from syncd.config import Config, ProviderConfig
from syncd.errors import JobError, ProviderError, StorageError
from syncd.jobs.alerts import check, deliver_alerts
from syncd.jobs.balance import sync_balance
from syncd.jobs.catalog import sync_catalog
from syncd.jobs.context import JobContext, utcnow
from syncd.jobs.health import HealthTracker, plan_health
from syncd.jobs.orders import sync_orders
from syncd.provider import DIALECTS, ProviderClient
from syncd.storage import Storage

Job = Callable[[JobContext], Awaitable[str]]

# In the order `syncd sync all` runs them.
JOBS: dict[str, Job] = {
    "catalog": sync_catalog,
    "balance": sync_balance,
    "orders": sync_orders,
}

log = structlog.get_logger("syncd.jobs")


@dataclass(frozen=True)
class JobResult:
    provider: str | None  # None for the alerts job, which serves every provider
    job: str
    ok: bool
    message: str  # a summary on success, the reason on failure


def make_client(
    provider: ProviderConfig,
    storage: Storage | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> ProviderClient:
    """A client for ``provider``; with ``storage``, every call's outcome keeps the
    provider's health (and raises provider.down / up / auth_failed)."""
    observer = None
    if storage is not None:

        async def record(name: str, error: ProviderError | None, now: datetime) -> None:
            decide = partial(plan_health, name, error=error)
            await asyncio.to_thread(storage.record_health, name, now, decide)

        observer = HealthTracker(provider.name, record, clock)
    return ProviderClient(
        name=provider.name,
        url=provider.url,
        token=provider.token,
        dialect=DIALECTS[provider.dialect],
        timeout=provider.timeout.total_seconds(),
        max_connections=provider.max_concurrency + 1,
        observer=observer,
    )


async def run_job(job: str, ctx: JobContext) -> JobResult:
    # Every log line of the job, from any layer or worker thread, names provider and job.
    with structlog.contextvars.bound_contextvars(provider=ctx.provider.name, job=job):
        return await _run_job(job, ctx)


async def _run_job(job: str, ctx: JobContext) -> JobResult:
    name = ctx.provider.name
    try:
        await ctx.db(ctx.storage.job_started, name, job, ctx.now())
        summary = await JOBS[job](ctx)
    except JobError as exc:
        reason = exc.detail  # the provider is named by the result and the log context
        ctx.log.warning("job.finished", status="error", error=reason)
        return await _record_failure(ctx, job, reason)
    except Exception as exc:  # a bug: reported, recorded, and the daemon goes on
        reason = f"internal error ({type(exc).__name__}: {exc}); please report it"
        ctx.log.exception("job.finished", status="error", error=reason)
        return await _record_failure(ctx, job, reason)
    try:
        await ctx.db(ctx.storage.job_succeeded, name, job, ctx.now())
    except StorageError as exc:
        # The job's own writes are committed; only the bookkeeping row is late.
        ctx.log.error("job.record_failed", error=str(exc))
    ctx.log.info("job.finished", status="ok", summary=summary)
    return JobResult(name, job, ok=True, message=summary)


async def _record_failure(ctx: JobContext, job: str, reason: str) -> JobResult:
    name = ctx.provider.name
    try:
        await ctx.db(ctx.storage.job_failed, name, job, ctx.now(), reason)
    except StorageError as exc:
        ctx.log.error("job.record_failed", error=str(exc))
    return JobResult(name, job, ok=False, message=reason)


async def run_pass(
    config: Config,
    storage: Storage,
    jobs: Sequence[str],
    *,
    provider: str | None = None,
    force: bool = False,
    clock: Callable[[], datetime] = utcnow,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
) -> list[JobResult]:
    """One pass of ``jobs`` (in order) for each selected provider, providers in parallel;
    then, if asked, one ``alerts`` pass that delivers what the others raised."""
    selected = config.select(provider)
    await asyncio.to_thread(storage.register_providers, [(p.name, p.url) for p in config.providers])
    per_provider_jobs = [job for job in jobs if job != "alerts"]

    async def for_provider(p: ProviderConfig) -> list[JobResult]:
        async with make_client(p, storage, clock) as client:
            ctx = JobContext(p, client, storage, force=force, clock=clock)
            ctx.progress = progress(p.name) if progress is not None else None
            return [await run_job(job, ctx) for job in per_provider_jobs]

    per_provider = await asyncio.gather(*(for_provider(p) for p in selected))
    results = [result for results in per_provider for result in results]
    if "alerts" in jobs:
        results.append(await run_alerts(config, storage, clock))
    return results


async def run_alerts(
    config: Config, storage: Storage, clock: Callable[[], datetime] = utcnow
) -> JobResult:
    with structlog.contextvars.bound_contextvars(job="alerts"):
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
        return JobResult(None, "alerts", ok=False, message=exc.detail)
    alerts_log.info("job.finished", status="ok", summary=summary)
    return JobResult(None, "alerts", ok=True, message=summary)
