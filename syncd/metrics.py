"""Prometheus metrics and ``/healthz`` for ``syncd run`` (``[metrics] listen``).

Names follow Prometheus' conventions: base units (seconds), ``_total`` counters, and
timestamps rather than "time since". Labels stay few and bounded: ``provider``, ``task``
(syncd's job: ``job`` is Prometheus' own label for the scrape job), ``action``, ``code``,
``state``, ``webhook``, ``currency``, ``version``; never an order id.

Two kinds of series, because several instances share one database and each is scraped:

- What this instance did (job runs, requests, its process) is kept in memory and
  exported by this instance. Every labelled counter and histogram is created at 0 for the
  labels syncd knows (``know``), so that ``increase()`` sees the first failure after a
  start.
- What the database holds (open orders, balances, when a job last succeeded, the webhook
  backlog) is read at scrape time, in one transaction, by the same indexed queries
  ``syncd status`` runs, and exported by exactly one instance: a provider's by the holder
  of its lease, the database-wide ones by the holder of the first lease by name (the
  database's ``leases`` decide, so every instance agrees). Summing over instances never
  counts a value twice, and after a handover or a restart the new holder exports what the
  database says, not what a process remembered.

The server is the standard library's WSGI server in a thread of its own: a slow scrape
or a health check waiting for a locked database never holds up the scheduler's loop.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from syncd import __version__
from syncd.errors import DatabaseGoneError, StorageError
from syncd.storage.overview import OPEN_STATES, Monitored

log = structlog.get_logger("syncd.metrics")

HEALTH_TIMEOUT = 1.0  # seconds the database has to answer a health check
# Seconds the database has to answer a scrape's reads: well within Prometheus' default
# scrape timeout (10 s), so that a locked table costs the database's series, not the
# whole scrape (which would read as the instance being down).
READ_TIMEOUT = 5.0
# Provider calls take from milliseconds to the timeout (30 s by default); jobs up to
# minutes (a sweep of 100,000 orders).
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_JOB_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
# The outcomes of a request that every provider and action shows from the first scrape;
# another HTTP status gets its series when first seen.
KNOWN_CODES = ("200", "429", "timeout", "network")
# The job that serves every provider is labelled with no provider.
ALL_PROVIDERS = ""


@dataclass(frozen=True)
class Known:
    """A configured provider as the metrics know it: its name, the actions of its dialect
    (as sent on the wire) and each task's interval in seconds."""

    name: str
    actions: Sequence[str]
    intervals: dict[str, float]


class Watched(Protocol):
    """What the metrics read of the running daemon at each scrape."""

    me: str  # this instance's id, as the leases name their holder

    def providers(self) -> Sequence[Known]: ...

    def held(self) -> Iterable[str]: ...

    def monitored(self) -> Monitored: ...


