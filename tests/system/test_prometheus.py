"""A real Prometheus scraping two `syncd run` on one database: the database's series are
exported once however many instances run (sums over instances equal the tables), every
labelled counter is there at 0 from the first scrape, and a handover or a restart neither
loses nor invents a value, since the new holder reads it from the database.

These tests start Prometheus, two daemons and three simulated providers, and wait on
leases changing hands: they take tens of seconds each. The figures they measure (sums
against the tables, takeover times, what promtool says) are printed; ``pytest -s`` or
``-rP`` shows them.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.storage import tables
from syncd.storage.overview import OPEN_STATES
from tests.conftest import TOKEN
from tests.fakes import Receiver
from tests.helpers import Daemon, sql, syncd

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="no prometheus program on PATH (a Prometheus server to scrape)"
)

ALERT_RULES = Path(__file__).resolve().parents[2] / "docs" / "prometheus" / "alerts.yml"
LEASE_TTL = 6  # seconds, the shortest syncd accepts: takeovers within a test's patience
PROVIDERS = ("p0", "p1", "p2")  # three leases, so two instances split them unevenly
TASKS = ("catalog", "balance", "orders", "submit")
ORDERS = {"p0": 1, "p1": 2, "p2": 3}  # different counts: a doubled or lost series shows
# The series only the lease holder exports, by the labels that make one series.
# The series the database holds, by the labels that make one series, and whether every
# provider has one.
DATABASE_SERIES = {
    "syncd_orders": (("provider", "state"), True),
    "syncd_ambiguous_requests": (("provider",), True),
    "syncd_balance": (("provider", "currency"), True),
    "syncd_balance_low": (("provider",), True),
    "syncd_balance_drifting": (("provider",), True),
    "syncd_provider_up": (("provider",), True),
    "syncd_provider_throttled": (("provider",), True),
    "syncd_provider_last_answer_timestamp_seconds": (("provider",), True),
    "syncd_job_last_success_timestamp_seconds": (("provider", "task"), True),
    "syncd_job_failing_since_timestamp_seconds": (("provider", "task"), False),
    "syncd_webhook_backlog": (("webhook",), False),
    "syncd_webhook_oldest_undelivered_timestamp_seconds": (("webhook",), False),
    "syncd_instances": (("state",), False),
}
CODES = ("200", "429", "timeout", "network")  # the request outcomes known from the start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


Sample = tuple[dict[str, str], float]


class Prometheus:
    """`prometheus` on a loopback port of its own, scraping ``targets`` every second as
    job ``syncd`` and evaluating a copy of the shipped alert rules (when they exist)
    every second."""

    def __init__(self, directory: Path, targets: list[str]) -> None:
        assert PROMETHEUS is not None
        directory.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "syncd", "static_configs": [{"targets": targets}]},
            ],
        }
        if ALERT_RULES.exists():
            copy = directory / "alerts.yml"
            shutil.copyfile(ALERT_RULES, copy)
            config["rule_files"] = [str(copy)]
        # JSON is YAML: no YAML library needed to write Prometheus' config.
        (directory / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")
        self.log = (directory / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=5)
        deadline = time.monotonic() + 20
        while not self._ready():
            assert self.process.poll() is None, (directory / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **params: str) -> Any:
        reply = self.client.get(f"/api/v1/{path}", params=params)
        body = reply.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expression: str) -> list[Sample]:
        """The instant vector ``expression`` gives now, as (labels, value) pairs."""
        data = self.api("query", query=expression)
        assert data["resultType"] == "vector", data
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def range(self, expression: str, start: float, end: float) -> list[float]:
        """The times, a second apart from ``start`` to ``end``, at which ``expression``
        has a value (the one series it names)."""
        data = self.api("query_range", query=expression, start=str(start), end=str(end), step="1")
        found = data["result"]
        assert len(found) <= 1, found
        return [float(t) for t, _ in found[0]["values"]] if found else []

    def rules(self) -> list[dict[str, Any]]:
        """The rules Prometheus loaded, as it reports them (``query`` is the expression)."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def now(self) -> float:
        return float(self.api("query", query="time()")["result"][0])

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Callable[[list[str]], Prometheus]]:
    """Starts a Prometheus scraping the given ``host:port`` targets; stopped afterwards."""
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        started.append(Prometheus(tmp_path / f"prometheus{len(started)}", targets))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.close()


