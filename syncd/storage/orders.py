"""Order storage: ``orders``, ``order_changes`` and the alerts order events raise."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Protocol, TypeVar

import sqlalchemy as sa

from syncd import lifecycle
from syncd.deadlines import CLOCK_SKEW
from syncd.models import Order, OrderState, StoredPackage
from syncd.plans import (
    AlertIntent,
    Funds,
    OrderChange,
    OrderUpdate,
    Settlement,
    StatusPlan,
    StatusUpdate,
    Submission,
    SubmitOutcome,
    Verdict,
)
from syncd.storage import plain_orders
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import take_feed_turn
from syncd.storage.catalog import stored_package
from syncd.storage.driver import Driver
from syncd.storage.literals import quoted
from syncd.storage.rows import (
    ORDER_COLUMNS,
    ORDER_FIELDS,
    raw,
    read_order,
    read_orders,
    read_text,
    read_time,
    readable,
)

T = TypeVar("T")
_o = t.orders.c
_SPENDING = (OrderState.SUBMITTING, OrderState.ACTIVE, OrderState.DONE, OrderState.AMBIGUOUS)
# The statements of the status sweep, run at the driver's speed (see storage/driver.py).
# Statements built with f-strings hold only column names and placeholders, never a value.
_SELECT_ORDERS = f"SELECT {', '.join(ORDER_FIELDS)} FROM orders"  # noqa: S608
# A checked row that stays active keeps its state: SQLite rewrites the entries of every
# index on a column named in SET (three index `state`), which made the batch's UPDATE four
# times dearer. The few rows that leave `active` get the second statement.
_STATUS_SET = (
    "status = ?, status_raw = ?, charge = ?, start_counter = ?, remains = ?, currency = ?, "
    "error = ?, checked_at = ?, next_check_at = ?, finished_at = ?, missing_checks = ?, "
    "overdue_checks = ?"
)
_WRITE_STATUS = f"UPDATE orders SET {_STATUS_SET} WHERE id = ?"  # noqa: S608
_WRITE_STATUS_AND_STATE = f"UPDATE orders SET {_STATUS_SET}, state = ? WHERE id = ?"  # noqa: S608
_STILL_ACTIVE = f"state = {quoted(OrderState.ACTIVE)}"
DueCursor = tuple[object, int]  # (next_check_at as stored, id) of a page's last row
# One page of due orders, read with next_check_at as the database holds it (the cursor).
_DUE_PAGE = (
    "SELECT id, provider_order_id, next_check_at FROM orders WHERE provider = ? "  # noqa: S608
    f"AND {_STILL_ACTIVE} AND next_check_at <= ?{{page}} "
    "ORDER BY next_check_at, id LIMIT ?"
)
Decide = Callable[[Order, StoredPackage | None, Decimal | None], Submission]


class DecideStray(Protocol):
    def __call__(
        self, order: Order, *, provider_known: bool, holds_id: bool
    ) -> Settlement | None: ...


class OrderStorage(AlertStorage):
    # -- placing and tracking ------------------------------------------------------------

    def queue_order(
        self,
        provider: str,
        *,
        service_id: int,
        link: str,
        quantity: int,
        custom_data: str | None,
        now: datetime,
    ) -> int:
        def work(conn: sa.Connection) -> int:
            new_id: int = conn.execute(
                sa.insert(t.orders)
                .values(
                    provider=provider,
                    service_id=service_id,
                    link=link,
                    quantity=quantity,
                    custom_data=custom_data,
                    state=OrderState.QUEUED,
                    created_at=now,
                )
                .returning(_o.id)
            ).scalar_one()
            return new_id

        return self._write(work)

    def track_orders(
        self, provider: str, provider_order_ids: Sequence[int], now: datetime
    ) -> dict[int, int]:
        """Start tracking orders placed elsewhere. Returns provider id → local id for each,
        including those tracked already (which are left as they are)."""

        def work(conn: sa.Connection) -> dict[int, int]:
            known, changes = plain_orders.track(Driver(conn), provider, provider_order_ids, now)
            _log_changes(conn, changes, now)
            return known

        return self._write(work)

    # -- submission ----------------------------------------------------------------------

    def claim_queued(
        self,
        provider: str,
        *,
        after: int,
        only: int | None,
        owner: str,
        deadline: datetime,
        now: datetime,
        decide: Decide,
        fresh_only: bool = False,
        limit: int,
    ) -> list[tuple[Order, Submission]]:
        """Take queued orders oldest first (id > ``after``), let ``decide`` judge each, and
        commit the verdicts: rejected, still waiting for funds, or ``submitting`` owned by
        ``owner``. Stops at the first order to send, or after ``limit`` orders: thousands
        waiting for funds are judged in a few transactions, not one each. An order the
        price guard newly holds raises its ``order.held`` alert in the same transaction. With
        ``fresh_only``, only orders nobody judged yet (no ``error``): the ones waiting for
        funds or after a failed attempt are left to the orders pass.

        The commit happens before the caller sends anything, so a crash after it leaves a
        ``submitting`` row that the next run turns ambiguous rather than sends twice.
        """

        def work(conn: sa.Connection) -> list[tuple[Order, Submission]]:
            query = (
                sa.select(*ORDER_COLUMNS)
                .where(
                    _o.provider == provider,
                    _o.state == OrderState.QUEUED,
                    _o.id > after,
                    # One that carries a provider order id may be placed already: it is
                    # set aside (ambiguous), never sent again.
                    _o.provider_order_id.is_(None),
                )
                .order_by(_o.id)
                .limit(limit)
                .with_for_update(skip_locked=True)  # PostgreSQL: two daemons never take one row
            )
            if only is not None:
                query = query.where(_o.id == only)
            if fresh_only:
                query = query.where(_o.error.is_(None))
            rows = conn.execute(query).all()
            # Judging spends nothing, and the first order to send ends the batch: the
            # funds read once hold for every order judged here.
            funds = _available_funds(conn, provider) if rows else None
            packages: dict[object, StoredPackage | None] = {}
            judged, changes, alerts = [], [], []
            for row in rows:
                order = read_order(row)
                if order.service_id not in packages:
                    packages[order.service_id] = _package(conn, order)
                decision = decide(order, packages[order.service_id], funds)
                update = lifecycle.claim(order, decision, owner=owner, deadline=deadline, now=now)
                if update is not None:
                    changes.append(_update_row(conn, order, update))
                if (alert := lifecycle.held_alert(order, decision)) is not None:
                    alerts.append(alert)
                judged.append((order, decision))
                if decision.verdict is Verdict.SEND:
                    break
            _log_changes(conn, changes, now)
            self._insert_alerts(conn, alerts, now)
            return judged

        return self._write(work)

    def catalog_never_synced(self, provider: str) -> bool:
        """Whether the provider's catalog was never synced: its queued orders wait, as
        every package would be unknown to them."""
        return self._read(lambda conn: _catalog_never_synced(conn, provider))

    def judge_order(self, order: Order, decide: Decide) -> Submission:
        """What ``decide`` says of an order before it is queued, against the catalog and
        funds as they are now (``syncd order add`` refuses an invalid one outright)."""

        def work(conn: sa.Connection) -> Submission:
            return decide(order, _package(conn, order), _available_funds(conn, order.provider))

        return self._read(work)

    def finish_submission(
        self,
        order_id: int,
        owner: str,
        outcome: SubmitOutcome,
        *,
        now: datetime,
        alert: AlertIntent | None,
    ) -> bool:
        """Record what became of a sent order, if this process still owns it; whether it
        was recorded (``lifecycle.finish`` says what is written, and which alert is raised
        when the answer can no longer be recorded)."""

        def work(conn: sa.Connection) -> bool:
            # Locked: a newer lease holder settling this row (recover_submissions) waits,
            # then sees what is written here.
            row = conn.execute(
                sa.select(*ORDER_COLUMNS).where(_o.id == order_id).with_for_update()
            ).first()
            if row is None:
                return False
            order = read_order(row)
            owned = conn.execute(
                sa.select(_o.id).where(_o.id == order_id, _o.submit_owner == owner)
            ).first()
            holder = _holder_of(conn, order, outcome.provider_order_id)
            step, late = lifecycle.finish(
                order, outcome, owned=owned is not None, holder=holder, alert=alert, now=now
            )
            if step is None:
                if late is not None:
                    self._insert_alerts(conn, [late], now)
                return False
            _write_update(conn, order, step.update, now)
            if step.alert is not None:
                self._insert_alerts(conn, [step.alert], now)
            return True

        # Not fenced: what a provider said about an order it was sent is the truth, and
        # must be kept even by a holder whose lease ran out while it waited for the answer
        # (a pause, a slow provider). The write is guarded by the row itself instead: only
        # the row this process claimed (its owner, still submitting, or declared ambiguous
        # meanwhile) is written, so no newer holder's work is undone.
        return self._write(work, fenced=False)

    def recover_submissions(
        self,
        provider: str,
        now: datetime,
        is_gone: Callable[[str | None, datetime | None, datetime], bool],
    ) -> list[int]:
        """Turn ``submitting`` rows whose process died into ``ambiguous`` (with an alert).

        Rows whose owner is still alive (a submission in flight elsewhere) are left alone.
        A ``submitting`` row syncd never claimed (no owner: a consumer wrote the state) was
        never sent: it is rejected, with no alert.
        """
        raw_owner, raw_deadline = raw(_o.submit_owner), raw(_o.submit_deadline)

        def work(conn: sa.Connection) -> list[int]:
            rows = conn.execute(
                sa.select(*ORDER_COLUMNS, raw_owner, raw_deadline)
                .where(
                    _o.provider == provider,
                    _o.state == OrderState.SUBMITTING,
                    # syncd's own never carry one; a consumer's that do are set aside.
                    _o.provider_order_id.is_(None),
                )
                # A row its sender is recording right now is left to it (PostgreSQL; on
                # SQLite one writer holds the whole database).
                .with_for_update(skip_locked=True)
            ).all()
            recovered, changes, alerts = [], [], []
            for row in rows:
                order = read_order(row[: len(ORDER_COLUMNS)])
                owner, deadline = readable(read_text, row[-2]), readable(read_time, row[-1])
                step = lifecycle.recover(order, owner, deadline, now, is_gone)
                if step is None:
                    continue
                changes.append(_update_row(conn, order, step.update))
                if step.alert is not None:
                    alerts.append(step.alert)
                    recovered.append(order.id)
            _log_changes(conn, changes, now)
            self._insert_alerts(conn, alerts, now)
            return recovered

        return self._write(work)

    def set_aside_strays(self, now: datetime, decide: DecideStray) -> list[tuple[int, str]]:
        """Let ``decide`` settle rows no job would take as they are, and write what it
        decides, each with its reason in ``error``: rows not sent yet that name a provider
        nobody configured or already carry a provider order id, active rows of an unknown
        provider, and rows in a state that is no state. Returns (order id, reason).

        The first and last kinds are found through partial indexes; active rows of an
        unknown provider take one pass over the index of due orders.
        """

        def work(conn: sa.Connection) -> list[tuple[int, str]]:
            known = set(conn.execute(sa.select(t.providers.c.name)).scalars())
            names = sa.select(t.providers.c.name)
            # Separate queries, not one with OR: each is answered by its own index.
            unsent = sa.or_(_o.provider.not_in(names), _o.provider_order_id.is_not(None))
            # Every provider's orders job looks for these (in every instance): each row is
            # locked as it is read, and a row another job has locked is skipped (it is
            # being settled), so a row is settled, alerted and logged once.
            conditions = [
                (sa.text(t.UNSENT), unsent),
                (sa.text(t.NOT_A_STATE),),
                (_o.state == OrderState.ACTIVE, _o.provider.not_in(names)),
            ]
            strays = [
                row
                for where in conditions
                for row in conn.execute(
                    sa.select(*ORDER_COLUMNS)
                    .where(*where)
                    .with_for_update(of=t.orders, skip_locked=True)
                )
            ]
            settled, changes, alerts = [], [], []
            for row in strays:
                order = read_order(row)
                holds_id = row.provider_order_id is not None
                verdict = decide(order, provider_known=order.provider in known, holds_id=holds_id)
                if verdict is None:
                    continue
                changes.append(_update_row(conn, order, lifecycle.settle(verdict, now)))
                if verdict.alert is not None:
                    alerts.append(verdict.alert)
                settled.append((order.id, verdict.error))
            _log_changes(conn, changes, now)
            self._insert_alerts(conn, alerts, now)
            return settled

        return self._write(work)

    # -- status sync ---------------------------------------------------------------------

    def queued_fingerprints(self, providers: Sequence[str]) -> dict[str, tuple[int, int]]:
        """For each of ``providers`` with queued orders: how many, and the sum of their
        ids. Two looks with equal fingerprints saw the same queue; one partial index
        answers it, so the submit job can ask every second."""

        def work(conn: sa.Connection) -> dict[str, tuple[int, int]]:
            rows = conn.execute(
                sa.select(_o.provider, sa.func.count(), sa.func.sum(_o.id))
                .where(
                    sa.text(t.UNSENT),
                    _o.state == OrderState.QUEUED,
                    _o.provider.in_(list(providers)),
                )
                .group_by(_o.provider)
            )
            return {provider: (int(count), int(total)) for provider, count, total in rows}

        return self._read(work) if providers else {}

    def count_due(self, provider: str, due_before: datetime, horizon: datetime) -> int:
        """How many active orders are due by ``due_before``.

        An active row without ``next_check_at`` (edited by hand), or with one beyond
        ``horizon`` (later than any schedule syncd writes: a clock that ran ahead wrote it,
        or a consumer wrote text that sorts after every time), is made due first, so that
        no order waits for a moment that will not come.
        """

        def work(conn: sa.Connection) -> int:
            conn.execute(
                sa.update(t.orders)
                .where(
                    _o.provider == provider,
                    _o.state == OrderState.ACTIVE,
                    sa.or_(_o.next_check_at.is_(None), _o.next_check_at > horizon),
                )
                .values(next_check_at=due_before)
            )
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(*_due(provider, due_before))
                ).scalar_one()
            )

        return self._write(work)

    def due_orders(
        self, provider: str, due_before: datetime, after: DueCursor | None, limit: int
    ) -> tuple[list[tuple[int, object]], DueCursor | None]:
        """One page of due active orders as (id, provider_order_id), oldest
        ``next_check_at`` first, and the cursor for the next page (keyset paging: each
        page costs the same, however deep). The rows themselves are read again in the
        transaction that writes their answers.

        The cursor holds ``next_check_at`` exactly as the database returned it, and is
        compared as such: SQLite compares and sorts times as text, and a time a consumer
        wrote without microseconds must still compare the way it sorts.
        """

        def work(conn: sa.Connection) -> tuple[list[tuple[int, object]], DueCursor | None]:
            d = Driver(conn)
            params: tuple[object, ...] = (provider, d.time(due_before))
            page = ""
            if after is not None:
                raw, last_id = after  # text on SQLite, a timestamp on PostgreSQL
                page = " AND (next_check_at > ? OR (next_check_at = ? AND id > ?))"
                params += (raw, raw, last_id)
            rows = d.run(_DUE_PAGE.format(page=page), (*params, limit))
            if not rows:
                return [], None
            last = rows[-1]
            return [(order_id, held) for order_id, held, _ in rows], (last[2], last[0])

        return self._read(work)

    def apply_status_answers(
        self,
        order_ids: Sequence[int],
        asked_at: datetime,
        plan_for: Callable[[list[Order]], StatusPlan],
    ) -> StatusPlan:
        """Plan a batch's answers against its rows as they are now, and write the plan: one
        transaction per batch. Rows another process finished, or checked after
        ``asked_at`` (a fresher answer than ours), are left out, so that two processes
        sweeping at once never record a change twice nor write an older answer last.

        A ``checked_at`` more than ``CLOCK_SKEW`` ahead of ``asked_at`` is no fresher
        answer but the mark of a clock that ran ahead: such a row is answered like any
        other, or it would never be written again."""
        future = asked_at + CLOCK_SKEW

        def work(conn: sa.Connection) -> StatusPlan:
            d = Driver(conn)
            # One indexed lookup of the batch's rows, locked until the commit (where rows
            # are locked: elsewhere the one writer holds the whole database).
            rows = d.run(
                f"{_SELECT_ORDERS} WHERE {d.ids_in('id', len(order_ids))} AND {_STILL_ACTIVE} "
                "AND (checked_at IS NULL OR checked_at <= ? OR checked_at > ?) ORDER BY id"
                + d.backend.row_lock_sql,
                (*d.id_params(order_ids), d.time(asked_at), d.time(future)),
            )
            plan = plan_for(read_orders(rows))
            _write_status_plan(d, plan)
            self._insert_alerts(conn, plan.alerts, plan.now)
            return plan

        return self._write(work) if order_ids else plan_for([])

    def mark_orders_synced(self, provider: str, now: datetime) -> None:
        self._write(
            lambda conn: conn.execute(
                sa.update(t.providers)
                .where(t.providers.c.name == provider)
                .values(orders_synced_at=now)
            )
        )

    # -- reading and settling ------------------------------------------------------------

    def order_change_count(self) -> int:
        return int(
            self._read(
                lambda conn: conn.execute(
                    sa.select(sa.func.count()).select_from(t.order_changes)
                ).scalar_one()
            )
        )

    def find_order(self, provider: str, provider_order_id: int) -> Order | None:
        def work(conn: sa.Connection) -> Order | None:
            row = conn.execute(
                sa.select(*ORDER_COLUMNS).where(
                    _o.provider == provider, _o.provider_order_id == provider_order_id
                )
            ).first()
            return None if row is None else read_order(row)

        return self._read(work)

    def orders_since(self, provider: str, since: datetime) -> list[Order]:
        """The provider's orders sent or finished since ``since`` (``syncd report``)."""

        def work(conn: sa.Connection) -> list[Order]:
            rows = conn.execute(
                sa.select(*ORDER_COLUMNS)
                .where(
                    _o.provider == provider,
                    sa.or_(
                        _o.submitted_at >= since,
                        _o.finished_at >= since,
                        sa.and_(_o.submitted_at.is_(None), _o.created_at >= since),
                    ),
                )
                .order_by(_o.id)
            )
            return [read_order(row) for row in rows]

        return self._read(work)

    def get_order(self, order_id: int) -> Order | None:
        def work(conn: sa.Connection) -> Order | None:
            row = conn.execute(sa.select(*ORDER_COLUMNS).where(_o.id == order_id)).first()
            return None if row is None else read_order(row)

        return self._read(work)

    def list_orders(
        self,
        *,
        state: OrderState | None = None,
        provider: str | None = None,
        before: int | None = None,
        limit: int = 500,
    ) -> list[Order]:
        """Newest first, ``limit`` at a time; pass the last id as ``before`` for the next page."""

        def work(conn: sa.Connection) -> list[Order]:
            query = sa.select(*ORDER_COLUMNS).order_by(_o.id.desc()).limit(limit)
            if state is not None:
                query = query.where(_o.state == state)
            if provider is not None:
                query = query.where(_o.provider == provider)
            if before is not None:
                query = query.where(_o.id < before)
            return [read_order(row) for row in conn.execute(query)]

        return self._read(work)

    def settle_order(
        self, order_id: int, expected: OrderState, update: OrderUpdate, now: datetime
    ) -> bool:
        """Write ``update`` if the order is still in state ``expected``; False otherwise."""

        def work(conn: sa.Connection) -> bool:
            row = conn.execute(
                sa.select(*ORDER_COLUMNS).where(_o.id == order_id, _o.state == expected)
            ).first()
            if row is None:
                return False
            _write_update(conn, read_order(row), update, now)
            return True

        return self._write(work)


