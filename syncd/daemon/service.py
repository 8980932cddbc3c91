"""``syncd run``: every job of every provider on an APScheduler 3 asyncio scheduler.

One scheduled job per provider and kind (catalog, balance, orders) at the configured
interval, plus one ``alerts`` job for all; each runs once at start, never overlaps
itself (``max_instances=1``, ``coalesce``), and starts with a little jitter so that
providers do not all call out in the same second. A stalled provider only stalls its
own jobs.

A role that lacks a privilege syncd needs (``docs/roles.md``) stops the start with one
line naming it: registering the providers or the first heartbeat is refused.

systemd: READY=1 once the database is migrated and the scheduler started; WATCHDOG=1
from a task on the scheduler's own event loop (a blocked loop stops the pings); a
STATUS= line after each job; STOPPING=1 on SIGTERM/SIGINT. SIGHUP reloads the config;
a broken one is logged and the running one kept.

APScheduler 3 keeps its schedule in wall-clock time: a clock stepped back by a day (NTP
after a boot with a wrong clock, an operator) would leave every job waiting a day.  The
daemon compares the wall clock with the monotonic clock every few seconds and, when the
wall clock stepped by a minute or more, logs it and runs every job now, on a fresh
schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from syncd import logs
from syncd.config import Config, ProviderConfig, load_config
from syncd.daemon.notify import Notifier
from syncd.deadlines import CLOCK_SKEW
from syncd.errors import DatabaseGoneError, StorageError, SyncdError
from syncd.jobs.leases import LeaseKeeper
from syncd.jobs.pickup import Pickup, SubmitRun
from syncd.jobs.runner import (
    ALERTS,
    ALERTS_INTERVAL,
    JOBS,
    SUBMIT,
    JobResult,
    ProviderRunner,
    run_alerts,
    shared_pace,
)
from syncd.metrics import Known, Metrics, MetricsServer
from syncd.provider.dialects import DIALECTS
from syncd.provider.pace import Pace
from syncd.storage import Storage, open_storage
from syncd.storage.overview import Monitored
from syncd.storage.watch import WriteWatch, listen

log = structlog.get_logger("syncd.daemon")

# Seconds for running jobs to reach a stopping point (they stop taking new work when
# told) before they are cancelled. SIGTERM must end the process within 10 s, and a write
# already waiting for a lock when the job is cancelled may wait one more busy timeout
# (5 s): 4 + 5 leaves a second to spare.
SHUTDOWN_GRACE = 4.0
# Seconds after SIGTERM by which releasing the leases gives up: a database a consumer
# keeps locked would otherwise hold the exit past systemd's patience. Leases not released
# run out after lease_ttl, so giving up costs a slower takeover, nothing more.
RELEASE_BY = 9.0
CLOCK_LOOK = 5.0  # seconds between two looks at the wall clock
CLOCK_STEP = 60.0  # a step of the wall clock at least this large reschedules every job


class ClockWatch:
    """Notices the wall clock stepping, by how far it moved against the monotonic clock
    (which no one can set) since the last look."""

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        step: float = CLOCK_STEP,
    ) -> None:
        self._wall, self._monotonic, self._step = wall, monotonic, step
        self._offset = wall() - monotonic()

    def stepped(self) -> float | None:
        """Seconds the wall clock stepped since the last look (negative: back), or None
        when it kept time."""
        offset = self._wall() - self._monotonic()
        moved, self._offset = offset - self._offset, offset
        return moved if abs(moved) >= self._step else None


class SkippedRuns:
    """Counts the runs APScheduler skipped because the job's previous run still went on
    (``max_instances=1``): by design, so logged at debug level only (``job.run_skipped``),
    never as APScheduler's warning (``syncd.logs`` keeps that one out)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __call__(self, event: JobSubmissionEvent) -> None:
        count = self.counts[event.job_id] = self.counts.get(event.job_id, 0) + 1
        log.debug(
            "job.run_skipped",
            scheduled=event.job_id,
            reason="its previous run still goes on",
            skipped=count,
        )


def known_providers(config: Config) -> list[Known]:
    """The configured providers as the metrics know them: actions and task intervals."""
    return [
        Known(
            p.name,
            list(DIALECTS[p.dialect].actions),
            {spec.name: spec.interval(p).total_seconds() for spec in (*JOBS.values(), SUBMIT)},
        )
        for p in config.providers
    ]


