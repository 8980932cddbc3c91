"""Prometheus metrics and ``/healthz`` for ``syncd run`` (``[metrics] listen``).

Names follow Prometheus' conventions: base units (seconds), ``_total`` counters, and
timestamps rather than "time since". Labels stay few and bounded: ``provider``, ``job``,
``action``, ``code``, ``state``, ``webhook``; never an order id.

Counters and histograms are kept in memory as jobs run and calls return. The gauges the
database knows (open orders by state, balances, the webhook backlog) are read at scrape
time by the same cheap queries ``syncd status`` runs (indexed counts of open orders, one
row per provider), never by a scan of all orders. ``syncd_lease_held`` is 1 for each
provider whose lease this instance holds.

The server is the standard library's WSGI server in a thread of its own: a slow scrape
or a health check waiting for a locked database never holds up the scheduler's loop.
"""

from __future__ import annotations

import concurrent.futures
import socket
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from syncd.errors import DatabaseGoneError, StorageError
from syncd.storage.overview import OPEN_STATES

HEALTH_TIMEOUT = 1.0  # seconds the database has to answer a health check
# Provider calls take from milliseconds to the timeout (30 s by default); jobs up to
# minutes (a sweep of 100,000 orders).
_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_JOB_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.job_duration = Histogram(
            "syncd_job_duration_seconds", "How long each job run took",
            ["provider", "job"], buckets=_JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.job_failures = Counter(
            "syncd_job_failures_total", "Job runs that failed", ["provider", "job"], registry=r
        )
        self.job_success = Gauge(
            "syncd_job_last_success_timestamp_seconds",
            "When each job last succeeded (unix time)", ["provider", "job"], registry=r,
        )  # fmt: skip
        self.requests = Counter(
            "syncd_provider_requests_total",
            "Requests sent to providers, by action and outcome (HTTP status, or timeout, "
            "network)", ["provider", "action", "code"], registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            "syncd_provider_request_duration_seconds", "How long each provider request took",
            ["provider", "action"], buckets=_CALL_BUCKETS, registry=r,
        )  # fmt: skip

    def job_finished(self, provider: str | None, job: str, ok: bool, seconds: float) -> None:
        name = provider or ""
        self.job_duration.labels(name, job).observe(seconds)
        if ok:
            self.job_success.labels(name, job).set_to_current_time()
        else:
            self.job_failures.labels(name, job).inc()

    def request_done(self, provider: str, action: str, code: str, seconds: float) -> None:
        self.requests.labels(provider, action, code).inc()
        self.request_duration.labels(provider, action).observe(seconds)

    def watch_database(
        self,
        storage: Any,
        held: Callable[[], Collection[str]],
        configured: Callable[[], Collection[str]],
    ) -> None:
        """Read the database's gauges at every scrape, from ``storage``, for the providers
        ``configured`` now (one removed from the config is no lease to miss)."""
        self.registry.register(_DatabaseGauges(storage, held, configured))


class _DatabaseGauges(Collector):
    def __init__(
        self,
        storage: Any,
        held: Callable[[], Collection[str]],
        configured: Callable[[], Collection[str]],
    ) -> None:
        self._storage = storage
        self._held = held
        self._configured = configured

    def collect(self) -> Iterable[GaugeMetricFamily]:
        orders = GaugeMetricFamily(
            "syncd_orders", "Open orders by provider and state", labels=["provider", "state"]
        )
        balance = GaugeMetricFamily(
            "syncd_balance", "The provider's last known balance, in its currency",
            labels=["provider", "currency"],
        )  # fmt: skip
        backlog = GaugeMetricFamily(
            "syncd_webhook_backlog", "Alerts not delivered yet, by webhook", labels=["webhook"]
        )
        leases = GaugeMetricFamily(
            "syncd_lease_held", "1 for each provider this instance works for", labels=["provider"]
        )
        held, configured = set(self._held()), set(self._configured())
        try:
            overview = self._storage.overview()
            waiting = self._storage.webhook_backlog()
        except (StorageError, DatabaseGoneError):
            overview, waiting = [], []  # /healthz says why; the counters still show
        for p in overview:
            if p.name not in configured:
                continue
            for state in OPEN_STATES:
                orders.add_metric([p.name, state.value], p.orders.get(state.value, 0))
            if p.balance is not None:
                balance.add_metric([p.name, p.currency or ""], float(p.balance))
            leases.add_metric([p.name], 1 if p.name in held else 0)
        for w in waiting:
            backlog.add_metric([w.webhook], w.undelivered)
        yield from (orders, balance, backlog, leases)


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
            body = generate_latest(self._metrics.registry)
            start("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return iter([body])
        if path == "/healthz":
            why = self.health()
            status = "200 OK" if why is None else "503 Service Unavailable"
            start(status, [("Content-Type", "text/plain; charset=utf-8")])
            return iter([(("ok" if why is None else why) + "\n").encode()])
        start("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return iter([b"/metrics and /healthz only\n"])
