"""``order_requests`` and ``request_changes``: refills and cancellations.

Each write reads the rows it is about inside its transaction, hands them to the planner
the job passes in (``syncd.order_requests``'s ``plan_*``) and writes the ``RequestPlan``
it returns. Rows are read as the database holds them (a consumer writes them) and
converted one value at a time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa

from syncd.models import OrderState, RequestKind, SendPause
from syncd.order_requests import (
    OPEN_STATES,
    REQUEST_FIELDS,
    QueuedRequest,
    Request,
    RequestClaims,
    RequestPlan,
    RequestState,
    StrayRequest,
)
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import take_feed_turn
from syncd.storage.clock_marks import raise_clock_mark
from syncd.storage.driver import Driver
from syncd.storage.order_values import read_request
from syncd.storage.order_writes import package_of
from syncd.storage.rows import (
    ORDER_COLUMNS,
    raw,
    read_int,
    read_order,
    read_text,
    read_time,
    readable,
)
from syncd.storage.send_pauses import pause_of, sending_now, write_pause

_r = t.order_requests.c
_o = t.orders.c
REQUEST_COLUMNS = tuple(raw(_r[name]) for name in REQUEST_FIELDS)
# Bound as their text: psycopg would write an enumeration's name.
_QUEUED, _SUBMITTING, _SENT = (
    RequestState.QUEUED.value,
    RequestState.SUBMITTING.value,
    RequestState.SENT.value,
)
_REFILL = RequestKind.REFILL.value


class ClaimPlanner(Protocol):
    """``order_requests.plan_claims`` with the job's arguments bound."""

    def __call__(
        self, rows: Sequence[QueuedRequest], now: datetime, *, pause: SendPause, busy: bool
    ) -> RequestClaims: ...