def _due(provider: str, due_before: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        _o.provider == provider,
        _o.state == OrderState.ACTIVE,
        _o.next_check_at <= due_before,
    )


def _package(conn: sa.Connection, order: Order) -> StoredPackage | None:
    """The catalog row an order names, if any."""
    if order.service_id is None:
        return None
    found = conn.execute(
        sa.select(t.packages).where(
            t.packages.c.provider == order.provider, t.packages.c.service_id == order.service_id
        )
    ).first()
    return stored_package(found) if found is not None else None


def _catalog_never_synced(conn: sa.Connection, provider: str) -> bool:
    synced = conn.execute(
        sa.select(t.providers.c.catalog_synced_at).where(t.providers.c.name == provider)
    ).first()
    return synced is None or synced[0] is None


def _available_funds(conn: sa.Connection, provider: str) -> Decimal | None:
    """What ``lifecycle.available_funds`` makes of the last known balance and the orders
    sent since it was read."""
    known = conn.execute(
        sa.select(t.providers.c.balance, t.providers.c.balance_checked_at).where(
            t.providers.c.name == provider
        )
    ).first()
    if known is None or known.balance is None or known.balance_checked_at is None:
        return None  # no balance known, or not when it was read (a hand edit): unchecked
    p = t.packages.c
    spent = conn.execute(
        sa.select(p.rate, _o.quantity)
        .join(t.packages, sa.and_(p.provider == _o.provider, p.service_id == _o.service_id))
        .where(
            _o.provider == provider,
            _o.state.in_(_SPENDING),
            _o.submitted_at > known.balance_checked_at,
        )
    )
    return lifecycle.available_funds(Funds(known.balance, [(rate, q) for rate, q in spent]))