@pytest.fixture
def simulators() -> Iterator[list[SimulatorServer]]:
    # Orders stay active for the whole test: the open counts hold still once sent.
    servers = [
        SimulatorServer(SimulatedProvider(token=TOKEN, order_duration=3600)) for _ in PROVIDERS
    ]
    for server in servers:
        server.__enter__()
    yield servers
    for server in servers:
        server.__exit__(None, None, None)


@dataclass
class Instance:
    """One `syncd run` with a config of its own (its metrics port) and a directory of its
    own (its notify socket); ``start()`` again after it stopped is a restart."""

    config: Path
    directory: Path
    port: int
    daemons: list[Daemon]
    daemon: Daemon | None = None
    starts: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        directory = self.directory / f"run{self.starts}"
        directory.mkdir(parents=True)
        self.daemon = Daemon(self.config, directory, log_to=directory / "syncd.log")
        self.daemons.append(self.daemon)

    def stop(self, signum: int) -> None:
        assert self.daemon is not None
        self.daemon.process.send_signal(signum)
        self.daemon.process.wait(timeout=15)


def write_config(
    path: Path, db_url: str, servers: list[SimulatorServer], port: int, webhook: str
) -> Path:
    providers = "".join(
        f'[[providers]]\nname = "{name}"\nurl = "{server.url}"\ntoken = "{TOKEN}"\n'
        'timeout = "2s"\norders_interval = "1s"\nbalance_interval = "1h"\n'
        'catalog_interval = "1h"\n' + ('low_balance = "150.00"\n' if name == "p0" else "") + "\n"
        # p0's balance (100.00) is low from its first check: a balance.low alert in the
        # webhook backlog, and a syncd_balance_low at 1.
        for name, server in zip(PROVIDERS, servers, strict=True)
    )
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n[logging]\nformat = "json"\n\n'
        f'[cluster]\nlease_ttl = "{LEASE_TTL}s"\n\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n\n{providers}'
        f'[[webhooks]]\nname = "ops"\nurl = "{webhook}"\n',
        encoding="utf-8",
    )
    return path


