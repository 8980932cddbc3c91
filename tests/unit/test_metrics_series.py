"""Which instance exports which series: the database's values once over all instances,
each instance's own always, and every known counter at 0 from the first scrape."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from syncd.errors import StorageError
from syncd.metrics import KNOWN_CODES, Known, Metrics
from syncd.models import JobState, Lease, ProviderOverview, WebhookBacklog
from syncd.storage.overview import OPEN_STATES, Monitored

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
# Series each instance exports about itself; every other syncd_* series is the database's.
OWN = {
    "syncd_build_info", "syncd_database_up", "syncd_lease_held", "syncd_job_interval_seconds",
    "syncd_job_duration_seconds_bucket", "syncd_job_duration_seconds_count",
    "syncd_job_duration_seconds_sum", "syncd_job_failures_total",
    "syncd_provider_requests_total", "syncd_provider_request_duration_seconds_bucket",
    "syncd_provider_request_duration_seconds_count",
    "syncd_provider_request_duration_seconds_sum",
}  # fmt: skip
Sample = tuple[str, tuple[tuple[str, str], ...], float]


class Daemon:
    """One instance as the metrics see it, over a database shared by all."""

    def __init__(self, me: str, known: Sequence[Known], db: Monitored | None) -> None:
        self.me, self._known, self._db = me, known, db

    def providers(self) -> Sequence[Known]:
        return self._known

    def held(self) -> list[str]:
        return (
            []
            if self._db is None
            else [n for n, held in self._db.leases.items() if held.holder == self.me]
        )

    def monitored(self) -> Monitored:
        if self._db is None:
            raise StorageError("database error: connection refused")
        return self._db


def scrape(daemon: Daemon) -> list[Sample]:
    metrics = Metrics()
    metrics.know(daemon.providers(), ("alerts",))
    metrics.watch(daemon)
    text = generate_latest(metrics.registry).decode()
    return [
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("syncd_")
    ]


def provider(name: str, orders: dict[str, int], *, failing: bool = False) -> ProviderOverview:
    job = JobState("orders", NOW, None if failing else NOW, NOW, None, NOW if failing else None)
    return ProviderOverview(
        name=name, url="https://x", currency="USD", balance=Decimal("12.5"),
        balance_checked_at=NOW, health="up", last_error=None, catalog_synced_at=NOW,
        active_packages=3, open_orders=sum(orders.values()), orders=orders, jobs=(job,),
        answered_at=NOW,
    )  # fmt: skip


def known(name: str) -> Known:
    return Known(name, ["services", "balance", "status", "add"], {"orders": 60.0, "balance": 300.0})


def lease(name: str, holder: str) -> Lease:
    return Lease(name, holder, 1, NOW + timedelta(seconds=30))


def labels(sample: Sample) -> dict[str, str]:
    return dict(sample[1])


@given(
    st.integers(1, 5),
    st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e", "f"]),
        st.tuples(
            st.fixed_dictionaries({s.value: st.integers(0, 10**6) for s in OPEN_STATES}),
            st.integers(-1, 5),  # the lease holder: an instance, or -1 for none (expired)
        ),
        max_size=6,
    ),
    st.integers(0, 5),
)
def test_summing_over_instances_counts_every_database_value_once(
    instances: int, table: dict[str, tuple[dict[str, int], int]], undelivered: int
) -> None:
    names = [f"host:{i}:0" for i in range(instances)]
    leases = {
        p: lease(p, names[holder] if holder < instances else "host:dead:0")
        for p, (_, holder) in table.items()
        if holder >= 0
    }
    db = Monitored(
        [provider(p, orders) for p, (orders, _) in sorted(table.items())],
        [WebhookBacklog("ops", undelivered, 0, None, NOW if undelivered else None)],
        leases,
        instances,
        0,
    )
    everything = [s for me in names for s in scrape(Daemon(me, [known(p) for p in table], db))]
    served = {p for p, held in leases.items() if held.holder in names}  # by a live instance

    totals: Counter[tuple[str, str]] = Counter()
    for name, label_items, value in everything:
        if name == "syncd_orders":
            totals[labels((name, label_items, value))["provider"], dict(label_items)["state"]] += (
                int(value)
            )
    assert totals == Counter(
        {(p, s): n for p, (orders, _) in table.items() if p in served for s, n in orders.items()}
    ) + Counter({(p, s): 0 for p in served for s in table[p][0]})  # zeros are series too

    # Every database series of a provider comes from one instance, or from none when the
    # instance holding its lease is gone (another takes it over).
    database = [s for s in everything if s[0] not in OWN]
    per_series = Counter((name, items) for name, items, _ in database)
    assert set(per_series.values()) <= {1}
    assert {labels(s)["provider"] for s in database if "provider" in labels(s)} == served
    # The database-wide ones come from the holder of the first lease, if it is alive.
    backlog = [s for s in database if s[0] == "syncd_webhook_backlog"]
    first_alive = bool(leases) and leases[min(leases)].holder in names
    assert [v for _, _, v in backlog] == ([undelivered] if first_alive else [])
    # Every instance says which leases it holds: exactly one 1 per served provider.
    held = Counter(
        labels(s)["provider"] for s in everything if s[0] == "syncd_lease_held" and s[2] == 1
    )
    assert held == Counter({p: 1 for p in served})


def test_every_known_counter_is_at_zero_from_the_first_scrape() -> None:
    samples = scrape(Daemon("host:1:0", [known("p")], None))
    zeros = {
        (name, tuple(v for _, v in items))
        for name, items, value in samples
        if value == 0 and name in ("syncd_job_failures_total", "syncd_provider_requests_total")
    }
    assert {("syncd_job_failures_total", ("p", t)) for t in ("orders", "balance")} <= zeros
    assert ("syncd_job_failures_total", ("", "alerts")) in zeros
    for action in ("services", "balance", "status", "add"):
        for code in KNOWN_CODES:
            assert ("syncd_provider_requests_total", (action, code, "p")) in zeros
    histograms = {labels(s)["task"] for s in samples if s[0] == "syncd_job_duration_seconds_count"}
    assert histograms == {"orders", "balance", "alerts"}


def test_a_database_that_does_not_answer_leaves_the_instance_s_own_series() -> None:
    samples = scrape(Daemon("host:1:0", [known("p")], None))
    by_name = {name for name, _, _ in samples}
    assert ("syncd_database_up", (), 0.0) in samples
    assert ("syncd_build_info", (("version", labels_version(samples)),), 1.0) in samples
    assert {"syncd_lease_held", "syncd_job_interval_seconds"} <= by_name
    assert not by_name & {"syncd_orders", "syncd_balance", "syncd_webhook_backlog"}


def labels_version(samples: list[Sample]) -> str:
    (version,) = [labels(s)["version"] for s in samples if s[0] == "syncd_build_info"]
    assert version
    return version


def test_a_failing_task_says_since_when_and_a_healthy_one_when_it_last_succeeded() -> None:
    db = Monitored(
        [provider("bad", {}, failing=True), provider("good", {})],
        [],
        {"bad": lease("bad", "me"), "good": lease("good", "me")},
        1,
        0,
    )
    samples = scrape(Daemon("me", [known("bad"), known("good")], db))
    failing = {
        labels(s)["provider"]
        for s in samples
        if s[0] == "syncd_job_failing_since_timestamp_seconds"
    }
    success = {
        labels(s)["provider"] for s in samples if s[0] == "syncd_job_last_success_timestamp_seconds"
    }
    assert (failing, success) == ({"bad"}, {"good"})
    stamps = {s[2] for s in samples if s[0].endswith("_timestamp_seconds")}
    assert stamps == {NOW.timestamp()}


def test_a_database_that_hangs_costs_its_series_not_the_scrape() -> None:
    release, finished = threading.Event(), threading.Event()
    reads: list[int] = []

    class Locked(Daemon):
        def monitored(self) -> Monitored:
            reads.append(1)
            release.wait(10)  # a scrape that waited for it would see the database answer
            finished.set()
            return Monitored([provider("p", {})], [], {"p": lease("p", "me")}, 1, 0)

    metrics = Metrics()
    metrics.watch(Locked("me", [known("p")], None), wait=0.2)
    try:
        for _ in range(2):
            text = generate_latest(metrics.registry).decode()
            assert "syncd_database_up 0.0" in text and "syncd_orders{" not in text
            assert 'syncd_lease_held{provider="p"}' in text
        assert len(reads) == 1  # the second scrape waited for the first's read, not a new one
    finally:
        release.set()
    assert finished.wait(10)
    text = generate_latest(metrics.registry).decode()  # the database answers again
    assert "syncd_database_up 1.0" in text and 'syncd_orders{provider="p"' in text