class Metrics:
    def __init__(self) -> None:
        # No ``_created`` series beside each counter and histogram: they double what a
        # scrape carries and no rule or dashboard reads them (the process start time is
        # in ``process_start_time_seconds``).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The process (CPU, memory, file descriptors, start time) and Python collectors
        # every exporter has, on this registry rather than the library's global one.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Gauge("syncd_build_info", "Always 1: the version running", ["version"], registry=r).labels(
            __version__
        ).set(1)
        self.job_duration = Histogram(
            "syncd_job_duration_seconds", "How long each job run took",
            ["provider", "task"], buckets=_JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.job_failures = Counter(
            "syncd_job_failures_total", "Job runs that failed", ["provider", "task"], registry=r
        )
        self.requests = Counter(
            "syncd_provider_requests_total",
            "Requests sent to providers, by action and outcome (HTTP status, or timeout, "
            "network)", ["provider", "action", "code"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "syncd_provider_request_duration_seconds", "How long each provider request took",
            ["provider", "action"], buckets=_CALL_BUCKETS, registry=r,
        )  # fmt: skip

    def know(self, providers: Iterable[Known], all_tasks: Iterable[str]) -> None:
        """Create every series of the known labels at 0: each provider with each of its
        tasks and actions and the known codes, and ``all_tasks`` (the jobs that serve every
        provider) with no provider. A series once created stays (a provider removed by a
        reload keeps its counters until the restart, as counters must)."""
        for task in all_tasks:
            self._job_series(ALL_PROVIDERS, task)
        for p in providers:
            for task in p.intervals:
                self._job_series(p.name, task)
            for action in p.actions:
                self.request_duration.labels(p.name, action)
                for code in KNOWN_CODES:
                    self.requests.labels(p.name, action, code)

    def _job_series(self, provider: str, task: str) -> None:
        self.job_duration.labels(provider, task)
        self.job_failures.labels(provider, task)

    def job_finished(self, provider: str | None, task: str, ok: bool, seconds: float) -> None:
        name = provider or ALL_PROVIDERS
        self.job_duration.labels(name, task).observe(seconds)
        if not ok:
            self.job_failures.labels(name, task).inc()

    def request_done(self, provider: str, action: str, code: str, seconds: float) -> None:
        self.requests.labels(provider, action, code).inc()
        self.request_duration.labels(provider, action).observe(seconds)

    def watch(self, daemon: Watched, *, wait: float = READ_TIMEOUT) -> None:
        """Read the daemon's state and the database's at every scrape (the database has
        ``wait`` seconds to answer)."""
        self.registry.register(_Scraped(daemon, wait=wait))


def _gauge(name: str, text: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=list(labels))


def _stamp(at: datetime) -> float:
    return at.timestamp()


class _Scraped(Collector):
    """The series read at scrape time: this instance's config and leases, and the
    database's values that this instance is the one to export."""

    def __init__(self, daemon: Watched, *, wait: float = READ_TIMEOUT) -> None:
        self._daemon = daemon
        self._wait = wait
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scrape")
        self._reading: concurrent.futures.Future[Monitored] | None = None

    def _read(self) -> Monitored | None:
        """The database's values, or None when it does not answer within ``wait``. While
        a read of an earlier scrape still waits (a table a consumer holds locked), a new
        scrape waits for that one rather than piling another read on the database."""
        if self._reading is None or self._reading.done():
            self._reading = self._reader.submit(self._daemon.monitored)
        try:
            return self._reading.result(timeout=self._wait)
        except (StorageError, DatabaseGoneError, concurrent.futures.TimeoutError):
            return None  # /healthz says why; the instance's own series still show

    def describe(self) -> Iterable[Metric]:
        return []  # read at scrape time; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        daemon = self._daemon
        known = {p.name: p for p in daemon.providers()}
        held = set(daemon.held())
        leases = _gauge(
            "syncd_lease_held", "1 for each provider this instance works for", "provider"
        )
        intervals = _gauge(
            "syncd_job_interval_seconds", "The configured interval of each task", "provider",
            "task",
        )  # fmt: skip
        for p in known.values():
            leases.add_metric([p.name], 1 if p.name in held else 0)
            for task, seconds in p.intervals.items():
                intervals.add_metric([p.name, task], seconds)
        up = _gauge(
            "syncd_database_up",
            f"1 when the database answered this scrape's reads within {self._wait:g}s",
        )
        found = self._read()
        up.add_metric([], 0 if found is None else 1)
        yield from (leases, intervals, up)
        if found is not None:
            yield from _database_series(found, daemon.me, known)


def _database_series(found: Monitored, me: str, known: dict[str, Known]) -> Iterator[Metric]:
    """The database's series this instance exports: those of the configured providers
    whose lease it holds, and the database-wide ones if it holds the first lease."""
    mine = {name for name, lease in found.leases.items() if lease.holder == me}
    orders = _gauge("syncd_orders", "Open orders by provider and state", "provider", "state")
    ambiguous = _gauge(
        "syncd_ambiguous_requests", "Refills and cancellations whose outcome is unknown",
        "provider",
    )  # fmt: skip
    balance = _gauge(
        "syncd_balance", "The provider's last known balance, in its currency",
        "provider", "currency",
    )  # fmt: skip
    low = _gauge("syncd_balance_low", "1 while the balance is below low_balance", "provider")
    drifting = _gauge(
        "syncd_balance_drifting",
        "1 while balance.drift is raised: the balance fell more than the ledger explains",
        "provider",
    )
    up = _gauge("syncd_provider_up", "0 once three calls in a row failed, else 1", "provider")
    throttled = _gauge(
        "syncd_provider_throttled", "1 while the provider answers nothing but 429", "provider"
    )
    answered = _gauge(
        "syncd_provider_last_answer_timestamp_seconds",
        "When a call to the provider last succeeded (unix time, to within a minute)",
        "provider",
    )
    success = _gauge(
        "syncd_job_last_success_timestamp_seconds",
        "When each task last succeeded, in any instance (unix time)", "provider", "task",
    )  # fmt: skip
    failing = _gauge(
        "syncd_job_failing_since_timestamp_seconds",
        "While a task fails: when its failures began (unix time)", "provider", "task",
    )  # fmt: skip
    for p in found.providers:
        if p.name not in known or p.name not in mine:
            continue
        for state in OPEN_STATES:
            orders.add_metric([p.name, state.value], p.orders.get(state.value, 0))
        ambiguous.add_metric([p.name], p.ambiguous_requests)
        if p.balance is not None:
            balance.add_metric([p.name, p.currency or ""], float(p.balance))
        low.add_metric([p.name], 1 if p.balance_low else 0)
        drifting.add_metric([p.name], 1 if p.drifting else 0)
        up.add_metric([p.name], 0 if p.health == "down" else 1)  # "down" alone is down
        throttled.add_metric([p.name], 1 if p.throttled else 0)
        if p.answered_at is not None:
            answered.add_metric([p.name], _stamp(p.answered_at))
        for job in p.jobs:
            if job.last_success_at is not None:
                success.add_metric([p.name, job.job], _stamp(job.last_success_at))
            if job.failing_since is not None:
                failing.add_metric([p.name, job.job], _stamp(job.failing_since))
    yield from (orders, ambiguous, balance, low, drifting, up, throttled, answered, success)
    yield failing
    if not found.leases or found.leases[min(found.leases)].holder != me:
        return  # the database-wide series are another instance's to export
    backlog = _gauge(
        "syncd_webhook_backlog", "Alerts neither delivered nor given up, by webhook", "webhook"
    )
    oldest = _gauge(
        "syncd_webhook_oldest_undelivered_timestamp_seconds",
        "When the oldest alert not delivered yet was raised (unix time)", "webhook",
    )  # fmt: skip
    for w in found.backlog:
        backlog.add_metric([w.webhook], w.undelivered)
        if w.undelivered and w.oldest is not None:
            oldest.add_metric([w.webhook], _stamp(w.oldest))
    instances = _gauge(
        "syncd_instances",
        "Instances in the database: live, or silent (stopped without a clean exit)", "state",
    )  # fmt: skip
    instances.add_metric(["live"], found.live_instances)
    instances.add_metric(["silent"], found.silent_instances)
    yield from (backlog, oldest, instances)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = 128  # many scrapers at once wait in the queue, not refused


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


class MetricsServer:
    """Serves ``/metrics`` and ``/healthz`` on ``listen`` until closed."""

    def __init__(
        self,
        metrics: Metrics,
        listen: tuple[str, int],
        *,
        scheduler_running: Callable[[], bool],
        database_answers: Callable[[], None],
    ) -> None:
        self._metrics = metrics
        self._running = scheduler_running
        self._ping = database_answers
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="healthz")
        kind = _Server6 if ":" in listen[0] else _Server  # "::1" is IPv6
        self._server = make_server(
            listen[0], listen[1], self._app, server_class=kind, handler_class=_Quiet
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def health(self) -> str | None:
        """Why syncd is unhealthy, in one line; None when it is healthy."""
        if not self._running():
            return "the scheduler is not running"
        check = self._pool.submit(self._ping)
        try:
            check.result(timeout=HEALTH_TIMEOUT)
        except concurrent.futures.TimeoutError:
            return f"the database did not answer within {HEALTH_TIMEOUT:g}s"
        except StorageError as exc:
            return f"the database does not answer: {exc.detail}"
        except DatabaseGoneError as exc:
            return f"the database does not answer: {exc}"
        return None

    def _app(self, environ: dict[str, Any], start: Callable[..., Any]) -> Iterator[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/metrics", "/healthz") and environ.get("REQUEST_METHOD") not in (
            "GET",
            "HEAD",
        ):
            start("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return iter([b"GET only\n"])
        if path == "/metrics":
            try:
                body = generate_latest(self._metrics.registry)
            except Exception as exc:  # a scrape that fails must not take the server down
                log.error("metrics.scrape_failed", error=f"{type(exc).__name__}: {exc}")
                start("500 Internal Server Error", [("Content-Type", "text/plain")])
                return iter([b"the metrics could not be read; the daemon's log says why\n"])
            start("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return iter([body])
        if path == "/healthz":
            why = self.health()
            status = "200 OK" if why is None else "503 Service Unavailable"
            start(status, [("Content-Type", "text/plain; charset=utf-8")])
            return iter([(("ok" if why is None else why) + "\n").encode()])
        start("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return iter([b"/metrics and /healthz only\n"])
