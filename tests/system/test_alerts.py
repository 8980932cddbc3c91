"""What raises alerts: balance crossings, provider health, catalog changes.

Transitions only, kept in the database: a restart never raises an alert again. Delivery
to webhooks is tested in test_webhooks.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd import logs
from syncd.cli import main
from syncd.config import load_config
from syncd.errors import AuthError, StorageError, TransientError
from syncd.jobs.balance import plan_balance, runway_hours
from syncd.jobs.health import CLEAN, plan_health
from syncd.jobs.runner import ProviderRunner
from syncd.models import Balance, Event
from syncd.plans import ALERT_LOG_LEVELS, AlertIntent, BalancePlan
from syncd.secret import Secret
from syncd.simulator import Fault, SimPackage, SimulatorServer
from syncd.storage import Storage, open_storage
from tests.conftest import TOKEN, write_config
from tests.fakes import FakeClock

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def alerts(db_url: str) -> list[tuple[str, dict[str, object]]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        rows = conn.execute("SELECT event, payload FROM alerts ORDER BY id").fetchall()
    return [(event, json.loads(payload)) for event, payload in rows]


def events(db_url: str) -> list[str]:
    return [event for event, _ in alerts(db_url)]


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


# -- balance ---------------------------------------------------------------------------


@pytest.fixture
def low_config(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    return write_config(tmp_path / "low.toml", db_url, server.url, extra='low_balance = "50.00"')


def test_crossing_below_twice_in_a_row_alerts_once(
    low_config: Path, db_url: str, server: SimulatorServer
) -> None:
    server.provider.balance = Decimal("40.00")
    assert run(low_config, "sync", "balance") == 0
    server.provider.balance = Decimal("30.00")
    assert run(low_config, "sync", "balance") == 0
    assert events(db_url) == ["balance.low"]
    (_, payload) = alerts(db_url)[0]
    assert payload["data"]["balance"] == "40.00" and payload["data"]["threshold"] == "50.00"  # type: ignore[index]


def test_a_restart_between_low_readings_does_not_alert_again(
    low_config: Path, db_url: str, server: SimulatorServer
) -> None:
    # Each `syncd sync` is a new process opening the database afresh: a restart.
    server.provider.balance = Decimal("40.00")
    assert run(low_config, "sync", "balance") == 0
    assert run(low_config, "sync", "balance") == 0
    server.provider.balance = Decimal("49.99")
    assert run(low_config, "sync", "balance") == 0
    assert events(db_url) == ["balance.low"]


def test_recovery_alerts_once_and_a_new_drop_alerts_again(
    low_config: Path, db_url: str, server: SimulatorServer
) -> None:
    for amount in ("40.00", "50.00", "60.00", "45.00"):
        server.provider.balance = Decimal(amount)
        assert run(low_config, "sync", "balance") == 0
    assert events(db_url) == ["balance.low", "balance.recovered", "balance.low"]


def test_a_balance_above_the_threshold_never_alerts(
    low_config: Path, db_url: str, server: SimulatorServer
) -> None:
    assert run(low_config, "sync", "balance") == 0  # 100.00
    assert events(db_url) == []


def test_balance_low_carries_the_runway(
    low_config: Path, db_url: str, server: SimulatorServer
) -> None:
    server.provider.balance = Decimal("80.00")
    assert run(low_config, "sync", "balance") == 0
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:  # the reading 12 h ago
        conn.execute("UPDATE balance_snapshots SET observed_at = datetime('now', '-12 hours')")
    server.provider.balance = Decimal("40.00")
    assert run(low_config, "sync", "balance") == 0
    ((_, payload),) = alerts(db_url)
    runway = Decimal(str(payload["data"]["runway_hours"]))  # type: ignore[index]
    assert Decimal("11.9") <= runway <= Decimal("12.1")  # 40 spent in 12 h, 40 left
    assert "about 12" in str(payload["text"])


def test_plan_balance_without_a_threshold_never_alerts() -> None:
    plan = plan_balance("p", None, Balance(Decimal("0"), "USD"), NOW)
    assert plan.alerts == [] and plan.low is False


def test_runway_counts_drops_not_top_ups() -> None:
    history = [
        (NOW - timedelta(hours=30), Decimal("100")),  # before the window: the baseline
        (NOW - timedelta(hours=20), Decimal("90")),
        (NOW - timedelta(hours=10), Decimal("190")),  # a top-up is not spend
        (NOW, Decimal("180")),
    ]
    # 20 spent over the 24 h window: 5/6 per hour; 180 left.
    assert runway_hours(history, NOW) == Decimal("216.0")


def test_runway_is_unknown_without_spend_or_history() -> None:
    assert runway_hours([], NOW) is None
    assert runway_hours([(NOW, Decimal("5"))], NOW) is None
    assert (
        runway_hours([(NOW - timedelta(hours=1), Decimal("5")), (NOW, Decimal("6"))], NOW) is None
    )


def test_status_shows_runway_and_low(
    low_config: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.provider.balance = Decimal("40.00")
    assert run(low_config, "sync", "balance") == 0
    capsys.readouterr()
    assert run(low_config, "status", "--json") == 0
    (provider,) = json.loads(capsys.readouterr().out)["providers"]
    assert provider["balance_low"] is True and provider["runway_hours"] is None
    assert run(low_config, "status") == 0
    out = capsys.readouterr().out
    assert "40 USD LOW" in out and "runway   unknown" in out


# -- provider health -------------------------------------------------------------------


def test_plan_health_transitions() -> None:
    down = TransientError("p", "HTTP 502", maybe_processed=True)
    state, raised = CLEAN, []
    for _ in range(5):
        state, new = plan_health("p", state, down, NOW)
        raised += new
    assert [a.event for a in raised] == [Event.PROVIDER_DOWN]
    assert (state.health, state.consecutive_failures, state.last_error) == ("down", 5, "HTTP 502")
    state, new = plan_health("p", state, None, NOW)
    assert state == CLEAN and [a.event for a in new] == [Event.PROVIDER_UP]
    assert plan_health("p", CLEAN, None, NOW) == (CLEAN, [])


def test_two_failures_then_a_success_raise_nothing() -> None:
    error = TransientError("p", "timeout", maybe_processed=True)
    state, first = plan_health("p", CLEAN, error, NOW)
    state, second = plan_health("p", state, error, NOW)
    state, third = plan_health("p", state, None, NOW)
    assert first == second == third == [] and state == CLEAN


def test_three_failing_calls_raise_provider_down_once_and_a_success_up(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    config = write_config(tmp_path / "h.toml", db_url, server.url)
    server.provider.inject(Fault.HTML_502, times=None)
    for _ in range(5):
        assert run(config, "sync", "balance") == 1
    assert events(db_url) == ["provider.down"]
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT health, consecutive_failures FROM providers").fetchall() == [
            ("down", 5)
        ]
    server.provider.clear_faults()
    assert run(config, "sync", "balance") == 0
    assert run(config, "sync", "balance") == 0
    assert events(db_url) == ["provider.down", "provider.up"]
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute(
            "SELECT health, consecutive_failures, last_error FROM providers"
        ).fetchall() == [("up", 0, None)]


def test_failures_count_across_jobs(tmp_path: Path, db_url: str, server: SimulatorServer) -> None:
    config = write_config(tmp_path / "j.toml", db_url, server.url)
    server.provider.inject(Fault.RESET, times=None)
    # catalog and balance fail (orders makes no call without orders): two calls...
    assert run(config, "sync", "catalog") == 1
    assert run(config, "sync", "balance") == 1
    assert events(db_url) == []
    assert run(config, "sync", "catalog") == 1  # ...and the third, from another job
    assert events(db_url) == ["provider.down"]


def test_a_rejected_token_raises_auth_failed_once(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    config = write_config(tmp_path / "a.toml", db_url, server.url, token="wrong-token")
    for _ in range(4):
        assert run(config, "sync", "balance") == 1
    assert events(db_url) == ["provider.auth_failed", "provider.down"]
    good = write_config(tmp_path / "g.toml", db_url, server.url)
    assert run(good, "sync", "balance") == 0
    assert run(config, "sync", "balance") == 1  # a new streak of rejections alerts again
    assert events(db_url) == [
        "provider.auth_failed",
        "provider.down",
        "provider.up",
        "provider.auth_failed",
    ]


def test_a_provider_answering_only_429_is_throttled_once_then_unthrottled(
    tmp_path: Path, db_url: str, server: SimulatorServer, instant_pauses: FakeClock
) -> None:
    """A banned key: every call gets 429. Each pass is a new process (a restart) on the
    clock the pauses move: the alert comes once the 429s have lasted throttled_after."""
    clock = instant_pauses
    path = write_config(tmp_path / "t.toml", db_url, server.url, extra='throttled_after = "10m"')
    provider = load_config(path).providers[0]
    server.provider.retry_after = 25  # each call waits out two, meets a third, and defers
    server.provider.inject(Fault.RATE_LIMIT, times=None)

    async def balance_pass() -> str:
        storage = open_storage(db_url)
        storage.register_providers([(provider.name, provider.url)])  # as every start does
        storage.set_webhooks([("ops", frozenset(THROTTLE_EVENTS)), ("money", None),
                              ("funds", frozenset({"balance.low"}))])  # fmt: skip
        try:
            async with ProviderRunner(provider, storage, clock=clock) as runner:
                return (await runner.run("balance")).message
        finally:
            storage.close()

    start = clock.now
    passes = []
    while clock.now - start < timedelta(minutes=20):
        passes.append((clock.now - start, asyncio.run(balance_pass()), events(db_url)))
        clock.advance(minutes=2)
        pause_served(db_url)
    assert all(message.startswith("deferred: HTTP 429") for _, message, _ in passes)
    raised = [(at, seen) for at, _, seen in passes if seen]
    assert raised, "never throttled"
    first_at, first = raised[0]
    assert first == ["provider.throttled"] and first_at >= timedelta(minutes=10)
    assert all(seen == ["provider.throttled"] for _, seen in raised)  # once, restarts or not
    (_, payload) = alerts(db_url)[0]
    assert "answered only 429" in str(payload["text"])
    assert provider_row(db_url) == ("up", 0, 1, start)  # no failed call, throttled since start

    server.provider.clear_faults()
    assert asyncio.run(balance_pass()) == "100 USD"
    assert events(db_url) == ["provider.throttled", "provider.unthrottled"]
    assert provider_row(db_url) == ("up", 0, 0, None)
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        routed = conn.execute(
            "SELECT webhook, count(*) FROM alert_deliveries GROUP BY webhook ORDER BY webhook"
        ).fetchall()
    assert routed == [("money", 2), ("ops", 2)]  # webhooks get them as any other event


THROTTLE_EVENTS = ("provider.throttled", "provider.unthrottled")


def test_a_429_waited_out_before_a_success_is_no_throttle(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    config = write_config(tmp_path / "t.toml", db_url, server.url, extra='throttled_after = "1m"')
    server.provider.retry_after = 59
    for _ in range(3):
        server.provider.inject(Fault.RATE_LIMIT, times=1)
        assert run(config, "sync", "balance") == 0
        pause_served(db_url)
    assert events(db_url) == []
    assert provider_row(db_url) == ("up", 0, 0, None)


def pause_served(db_url: str) -> None:
    """The pause a 429 asked for, and the careful spell after it, are over: time passes
    between two passes, on the database's clock too, which the tests' clock cannot move
    (every process remembers a pause there: a pass right after would wait it out)."""
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE call_pace SET paused_until = NULL, careful_until = NULL")


def provider_row(db_url: str) -> tuple[object, ...]:
    """health, consecutive_failures, throttled, throttled_since (as a time, or None)."""
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        health, failures, throttled, since = conn.execute(
            "SELECT health, consecutive_failures, throttled, throttled_since FROM providers"
        ).fetchone()
    at = datetime.fromisoformat(since).replace(tzinfo=UTC) if since is not None else None
    return health, failures, throttled, at


def test_plan_health_auth_error() -> None:
    state, raised = plan_health("p", CLEAN, AuthError("p", "token rejected: Invalid API key"), NOW)
    assert state.auth_failed and [a.event for a in raised] == [Event.PROVIDER_AUTH_FAILED]
    _, again = plan_health("p", state, AuthError("p", "token rejected"), NOW)
    assert again == []


def test_a_refused_order_does_not_count_against_the_provider(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    config = write_config(tmp_path / "r.toml", db_url, server.url)
    assert run(config, "sync", "catalog") == 0
    server.provider.balance = Decimal("0")
    for _ in range(3):
        assert run(config, "order", "add", "--provider", "sim", "--package", "100",
                   "--link", "https://x", "--quantity", "100") == 1  # fmt: skip
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT health, consecutive_failures FROM providers").fetchall() == [
            ("up", 0)
        ]
    assert events(db_url) == []


# -- catalog ---------------------------------------------------------------------------


@pytest.fixture
def synced(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    config = write_config(tmp_path / "c.toml", db_url, server.url)
    assert run(config, "sync", "catalog") == 0
    assert events(db_url) == []  # filling the catalog the first time is no news
    return config


def test_a_catalog_sync_changing_50_packages_raises_one_alert(
    synced: Path, db_url: str, server: SimulatorServer
) -> None:
    sim = server.provider
    for service in range(100, 130):
        sim.set_rate(service, sim.packages[service].rate + Decimal("0.01"))
    for service in range(130, 140):
        sim.remove_package(service)
    for n in range(10):
        sim.add_package(SimPackage(600 + n, f"New {n}", "Default", "New", Decimal("1.00"), 10, 100))
    assert run(synced, "sync", "catalog") == 0
    ((event, payload),) = alerts(db_url)
    data = payload["data"]
    assert event == "package.rate_changed"
    assert data["counts"] == {"added": 10, "removed": 10, "repriced": 30}  # type: ignore[index]
    assert data["events"] == ["package.rate_changed", "package.removed", "package.added"]  # type: ignore[index]
    first = data["repriced"][0]  # type: ignore[index]
    assert (first["old_rate"], first["new_rate"], first["percent"]) == ("0.9000", "0.9100", 1.1)
    assert "30 repriced" in str(payload["text"]) and "and 25 more" in str(payload["text"])


def test_only_additions_are_a_package_added_alert(
    synced: Path, db_url: str, server: SimulatorServer
) -> None:
    server.provider.add_package(SimPackage(700, "Fresh", "Default", "New", Decimal("2"), 10, 100))
    assert run(synced, "sync", "catalog") == 0
    assert events(db_url) == ["package.added"]


def test_an_unchanged_catalog_raises_nothing(synced: Path, db_url: str) -> None:
    assert run(synced, "sync", "catalog") == 0
    assert events(db_url) == []


def test_a_refused_catalog_raises_catalog_suspicious_once_per_streak(
    synced: Path, db_url: str, server: SimulatorServer
) -> None:
    server.provider.inject(Fault.EMPTY_LIST, times=2)
    assert run(synced, "sync", "catalog") == 1
    assert run(synced, "sync", "catalog") == 1
    assert events(db_url) == ["catalog.suspicious"]
    assert run(synced, "sync", "catalog") == 0
    server.provider.inject(Fault.EMPTY_LIST)
    assert run(synced, "sync", "catalog") == 1
    assert events(db_url) == ["catalog.suspicious", "catalog.suspicious"]
    (_, payload) = alerts(db_url)[0]
    assert "empty catalog" in str(payload["text"])


# -- orders ----------------------------------------------------------------------------


def test_order_alerts_are_in_the_outbox(synced: Path, db_url: str, server: SimulatorServer) -> None:
    server.provider.inject(Fault.HTML_502, actions=["add"], after_processing=True)
    assert run(synced, "order", "add", "--provider", "sim", "--package", "100",
               "--link", "https://x", "--quantity", "100") == 1  # fmt: skip
    (placed,) = server.provider.create_orders(1)
    assert run(synced, "order", "track", "--provider", "sim", str(placed)) == 0
    for _ in range(3):  # abandoned on the third check in a row that finds it too old
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(
                "UPDATE orders SET created_at = '2000-01-01 00:00:00', "
                f"next_check_at = '2000-01-01 00:00:00' WHERE provider_order_id = {placed}"
            )
        assert run(synced, "sync", "orders") == 0
    assert events(db_url) == ["order.ambiguous", "order.abandoned"]


def test_removing_low_balance_from_the_config_raises_nothing(
    low_config: Path, tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    server.provider.balance = Decimal("40.00")
    assert run(low_config, "sync", "balance") == 0
    no_threshold = write_config(tmp_path / "none.toml", db_url, server.url)
    server.provider.balance = Decimal("39.00")
    assert run(no_threshold, "sync", "balance") == 0
    assert events(db_url) == ["balance.low"]


@pytest.mark.parametrize(
    "fault", [Fault.NOT_A_LIST, Fault.ERROR_STRING, Fault.ERRORS_OBJECT, Fault.EMPTY_LIST]
)
def test_a_catalog_reply_that_is_not_a_catalog_raises_catalog_suspicious(
    synced: Path, db_url: str, server: SimulatorServer, fault: Fault
) -> None:
    server.provider.inject(fault)
    assert run(synced, "sync", "catalog") == 1
    assert events(db_url) == ["catalog.suspicious"]


@pytest.mark.parametrize("fault", [Fault.HTML_502, Fault.HTML_200, Fault.TRUNCATED_JSON])
def test_a_catalog_reply_that_is_no_json_is_provider_health_not_suspicious(
    synced: Path, db_url: str, server: SimulatorServer, fault: Fault
) -> None:
    # A maintenance page, a proxy's 502 or broken JSON: the provider is failing, whatever
    # HTTP status came with it. Each sync is one failed call; the third in a row is down.
    server.provider.inject(fault, times=None)
    for calls in (1, 2, 3):
        assert run(synced, "sync", "catalog") == 1
        assert failed_calls(db_url) == calls
    assert events(db_url) == ["provider.down"]


def failed_calls(db_url: str) -> int:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        (count,) = conn.execute("SELECT consecutive_failures FROM providers").fetchone()
    return int(count)


# -- two processes on one database -------------------------------------------------------


def test_two_processes_syncing_at_once_record_each_change_and_alert_once(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    # Both fetch before either writes (the provider answers slowly). Leases keep two
    # instances from working for one provider at once; this is the guarantee below them:
    # two runners that both believe they may write still record each change once.
    config_path = write_config(
        tmp_path / "two.toml", db_url, server.url, extra='low_balance = "150.00"'
    )
    config = load_config(config_path)
    assert run(config_path, "sync", "catalog") == 0
    track_ids = server.provider.create_orders(20)
    assert run(config_path, "order", "track", "--provider", "sim", *map(str, track_ids)) == 0
    server.provider.set_rate(100, Decimal("1.23"))
    server.provider.latency = 0.3
    first, second = open_storage(db_url), open_storage(db_url)

    async def unleased(storage: Storage) -> None:
        async with ProviderRunner(config.providers[0], storage) as runner:
            for job in ("catalog", "balance", "orders"):
                await runner.run(job)

    async def both() -> None:
        await asyncio.gather(unleased(first), unleased(second))

    try:
        asyncio.run(both())
    finally:
        first.close()
        second.close()
    assert server.provider.count("balance") == 2  # both really asked
    assert sorted(events(db_url)) == ["balance.low", "package.rate_changed"]
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT count(*) FROM balance_snapshots").fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FROM package_changes WHERE change = 'updated'"
        ).fetchone() == (1,)
        # one activation row per tracked order, then one change each (status Pending)
        assert conn.execute("SELECT count(*) FROM order_changes").fetchone() == (40,)


# -- alerts in the log -------------------------------------------------------------------


def alert_lines(logged: list[MutableMapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [
        (e["log_level"], e["alert"], e["provider"], e["text"])
        for e in logged
        if e["event"] == "alert.raised"
    ]


def test_an_alert_whose_transaction_commits_is_logged_once_at_its_level(
    any_storage: Storage, logged: list[MutableMapping[str, Any]]
) -> None:
    any_storage.register_providers([("sim", "https://a.example/v2")])

    def reading(amount: str) -> Callable[[Balance | None, bool], BalancePlan]:
        def decide(last: Balance | None, was_low: bool) -> BalancePlan:
            fetched = Balance(Decimal(amount), "USD")
            return plan_balance("sim", last, fetched, NOW, low_balance=Decimal(50), was_low=was_low)

        return decide

    any_storage.apply_balance("sim", reading("40"))  # below: bad news
    any_storage.apply_balance("sim", reading("30"))  # still below: no alert
    any_storage.apply_balance("sim", reading("60"))  # back up: good news
    lines = alert_lines(logged)
    assert [(level, alert, provider) for level, alert, provider, _ in lines] == [
        ("warning", "balance.low", "sim"),
        ("info", "balance.recovered", "sim"),
    ]
    assert "40" in lines[0][3]  # the alert's own text
    ids = [e["alert_id"] for e in logged if e["event"] == "alert.raised"]
    assert len(set(ids)) == 2  # each alert row once


def test_an_alert_whose_transaction_rolls_back_is_not_logged(
    storage: Storage, logged: list[MutableMapping[str, Any]], db_url: str
) -> None:
    storage.register_providers([("sim", "https://a.example/v2")])
    plan = plan_balance("sim", None, Balance(Decimal(1), "USD"), NOW, low_balance=Decimal(50))
    assert [a.event for a in plan.alerts] == [Event.BALANCE_LOW]

    def written_then_failed(conn: sa.Connection) -> None:
        storage._write_balance(conn, plan)  # the alert row is in, not yet committed
        raise StorageError("a later write of the same transaction failed")

    with pytest.raises(StorageError):
        storage._write(written_then_failed)
    assert events(db_url) == []  # rolled back
    assert alert_lines(logged) == []  # and never said
    storage._write(lambda conn: storage._write_balance(conn, plan))
    assert [alert for _, alert, _, _ in alert_lines(logged)] == ["balance.low"]


def test_an_alert_line_shows_no_token_even_if_its_text_quoted_one(
    storage: Storage, tmp_path: Path
) -> None:
    storage.register_providers([("sim", "https://a.example/v2")])
    out = io.StringIO()
    logs.configure(fmt="json", secrets=[Secret(TOKEN)], stream=out)
    quoted = AlertIntent(Event.ORDER_AMBIGUOUS, "sim", f"the provider said: bad key {TOKEN}")
    storage._write(lambda conn: storage._insert_alerts(conn, [quoted], NOW))
    (line,) = [json.loads(x) for x in out.getvalue().splitlines() if "alert.raised" in x]
    assert line["alert"] == "order.ambiguous" and line["level"] == "warning"
    assert TOKEN not in out.getvalue() and "the provider said: bad key" in line["text"]


def test_every_alert_event_has_a_log_level() -> None:
    assert set(ALERT_LOG_LEVELS) == set(Event)
