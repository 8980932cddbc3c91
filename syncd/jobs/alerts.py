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
    """One pass: each webhook gets its pending alerts oldest first, until one fails.

    A webhook's oldest pending alert goes first, always: while it waits for its retry,
    the newer ones wait behind it, so a receiver sees alerts in order and a receiver that
    is down is tried once per backoff step, not once per alert. Webhooks do not wait for
    each other.
    """
    counts = DeliveryCounts()
    owned = sender is None
    sender = sender or WebhookSender()
    try:
        for name in await db(storage.pending_webhooks):
            await _deliver_to(
                name, webhooks.get(name), storage, clock=clock, db=db, sender=sender, counts=counts
            )
    finally:
        if owned:
            await sender.aclose()
    return counts


async def _deliver_to(
    name: str,
    webhook: WebhookConfig | None,
    storage: Storage,
    *,
    clock: Callable[[], datetime],
    db: Callable[..., Any],
    sender: WebhookSender,
    counts: DeliveryCounts,
) -> None:
    after = 0
    while page := await db(storage.pending_deliveries, name, after, PAGE):
        for delivery in page:
            after = delivery.alert_id
            now = clock()
            if webhook is None:
                error: str | None = "the webhook is no longer configured"
                retry_at = None
            elif now < delivery.next_attempt_at <= now + payload.LONGEST_WAIT:
                # The oldest alert waits for its retry; the others wait behind it. (A retry
                # set further ahead than any backoff was set by a clock that ran ahead: it
                # is due now rather than in a day.)
                if delivery.attempts:
                    counts.errors[name] = (
                        f"{delivery.last_error}; next try {delivery.next_attempt_at:%H:%M:%S} UTC"
                    )
                return
            else:
                body = payload.body(delivery, webhook.format)
                headers = payload.headers(delivery, body, webhook.secret, now)
                error = await sender.post(webhook.url, body, headers)
                retry_at = payload.retry_at(delivery, clock()) if error else None
            await db(
                storage.record_delivery,
                delivery.alert_id,
                name,
                clock(),
                error=error,
                retry_at=retry_at,
            )
            if error is None:
                counts.delivered += 1
                log.info(
                    "alert.delivered",
                    alert_id=delivery.alert_id,
                    webhook=name,
                    alert_event=delivery.event,
                )
                continue
            log.warning(
                "alert.delivery_failed",
                alert_id=delivery.alert_id,
                webhook=name,
                error=error,
                given_up=retry_at is None,
            )
            counts.errors[name] = error
            if retry_at is None:
                counts.failed += 1
                if webhook is None:
                    continue  # fail every pending alert of a removed webhook
            else:
                counts.retrying += 1
            return


def check(counts: DeliveryCounts) -> str:
    """The job's result: failed when any webhook refused or could not be reached."""
    if counts.errors:
        raise JobError(counts.summary())
    return counts.summary()