class RequestStorage(AlertStorage):
    def claim_requests(
        self,
        provider: str,
        kind: RequestKind,
        *,
        now: datetime,
        limit: int,
        plan: ClaimPlanner,
        only: Sequence[int] | None = None,
    ) -> RequestClaims:
        """Hand up to ``limit`` queued requests of ``kind`` for the provider's orders,
        oldest first, to ``plan`` (each with its order, the package it names, whether
        another refill of that order is open; with the provider's send pause and whether
        anything of the provider is being sent), and write what it says: ``submitting``
        under the caller, ``rejected``, or still queued (with the pause in ``error``, or
        untouched while another call is in flight). Committed before anything is sent;
        the ``providers`` row is locked first (PostgreSQL), so two processes cannot both
        see nothing in flight and both send."""

        def work(conn: sa.Connection) -> RequestClaims:
            pause = pause_of(conn, provider, lock=True)
            query = (
                sa.select(*REQUEST_COLUMNS, *ORDER_COLUMNS)
                .select_from(t.order_requests.join(t.orders, _o.id == _r.order_id))
                .where(_r.state == _QUEUED, _r.kind == kind.value, _o.provider == provider)
                .order_by(_r.id)
                .limit(limit)
                .with_for_update(of=t.order_requests, skip_locked=True)
            )
            if only is not None:
                query = query.where(_r.id.in_(list(only)))
            width = len(REQUEST_COLUMNS)
            held = REQUEST_FIELDS.index("provider_request_id")
            rows = []
            for row in conn.execute(query).all():
                order = read_order(row[width:])
                rows.append(
                    QueuedRequest(
                        read_request(row[:width]), order,
                        package_of(conn, order.provider, order.service_id),
                        kind is RequestKind.REFILL and _refill_open(conn, order.id),
                        holds_id=row[held] is not None,
                    )
                )  # fmt: skip
            # One call that changes something at the provider at a time, whatever process
            # makes it: the providers row locked above orders the claims.
            busy = sending_now(conn, provider) if rows else False
            claims = plan(rows, now, pause=pause, busy=busy)
            _write(conn, claims, self._insert_alerts)
            return claims

        return self._write(work)

    def apply_stray_requests(
        self, now: datetime, plan: Callable[[Sequence[StrayRequest], datetime], RequestPlan]
    ) -> int:
        """Hand ``plan`` the requests no provider's pass would take as they are, and write
        how it settles them; how many it settled. They are queued ones naming no order,
        an unknown kind or an order of a provider nobody configured; states that are no
        state; ``submitting`` rows nobody claimed and ``sent`` rows syncd did not send.
        Every provider's orders job looks (in every instance); each row is locked as it
        is read and skipped when another job holds it, so it is settled once."""
        known_states = [s.value for s in RequestState]
        names = sa.select(t.providers.c.name)
        candidates = sa.or_(
            sa.and_(
                _r.state == _QUEUED,
                sa.or_(
                    _o.id.is_(None),
                    _r.kind.not_in([k.value for k in RequestKind]),
                    _o.provider.not_in(names),
                ),
            ),
            _r.state.not_in(known_states),
            _r.state.is_(None),
            sa.and_(_r.state == _SUBMITTING, _r.submit_owner.is_(None)),
            sa.and_(
                _r.state == _SENT,
                sa.or_(_r.kind != _REFILL, _r.provider_request_id.is_(None), _r.provider.is_(None)),
            ),
        )

        def work(conn: sa.Connection) -> int:
            known = set(conn.execute(names).scalars())
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS, *ORDER_COLUMNS)
                .select_from(t.order_requests.outerjoin(t.orders, _o.id == _r.order_id))
                .where(candidates)
                .limit(500)
                .with_for_update(of=t.order_requests, skip_locked=True)
            ).all()
            width = len(REQUEST_COLUMNS)
            strays = []
            for row in rows:
                order = read_order(row[width:]) if row[width] is not None else None
                known_provider = order is not None and order.provider in known
                strays.append(StrayRequest(read_request(row[:width]), order, known_provider))
            settled = plan(strays, now)
            _write(conn, settled, self._insert_alerts)
            return len(settled.updates)

        return self._write(work)

    def finish_requests(
        self,
        request_ids: Sequence[int],
        owner: str,
        now: datetime,
        plan: Callable[[Sequence[Request], datetime], RequestPlan],
        *,
        provider: str | None = None,
        pause: Callable[[SendPause, RequestPlan], SendPause | None] | None = None,
    ) -> None:
        """Hand ``plan`` the requests still ``submitting`` by ``owner`` (one settled
        meanwhile by hand is left as it is now) and write what the provider's answers
        make of them, with the orders it makes due. The ``provider``'s send pause becomes
        what ``pause`` makes of that plan (paused after an unknown outcome, lifted after
        a clear answer), in the same transaction.

        Not fenced: what a provider said about a request it was sent is the truth, and
        must be kept even by a holder whose lease ran out while it waited for the answer
        (a pause, a slow provider). The write is guarded by the rows themselves instead:
        only those still ``submitting`` by ``owner`` are written, so no newer holder's
        work is undone."""

        def work(conn: sa.Connection) -> None:
            # Locked before anything is written (the feed turn is taken last).
            paused = pause_of(conn, provider, lock=True) if provider is not None else None
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS)
                .where(
                    _r.id.in_(list(request_ids)),
                    _r.state == _SUBMITTING,
                    _r.submit_owner == owner,
                )
                .with_for_update()
            ).all()
            answered = plan([read_request(row) for row in rows], now)
            paused_now = None
            if provider is not None and paused is not None and pause is not None:
                paused_now = pause(paused, answered)
            if paused_now is not None and provider is not None:
                write_pause(conn, provider, paused_now)
            _write(conn, answered, self._insert_alerts)

        if request_ids:
            self._write(work, fenced=False)

    def recover_requests(
        self,
        provider: str,
        now: datetime,
        plan: Callable[
            [Sequence[tuple[Request, str | None, datetime | None]], datetime], RequestPlan
        ],
    ) -> list[int]:
        """Hand ``plan`` the provider's ``submitting`` requests, each with its sender and
        deadline, and write what it says (ambiguous when the sender died); their ids."""

        def work(conn: sa.Connection) -> list[int]:
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS, raw(_r.submit_owner), raw(_r.submit_deadline))
                .where(_r.state == _SUBMITTING, _r.provider == provider)
                .with_for_update(skip_locked=True)
            ).all()
            claimed = [
                (
                    read_request(row[:-2]),
                    readable(read_text, row[-2]),
                    readable(read_time, row[-1]),
                )
                for row in rows
            ]
            recovered = plan(claimed, now)
            _write(conn, recovered, self._insert_alerts)
            return [request.id for request, _ in recovered.updates]

        return self._write(work)

    def due_refills(self, provider: str, now: datetime, limit: int) -> list[tuple[int, int | None]]:
        """(request id, refill id) of the provider's refills due a status check; the id is
        None when the row holds no readable refill id (someone wrote over it)."""

        def work(conn: sa.Connection) -> list[tuple[int, int | None]]:
            rows = conn.execute(
                sa.select(_r.id, raw(_r.provider_request_id))
                .where(
                    _r.state == _SENT,
                    _r.kind == _REFILL,
                    _r.provider == provider,
                    _r.next_check_at <= now,
                )
                .order_by(_r.next_check_at, _r.id)
                .limit(limit)
            ).all()
            due: list[tuple[int, int | None]] = []
            for request_id, refill_id in rows:
                readable_id = readable(read_int, refill_id)
                whole = isinstance(readable_id, int) and readable_id > 0
                due.append((int(request_id), readable_id if whole else None))
            return due

        return self._read(work)

    def apply_refill_statuses(
        self,
        request_ids: Sequence[int],
        now: datetime,
        plan: Callable[[Sequence[Request], datetime], RequestPlan],
    ) -> RequestPlan:
        """Hand ``plan`` the checked refills still ``sent`` and write what their answers
        make of them, in one transaction."""

        def work(conn: sa.Connection) -> RequestPlan:
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS)
                .where(_r.id.in_(list(request_ids)), _r.state == _SENT)
                .with_for_update()
            ).all()
            checked = plan([read_request(row) for row in rows], now)
            _write(conn, checked, self._insert_alerts)
            return checked

        return self._write(work) if request_ids else RequestPlan(now)

    def order_requests(self, order_id: int) -> list[Request]:
        return self._read(
            lambda conn: [
                read_request(row)
                for row in conn.execute(
                    sa.select(*REQUEST_COLUMNS).where(_r.order_id == order_id).order_by(_r.id)
                )
            ]
        )

    def requests_of(self, order_ids: Sequence[int]) -> dict[int, list[Request]]:
        """The requests of each of these orders, oldest first (``syncd order list``)."""

        def work(conn: sa.Connection) -> dict[int, list[Request]]:
            found: dict[int, list[Request]] = {}
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS).where(_r.order_id.in_(list(order_ids))).order_by(_r.id)
            )
            for request in map(read_request, rows):
                if request.order_id is not None:
                    found.setdefault(request.order_id, []).append(request)
            return found

        return self._read(work) if order_ids else {}

    def queue_requests(self, kind: RequestKind, order_ids: Sequence[int]) -> list[int]:
        """Queue one request of ``kind`` per order id (``syncd order refill`` / ``cancel``)."""

        def work(conn: sa.Connection) -> list[int]:
            made = []
            for order_id in order_ids:
                made.append(
                    conn.execute(
                        sa.insert(t.order_requests)
                        .values(order_id=order_id, kind=kind.value, state=_QUEUED)
                        .returning(_r.id)
                    ).scalar_one()
                )
            return made

        return self._write(work)

    def order_states(self, order_ids: Sequence[int]) -> dict[int, tuple[str, OrderState | str]]:
        """(provider, state) of each order that exists."""

        def work(conn: sa.Connection) -> dict[int, tuple[str, OrderState | str]]:
            rows = conn.execute(sa.select(*ORDER_COLUMNS).where(_o.id.in_(list(order_ids))))
            return {o.id: (o.provider, o.state) for o in map(read_order, rows)}

        return self._read(work)