@dataclass
class Watch:
    """What the test compares: Prometheus' answers against the database's rows."""

    prometheus: Prometheus
    db_url: str
    figures: list[str] = field(default_factory=list)

    def note(self, figure: str) -> None:
        self.figures.append(figure)
        print(figure)

    def wait(self, what: str, mismatch: Callable[[], str | None], timeout: float = 20) -> float:
        """Seconds until ``mismatch()`` finds nothing to say; fails with its last word."""
        started = time.monotonic()
        while (said := mismatch()) is not None:
            assert time.monotonic() - started < timeout, f"{what}: {said}"
            time.sleep(0.25)
        return time.monotonic() - started

    # -- the database ---------------------------------------------------------------

    def open_orders(self) -> dict[tuple[str, str], int]:
        counts = {(p, s.value): 0 for p in PROVIDERS for s in OPEN_STATES}
        for provider, state, n in sql(
            self.db_url, "SELECT provider, state, count(*) FROM orders GROUP BY provider, state"
        ):
            if (provider, state) in counts:
                counts[provider, state] = int(n)
        return counts

    def jobs(self) -> dict[tuple[str, str], tuple[datetime | None, datetime | None]]:
        """(last success, failing since) of each provider's task, as ``jobs`` holds them."""
        engine = sa.create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(tables.jobs)).mappings().all()
        finally:
            engine.dispose()
        return {(r["provider"], r["job"]): (r["last_success_at"], r["failing_since"]) for r in rows}

    def backlog(self) -> dict[str, int]:
        rows = sql(
            self.db_url,
            "SELECT webhook, count(*) FROM alert_deliveries "
            "WHERE delivered_at IS NULL AND failed_at IS NULL GROUP BY webhook",
        )
        return {str(w): int(n) for w, n in rows}

    def balances(self) -> dict[str, float]:
        rows = sql(self.db_url, "SELECT name, balance FROM providers WHERE balance IS NOT NULL")
        return {str(name): float(balance) for name, balance in rows}

    # -- Prometheus -----------------------------------------------------------------

    def holders(self) -> dict[str, str]:
        """Provider -> the instance (target) whose syncd_lease_held says 1."""
        held = self.prometheus.query("syncd_lease_held == 1")
        return {labels["provider"]: labels["instance"] for labels, _ in held}

    def exported_once_by_holder(self) -> str | None:
        """Each database series exported by exactly one instance: a provider's by its
        lease holder, the database-wide ones by the holder of the first lease by name."""
        holders = self.holders()
        if sorted(holders) != list(PROVIDERS):
            return f"leases held per Prometheus: {holders}"
        for name, (key, everyone) in DATABASE_SERIES.items():
            seen: dict[tuple[str, ...], list[str]] = {}
            for labels, _ in self.prometheus.query(name):
                seen.setdefault(tuple(labels.get(k, "") for k in key), []).append(
                    labels["instance"]
                )
            doubled = {k: v for k, v in seen.items() if len(v) != 1}
            if doubled:
                return f"{name} exported by several instances: {doubled}"
            wrong = {
                k: v
                for k, v in seen.items()
                if v != [holders.get(k[0] if key[0] == "provider" else PROVIDERS[0])]
            }
            if wrong:
                return f"{name} exported by an instance not holding the lease: {wrong} {holders}"
            if everyone and {k[0] for k in seen} != set(PROVIDERS):
                return f"{name} misses providers: {sorted(seen)}"
        return None

    def sums_match_tables(self) -> str | None:
        summed = {
            (labels["provider"], labels["state"]): int(value)
            for labels, value in self.prometheus.query("sum by (provider, state) (syncd_orders)")
        }
        table = self.open_orders()
        if {k: summed.get(k, 0) for k in table} != table or set(summed) - set(table):
            return f"sum by (provider, state) (syncd_orders) {summed} != orders table {table}"
        balances = {
            labels["provider"]: value
            for labels, value in self.prometheus.query("sum by (provider) (syncd_balance)")
        }
        if balances != self.balances():
            return f"syncd_balance {balances} != providers table {self.balances()}"
        backlog = {
            labels["webhook"]: int(value)
            for labels, value in self.prometheus.query("sum by (webhook) (syncd_webhook_backlog)")
        }
        if {w: n for w, n in backlog.items() if n} != self.backlog():
            return f"syncd_webhook_backlog {backlog} != alert_deliveries {self.backlog()}"
        return None

    def start_times(self) -> dict[str, float]:
        """Each instance's process_start_time_seconds, by target."""
        return {
            labels["instance"]: value
            for labels, value in self.prometheus.query("process_start_time_seconds")
        }

    def restarted(self, before: dict[str, float]) -> str | None:
        """Each target scraped as another process than ``before`` (the start times are
        compared with each other, not with this host's clock: a process' start time
        comes from the boot time, to the second)."""
        now = self.start_times()
        same = [t for t, started in before.items() if now.get(t, started) == started]
        if not same:
            return None
        scrapes = [
            (t["scrapeUrl"], t["health"], t["lastError"])
            for t in self.prometheus.api("targets")["activeTargets"]
        ]
        return f"still scraped as the old processes: {same}; {scrapes}"


