"""``order_requests`` and ``request_changes``: refills and cancellations.

Each method reads the rows it decides on inside the transaction that writes the
decision, and the rules themselves are ``syncd.order_requests``'s. Rows are read as the
database holds them (a consumer writes them) and converted one value at a time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from syncd import order_requests as rules
from syncd.models import OrderState, RefillAnswer, RefillStatus, RequestKind
from syncd.order_requests import Request, RequestChange, RequestState, RequestUpdate, Step
from syncd.plans import AlertIntent
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import take_feed_turn
from syncd.storage.orders import _package
from syncd.storage.rows import (
    ORDER_COLUMNS,
    raw,
    read_int,
    read_order,
    read_text,
    read_time,
    readable,
)

_r = t.order_requests.c
_o = t.orders.c
REQUEST_COLUMNS = tuple(raw(_r[name]) for name in rules.REQUEST_FIELDS)
# Bound as their text: psycopg would write an enumeration's name.
_QUEUED, _SUBMITTING, _SENT = (
    RequestState.QUEUED.value,
    RequestState.SUBMITTING.value,
    RequestState.SENT.value,
)
_REFILL = RequestKind.REFILL.value
_KINDS = {k.value: k for k in RequestKind}
_STATES = {s.value: s for s in RequestState}
_REFILL_STATUSES = {s.value: s for s in RefillStatus}
_READERS: dict[str, Callable[[object], object]] = {
    "order_id": read_int,
    "provider_request_id": read_int,
    "status_raw": read_text,
    "error": read_text,
    "provider": read_text,
    "created_at": read_time,
    "sent_at": read_time,
    "checked_at": read_time,
    "next_check_at": read_time,
    "finished_at": read_time,
}


def read_request(row: Sequence[Any]) -> Request:
    values = dict(zip(rules.REQUEST_FIELDS, row, strict=True))
    problems = []
    for name, reader in _READERS.items():
        if values[name] is None:
            continue
        try:
            values[name] = reader(values[name])
        except ValueError as exc:
            values[name] = None
            problems.append(f"{name}: {exc}")
    kind, state, status = values["kind"], values["state"], values["status"]
    values["kind"] = _KINDS.get(kind, str(kind)) if isinstance(kind, str) else str(kind)
    values["state"] = _STATES.get(state, str(state)) if isinstance(state, str) else str(state)
    values["status"] = (
        None
        if status is None
        else _REFILL_STATUSES.get(status, RefillStatus.UNKNOWN)
        if isinstance(status, str)
        else RefillStatus.UNKNOWN
    )
    if values["order_id"] is None and "order_id" not in " ".join(problems):
        problems.append("order_id: missing")
    return Request(**values, problem="; ".join(problems) or None)


class RequestStorage(AlertStorage):
    def claim_requests(
        self,
        provider: str,
        kind: RequestKind,
        *,
        offered: bool,
        owner: str,
        deadline: datetime,
        now: datetime,
        only: Sequence[int] | None = None,
    ) -> tuple[list[tuple[Request, int]], list[Request]]:
        """Judge the queued requests of ``kind`` for the provider's orders, oldest first,
        up to one call's worth; commit each as ``submitting`` (owned by ``owner``) or
        ``rejected``. Returns (request, the order's provider id) for those to send, and
        the rejected ones."""

        def work(conn: sa.Connection) -> tuple[list[tuple[Request, int]], list[Request]]:
            query = (
                sa.select(*REQUEST_COLUMNS, *ORDER_COLUMNS)
                .select_from(t.order_requests.join(t.orders, _o.id == _r.order_id))
                .where(_r.state == _QUEUED, _r.kind == kind.value, _o.provider == provider)
                .order_by(_r.id)
                .limit(rules.MAX_PER_CALL)
                .with_for_update(of=t.order_requests, skip_locked=True)
            )
            if only is not None:
                query = query.where(_r.id.in_(list(only)))
            rows = conn.execute(query).all()
            width = len(REQUEST_COLUMNS)
            send, rejected, steps = [], [], []
            opened: set[int] = set()  # orders a request of this batch is already about
            for row in rows:
                order = read_order(row[width:])
                # The provider it is judged for: alerts and later passes name it.
                request = replace(read_request(row[:width]), provider=provider)
                if (
                    request.provider_request_id is not None
                    or row[rules.REQUEST_FIELDS.index("provider_request_id")] is not None
                ):
                    steps.append((request, rules.already_sent(request)))
                    rejected.append(request)
                    continue
                if order.id in opened:
                    reason: str | None = f"another {kind} of order {order.id} is in this batch"
                else:
                    refill_open = kind is RequestKind.REFILL and _refill_open(conn, order.id)
                    reason = rules.judge(
                        request, order, _package(conn, order), offered=offered,
                        refill_open=refill_open,
                    )  # fmt: skip
                update = rules.claim(
                    request, reason, provider=provider, owner=owner, deadline=deadline, now=now
                )
                steps.append((request, Step(update)))
                if reason is None:
                    opened.add(order.id)
                    assert order.provider_order_id is not None
                    send.append((request, order.provider_order_id))
                else:
                    rejected.append(request)
            _apply(conn, steps, now, self._insert_alerts)
            return send, rejected

        return self._write(work)

    def set_aside_stray_requests(self, now: datetime) -> int:
        """Requests no provider's pass would take as they are, each settled with its
        reason (``order_requests.stray``): queued ones naming no order, an unknown kind or
        an order of a provider nobody configured; states that are no state; ``submitting``
        rows nobody claimed and ``sent`` rows syncd did not send. Every provider's orders
        job looks (in every instance); each row is locked as it is read and skipped when
        another job holds it, so it is settled once."""
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
            width, steps = len(REQUEST_COLUMNS), []
            for row in rows:
                request = read_request(row[:width])
                order = read_order(row[width:]) if row[width] is not None else None
                if request.state is RequestState.SUBMITTING:
                    step = rules.recover(request, None, None, now, lambda *_: True)
                    if step is not None:
                        steps.append((request, step))
                    continue
                reason = rules.stray(
                    request, order, provider_known=order is not None and order.provider in known
                )
                if reason is not None:
                    update = RequestUpdate(
                        state=RequestState.REJECTED, error=reason, finished_at=now,
                        next_check_at=None,
                    )  # fmt: skip
                    steps.append((request, Step(update)))
            _apply(conn, steps, now, self._insert_alerts)
            return len(steps)

        return self._write(work)

    def finish_requests(
        self,
        outcomes: Iterable[tuple[Request, Step]],
        owner: str,
        now: datetime,
    ) -> None:
        """Write what the provider answered, for requests still ``submitting`` by
        ``owner`` (one settled meanwhile by hand is left as it is now). An order whose
        cancellation was taken is made due, so the next status sweep shows it."""
        wanted = {request.id: step for request, step in outcomes}

        def work(conn: sa.Connection) -> None:
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS)
                .where(
                    _r.id.in_(list(wanted)),
                    _r.state == _SUBMITTING,
                    _r.submit_owner == owner,
                )
                .with_for_update()
            ).all()
            steps = [(r, wanted[r.id]) for r in map(read_request, rows)]
            cancelled = [
                r.order_id
                for r, step in steps
                if r.kind is RequestKind.CANCEL and step.update.state is RequestState.DONE
            ]
            if cancelled:  # before the feed rows: they are the transaction's last writes
                conn.execute(
                    sa.update(t.orders)
                    .where(_o.id.in_(cancelled), _o.state == OrderState.ACTIVE.value)
                    .values(next_check_at=now)
                )
            _apply(conn, steps, now, self._insert_alerts)

        if wanted:
            self._write(work)

    def recover_requests(
        self,
        provider: str,
        now: datetime,
        is_gone: Callable[[str | None, datetime | None, datetime], bool],
    ) -> list[int]:
        """``submitting`` requests of the provider whose sender died become ambiguous."""

        def work(conn: sa.Connection) -> list[int]:
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS, raw(_r.submit_owner), raw(_r.submit_deadline))
                .where(_r.state == _SUBMITTING, _r.provider == provider)
                .with_for_update(skip_locked=True)
            ).all()
            steps, recovered = [], []
            for row in rows:
                request = read_request(row[:-2])
                owner, deadline = readable(read_text, row[-2]), readable(read_time, row[-1])
                step = rules.recover(request, owner, deadline, now, is_gone)
                if step is not None:
                    steps.append((request, step))
                    recovered.append(request.id)
            _apply(conn, steps, now, self._insert_alerts)
            return recovered

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
        self, answers: dict[int, RefillAnswer | None], now: datetime, base: timedelta
    ) -> list[RequestChange]:
        """Each checked refill's row, by request id, in one transaction; the feed rows
        written."""

        def work(conn: sa.Connection) -> list[RequestChange]:
            rows = conn.execute(
                sa.select(*REQUEST_COLUMNS)
                .where(_r.id.in_(list(answers)), _r.state == _SENT)
                .with_for_update()
            ).all()
            steps = [
                (r, Step(rules.checked(r, answers[r.id], now, base)))
                for r in map(read_request, rows)
            ]
            return _apply(conn, steps, now, self._insert_alerts)

        return self._write(work) if answers else []

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
            _r.state.in_([s.value for s in rules.OPEN_STATES]),
        )
        .limit(1)
    ).first()
    return found is not None


def _apply(
    conn: sa.Connection,
    steps: Sequence[tuple[Request, Step]],
    now: datetime,
    insert_alerts: Callable[[sa.Connection, Sequence[AlertIntent], datetime], None],
) -> list[RequestChange]:
    """Write each step's update, then the feed rows and alerts (the last writes of the
    transaction, in the feeds' turn)."""
    changes, alerts = [], []
    for request, step in steps:
        written = {
            name: value.value if isinstance(value, enum.Enum) else value
            for name, value in step.update.written().items()
        }  # a StrEnum as its text: psycopg would write an Enum's name
        if written:
            conn.execute(sa.update(t.order_requests).where(_r.id == request.id).values(written))
        if (change := rules.change_of(request, step.update)) is not None:
            changes.append(change)
        if step.alert is not None:
            alerts.append(step.alert)
    if changes:
        take_feed_turn(conn)
        conn.execute(
            sa.insert(t.request_changes),
            [
                {"request_id": c.request_id, "order_id": c.order_id, "changed_at": now,
                 "state_old": c.state_old, "state_new": c.state_new,
                 "status_old": c.status_old, "status_new": c.status_new}
                for c in changes
            ],
        )  # fmt: skip
    insert_alerts(conn, alerts, now)
    return changes


__all__ = ["RequestStorage", "RequestUpdate", "read_request"]
