"""The alerts job: deliver every due alert to its webhooks, retrying for 24 hours."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from syncd.config import WebhookConfig
from syncd.errors import JobError
from syncd.models import Delivery
from syncd.process import owner
from syncd.storage import Storage
from syncd.webhooks import payload
from syncd.webhooks.payload import LONGEST_WAIT
from syncd.webhooks.sender import TIMEOUT, WebhookSender

log = structlog.get_logger("syncd.alerts")
PAGE = 200
# How long a deliverer holds an alert it posts: well past the POST's own deadline.
CLAIM = timedelta(seconds=3 * TIMEOUT)


@dataclass
class DeliveryCounts:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # webhook -> last error this pass
    elsewhere: set[str] = field(default_factory=set)  # webhooks another process delivers

    def summary(self) -> str:
        text = f"{self.delivered} delivered, {self.retrying} to retry, {self.failed} given up"
        if self.errors:
            text += " (" + "; ".join(f"{w}: {e}" for w, e in sorted(self.errors.items())) + ")"
        if self.elsewhere:
            text += f"; {', '.join(sorted(self.elsewhere))}: being delivered by another process"
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
    is down is tried once per backoff step, not once per alert. Webhooks are served at
    the same time: one that hangs holds up only its own alerts.
    """
    counts = DeliveryCounts()
    owned = sender is None
    sender = sender or WebhookSender()
    try:
        names = await db(storage.pending_webhooks)
        await asyncio.gather(
            *(
                _deliver_to(
                    n, webhooks.get(n), storage, clock=clock, db=db, sender=sender, counts=counts
                )
                for n in names
            )
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
    """Deliver one webhook's pending alerts in order, until one fails or must wait.

    Each alert is claimed before it is posted: a second deliverer (another process) finds
    it claimed and leaves the whole webhook to the first, so no alert is posted twice at
    once and the order holds. A deliverer that dies mid-post leaves a claim that runs out
    after ``CLAIM``; the next one posts the alert again, with the same ``webhook-id``.
    """
    after = 0
    while page := await db(storage.pending_deliveries, name, after, PAGE):
        for delivery in page:
            after = delivery.alert_id
            now = clock()
            if webhook is not None and now < delivery.next_attempt_at <= now + LONGEST_WAIT:
                # The oldest alert waits for its retry; the others wait behind it. (A retry
                # set further ahead than any backoff was set by a clock that ran ahead: it
                # is due now rather than in a day.)
                if delivery.attempts:
                    counts.errors[name] = (
                        f"{delivery.last_error}; next try {delivery.next_attempt_at:%H:%M:%S} UTC"
                    )
                return
            claim = {"owner": owner(), "until": now + CLAIM, "now": now}
            if not await db(storage.claim_delivery, delivery.alert_id, name, **claim):
                counts.elsewhere.add(name)
                log.info(
                    "alert.delivery_claimed_elsewhere", alert_id=delivery.alert_id, webhook=name
                )
                return
            error, retry_at = await _attempt(delivery, webhook, sender, clock)
            await db(
                storage.record_delivery, delivery.alert_id, name, clock(),
                error=error, retry_at=retry_at, owner=owner(),
            )  # fmt: skip
            if not _counted(delivery, name, error, retry_at, counts) or webhook is None:
                continue  # delivered, or a removed webhook: every pending alert fails now
            return


async def _attempt(
    delivery: Delivery,
    webhook: WebhookConfig | None,
    sender: WebhookSender,
    clock: Callable[[], datetime],
) -> tuple[str | None, datetime | None]:
    """Post one alert: (None, None) when delivered, else the error and when to retry
    (None: given up)."""
    if webhook is None:
        return "the webhook is no longer configured", None
    body = payload.body(delivery, webhook.format)
    headers = payload.headers(delivery, body, webhook.secret, clock())
    error = await sender.post(webhook.url, body, headers)
    return error, payload.retry_at(delivery, clock()) if error else None


def _counted(
    delivery: Delivery,
    name: str,
    error: str | None,
    retry_at: datetime | None,
    counts: DeliveryCounts,
) -> bool:
    """Count and log one attempt; True when it failed."""
    if error is None:
        counts.delivered += 1
        log.info(
            "alert.delivered", alert_id=delivery.alert_id, webhook=name, alert_event=delivery.event
        )
        return False
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
    else:
        counts.retrying += 1
    return True


def check(counts: DeliveryCounts) -> str:
    """The job's result: failed when any webhook refused or could not be reached."""
    if counts.errors:
        raise JobError(counts.summary())
    return counts.summary()
