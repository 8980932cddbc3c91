"""What a webhook receives: the body for its format and the Standard Webhooks headers.

Pure functions. ``webhook-id`` is the alert id, so a receiver sees the same id on every
retry of one alert and can drop duplicates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timedelta

from syncd.models import Delivery
from syncd.secret import Secret

DISCORD_LIMIT = 2000  # characters of `content` Discord accepts
FIRST_RETRY = timedelta(seconds=30)
LONGEST_WAIT = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)
# Attempts before giving up, whatever the clock says: a clock that jumps a day ahead must
# not give up every pending alert at its next failure. Ten attempts of the backoff above
# take about four hours.
GIVE_UP_ATTEMPTS = 10


def body(delivery: Delivery, fmt: str) -> bytes:
    line = f"[syncd] {delivery.event}: {delivery.text}"
    if fmt == "slack":
        value: object = {"text": line}
    elif fmt == "discord":
        value = {"content": line if len(line) <= DISCORD_LIMIT else line[: DISCORD_LIMIT - 1] + "…"}
    else:
        value = {
            "id": delivery.alert_id,
            "type": delivery.event,
            "created_at": delivery.created_at.isoformat(),
            "provider": delivery.provider,
            "data": delivery.data,
            "text": delivery.text,
        }
    return json.dumps(value, ensure_ascii=False).encode()


def headers(
    delivery: Delivery, payload: bytes, secret: Secret | None, now: datetime
) -> dict[str, str]:
    message_id = str(delivery.alert_id)
    timestamp = str(int(now.timestamp()))
    result = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": timestamp,
    }
    if secret is not None:
        result["webhook-signature"] = signature(secret, message_id, timestamp, payload)
    return result


def signature(secret: Secret, message_id: str, timestamp: str, payload: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` keyed with the whsec_ secret."""
    key = base64.b64decode(secret.reveal().removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + payload
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def retry_at(delivery: Delivery, now: datetime) -> datetime | None:
    """When to try a failed delivery again (backoff doubling from 30 s up to an hour), or
    None once the alert is 24 hours old and was tried ``GIVE_UP_ATTEMPTS`` times: it is
    then given up."""
    deadline = delivery.created_at + GIVE_UP_AFTER
    tried = delivery.attempts + 1  # this failure included
    if now >= deadline and tried >= GIVE_UP_ATTEMPTS:
        return None
    wait = min(LONGEST_WAIT, FIRST_RETRY * (1 << min(delivery.attempts, 16)))
    return min(now + wait, deadline) if now < deadline else now + wait