def first_scrape(port: int, timeout: float = 15) -> str:
    """The first /metrics an instance answers with."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"nothing serves metrics on port {port}"
            time.sleep(0.02)


def samples(text: str, name: str) -> list[Sample]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def labelled(found: list[Sample], *names: str) -> set[tuple[str, ...]]:
    return {tuple(labels.get(n, "") for n in names) for labels, _ in found}


def expected_alerts(rules: list[dict[str, Any]]) -> set[str]:
    """The alerts this test makes happen on purpose: an instance stopped is a target
    that does not answer, and p0's balance is low from the start."""
    on_purpose = ("up{", "syncd_balance_low")
    return {r["name"] for r in rules if any(word in r["query"] for word in on_purpose)}


def timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def wait_for_both(watch: Watch, a: Instance, b: Instance) -> float:
    """Seconds until the leases are split over both instances, as Prometheus sees them."""

    def split() -> str | None:
        holders = watch.holders()
        both = sorted(holders) == list(PROVIDERS) and set(holders.values()) == {a.target, b.target}
        return None if both else f"leases held per Prometheus: {holders}"

    return watch.wait("leases split", split, timeout=4 * LEASE_TTL)


def check_a_scrape_with_promtool(watch: Watch, port: int) -> None:
    if PROMTOOL is None:
        return
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text,
        capture_output=True,
        text=True,
        check=False,
    )
    said = checked.stdout + checked.stderr
    watch.note(f"promtool check metrics: exit {checked.returncode}, said {said!r}")
    assert (checked.returncode, said) == (0, "")


