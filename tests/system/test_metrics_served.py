"""Metrics served over HTTP by a running daemon and by the metrics server on its own."""

from __future__ import annotations

import contextlib
import re
import socket
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.errors import StorageError
from syncd.metrics import Known, Metrics, MetricsServer
from syncd.models import Lease, ProviderOverview
from syncd.simulator import SimulatorServer
from syncd.storage.overview import Monitored
from tests.conftest import write_config
from tests.helpers import Daemon, query, syncd, wait_until
from tests.unit.test_metrics import dashboard_metrics, occasional_metrics

MONITORING = Path(__file__).parents[2] / "docs" / "monitoring.md"


def documented() -> set[str]:
    """The syncd_* families docs/monitoring.md's tables name, as the parser names them
    (a counter without its _total)."""
    names = re.findall(r"^\| `(syncd_[a-z_]+)` \|", MONITORING.read_text(), re.MULTILINE)
    return {name.removesuffix("_total") for name in names}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def value(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for got, v in samples if all(got.get(k) == w for k, w in labels.items()))


def test_a_running_daemon_serves_metrics_that_move_and_a_health_check(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "syncd.toml", db_url, server.url,
        extra=f'orders_interval = "1s"\n\n[metrics]\nlisten = "127.0.0.1:{port}"',
    )  # fmt: skip
    (tracked,) = server.provider.create_orders(1)
    assert syncd(config, "order", "track", "--provider", "sim", str(tracked)).returncode == 0
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    wait_until(lambda: query(db_url, "SELECT count(*) FROM balance_snapshots") == [(1,)])

    first = scrape(port)
    assert len(documented()) >= 20
    assert set(first) >= documented() - occasional_metrics(), (
        documented() - occasional_metrics() - set(first)
    )
    assert {name for name in first if name.startswith("syncd_")} <= documented()
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= set(first)
    assert value(first["syncd_build_info"]) == 1
    assert value(first["syncd_database_up"]) == 1
    assert (
        set(first) >= dashboard_metrics() - occasional_metrics()
    )  # every panel of the dashboard has its data
    assert value(first["syncd_lease_held"], provider="sim") == 1
    assert value(first["syncd_balance"], provider="sim", currency="USD") == 100.0
    assert value(first["syncd_orders"], provider="sim", state="active") == 1
    assert value(first["syncd_provider_requests"], provider="sim", action="balance", code="200")
    assert "order" not in str(first["syncd_provider_requests"])  # no order id in any label

    calls = value(first["syncd_provider_requests"], provider="sim")
    runs = value(first["syncd_job_duration_seconds"], provider="sim", task="orders")
    wait_until(lambda: value(scrape(port)["syncd_provider_requests"], provider="sim") > calls)
    later = scrape(port)
    assert value(later["syncd_job_duration_seconds"], provider="sim", task="orders") >= runs
    success = value(
        later["syncd_job_last_success_timestamp_seconds"], provider="sim", task="orders"
    )
    assert success > 1.7e9  # a unix time, not "seconds since"

    healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert (healthy.status_code, healthy.text) == (200, "ok\n")

    assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 404

    # The database file deleted under the daemon: it stops (status 1), and what answers
    # before it is gone says why, in one line.
    Path(db_url.removeprefix("sqlite:///")).unlink()
    with contextlib.suppress(httpx.TransportError):
        sick = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert sick.status_code == 503
        assert sick.text.startswith("the database does not answer: the database file")
        assert sick.text.count("\n") == 1
    assert daemon.process.wait(timeout=15) == 1


class _Daemon:
    """What the metrics read, for a server started without a daemon."""

    me = "here"

    def __init__(self, providers: list[ProviderOverview], held: list[str]) -> None:
        self._providers, self._held = providers, held

    def providers(self) -> list[Known]:
        return [Known("kept", ["balance"], {"orders": 60.0})]

    def held(self) -> list[str]:
        return self._held

    def monitored(self) -> Monitored:
        leases = {name: Lease(name, self.me, 1, datetime.now(UTC)) for name in self._held}
        return Monitored(self._providers, [], leases, 1, 0)


def overview(name: str) -> ProviderOverview:
    return ProviderOverview(
        name=name, url="https://x", currency="USD", balance=Decimal("5"),
        balance_checked_at=None, health="up", last_error=None, catalog_synced_at=None,
        active_packages=0, open_orders=0, orders={}, jobs=(),
    )  # fmt: skip


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_server_on_either_family_answers_get_only_and_exports_configured_providers(
    host: str,
) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    metrics = Metrics()
    metrics.watch(_Daemon([overview("kept"), overview("removed")], ["kept", "removed"]))
    try:
        server = MetricsServer(
            metrics, (host, 0), scheduler_running=lambda: True, database_answers=lambda: None
        )
    except OSError:
        pytest.skip(f"cannot listen on {host} here")
    server.start()
    try:
        base = f"http://{'[::1]' if host == '::1' else host}:{server.port}"
        families = {
            f.name: f.samples
            for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
        }
        assert {s.labels["provider"] for s in families["syncd_lease_held"]} == {"kept"}
        assert {s.labels["provider"] for s in families["syncd_balance"]} == {"kept"}
        assert httpx.post(f"{base}/metrics").status_code == 405
        assert httpx.post(f"{base}/healthz").status_code == 405
        assert httpx.get(f"{base}/healthz").text == "ok\n"
    finally:
        server.close()


def test_a_database_that_does_not_answer_makes_the_health_check_say_why_in_one_line() -> None:
    def unreachable() -> None:
        raise StorageError("database error: connection refused")

    server = MetricsServer(
        Metrics(), ("127.0.0.1", 0), scheduler_running=lambda: True, database_answers=unreachable
    )
    server.start()
    try:
        sick = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
    finally:
        server.close()
    assert sick.status_code == 503
    assert sick.text == "the database does not answer: database error: connection refused\n"