class _Watched:
    """What the metrics read of the service at each scrape (from the server's thread)."""

    def __init__(self, service: Service) -> None:
        self._service = service
        assert service.keeper is not None and service.storage is not None
        self.me = service.keeper.me
        self._keeper, self._storage = service.keeper, service.storage

    def providers(self) -> list[Known]:
        return known_providers(self._service.config)

    def held(self) -> list[str]:
        return list(self._keeper.held)

    def monitored(self) -> Monitored:
        return self._storage.monitored(self._service.config.cluster.lease_ttl.total_seconds())


class Service:
    def __init__(self, config_path: Path, config: Config, notifier: Notifier) -> None:
        self.config_path = config_path
        self.config = config
        self.notifier = notifier
        self.storage: Storage | None = None
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.skipped = SkippedRuns()
        self.scheduler.add_listener(self.skipped, EVENT_JOB_MAX_INSTANCES)
        self.stopping = asyncio.Event()
        self.running: set[asyncio.Task[object]] = set()
        self.last: dict[tuple[str | None, str], JobResult] = {}
        self.clock = ClockWatch()
        self.keeper: LeaseKeeper | None = None
        self.busy: dict[str, int] = {}  # provider -> jobs running
        self.provider_stops: dict[str, asyncio.Event] = {}  # set: stop that provider's work
        self.submit_locks: dict[str, asyncio.Lock] = {}  # one submitter per provider
        self.paces: dict[str, Pace] = {}  # every job of a provider keeps to its one pace
        self.pickup: Pickup | None = None
        self.running_helpers: set[asyncio.Task[None]] = set()
        self.stopped_at = 0.0  # monotonic time of SIGTERM
        # The database file was deleted or replaced: the process stops, exit status 1.
        self.gone: DatabaseGoneError | None = None
        # Prometheus metrics and /healthz, when [metrics] listen is set.
        self.metrics: Metrics | None = Metrics() if config.metrics.listen else None
        self.metrics_server: MetricsServer | None = None

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        # Migrates when the schema is behind and the role may; a role that may not runs
        # on a schema already up to date, and is told to run `syncd migrate` otherwise.
        self.storage = await asyncio.to_thread(
            functools.partial(open_storage, self.config.database.connect_url, migrate=True)
        )

        def gone(error: DatabaseGoneError) -> None:  # told from the thread that noticed
            loop.call_soon_threadsafe(self._database_gone, error)

        self.storage.when_gone = gone
        await asyncio.to_thread(self._prepare_storage)
        self.keeper = LeaseKeeper(
            self.storage,
            ttl=self.config.cluster.lease_ttl.total_seconds(),
            busy=lambda name: self.busy.get(name, 0) > 0,
            on_lost=self._lease_lost,
            on_taken=self._lease_taken,
        )
        self.pickup = self._make_pickup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        # The first jobs run with leases; a role that may not write them stops the start.
        await self.keeper.tick(self._provider_names(), starting=True)
        self._serve_metrics()
        self._schedule()
        self.scheduler.start()
        log.info(
            "daemon.started",
            providers=len(self.config.providers),
            webhooks=len(self.config.webhooks),
        )
        self.notifier.ready(self.summary())
        watchdog = loop.create_task(self._watchdog())
        clock = loop.create_task(self._watch_clock())
        leases = loop.create_task(_unless_gone(self._keep_leases()))
        pickup = loop.create_task(_unless_gone(self.pickup.run()))
        helpers = [watchdog, clock, leases, pickup]
        if self.config.database.listens:
            url = self.config.database.connect_url
            helpers.append(loop.create_task(listen(url, "syncd_orders", self.pickup.wake)))
        try:
            await self.stopping.wait()
        finally:
            self.notifier.stopping()
            log.info("daemon.stopping", running_jobs=len(self.running))
            for helper in helpers:
                helper.cancel()
            await self._shutdown()
        if self.gone is not None:
            log.error("daemon.stopped", status=1, reason="the database file is gone")
            return 1
        log.info("daemon.stopped")
        return 0

    # -- jobs ----------------------------------------------------------------------------

    def _schedule(self) -> None:
        now = datetime.now(UTC)
        for provider in self.config.providers:
            for spec in JOBS.values():
                every = spec.interval(provider)
                self.scheduler.add_job(
                    self._run_provider_job,
                    IntervalTrigger(seconds=every.total_seconds(), jitter=_jitter(every)),
                    args=(provider.name, spec.name),
                    id=f"{provider.name}:{spec.name}",
                    next_run_time=now,  # once at start, then every interval
                    coalesce=True,
                    max_instances=1,
                    misfire_grace_time=None,
                )
        self.scheduler.add_job(
            self._run_alerts,
            IntervalTrigger(seconds=ALERTS_INTERVAL.total_seconds(), jitter=2),
            id=ALERTS,
            next_run_time=now,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )

    def _make_pickup(self) -> Pickup:
        assert self.storage is not None
        return Pickup(
            self.storage,
            WriteWatch(self.config.database.connect_url),
            held=lambda: list(self.keeper.held) if self.keeper is not None else [],
            submit=self._run_submit,
        )

    async def _run_submit(self, name: str) -> SubmitRun | None:
        """The submit job, for the pickup: how it ended, so that a failed run is tried
        again by itself while orders wait (None: it did not run)."""
        result = await self._run_provider_job(name, SUBMIT.name)
        provider = self._provider(name)
        if result is None or provider is None:
            return None
        resume_in = None
        if result.resume_at is not None:
            resume_in = (result.resume_at - datetime.now(UTC)).total_seconds()
        return SubmitRun(result.ok, provider.orders_interval.total_seconds(), resume_in)

    def _provider(self, name: str) -> ProviderConfig | None:
        """The provider's config, or None once a reload removed it."""
        return next((p for p in self.config.providers if p.name == name), None)

    async def _run_provider_job(self, name: str, job: str) -> JobResult | None:
        provider = self._provider(name)
        if provider is None or self.storage is None or self.stopping.is_set():
            return None  # removed by a reload, or shutting down
        lease = self.keeper.holds(name) if self.keeper is not None else None
        if lease is None:
            return None  # another instance works for this provider
        stop = self.provider_stops.setdefault(name, asyncio.Event())
        with structlog.contextvars.bound_contextvars(provider=name, job=job):
            self.busy[name] = self.busy.get(name, 0) + 1
            try:
                async with (
                    self._tracked(),
                    ProviderRunner(
                        provider,
                        self.storage,
                        stopping=stop,
                        lease=lease,
                        submit_lock=self.submit_locks.setdefault(name, asyncio.Lock()),
                        pace=self._pace(provider),
                        metrics=self.metrics,
                    ) as runner,
                ):
                    started = time.monotonic()
                    result = await runner.run(job)
                    self._finished(result, time.monotonic() - started)
                    return result
            finally:
                self.busy[name] -= 1

    def _serve_metrics(self) -> None:
        """Start serving /metrics and /healthz. An address that cannot be bound (in use,
        not this host's) is logged and the daemon goes on without them: metrics are no
        reason to stop syncing."""
        listen = self.config.metrics.listen
        if self.metrics is None or listen is None or self.storage is None:
            return
        storage = self.storage
        self._know_metrics()
        self.metrics.watch(_Watched(self))
        try:
            server = MetricsServer(
                self.metrics,
                listen,
                scheduler_running=lambda: self.scheduler.running and not self.stopping.is_set(),
                database_answers=storage.ping,
            )
        except OSError as exc:
            log.error("metrics.not_served", listen=f"{listen[0]}:{listen[1]}", error=str(exc))
            return
        server.start()
        self.metrics_server = server
        log.info("metrics.serving", listen=f"{listen[0]}:{server.port}")

    def _know_metrics(self) -> None:
        """Every series of the configured providers at 0 from the first scrape."""
        if self.metrics is not None:
            self.metrics.know(known_providers(self.config), (ALERTS,))

    def _pace(self, provider: ProviderConfig) -> Pace:
        """The provider's one pace; a reload that changes its limit starts a new one (the
        jobs running keep the old one until they end)."""
        pace = self.paces.get(provider.name)
        if pace is None or not pace.same_limits(
            provider.requests_per_minute, dict(provider.limits)
        ):
            pace = self.paces[provider.name] = shared_pace(provider, self.storage)
        return pace

    # -- leases --------------------------------------------------------------------------

    def _provider_names(self) -> list[str]:
        return [p.name for p in self.config.providers]

    async def _keep_leases(self) -> None:
        """Renew every third of the lease time: a lease survives two missed renewals."""
        assert self.keeper is not None
        while True:
            await asyncio.sleep(self.keeper.ttl / 3)
            await self.keeper.tick(self._provider_names())
            self.notifier.status(self.summary())

    def _lease_lost(self, name: str) -> None:
        """Another instance works for it now: its jobs here stop at their next batch."""
        self.provider_stops.setdefault(name, asyncio.Event()).set()
        if self.pickup is not None:
            self.pickup.forget(name)

    def _lease_taken(self, name: str) -> None:
        """Ours now (at start, handed over, or taken over from a dead instance): its jobs
        go on from where the last holder left them."""
        self.provider_stops[name] = asyncio.Event()
        if self.scheduler.running:
            task = asyncio.get_running_loop().create_task(_unless_gone(self._resume_schedule(name)))
            self.running_helpers.add(task)
            task.add_done_callback(self.running_helpers.discard)
            if self.pickup is not None:
                # The submit job at once: it sends what the last holder left queued and
                # settles what a dead one left submitting.
                self.pickup.forget(name)
                self.pickup.run_now(name)

    async def _resume_schedule(self, name: str) -> None:
        """Each job of a provider taken over runs when the last holder's schedule says it
        is due (at once if it never succeeded or is overdue), so that a handover between
        instances does not call the provider twice for the same work."""
        provider = self._provider(name)
        if provider is None or self.storage is None:
            return
        try:
            done = await asyncio.to_thread(self.storage.last_successes, name)
        except StorageError as exc:
            me = self.keeper.me if self.keeper is not None else None
            log.warning("leases.schedule_unknown", provider=name, instance=me, error=exc.detail)
            done = {}
        now = datetime.now(UTC)
        for spec in JOBS.values():
            job = self.scheduler.get_job(f"{name}:{spec.name}")
            if job is not None:
                job.modify(
                    next_run_time=next_run(done.get(spec.name), spec.interval(provider), now)
                )

    async def _run_alerts(self) -> None:
        if self.storage is None or self.stopping.is_set():
            return
        with structlog.contextvars.bound_contextvars(job=ALERTS):
            async with self._tracked():
                started = time.monotonic()
                result = await run_alerts(self.config, self.storage)
                self._finished(result, time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def _tracked(self) -> AsyncIterator[None]:
        """Lets shutdown wait for (and at last cancel) the jobs that are running."""
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
            # Cancelled by our own shutdown: the job's committed work stands, the rest is
            # redone next time; nothing for the scheduler to report as a crash.
            log.info("job.cancelled", reason="shutting down")
        except DatabaseGoneError:
            pass  # logged once where noticed; the daemon is stopping (``_database_gone``)
        finally:
            self.running.discard(task)

    def _finished(self, result: JobResult, seconds: float) -> None:
        self.last[(result.provider, result.job)] = result
        if self.metrics is not None:
            self.metrics.job_finished(result.provider, result.job, result.ok, seconds)
        self.notifier.status(self.summary())

    def summary(self) -> str:
        """One line for systemctl status."""
        failing = [r for r in self.last.values() if not r.ok]
        held = len(self.keeper.held) if self.keeper is not None else 0
        text = (
            f"{len(self.config.providers)} providers, {len(self.last)} jobs ran, "
            f"{len(failing)} failing, {held} leases held"
        )
        if self.keeper is not None and self.keeper.out_of_reach:
            text += ", database out of reach"
        if failing:
            worst = failing[0]
            where = f" {worst.provider}" if worst.provider else ""
            text += f" ({worst.job}{where}: {worst.message[:80]})"
        return text

    def _database_gone(self, error: DatabaseGoneError) -> None:
        """The database file was deleted or replaced (logged once, by storage): nothing
        more is written, the daemon stops with status 1 and systemd starts it again."""
        if self.gone is None:
            self.gone = error
            self._stop()

    def _stop(self) -> None:
        if not self.stopping.is_set():
            self.stopped_at = time.monotonic()
        self.stopping.set()
        for stop in self.provider_stops.values():
            stop.set()
        if self.storage is not None:
            self.storage.stop_retrying()

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            if self.scheduler.running:
                self.notifier.watchdog()
            await asyncio.sleep(interval)

    async def _watch_clock(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_LOOK)
            self.check_clock()

    def check_clock(self) -> None:
        """Run every job now, on a fresh schedule, if the wall clock stepped."""
        moved = self.clock.stepped()
        if moved is None:
            return
        log.warning("clock.stepped", seconds=round(moved), action="every job runs now")
        self.scheduler.remove_all_jobs()
        self._schedule()

    # -- reload and shutdown -------------------------------------------------------------

    def _reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(_unless_gone(self.reload()))
        self.running_helpers.add(task)
        task.add_done_callback(self.running_helpers.discard)

    async def reload(self) -> None:
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
        except SyncdError as exc:
            log.error("config.reload_failed", error=str(exc), kept=self.config.source)
            return
        now, before = config.database, self.config.database
        if (now.url, now.password) != (before.url, before.password):
            log.warning(
                "config.reload_database_ignored",
                reason="a new database.url or password needs a restart",
            )
            config = _with_database(config, self.config)
        # The password read now is hidden too, though it waits for the restart.
        logs.configure(
            fmt=config.logging.format,
            level=config.logging.level,
            secrets=[*config.secrets(), *now.secrets()],
        )
        self.config = config
        self._know_metrics()
        await asyncio.to_thread(self._prepare_storage)
        self.scheduler.remove_all_jobs()
        self._schedule()
        log.info("config.reloaded", providers=len(config.providers), webhooks=len(config.webhooks))
        self.notifier.status(self.summary())

    def _prepare_storage(self) -> None:
        assert self.storage is not None
        self.storage.register_providers((p.name, p.url) for p in self.config.providers)
        self.storage.set_webhooks((w.name, w.events) for w in self.config.webhooks)

    async def _shutdown(self) -> None:
        # Paused, not shut down yet: APScheduler's shutdown cancels the jobs it is running
        # at once, which would drop an order a provider is answering right now (and leave
        # it ambiguous). Running jobs get SHUTDOWN_GRACE to reach a stopping point first.
        self.scheduler.pause()
        if self.running:
            # Jobs stop taking new work at their next batch. One still waiting on the
            # network after the grace ends now; a transaction already in a worker thread
            # still commits or rolls back before the process exits.
            _, late = await asyncio.wait(self.running, timeout=SHUTDOWN_GRACE)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self.scheduler.shutdown(wait=False)
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.pickup is not None:
            self.pickup.watch.close()
        # With the database file gone, the leases are in a file nobody reads: nothing to do.
        released = self.gone is not None or await self._release_leases(
            self.stopped_at + RELEASE_BY - time.monotonic()
        )
        if self.storage is not None and released:
            await asyncio.to_thread(self.storage.close)

    async def _release_leases(self, budget: float) -> bool:
        """Release every lease at once, so that another instance takes these providers over
        now rather than when the leases run out; give up after ``budget`` seconds. Returns
        whether the storage is free to close."""
        keeper = self.keeper
        if keeper is None:
            return True
        failed: list[str] = []
        loop, done = asyncio.get_running_loop(), asyncio.Event()

        def release() -> None:
            try:
                keeper.release_all()
            except StorageError as exc:
                failed.append(exc.detail)
            finally:
                loop.call_soon_threadsafe(done.set)

        # A thread of its own, not the executor's: asyncio.run waits for those at exit.
        threading.Thread(target=release, name="release leases", daemon=True).start()
        fallback = "they run out after lease_ttl"
        try:
            async with asyncio.timeout(max(0.5, budget)):
                await done.wait()
        except TimeoutError:
            log.warning(
                "leases.not_released", error="the database stayed locked", fallback=fallback
            )
            return False
        if failed:
            log.warning("leases.not_released", error=failed[0], fallback=fallback)
        return True


def next_run(last_success: datetime | None, every: timedelta, now: datetime) -> datetime:
    """When a job taken over from another instance is due: one interval after its last
    success, or now when it never succeeded, is overdue, or its last success lies in the
    future (a clock that ran ahead wrote it)."""
    if last_success is None or last_success > now + CLOCK_SKEW:
        return now
    return max(now, last_success + every)


async def _unless_gone(work: Awaitable[None]) -> None:
    """A helper task that ends quietly when the database file is gone: storage logged it
    once, and the daemon is stopping."""
    with contextlib.suppress(DatabaseGoneError):
        await work


def _jitter(every: timedelta) -> float:
    """Up to a tenth of the interval, at most 30 s: spreads start times, keeps rhythm."""
    return min(30.0, every.total_seconds() / 10)


def _with_database(config: Config, running: Config) -> Config:
    return replace(config, database=running.database)


def run(config_path: Path, config: Config, environ: Mapping[str, str] | None = None) -> int:
    notifier = Notifier(environ)
    return asyncio.run(Service(config_path, config, notifier).serve())
