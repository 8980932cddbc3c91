"""Alert storage: the ``alerts`` outbox, written in the transaction of the change it reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from syncd.plans import AlertIntent
from syncd.storage import tables as t


def insert_alerts(conn: sa.Connection, alerts: Sequence[AlertIntent], now: datetime) -> None:
    if alerts:
        conn.execute(
            sa.insert(t.alerts),
            [
                {
                    "event": a.event.value,
                    "provider": a.provider,
                    "payload": {"text": a.text, "data": a.data},
                    "created_at": now,
                }
                for a in alerts
            ],
        )
