"""What the metrics read from the database (``Storage.monitored``), on every backend:
when a provider last answered, the oldest alert a webhook has not received, and the
instances that stopped without a clean exit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial

import pytest

from syncd.errors import ProviderError, TransientError
from syncd.jobs.health import plan_health
from syncd.models import Balance, Event
from syncd.plans import AlertIntent, BalancePlan
from syncd.storage import Storage
from syncd.storage import tables as t
from syncd.storage.base import db_clock
from syncd.storage.leases import FORGET_SILENT

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def registered(any_storage: Storage) -> Storage:
    any_storage.register_providers([("p", "https://panel.example/api/v2")])
    return any_storage


def answered_at(storage: Storage) -> datetime | None:
    (p,) = storage.monitored(30).providers
    return p.answered_at


def outcome(storage: Storage, error: ProviderError | None, at: datetime) -> None:
    decide = partial(plan_health, "p", error=error, now=at)
    storage.apply_health("p", at, decide, answered=error is None)


def test_a_success_marks_when_the_provider_last_answered_and_a_failure_does_not(
    registered: Storage,
) -> None:
    assert answered_at(registered) is None
    outcome(registered, None, NOW)
    assert answered_at(registered) == NOW
    # Failures (a timeout: no answer at all) change the health, never the last answer.
    for minute in range(1, 4):
        timeout = TransientError("p", "no reply", maybe_processed=True, answered=False)
        outcome(registered, timeout, NOW + timedelta(minutes=minute))
    (p,) = registered.monitored(30).providers
    assert (p.health, p.answered_at) == ("down", NOW)
    outcome(registered, None, NOW + timedelta(minutes=5))
    assert answered_at(registered) == NOW + timedelta(minutes=5)


def test_the_oldest_alert_a_webhook_has_not_received_is_when_it_was_raised(
    registered: Storage,
) -> None:
    registered.set_webhooks([("ops", None)])
    for minutes, event in ((0, Event.BALANCE_LOW), (5, Event.BALANCE_RECOVERED)):
        at = NOW + timedelta(minutes=minutes)
        alert = AlertIntent(event, "p", event.value)
        plan = BalancePlan("p", at, Balance(Decimal(1), "USD"), snapshot=True, alerts=[alert])
        registered.apply_balance("p", partial(planned, plan))
    (backlog,) = registered.monitored(30).backlog
    assert (backlog.webhook, backlog.undelivered, backlog.oldest) == ("ops", 2, NOW)
    first = registered.pending_deliveries("ops", 0, 10)[0]
    registered.record_delivery(first.alert_id, "ops", NOW, error=None, retry_at=None)
    (backlog,) = registered.monitored(30).backlog
    assert (backlog.undelivered, backlog.oldest) == (1, NOW + timedelta(minutes=5))


def planned(plan: BalancePlan, last: Balance | None, low: bool) -> BalancePlan:
    return plan


def set_heartbeat(storage: Storage, instance: str, seconds_ago: float) -> None:
    """Move an instance's last heartbeat into the past, as a stopped one leaves it."""
    with storage.engine.begin() as conn:
        conn.execute(
            t.instances.update()
            .where(t.instances.c.id == instance)
            .values(heartbeat_at=db_clock(conn, -seconds_ago))
        )


def test_an_instance_that_stopped_without_a_clean_exit_is_silent_then_forgotten(
    registered: Storage,
) -> None:
    for name in ("a", "b", "c"):
        registered.heartbeat(name, "host", 1, "v")
    set_heartbeat(registered, "b", 120)  # killed two minutes ago
    found = registered.monitored(30)
    assert (found.live_instances, found.silent_instances) == (2, 1)
    registered.forget_instance("c")  # a clean exit leaves nothing behind
    found = registered.monitored(30)
    assert (found.live_instances, found.silent_instances) == (1, 1)
    set_heartbeat(registered, "b", FORGET_SILENT.total_seconds() + 60)
    registered.heartbeat("a", "host", 1, "v")  # any heartbeat forgets it
    found = registered.monitored(30)
    assert (found.live_instances, found.silent_instances) == (1, 0)
    assert [i.id for i in registered.live_instances(30)] == ["a"]
