"""The alerts job: deliver every due alert to its webhooks, retrying for 24 hours."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from syncd.config import WebhookConfig
from syncd.errors import JobError
from syncd.storage import Storage
from syncd.webhooks import payload
from syncd.webhooks.sender import WebhookSender

log = structlog.get_logger("syncd.alerts")
PAGE = 200


@dataclass
class DeliveryCounts:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # webhook -> last error this pass

    def summary(self) -> str:
        text = f"{self.delivered} delivered, {self.retrying} to retry, {self.failed} given up"
        if self.errors:
            text += " (" + "; ".join(f"{w}: {e}" for w, e in sorted(self.errors.items())) + ")"
        return text


async def deliver_alerts(
    storage: Storage,
    webhooks: Mapping[str, WebhookConfig],
    clock: Callable[[], datetime],
    db: Callable[..., Any],
    sender: WebhookSender | None = None,
) -> DeliveryCounts:
    """One pass over due deliveries, oldest alert first. A webhook that fails is not tried
    again in the same pass: its other alerts keep their order and wait for the next one."""
    counts = DeliveryCounts()
    owned = sender is None
    sender = sender or WebhookSender()
    try:
        while True:
            page = await db(storage.due_deliveries, clock(), PAGE)
            attempted = 0
            for delivery in page:
                if delivery.webhook in counts.errors:
                    continue
                attempted += 1
                webhook = webhooks.get(delivery.webhook)
                now = clock()
                if webhook is None:
                    error: str | None = "the webhook is no longer configured"
                    retry_at = None
                else:
                    body = payload.body(delivery, webhook.format)
                    headers = payload.headers(delivery, body, webhook.secret, now)
                    error = await sender.post(webhook.url, body, headers)
                    retry_at = payload.retry_at(delivery, clock()) if error else None
                await db(
                    storage.record_delivery,
                    delivery.alert_id,
                    delivery.webhook,
                    clock(),
                    error=error,
                    retry_at=retry_at,
                )
                if error is None:
                    counts.delivered += 1
                    log.info(
                        "alert.delivered",
                        alert_id=delivery.alert_id,
                        webhook=delivery.webhook,
                        alert_event=delivery.event,
                    )
                    continue
                counts.errors[delivery.webhook] = error
                if retry_at is None:
                    counts.failed += 1
                else:
                    counts.retrying += 1
                log.warning(
                    "alert.delivery_failed",
                    alert_id=delivery.alert_id,
                    webhook=delivery.webhook,
                    error=error,
                    given_up=retry_at is None,
                )
            if not attempted or len(page) < PAGE:
                return counts
    finally:
        if owned:
            await sender.__aexit__(None, None, None)


def check(counts: DeliveryCounts) -> str:
    """The job's result: failed when any webhook refused or could not be reached."""
    if counts.errors:
        raise JobError(counts.summary())
    return counts.summary()