def _refill_open(conn: sa.Connection, order_id: int) -> bool:
    """Whether another refill of the order is being sent, sent and not final, or
    ambiguous."""
    found = conn.execute(
        sa.select(_r.id)
        .where(
            _r.order_id == order_id,
            _r.kind == _REFILL,
            _r.state.in_([s.value for s in OPEN_STATES]),
        )
        .limit(1)
    ).first()
    return found is not None


def _write(
    conn: sa.Connection,
    plan: RequestPlan,
    insert_alerts: Callable[[sa.Connection, Sequence[Any], datetime], None],
) -> None:
    """Write each update of ``plan`` and make its orders due, then the feed rows and
    alerts (the last writes of the transaction, in the feeds' turn). A time written (a
    sending, a check, an order made due) raises the provider's clock mark
    (``storage/clock_marks.py``)."""
    for request, update in plan.updates:
        written = {
            name: value.value if isinstance(value, enum.Enum) else value
            for name, value in update.written().items()
        }  # a StrEnum as its text: psycopg would write an Enum's name
        if written:
            conn.execute(sa.update(t.order_requests).where(_r.id == request.id).values(written))
    if plan.due_orders:
        conn.execute(
            sa.update(t.orders)
            .where(_o.id.in_(plan.due_orders), _o.state == OrderState.ACTIVE.value)
            .values(next_check_at=plan.now)
        )
    timed = [
        request.provider
        for request, update in plan.updates
        if plan.due_orders or any(isinstance(v, datetime) for v in update.written().values())
    ]
    raise_clock_mark(Driver(conn), timed, plan.now)
    if plan.changes:
        take_feed_turn(conn)
        conn.execute(
            sa.insert(t.request_changes),
            [
                {"request_id": c.request_id, "order_id": c.order_id, "changed_at": plan.now,
                 "state_old": c.state_old, "state_new": c.state_new,
                 "status_old": c.status_old, "status_new": c.status_new}
                for c in plan.changes
            ],
        )  # fmt: skip
    insert_alerts(conn, plan.alerts, plan.now)


__all__ = ["RequestStorage", "read_request"]
