"""A provider's send pause (``providers.send_*``), as the order and request mixins read
and write it inside their transactions. The rules are ``syncd.send_pause``'s."""

from __future__ import annotations

import sqlalchemy as sa

from syncd.models import OrderState, SendPause
from syncd.storage import tables as t
from syncd.storage.overview import stored_pause
from syncd.storage.rows import raw

_p = t.providers.c
_o = t.orders.c
_r = t.order_requests.c
_SUBMITTING = OrderState.SUBMITTING.value


def pause_of(conn: sa.Connection, provider: str, *, lock: bool = False) -> SendPause:
    """The provider's pause as stored; with ``lock``, its ``providers`` row is locked
    until the commit (PostgreSQL: two processes cannot both take a trial; SQLite lets
    one writer in at a time anyway). A value garbled by hand reads as unknown: a pause
    with no readable end is due for its trial."""
    query = sa.select(
        raw(_p.send_paused_at), raw(_p.send_resume_at), raw(_p.send_pauses), _p.send_pause_reason
    ).where(_p.name == provider)
    # FOR NO KEY UPDATE on PostgreSQL (base.lock_provider says why).
    row = conn.execute(query.with_for_update(key_share=True) if lock else query).first()
    return SendPause() if row is None else stored_pause(*row)


def write_pause(conn: sa.Connection, provider: str, pause: SendPause) -> None:
    conn.execute(
        sa.update(t.providers)
        .where(_p.name == provider)
        .values(
            send_paused_at=pause.paused_at,
            send_resume_at=pause.resume_at,
            send_pauses=pause.pauses,
            send_pause_reason=pause.reason,
        )
    )


def sending_now(conn: sa.Connection, provider: str) -> bool:
    """Whether an order or a request of the provider is being sent (``submitting``)."""
    order = conn.execute(
        sa.select(_o.id).where(_o.provider == provider, _o.state == _SUBMITTING).limit(1)
    ).first()
    if order is not None:
        return True
    request = conn.execute(
        sa.select(_r.id)
        .join(t.orders, _o.id == _r.order_id)
        .where(_r.state == _SUBMITTING, _o.provider == provider)
        .limit(1)
    ).first()
    return request is not None