def test_two_instances_export_what_the_database_holds_once_through_handovers_and_restarts(
    tmp_path: Path,
    any_db_url: str,
    simulators: list[SimulatorServer],
    daemons: list[Daemon],
    receiver: Receiver,
    prometheus_for: Callable[[list[str]], Prometheus],
) -> None:
    began = time.monotonic()
    receiver.broken = True  # alerts stay in the backlog: a backlog to export once
    a, b = (
        Instance(
            write_config(tmp_path / f"{n}.toml", any_db_url, simulators, port, receiver.url),
            tmp_path / n,
            port,
            daemons,
        )
        for n, port in (("a", free_port()), ("b", free_port()))
    )
    assert syncd(a.config, "migrate").returncode == 0
    prometheus = prometheus_for([a.target, b.target])
    watch = Watch(prometheus, any_db_url)
    backend = any_db_url.split(":", maxsplit=1)[0]

    # 2. Every labelled counter is there, at 0, in each instance's first answer.
    a.start()
    b.start()
    for instance in (a, b):
        text = first_scrape(instance.port)
        failures = {
            (labels["provider"], labels["task"]): value
            for labels, value in samples(text, "syncd_job_failures_total")
        }
        wanted = {(p, t) for p in PROVIDERS for t in TASKS}
        assert wanted <= set(failures), sorted(wanted - set(failures))
        assert {failures[k] for k in wanted} == {0}, failures
        codes = {
            (labels["provider"], labels["code"])
            for labels, _ in samples(text, "syncd_provider_requests_total")
        }
        assert {(p, c) for p in PROVIDERS for c in CODES} <= codes, sorted(codes)
    for instance in (a, b):
        assert instance.daemon is not None
        instance.daemon.wait_for("READY=1")

    # Orders a consumer queues once the catalogs are in, a different number per provider.
    def catalogs() -> str | None:
        synced = sql(any_db_url, "SELECT DISTINCT provider FROM packages")
        return None if len(synced) == len(PROVIDERS) else f"catalogs of {synced}"

    watch.wait("catalogs", catalogs)
    for provider, count in ORDERS.items():
        for n in range(count):
            sql(
                any_db_url,
                "INSERT INTO orders (provider, service_id, link, quantity) "
                "VALUES (:p, 100, :link, 100)",
                p=provider,
                link=f"https://x.example/{provider}/{n}",
            )

    def all_sent() -> str | None:
        active = {p: n for (p, s), n in watch.open_orders().items() if s == "active"}
        return None if active == ORDERS else f"active orders: {active}"

    watch.wait("orders sent", all_sent)

    # 1. Both instances work (the leases split), and each database series is exported
    # once, by its provider's lease holder, with the table's values.
    split = wait_for_both(watch, a, b)
    watch.note(
        f"[{backend}] leases split {split:.1f}s after the orders were sent: {watch.holders()}"
    )
    watch.wait("exported once", watch.exported_once_by_holder)
    watch.wait("sums equal the tables", watch.sums_match_tables)
    assert prometheus.query("sum(syncd_lease_held)")[0][1] == len(PROVIDERS)
    summed = prometheus.query("sum by (provider, state) (syncd_orders)")
    watch.note(
        f"[{backend}] sum by (provider, state) (syncd_orders): "
        f"{sorted((s[0]['provider'], s[0]['state'], s[1]) for s in summed if s[1])}; "
        f"orders table: {sorted((p, s, n) for (p, s), n in watch.open_orders().items() if n)}; "
        f"webhook backlog {prometheus.query('sum(syncd_webhook_backlog)')[0][1]:.0f}, "
        f"table {watch.backlog()}"
    )
    assert watch.backlog() != {}, "no alert in the backlog: the backlog check checked nothing"
    instances = {
        labels["state"]: value
        for labels, value in prometheus.query("sum by (state) (syncd_instances)")
    }
    assert instances.get("live") == 2, instances
    assert {value for _, value in prometheus.query("syncd_database_up")} == {1}
    check_a_scrape_with_promtool(watch, a.port)

    # 3. Handover: SIGTERM one; the survivor exports its providers' series, read from
    # the database (a catalog or balance success is the old holder's, to the microsecond).
    before = watch.jobs()
    handed_at = prometheus.now()
    assert a.daemon is not None and b.daemon is not None
    a.stop(signal.SIGTERM)

    def taken_over() -> str | None:
        holders = watch.holders()
        alone = sorted(holders) == list(PROVIDERS) and set(holders.values()) == {b.target}
        return None if alone else f"leases held per Prometheus: {holders}"

    takeover = watch.wait("taken over", taken_over, timeout=3 * LEASE_TTL)
    watch.note(f"[{backend}] SIGTERM: the survivor exports every lease {takeover:.1f}s later")
    watch.wait("exported once after the handover", watch.exported_once_by_holder)
    watch.wait("sums equal the tables after the handover", watch.sums_match_tables)
    success = {
        (labels["provider"], labels["task"]): (labels["instance"], value)
        for labels, value in prometheus.query("syncd_job_last_success_timestamp_seconds")
    }
    for (provider, task), (last_success, _) in before.items():
        if provider not in PROVIDERS or last_success is None:
            continue
        assert (provider, task) in success, f"{provider} {task}: no last success after handover"
        exporter, value = success[provider, task]
        assert exporter == b.target
        if task in ("catalog", "balance"):  # not run again since: the old holder's time
            assert value == pytest.approx(last_success.timestamp(), abs=1e-3), (provider, task)
        else:
            assert value >= last_success.timestamp() - 1e-3, (provider, task)
    rules = prometheus.rules()
    window = int(prometheus.now() - handed_at) + 2
    # Pending is no alert yet (a `for` bridges a second without a lease); firing is.
    alerted = {
        (labels["alertname"], labels["alertstate"], labels.get("provider", "")): int(value)
        for labels, value in prometheus.query(f"count_over_time(ALERTS[{window}s])")
    }
    watch.note(f"[{backend}] alerts around the handover ({window}s), evaluations each: {alerted}")
    fired = {name for name, state, _ in alerted if state == "firing"}
    assert fired <= expected_alerts(rules), fired - expected_alerts(rules)

    # 4. A real failure survives restarts: p1's orders task fails (its status calls get
    # a proxy's 502 page); its failing_since comes back, with the same value, after the
    # instance working for p1 is killed and the other stopped, and both start again.
    a.start()
    wait_for_both(watch, a, b)
    simulators[1].provider.inject(Fault.HTML_502, times=None, actions=["status"])
    failing_series = 'syncd_job_failing_since_timestamp_seconds{provider="p1",task="orders"}'

    def failing_since_from_jobs() -> str | None:
        since = timestamp(watch.jobs().get(("p1", "orders"), (None, None))[1])
        exported = prometheus.query(failing_series)
        if since is None or [v for _, v in exported] != [pytest.approx(since, abs=1e-3)]:
            return f"jobs says {since}, Prometheus has {exported}"
        return None

    watch.wait("failing since", failing_since_from_jobs)
    (before_restart,) = prometheus.query(failing_series)
    # The shipped rule for a failing orders job (no `for`: it fires once the job failed
    # for three intervals) names p1, and keeps firing across the restart.
    failing_rule = [
        r["query"]
        for r in rules
        if r["name"] == "SyncdJobFailing" and 'task="orders"' in r["query"]
    ]
    alert = 'ALERTS{alertname="SyncdJobFailing",alertstate="firing",provider="p1",task="orders"}'
    if ALERT_RULES.exists():
        assert len(failing_rule) == 1, rules
        watch.wait("SyncdJobFailing", lambda: None if prometheus.query(alert) else "not firing")
        assert ("p1", "orders") in labelled(prometheus.query(failing_rule[0]), "provider", "task")

    holder = watch.holders()["p1"]
    victim, other = (a, b) if holder == a.target else (b, a)
    restarted_at = time.time()
    begin = prometheus.now()
    start_times = watch.start_times()
    victim.stop(signal.SIGKILL)
    other.stop(signal.SIGTERM)
    victim.start()
    other.start()
    watch.wait("restarted", lambda: watch.restarted(start_times))
    back = watch.wait("failing since after the restart", failing_since_from_jobs, 4 * LEASE_TTL)
    (after_restart,) = prometheus.query(failing_series)
    watch.note(
        f"[{backend}] failing_since of p1/orders: {before_restart[1]:.3f} before, "
        f"{after_restart[1]:.3f} after a kill -9 of its holder, a SIGTERM of the other and "
        f"two starts ({time.time() - restarted_at:.1f}s, {back:.1f}s of them once scraped)"
    )
    assert after_restart[1] == before_restart[1]
    if failing_rule:
        assert ("p1", "orders") in labelled(prometheus.query(failing_rule[0]), "provider", "task")
        firing = prometheus.range(alert, begin, prometheus.now())
        watch.note(
            f"[{backend}] SyncdJobFailing for p1 firing at {len(firing)} of "
            f"{int(prometheus.now() - begin) + 1} evaluations (1s steps) across the restart"
        )
        assert len(firing) >= prometheus.now() - begin - 1
    wait_for_both(watch, a, b)
    watch.wait("exported once after the restart", watch.exported_once_by_holder)
    watch.wait("sums equal the tables after the restart", watch.sums_match_tables)
    check_a_scrape_with_promtool(watch, b.port)

    # 5. Every shipped rule is loaded, evaluates, and is reported healthy.
    shipped = (
        re.findall(r"^\s*- (?:alert|record):", ALERT_RULES.read_text(encoding="utf-8"), re.M)
        if ALERT_RULES.exists()
        else []
    )
    evaluated = prometheus.rules()
    assert len(evaluated) == len(shipped)
    for rule in evaluated:
        prometheus.query(rule["query"])  # answers with success, or api() fails
    sick = [(r["name"], r["health"], r.get("lastError")) for r in evaluated if r["health"] != "ok"]
    assert sick == []
    watch.note(f"[{backend}] {len(evaluated)} rules loaded, each evaluates and is healthy")
    watch.note(f"[{backend}] the whole scenario took {time.monotonic() - began:.1f}s")
