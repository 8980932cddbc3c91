"""Alert delivery end to end: real HTTP to a webhook receiver on loopback, a real database.

The receiver (``tests.fakes.Receiver``) is a standard library HTTP server that records
every request and can answer 500 or go down; another, at the end, drips its answer a
byte at a time. Alerts come
from the CLI (a low balance, a catalog change, a provider that stops answering) or are
written through the storage layer; time is driven by a fake clock handed to ``run_alerts``
so that retries and the 24 hour limit need no sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from syncd.cli import main
from syncd.config import Config, WebhookConfig, load_config
from syncd.jobs.alerts import DeliveryCounts, deliver_alerts
from syncd.jobs.runner import JobResult, run_alerts
from syncd.models import Balance, Event
from syncd.plans import AlertIntent, BalancePlan
from syncd.secret import Secret
from syncd.simulator import Fault, SimulatorServer
from syncd.storage import Storage
from syncd.webhooks import payload
from syncd.webhooks.sender import WebhookSender
from tests.conftest import TOKEN, make_config, provider_config, write_config
from tests.fakes import FakeClock, Receiver

NO_PROVIDER = "http://127.0.0.1:9/api/v2"  # jobs that only deliver alerts never call it
BODY_KEYS = {"id", "type", "created_at", "provider", "data", "text"}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


# -- helpers -----------------------------------------------------------------------------


def webhook_table(
    name: str,
    url: str,
    *,
    fmt: str = "json",
    secret: str | None = None,
    events: list[str] | None = None,
) -> str:
    lines = ["", "[[webhooks]]", f'name = "{name}"', f'url = "{url}"', f'format = "{fmt}"']
    if secret is not None:
        lines.append(f'secret = "{secret}"')
    if events is not None:
        lines.append(f"events = {json.dumps(events)}")
    return "\n".join(lines) + "\n"


def webhooks_config(db_url: str, *webhooks: WebhookConfig) -> Config:
    return replace(make_config(db_url, provider_config(NO_PROVIDER)), webhooks=webhooks)


def subscribe(storage: Storage, config: Config) -> None:
    """What the CLI does when it opens the database: queue new alerts for these webhooks."""
    storage.register_providers([(p.name, p.url) for p in config.providers])
    storage.set_webhooks((w.name, w.events) for w in config.webhooks)


def raise_alert(
    storage: Storage,
    at: datetime,
    text: str = "sim balance 100.00 USD is below 200.00",
    *,
    event: Event = Event.BALANCE_LOW,
    data: dict[str, Any] | None = None,
    count: int = 1,
) -> None:
    """Alerts written the way jobs write them: in a storage transaction with a change."""
    alert = AlertIntent(event, "sim", text, {"balance": "100.00"} if data is None else data)
    storage.apply_balance(
        "sim",
        lambda *_: BalancePlan(
            "sim", at, Balance(Decimal("100.00"), "USD"), snapshot=False, alerts=[alert] * count
        ),
    )


def deliver(config: Config, storage: Storage, clock: FakeClock) -> JobResult:
    return asyncio.run(run_alerts(config, storage, clock))


def sql(db_url: str, statement: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute(statement).fetchall()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


@dataclass(frozen=True)
class DeliveryRow:
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None
    last_error: str | None


def delivery(db_url: str, alert_id: int, webhook: str) -> DeliveryRow:
    ((attempts, next_at, delivered, failed, error),) = sql(
        db_url,
        "SELECT attempts, next_attempt_at, delivered_at, failed_at, last_error"
        f" FROM alert_deliveries WHERE alert_id = {alert_id} AND webhook = '{webhook}'",
    )
    return DeliveryRow(attempts, _time(next_at), _time(delivered), _time(failed), error)


def delivery_rows(db_url: str) -> list[tuple[int, str]]:
    return [(a, w) for a, w in sql(db_url, "SELECT alert_id, webhook FROM alert_deliveries")]


def alert_ids(db_url: str) -> list[int]:
    return [i for (i,) in sql(db_url, "SELECT id FROM alerts ORDER BY id")]


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


# -- the json format and its signature ---------------------------------------------------


def test_a_json_webhook_gets_a_signed_alert_that_verifies(
    tmp_path: Path, db_url: str, server: SimulatorServer, receiver: Receiver
) -> None:
    secret = new_secret()
    config = write_config(
        tmp_path / "syncd.toml",
        db_url,
        server.url,
        extra='low_balance = "200.00"\n' + webhook_table("ops", receiver.url, secret=secret),
    )
    assert run(config, "sync", "balance") == 0
    assert run(config, "sync", "alerts") == 0

    ((alert_id, created_at),) = sql(db_url, "SELECT id, created_at FROM alerts")
    (request,) = receiver.requests
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.id == str(alert_id)

    sent = Webhook(secret).verify(request.body, request.headers)
    assert set(sent) == BODY_KEYS
    assert sent["id"] == alert_id
    assert sent["type"] == "balance.low"
    assert sent["provider"] == "sim"
    assert datetime.fromisoformat(sent["created_at"]) == _time(created_at)
    assert sent["data"]["balance"] == "100.00" and sent["data"]["threshold"] == "200.00"
    assert "100.00" in sent["text"] and "200.00" in sent["text"]

    tampered = request.body.replace(b"100.00", b"900.00")
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)

    row = delivery(db_url, alert_id, "ops")
    assert row.attempts == 1 and row.last_error is None
    assert row.delivered_at is not None and row.failed_at is None


# -- retries -----------------------------------------------------------------------------


def test_a_receiver_answering_500_gets_the_alert_later_with_the_same_id_and_body(
    storage: Storage, db_url: str, receiver: Receiver
) -> None:
    secret = new_secret()
    receiver.failures = 2
    config = webhooks_config(db_url, WebhookConfig("ops", receiver.url, "json", Secret(secret)))
    subscribe(storage, config)
    clock = FakeClock()
    t0 = clock.now
    raise_alert(storage, t0)
    (alert_id,) = alert_ids(db_url)

    first = deliver(config, storage, clock)
    assert not first.ok and "ops" in first.message and "HTTP 500" in first.message
    assert delivery(db_url, alert_id, "ops") == DeliveryRow(
        1, t0 + timedelta(seconds=30), None, None, "HTTP 500"
    )

    clock.advance(seconds=29)  # not due yet: nothing is sent, and the job still says why
    waiting = deliver(config, storage, clock)
    assert not waiting.ok and "ops: HTTP 500; next try" in waiting.message
    assert len(receiver.requests) == 1
    assert delivery(db_url, alert_id, "ops").attempts == 1

    clock.advance(seconds=1)
    assert not deliver(config, storage, clock).ok
    assert delivery(db_url, alert_id, "ops") == DeliveryRow(
        2, t0 + timedelta(seconds=90), None, None, "HTTP 500"
    )

    clock.advance(seconds=60)
    assert deliver(config, storage, clock).ok
    row = delivery(db_url, alert_id, "ops")
    assert row.attempts == 3 and row.delivered_at == t0 + timedelta(seconds=90)
    assert row.last_error is None and row.failed_at is None

    assert [r.status for r in receiver.requests] == [500, 500, 204]
    assert {r.id for r in receiver.requests} == {str(alert_id)}
    assert len({r.body for r in receiver.requests}) == 1
    assert [int(r.headers["webhook-timestamp"]) for r in receiver.requests] == [
        int((t0 + timedelta(seconds=s)).timestamp()) for s in (0, 30, 90)
    ]
    for request in receiver.requests:  # each attempt is signed afresh, and verifies
        assert Webhook(secret).verify(request.body, request.headers)["id"] == alert_id

    clock.advance(hours=2)  # delivered: never sent again
    assert deliver(config, storage, clock).ok
    assert len(receiver.requests) == 3


def test_a_receiver_that_is_down_gets_the_alert_when_it_is_back(
    storage: Storage, db_url: str, receiver: Receiver
) -> None:
    secret = new_secret()
    receiver.failures = 1
    config = webhooks_config(db_url, WebhookConfig("ops", receiver.url, "json", Secret(secret)))
    subscribe(storage, config)
    clock = FakeClock()
    t0 = clock.now
    raise_alert(storage, t0)
    (alert_id,) = alert_ids(db_url)

    assert not deliver(config, storage, clock).ok  # a 500
    receiver.down()
    clock.advance(seconds=30)
    refused = deliver(config, storage, clock)
    assert not refused.ok and "ops" in refused.message and "cannot deliver" in refused.message
    row = delivery(db_url, alert_id, "ops")
    assert row.attempts == 2 and row.last_error is not None
    assert row.last_error.startswith("cannot deliver")
    assert row.next_attempt_at == t0 + timedelta(seconds=90)
    assert row.delivered_at is None and row.failed_at is None

    receiver.up()
    clock.advance(seconds=60)
    assert deliver(config, storage, clock).ok
    row = delivery(db_url, alert_id, "ops")
    assert row.attempts == 3 and row.delivered_at == t0 + timedelta(seconds=90)

    first, last = receiver.requests  # the refused attempt never reached it
    assert (first.status, last.status) == (500, 204)
    assert first.id == last.id == str(alert_id)
    assert first.body == last.body
    assert Webhook(secret).verify(last.body, last.headers)["type"] == "balance.low"


def test_after_24_hours_of_failures_a_delivery_is_given_up_and_status_shows_it(
    tmp_path: Path,
    db_url: str,
    storage: Storage,
    receivers: list[Receiver],
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken, healthy = Receiver(broken=True), Receiver()
    receivers += [broken, healthy]
    path = write_config(
        tmp_path / "syncd.toml",
        db_url,
        NO_PROVIDER,
        extra=webhook_table("ops", broken.url) + webhook_table("audit", healthy.url),
    )
    config = load_config(path)
    subscribe(storage, config)
    clock = FakeClock()
    t0 = clock.now
    raise_alert(storage, t0)
    (old,) = alert_ids(db_url)

    attempts_at: list[datetime] = []
    while (row := delivery(db_url, old, "ops")).failed_at is None:
        assert len(attempts_at) < 100, "never given up"
        assert row.next_attempt_at is not None
        clock.advance_to(row.next_attempt_at)
        attempts_at.append(clock.now)
        result = deliver(config, storage, clock)
        assert not result.ok and "ops: HTTP 500" in result.message

    assert row.failed_at == t0 + timedelta(hours=24)
    assert row.delivered_at is None and row.last_error == "HTTP 500"
    assert row.attempts == len(attempts_at) == len(broken.requests)
    assert attempts_at[0] == t0 and attempts_at[-1] == t0 + timedelta(hours=24)
    gaps = [(b - a).total_seconds() for a, b in pairwise(attempts_at)]
    assert gaps[0] == 30
    for before, after in pairwise(gaps[:-1]):  # the last gap is cut short by the deadline
        assert after == min(2 * before, 3600)
    assert max(gaps) == 3600 and gaps[-1] <= 3600
    assert "1 given up" in result.message

    clock.advance(days=3)  # given up: never tried again
    assert deliver(config, storage, clock).ok
    assert len(broken.requests) == row.attempts
    assert delivery(db_url, old, "ops") == row

    raise_alert(storage, clock.now, "a newer alert, still being retried")
    assert not deliver(config, storage, clock).ok
    assert delivery(db_url, old, "audit").delivered_at == t0

    capsys.readouterr()
    assert run(path, "status") == 0
    text = capsys.readouterr().out.splitlines()
    assert "  webhook ops: 1 undelivered, 1 failed (last error: HTTP 500)" in text
    assert "  webhook audit: 0 undelivered, 0 failed" in text

    assert run(path, "status", "--json") == 0
    webhooks = json.loads(capsys.readouterr().out)["webhooks"]
    assert sorted(webhooks, key=lambda w: w["name"]) == [
        {"name": "audit", "undelivered": 0, "failed": 0, "last_error": None},
        {"name": "ops", "undelivered": 1, "failed": 1, "last_error": "HTTP 500"},
    ]


# -- slack and discord -------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "key"), [("slack", "text"), ("discord", "content")])
def test_slack_and_discord_get_the_shape_they_accept(
    storage: Storage, db_url: str, receiver: Receiver, fmt: str, key: str
) -> None:
    config = webhooks_config(db_url, WebhookConfig("chat", receiver.url, fmt))  # type: ignore[arg-type]
    subscribe(storage, config)
    clock = FakeClock()
    short = "sim balance 100.00 USD is below 200.00"
    long = "sim catalog: " + "#101 Élan followers 0.12 -> 0.15 (+25.0%); " * 200
    raise_alert(storage, clock.now, short)
    raise_alert(storage, clock.now, long, event=Event.PACKAGE_RATE_CHANGED)
    assert deliver(config, storage, clock).ok

    first, second = receiver.requests
    for request in (first, second):
        assert request.headers["content-type"] == "application/json"
        sent = request.json()
        assert list(sent) == [key] and isinstance(sent[key], str)
    assert short in first.json()[key] and "balance.low" in first.json()[key]
    long_sent = second.json()[key]
    assert long_sent.startswith("[syncd] package.rate_changed: sim catalog: #101 Élan")
    if fmt == "discord":
        assert len(long_sent) <= 2000
    else:
        assert long in long_sent


# -- which webhooks get which alerts -----------------------------------------------------


def test_events_choose_which_alerts_a_webhook_receives(
    tmp_path: Path, db_url: str, server: SimulatorServer, receiver: Receiver
) -> None:
    config = write_config(
        tmp_path / "syncd.toml",
        db_url,
        server.url,
        extra='low_balance = "200.00"\n'
        + webhook_table("everything", receiver.url + "/everything")
        + webhook_table("down", receiver.url + "/down", events=["provider.down"])
        + webhook_table("removals", receiver.url + "/removals", events=["package.removed"]),
    )
    sim = server.provider
    assert run(config, "sync", "catalog") == 0  # the first fill raises no alert
    assert run(config, "sync", "balance") == 0  # balance.low
    sim.set_rate(101, Decimal("0.15"))
    sim.remove_package(105)
    assert run(config, "sync", "catalog") == 0  # one summary: repriced and removed
    sim.inject(Fault.HTML_502, times=None, actions=["balance"])
    for _ in range(3):  # three failed calls in a row: provider.down
        assert run(config, "sync", "balance") == 1
    assert run(config, "sync", "alerts") == 0

    events = dict(sql(db_url, "SELECT event, id FROM alerts"))
    assert set(events) == {"balance.low", "package.rate_changed", "provider.down"}
    by_webhook: dict[str, list[str]] = {}
    for alert_id, webhook in sorted(delivery_rows(db_url)):
        event = next(e for e, i in events.items() if i == alert_id)
        by_webhook.setdefault(webhook, []).append(event)
    assert by_webhook == {
        "everything": ["balance.low", "package.rate_changed", "provider.down"],
        "down": ["provider.down"],
        "removals": ["package.rate_changed"],
    }

    got = {
        path: [r.json()["type"] for r in receiver.requests if r.path == f"/hook/{path}"]
        for path in ("everything", "down", "removals")
    }
    assert got == by_webhook
    (summary,) = (r.json() for r in receiver.requests if r.path == "/hook/removals")
    assert summary["data"]["events"] == ["package.rate_changed", "package.removed"]


# -- several webhooks, and order ---------------------------------------------------------


def test_one_failing_webhook_does_not_stop_the_others(
    storage: Storage, db_url: str, receivers: list[Receiver]
) -> None:
    broken, healthy = Receiver(), Receiver()
    receivers += [broken, healthy]
    broken.down()
    config = webhooks_config(
        db_url, WebhookConfig("broken", broken.url), WebhookConfig("healthy", healthy.url)
    )
    subscribe(storage, config)
    clock = FakeClock()
    for n in range(3):
        raise_alert(storage, clock.now + timedelta(seconds=n), f"alert {n}")
    ids = alert_ids(db_url)
    clock.advance(seconds=5)

    result = deliver(config, storage, clock)
    assert not result.ok
    assert "broken: cannot deliver" in result.message and "healthy" not in result.message
    assert [r.json()["id"] for r in healthy.requests] == ids
    assert [delivery(db_url, i, "healthy").delivered_at for i in ids] == [clock.now] * 3
    # the broken one is tried once per pass; its other alerts wait, untouched
    assert [delivery(db_url, i, "broken").attempts for i in ids] == [1, 0, 0]

    broken.up()
    clock.advance(seconds=30)
    assert deliver(config, storage, clock).ok
    assert [r.json()["id"] for r in broken.requests] == ids  # oldest first
    assert len(healthy.requests) == 3  # nothing delivered twice


def test_a_long_backlog_on_a_failing_webhook_does_not_hold_up_the_others(
    storage: Storage, db_url: str, receivers: list[Receiver]
) -> None:
    broken, healthy = Receiver(broken=True), Receiver()
    receivers += [broken, healthy]
    config = webhooks_config(
        db_url,
        WebhookConfig("broken", broken.url, events=frozenset({"balance.low"})),
        WebhookConfig("healthy", healthy.url, events=frozenset({"provider.down"})),
    )
    subscribe(storage, config)
    clock = FakeClock()
    raise_alert(storage, clock.now, "low", count=450)  # for the broken webhook only
    raise_alert(storage, clock.now, "down", event=Event.PROVIDER_DOWN)  # for the healthy one
    (down_id,) = [i for i, e in sql(db_url, "SELECT id, event FROM alerts") if e == "provider.down"]

    for _ in range(3):  # a few passes, as the daemon would run them
        assert not deliver(config, storage, clock).ok
        clock.advance(minutes=5)

    assert [r.json()["id"] for r in healthy.requests] == [down_id]
    assert delivery(db_url, down_id, "healthy").delivered_at is not None


def test_alerts_to_one_webhook_arrive_oldest_first(
    storage: Storage, db_url: str, receiver: Receiver
) -> None:
    config = webhooks_config(db_url, WebhookConfig("ops", receiver.url))
    subscribe(storage, config)
    clock = FakeClock()
    for n in range(4):
        raise_alert(storage, clock.now, f"alert {n}")
    assert deliver(config, storage, clock).ok
    assert [r.json()["id"] for r in receiver.requests] == alert_ids(db_url)
    assert [r.json()["text"] for r in receiver.requests] == [f"alert {n}" for n in range(4)]


def test_a_newer_alert_does_not_overtake_one_waiting_for_its_retry(
    storage: Storage, db_url: str, receiver: Receiver
) -> None:
    receiver.failures = 1
    config = webhooks_config(db_url, WebhookConfig("ops", receiver.url))
    subscribe(storage, config)
    clock = FakeClock()
    raise_alert(storage, clock.now, "first")
    assert not deliver(config, storage, clock).ok  # refused; retried in 30 s

    clock.advance(seconds=5)
    raise_alert(storage, clock.now, "second")
    raise_alert(storage, clock.now, "third")
    clock.advance(seconds=5)  # the receiver is back before the first alert's retry is due
    deliver(config, storage, clock)
    clock.advance(seconds=30)
    assert deliver(config, storage, clock).ok

    texts = [r.json()["text"] for r in receiver.accepted]
    assert sorted(texts) == ["first", "second", "third"]  # nothing lost
    assert texts == ["first", "second", "third"]  # and in the order they were raised


# -- secrets ------------------------------------------------------------------------------


def test_secrets_appear_in_no_body_header_log_or_status(
    tmp_path: Path,
    db_url: str,
    server: SimulatorServer,
    receivers: list[Receiver],
    capfd: pytest.CaptureFixture[str],
) -> None:
    good, failing, gone = Receiver(), Receiver(broken=True), Receiver()
    receivers += [good, failing, gone]
    gone.down()
    secret = new_secret()
    config = write_config(
        tmp_path / "syncd.toml",
        db_url,
        server.url,
        extra='low_balance = "200.00"\n'
        + webhook_table("signed", good.url, secret=secret)
        + webhook_table("failing", failing.url, fmt="slack", secret=secret)
        + webhook_table("gone", gone.url, fmt="discord", secret=secret),
    )
    assert run(config, "-v", "sync") == 1  # two webhooks fail
    server.provider.inject(Fault.HTML_502, times=None, actions=["balance"])
    for _ in range(3):  # three failed calls in a row: provider.down
        assert run(config, "-v", "sync", "balance") == 1
    assert run(config, "-v", "sync", "alerts") == 1
    assert run(config, "status") == 0
    assert run(config, "status", "--json") == 0
    out, err = capfd.readouterr()

    assert "alert.delivered" in err and "alert.delivery_failed" in err  # the logs were on
    assert "webhook failing:" in out and "webhook gone:" in out
    requests = good.requests + failing.requests
    assert [r.json()["type"] for r in good.requests] == ["balance.low", "provider.down"]
    assert failing.requests
    key = secret.removeprefix("whsec_")
    for leak in (secret, key, TOKEN):
        assert leak not in out + err
        for request in requests:
            assert leak.encode() not in request.body
            for name, value in request.headers.items():
                if name != "webhook-signature":
                    assert leak not in value, name
    assert Webhook(secret).verify(good.requests[0].body, good.requests[0].headers)


# -- the exit status of `syncd sync alerts` ----------------------------------------------


@pytest.mark.parametrize(("trouble", "error"), [("500", "HTTP 500"), ("down", "cannot deliver")])
def test_sync_alerts_exits_1_naming_the_webhook_then_0_once_delivered(
    tmp_path: Path,
    db_url: str,
    server: SimulatorServer,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    trouble: str,
    error: str,
) -> None:
    config = write_config(
        tmp_path / "syncd.toml",
        db_url,
        server.url,
        extra='low_balance = "200.00"\n' + webhook_table("ops", receiver.url),
    )
    assert run(config, "sync", "balance") == 0
    if trouble == "500":
        receiver.broken = True
    else:
        receiver.down()
    capsys.readouterr()

    assert run(config, "sync", "alerts") == 1
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("syncd: alerts job failed: ")
    assert "ops: " + error in line

    receiver.broken = False
    if trouble == "down":
        receiver.up()
    sql(db_url, "UPDATE alert_deliveries SET next_attempt_at = '2000-01-01 00:00:00.000000'")
    assert run(config, "sync", "alerts") == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == ["alerts: 1 delivered, 0 to retry, 0 given up"]
    assert len(receiver.accepted) == 1

    assert run(config, "sync", "alerts") == 0  # nothing left to deliver
    assert capsys.readouterr().out.splitlines() == ["alerts: 0 delivered, 0 to retry, 0 given up"]


# -- a receiver that redirects -------------------------------------------------------------


def test_a_redirect_is_not_followed_and_counts_as_a_failed_delivery(
    storage: Storage, db_url: str, receivers: list[Receiver]
) -> None:
    redirecting = Receiver(status=307, headers={"location": "http://127.0.0.1:9/elsewhere"})
    receivers.append(redirecting)
    config = webhooks_config(db_url, WebhookConfig("ops", redirecting.url, "json"))
    subscribe(storage, config)
    clock = FakeClock()
    raise_alert(storage, clock.now)
    result = deliver(config, storage, clock)
    assert len(redirecting.requests) == 1  # and nothing reached the place it pointed to
    assert not result.ok and "HTTP 307" in result.message
    (alert_id,) = alert_ids(db_url)
    assert delivery(db_url, alert_id, "ops").last_error == "HTTP 307"


# -- a clock that jumps ------------------------------------------------------------------


def test_a_retry_set_by_a_clock_a_day_ahead_is_due_once_the_clock_is_back(
    tmp_path: Path, db_url: str, storage: Storage, receivers: list[Receiver]
) -> None:
    flaky = Receiver(failures=1)
    receivers.append(flaky)
    config = load_config(
        write_config(
            tmp_path / "syncd.toml", db_url, NO_PROVIDER, extra=webhook_table("ops", flaky.url)
        )
    )
    subscribe(storage, config)
    clock = FakeClock()
    raise_alert(storage, clock.now)
    (alert,) = alert_ids(db_url)
    clock.step(days=1)
    assert not deliver(config, storage, clock).ok  # fails; retry set a day ahead of the truth
    clock.step(days=-1, minutes=1)
    assert deliver(config, storage, clock).ok
    assert delivery(db_url, alert, "ops").delivered_at is not None
    assert len(flaky.requests) == 2


def test_a_clock_forty_days_ahead_gives_up_no_alert_at_its_first_failure(
    tmp_path: Path, db_url: str, storage: Storage, receivers: list[Receiver]
) -> None:
    broken = Receiver(broken=True)
    receivers.append(broken)
    config = load_config(
        write_config(
            tmp_path / "syncd.toml", db_url, NO_PROVIDER, extra=webhook_table("ops", broken.url)
        )
    )
    subscribe(storage, config)
    clock = FakeClock()
    raise_alert(storage, clock.now)
    (alert,) = alert_ids(db_url)
    clock.step(days=40)
    assert not deliver(config, storage, clock).ok
    row = delivery(db_url, alert, "ops")
    assert row.failed_at is None and row.attempts == 1
    for _ in range(20):  # the clock stays there: given up after enough attempts
        assert row.next_attempt_at is not None
        clock.advance_to(row.next_attempt_at)
        deliver(config, storage, clock)
        if (row := delivery(db_url, alert, "ops")).failed_at is not None:
            break
    assert row.failed_at is not None and row.attempts == payload.GIVE_UP_ATTEMPTS


# -- two deliverers ----------------------------------------------------------------------


def test_two_deliverers_at_once_post_every_alert_once_and_in_order(
    tmp_path: Path, db_url: str, storage: Storage, receivers: list[Receiver]
) -> None:
    slow = Receiver(delay=0.3)
    receivers.append(slow)
    path = write_config(
        tmp_path / "syncd.toml", db_url, NO_PROVIDER, extra=webhook_table("ops", slow.url)
    )
    subscribe(storage, load_config(path))
    raise_alert(storage, datetime.now(UTC), count=6)
    command = [sys.executable, "-m", "syncd", "--config", str(path), "sync", "alerts"]
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    posted = [int(r.id) for r in slow.requests]
    assert posted == sorted(set(posted)) == alert_ids(db_url)  # once each, in order
    assert sql(db_url, "SELECT count(*) FROM alert_deliveries WHERE delivered_at IS NULL") == [(0,)]
    assert sql(db_url, "SELECT DISTINCT claimed_by, attempts FROM alert_deliveries") == [(None, 1)]


# -- a receiver that drips its answer ------------------------------------------------------

DRIP = 0.2  # seconds between two bytes: every read of the sender gets data in time


class _Dripping(BaseHTTPRequestHandler):
    """Drips its answer forever, a byte every ``DRIP`` seconds: either the headers of a
    200 at once and then an endless body, or the headers themselves."""

    server: _DrippingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.server.drip_headers:
            self._drip(b"HTTP/1.1 200 OK\r\n", b"x-drip: .\r\n")
        else:
            self.send_response(200)
            self.send_header("content-length", str(1 << 30))
            self.end_headers()
            self._drip(b"", b".")
        self.close_connection = True

    def _drip(self, first: bytes, then: bytes) -> None:
        for byte in itertools.chain(first, itertools.cycle(then)):
            if self.server.stopping.wait(DRIP):
                return
            try:
                self.wfile.write(bytes([byte]))
            except OSError:  # the sender hung up
                return

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _DrippingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *, drip_headers: bool) -> None:
        self.drip_headers = drip_headers
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _Dripping)


@contextlib.contextmanager
def dripping_receiver(*, drip_headers: bool) -> Iterator[str]:
    """The URL of a receiver that drips its answer, until the block ends."""
    server = _DrippingServer(drip_headers=drip_headers)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()


def deliver_within(
    config: Config, storage: Storage, clock: FakeClock, *, timeout: float
) -> tuple[DeliveryCounts, float]:
    """One alerts pass with a sender whose deadline is ``timeout``, and the seconds it took.
    The test's own limit turns a sender without a deadline into a TimeoutError, not a
    test that hangs for as long as the receiver drips."""

    async def one_pass() -> DeliveryCounts:
        async with WebhookSender(timeout=timeout) as sender, asyncio.timeout(8 * timeout):
            webhooks = {w.name: w for w in config.webhooks}
            return await deliver_alerts(storage, webhooks, clock, asyncio.to_thread, sender)

    started = time.monotonic()
    counts = asyncio.run(one_pass())
    return counts, time.monotonic() - started


def test_a_receiver_dripping_its_body_has_the_alert_delivered_at_once(
    storage: Storage, db_url: str
) -> None:
    with dripping_receiver(drip_headers=False) as url:
        config = webhooks_config(db_url, WebhookConfig("ops", url))
        subscribe(storage, config)
        clock = FakeClock()
        raise_alert(storage, clock.now)
        counts, _ = deliver_within(config, storage, clock, timeout=1.0)

    # The status is all that counts: the body, a GiB due in years, was never waited for
    # (waiting for it would have met the deadline, an error).
    assert (counts.delivered, counts.errors) == (1, {})
    (alert_id,) = alert_ids(db_url)
    assert delivery(db_url, alert_id, "ops").delivered_at == clock.now


def test_a_receiver_dripping_its_headers_fails_at_the_deadline(
    storage: Storage, db_url: str
) -> None:
    with dripping_receiver(drip_headers=True) as url:
        config = webhooks_config(db_url, WebhookConfig("ops", url))
        subscribe(storage, config)
        clock = FakeClock()
        raise_alert(storage, clock.now)
        counts, elapsed = deliver_within(config, storage, clock, timeout=1.0)

    assert counts.errors == {"ops": "no answer within 1s"} and counts.retrying == 1
    assert elapsed < 3 * 1.0  # a deadline, not a benchmark: generous
    (alert_id,) = alert_ids(db_url)
    row = delivery(db_url, alert_id, "ops")
    assert row.last_error == "no answer within 1s" and row.delivered_at is None
    assert row.next_attempt_at == clock.now + timedelta(seconds=30)


def test_slow_receivers_do_not_hold_up_the_others(
    tmp_path: Path, db_url: str, storage: Storage, receivers: list[Receiver]
) -> None:
    # The slow ones hold their answers until all four receivers have a request in hand:
    # served one after another, the first would wait for the others in vain and answer
    # 500 after a few seconds; served at the same time, the healthy one is posted to
    # while the slow ones still hold theirs.
    together = threading.Barrier(4)
    slow = [Receiver(together=together) for _ in range(3)]
    healthy = Receiver(together=together)
    receivers.extend([*slow, healthy])
    tables = "".join(webhook_table(f"slow{n}", r.url) for n, r in enumerate(slow))
    config = load_config(
        write_config(tmp_path / "syncd.toml", db_url, NO_PROVIDER,
                     extra=tables + webhook_table("zz-healthy", healthy.url))
    )  # fmt: skip
    subscribe(storage, config)
    clock = FakeClock()
    raise_alert(storage, clock.now)
    assert deliver(config, storage, clock).ok
    assert len(healthy.accepted) == 1 and all(len(r.accepted) == 1 for r in slow)