def _write_update(conn: sa.Connection, order: Order, update: OrderUpdate, now: datetime) -> None:
    """Write one order's update and its ``order_changes`` row."""
    _log_changes(conn, [_update_row(conn, order, update)], now)


def _update_row(conn: sa.Connection, order: Order, update: OrderUpdate) -> OrderChange | None:
    """Write one order's update; the change it makes, for the feed (written last)."""
    conn.execute(sa.update(t.orders).where(_o.id == order.id).values(update.written()))
    return update.change(order)


def _write_status_plan(d: Driver, plan: StatusPlan) -> None:
    """A status batch's updates, then its ``order_changes`` rows, each one executemany.
    Times are converted once per distinct value: a batch shares ``checked_at`` and a few
    ``next_check_at``."""
    time, money = functools.cache(d.time), d.money
    text = None if d.backend.binds_enums_as_text else d.text  # no call per value if not needed

    def row(u: StatusUpdate) -> tuple[object, ...]:
        return (
            u.status if text is None else text(u.status), u.status_raw, money(u.charge),
            u.start_counter, u.remains, u.currency, u.error, time(u.checked_at),
            time(u.next_check_at), time(u.finished_at), u.missing_checks, u.overdue_checks,
        )  # fmt: skip

    # Every row of the batch was read `active`.
    active = OrderState.ACTIVE
    d.run_many(_WRITE_STATUS, [(*row(u), u.order_id) for u in plan.updates if u.state is active])
    d.run_many(
        _WRITE_STATUS_AND_STATE,
        [(*row(u), u.state.value, u.order_id) for u in plan.updates if u.state is not active],
    )
    _log_changes_with(d, plan.changes, plan.now)


def _log_changes(conn: sa.Connection, changes: Iterable[OrderChange | None], now: datetime) -> None:
    """The ``order_changes`` rows of a transaction: its last writes but for its alerts
    (see ``take_feed_turn``)."""
    _log_changes_with(Driver(conn), [c for c in changes if c is not None], now)


def _log_changes_with(d: Driver, changes: Sequence[OrderChange], now: datetime) -> None:
    if changes:
        take_feed_turn(d.conn)
        plain_orders.insert_changes(d, changes, now)


def _holder_of(conn: sa.Connection, order: Order, provider_order_id: int | None) -> int | None:
    """The other local order that already holds ``provider_order_id``, if any."""
    if provider_order_id is None:
        return None
    holder: int | None = conn.execute(
        sa.select(_o.id).where(
            _o.provider == order.provider,
            _o.provider_order_id == provider_order_id,
            _o.id != order.id,
        )
    ).scalar()
    return holder
