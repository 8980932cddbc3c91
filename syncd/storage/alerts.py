"""Alert storage: the ``alerts`` outbox and one ``alert_deliveries`` row per webhook.

An alert and its delivery rows are written in the transaction of the change that causes
it, so an alert exists exactly when its change was committed, and a receiver that is
down loses nothing: its rows wait until delivered or given up.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog

from syncd.models import Delivery, WebhookBacklog
from syncd.plans import AlertIntent
from syncd.storage import overview
from syncd.storage import tables as t
from syncd.storage.base import StorageBase, after_commit, take_feed_turn
from syncd.storage.driver import Driver

log = structlog.get_logger("syncd.alerts")
_a, _d = t.alerts.c, t.alert_deliveries.c
_PENDING = (_d.delivered_at.is_(None), _d.failed_at.is_(None))


class AlertStorage(StorageBase):
    _webhooks: tuple[tuple[str, frozenset[str] | None], ...] = ()

    def set_webhooks(self, webhooks: Iterable[tuple[str, frozenset[str] | None]]) -> None:
        """The webhooks (name, events or None for all) that new alerts are queued for."""
        self._webhooks = tuple(webhooks)

    def _insert_alerts(
        self, conn: sa.Connection, alerts: Sequence[AlertIntent], now: datetime
    ) -> None:
        """Alerts and their deliveries: the last writes of a transaction (``alerts`` is a
        change feed, see ``take_feed_turn``)."""
        if alerts:
            take_feed_turn(conn)
        for alert in alerts:
            alert_id = conn.execute(
                sa.insert(t.alerts)
                .values(
                    event=alert.event.value,
                    provider=alert.provider,
                    payload={"text": alert.text, "data": alert.data},
                    created_at=now,
                )
                .returning(_a.id)
            ).scalar_one()
            receivers = [
                {"alert_id": alert_id, "webhook": name, "attempts": 0, "next_attempt_at": now}
                for name, events in self._webhooks
                if events is None or events & alert.events
            ]
            if receivers:
                conn.execute(sa.insert(t.alert_deliveries), receivers)
            after_commit(functools.partial(_log_alert, alert, alert_id))

    def pending_webhooks(self) -> list[str]:
        """Webhooks with at least one alert neither delivered nor given up."""

        def work(conn: sa.Connection) -> list[str]:
            query = sa.select(_d.webhook).where(*_PENDING).group_by(_d.webhook).order_by(_d.webhook)
            return list(conn.execute(query).scalars())

        return self._read(work)

    def pending_deliveries(self, webhook: str, after: int, limit: int) -> list[Delivery]:
        """A webhook's pending deliveries with ``alert_id > after``, oldest alert first."""

        def work(conn: sa.Connection) -> list[Delivery]:
            rows = conn.execute(
                sa.select(
                    _d.alert_id, _d.webhook, _d.attempts, _a.event, _a.provider, _a.payload,
                    _a.created_at, _d.next_attempt_at, _d.last_error,
                )
                .join(t.alerts, _a.id == _d.alert_id)
                .where(_d.webhook == webhook, _d.alert_id > after, *_PENDING)
                .order_by(_d.alert_id)
                .limit(limit)
            )  # fmt: skip
            return [
                Delivery(
                    alert_id=r.alert_id,
                    webhook=r.webhook,
                    attempts=r.attempts,
                    event=r.event,
                    provider=r.provider,
                    text=str(r.payload.get("text", "")),
                    data=dict(r.payload.get("data", {})),
                    created_at=r.created_at,
                    next_attempt_at=r.next_attempt_at,
                    last_error=r.last_error,
                )
                for r in rows
            ]

        return self._read(work)

    def claim_delivery(
        self, alert_id: int, webhook: str, *, owner: str, until: datetime, now: datetime
    ) -> bool:
        """Take a pending delivery for ``owner`` until ``until``, before posting it: another
        deliverer (a second process) then leaves it alone, so an alert is not posted twice
        at once. False when someone else holds it. A claim whose holder died runs out at
        ``until``; one set further ahead than a claim is ever taken for was set by a clock
        that ran ahead, and counts as run out."""
        horizon = now + (until - now) * 2
        claimable = sa.or_(
            _d.claimed_until.is_(None), _d.claimed_until <= now, _d.claimed_until > horizon
        )

        def work(conn: sa.Connection) -> bool:
            taken = conn.execute(
                sa.update(t.alert_deliveries)
                .where(_d.alert_id == alert_id, _d.webhook == webhook, *_PENDING, claimable)
                .values(claimed_by=owner, claimed_until=until)
            )
            return bool(taken.rowcount)

        return self._write(work)

    def record_delivery(
        self,
        alert_id: int,
        webhook: str,
        now: datetime,
        *,
        error: str | None,
        retry_at: datetime | None,
        owner: str | None = None,
    ) -> bool:
        """A delivered attempt (``error`` None), a failed one to retry at ``retry_at``, or a
        failed one given up (``retry_at`` None); the claim is let go. With ``owner``, only
        while the claim is still that owner's (False otherwise: it ran out and another
        deliverer took over, and its outcome counts)."""
        values: dict[str, Any] = {
            "attempts": _d.attempts + 1,
            "last_error": error,
            "claimed_by": None,
            "claimed_until": None,
        }
        if error is None:
            values["delivered_at"] = now
        elif retry_at is None:
            values["failed_at"] = now
        else:
            values["next_attempt_at"] = retry_at
        mine = () if owner is None else (_d.claimed_by == owner,)

        def work(conn: sa.Connection) -> bool:
            done = conn.execute(
                sa.update(t.alert_deliveries)
                .where(_d.alert_id == alert_id, _d.webhook == webhook, *mine)
                .values(values)
            )
            return bool(done.rowcount)

        return self._write(work)

    def webhook_backlog(self) -> list[WebhookBacklog]:
        return self._read(lambda conn: overview.webhook_backlog(Driver(conn)))


def _log_alert(alert: AlertIntent, alert_id: int) -> None:
    """An alert in the log, once its transaction has committed: a log line is a claim
    about what the database holds, and a rolled-back alert was never raised. Its text was
    scrubbed of the provider's token when it was made (a provider's words pass through
    its scrubber), and the log's redaction of every configured secret comes on top."""
    say = log.warning if alert.log_level == "warning" else log.info
    say(
        "alert.raised",
        alert=alert.event.value,
        provider=alert.provider,
        alert_id=alert_id,
        text=alert.text,
    )
