"""Submission storage: the exactly-once protocol of sending a queued order.

``claim_queued`` commits a judged order as ``submitting`` (with its sender and a deadline)
before any byte leaves; ``finish_submission`` records the provider's answer, if the row is
still the sender's; ``recover_submissions`` settles the rows whose sender died. Rows no
job would take as they are (a consumer's typo) are set aside first (``apply_stray_orders``).
What each step writes is the planner's the job passes in (``syncd.lifecycle``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa

from syncd.lifecycle import HELD, WAITING_FOR_FUNDS
from syncd.models import Order, OrderState, SendPause, StoredPackage
from syncd.plans import (
    AlertIntent,
    ClaimPlan,
    Funds,
    QueuedOrders,
    Settlement,
    Step,
    Submission,
    SubmitOutcome,
)
from syncd.send_pause import after_order
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.order_writes import (
    funds_of,
    log_changes,
    package_of,
    update_row,
    write_update,
    write_updates,
)
from syncd.storage.rows import (
    ORDER_COLUMNS,
    PARAMS,
    raw,
    read_order,
    read_text,
    read_time,
    readable,
    with_params,
)
from syncd.storage.send_pauses import pause_of, sending_now, write_pause

_o = t.orders.c

ClaimPlanner = Callable[[QueuedOrders, datetime], ClaimPlan]
# ``send_pause.after_order``: the pause after a sent order was recorded in a state.
PausePlanner = Callable[[SendPause, int, OrderState, str | None, datetime], SendPause | None]
RecoveryPlanner = Callable[[Order, str | None, datetime | None, datetime], Step | None]


class FinishPlanner(Protocol):
    """``lifecycle.finish``: what an answer writes, given the row as it is now."""

    def __call__(
        self,
        order: Order,
        outcome: SubmitOutcome,
        *,
        owned: bool,
        holder: int | None,
        alert: AlertIntent | None,
        now: datetime,
    ) -> tuple[Step | None, AlertIntent | None]: ...


class StrayPlanner(Protocol):
    """``lifecycle.plan_stray``: what becomes of a row no job would take as it is."""

    def __call__(
        self, order: Order, *, provider_known: bool, holds_id: bool, now: datetime
    ) -> Settlement | None: ...


class SubmissionStorage(AlertStorage):
    def queue_order(
        self,
        provider: str,
        *,
        service_id: int,
        link: str | None,
        quantity: int | None,
        custom_data: str | None,
        now: datetime,
        params: dict[str, object] | None = None,
    ) -> int:
        """Queue one order (``syncd order add``); ``params`` is written as a JSON object,
        or SQL NULL when there are none."""

        def work(conn: sa.Connection) -> int:
            new_id: int = conn.execute(
                sa.insert(t.orders)
                .values(
                    provider=provider,
                    service_id=service_id,
                    link=link,
                    quantity=quantity,
                    custom_data=custom_data,
                    params=params if params else sa.null(),
                    state=OrderState.QUEUED,
                    created_at=now,
                )
                .returning(_o.id)
            ).scalar_one()
            return new_id

        return self._write(work)

    def claim_queued(
        self,
        provider: str,
        *,
        after: int,
        only: int | None,
        now: datetime,
        plan: ClaimPlanner,
        fresh_only: bool = False,
        through: int | None = None,
        limit: int,
    ) -> list[tuple[Order, Submission]]:
        """Take up to ``limit`` queued orders oldest first (id > ``after``), hand them to
        ``plan`` (with the catalog rows they name and the funds known) and write its
        verdicts: rejected, still waiting, or ``submitting`` under its sender, and the
        alerts it raises. Returns the orders judged, with their verdicts. With
        ``fresh_only``, the orders waiting for funds or held by the price guard are left
        to the orders pass (thousands may wait over a weekend); every other queued order
        is taken, one put back after a failed attempt included. With ``through``, no
        order with a higher id is taken (those queued after a pass began).

        ``plan`` is also handed the provider's send pause and whether anything of the
        provider is being sent (an order or a request ``submitting``: nothing more is
        sent then); the ``providers`` row is locked first (PostgreSQL), so two processes
        cannot both see nothing in flight and both send.

        The commit happens before the caller sends anything, so a crash after it leaves a
        ``submitting`` row that the next run turns ambiguous rather than sends twice.
        """

        def work(conn: sa.Connection) -> list[tuple[Order, Submission]]:
            pause = pause_of(conn, provider, lock=True)
            query = (
                sa.select(*ORDER_COLUMNS, PARAMS)
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
            if through is not None:
                query = query.where(_o.id <= through)
            if fresh_only:
                query = query.where(
                    sa.or_(
                        _o.error.is_(None),
                        sa.func.substr(_o.error, 1, len(WAITING_FOR_FUNDS)) != WAITING_FOR_FUNDS,
                    ),
                    sa.or_(_o.error.is_(None), sa.func.substr(_o.error, 1, len(HELD)) != HELD),
                )
            orders = [with_params(row) for row in conn.execute(query)]
            packages: dict[object, StoredPackage | None] = {}

            def package(order: Order) -> StoredPackage | None:
                if order.service_id not in packages:
                    packages[order.service_id] = package_of(conn, provider, order.service_id)
                return packages[order.service_id]

            funds = funds_of(conn, provider) if orders else None
            # One call that changes something at the provider at a time, whatever process
            # makes it: the providers row locked above orders the claims.
            busy = sending_now(conn, provider) if orders else False
            claimed = plan(QueuedOrders(orders, package, funds, pause, busy, provider), now)
            write_updates(conn, claimed.updates, claimed.now)
            self._insert_alerts(conn, claimed.alerts, claimed.now)
            return claimed.judged

        return self._write(work)

    def newest_order_id(self) -> int:
        """The highest order id so far (0 without orders): where an orders pass stops
        sending (``jobs/submit.py``)."""
        return self._read(lambda conn: conn.execute(sa.select(sa.func.max(_o.id))).scalar() or 0)

    def send_pause(self, provider: str) -> SendPause:
        """The provider's send pause as stored (``syncd.send_pause``)."""
        return self._read(lambda conn: pause_of(conn, provider))

    def catalog_never_synced(self, provider: str) -> bool:
        """Whether the provider's catalog was never synced: its queued orders wait, as
        every package would be unknown to them."""

        def work(conn: sa.Connection) -> bool:
            synced = conn.execute(
                sa.select(t.providers.c.catalog_synced_at).where(t.providers.c.name == provider)
            ).first()
            return synced is None or synced[0] is None

        return self._read(work)

    def order_verdict(
        self,
        order: Order,
        decide: Callable[[Order, StoredPackage | None, Funds | None], Submission],
    ) -> Submission:
        """What ``decide`` says of an order before it is queued, against the catalog and
        funds as they are now (``syncd order add`` refuses an invalid one outright)."""

        def work(conn: sa.Connection) -> Submission:
            package = package_of(conn, order.provider, order.service_id)
            return decide(order, package, funds_of(conn, order.provider))

        return self._read(work)

    def finish_submission(
        self,
        order_id: int,
        owner: str,
        outcome: SubmitOutcome,
        *,
        now: datetime,
        alert: AlertIntent | None,
        plan: FinishPlanner,
        pause: PausePlanner = after_order,
    ) -> OrderState | None:
        """Record what became of a sent order, as ``plan`` says given the row as it is now
        (whether ``owner`` still owns it, and which other order holds the provider order
        id it was given, if one does); the state written, or None when nothing was. An
        alert the plan raises when the answer can no longer be recorded is written all
        the same. The provider's send pause becomes what ``pause`` makes of the state
        written (paused after an unknown outcome, lifted after a clear answer), in the
        same transaction."""

        def work(conn: sa.Connection) -> OrderState | None:
            # Locked: a newer lease holder settling this row (recover_submissions) waits,
            # then sees what is written here.
            row = conn.execute(
                sa.select(*ORDER_COLUMNS).where(_o.id == order_id).with_for_update()
            ).first()
            if row is None:
                return None
            order = read_order(row)
            # Locked before anything is written (the feed turn is taken last).
            paused = pause_of(conn, order.provider, lock=True)
            owned = conn.execute(
                sa.select(_o.id).where(_o.id == order_id, _o.submit_owner == owner)
            ).first()
            holder = _holder_of(conn, order, outcome.provider_order_id)
            step, late = plan(
                order, outcome, owned=owned is not None, holder=holder, alert=alert, now=now
            )
            if step is None:
                if late is not None:
                    self._insert_alerts(conn, [late], now)
                return None
            written = step.update.state
            assert isinstance(written, OrderState)
            error = step.update.error if isinstance(step.update.error, str) else None
            if (paused_now := pause(paused, order.id, written, error, now)) is not None:
                write_pause(conn, order.provider, paused_now)
            write_update(conn, order, step.update, now)
            if step.alert is not None:
                self._insert_alerts(conn, [step.alert], now)
            return written

        # Not fenced: what a provider said about an order it was sent is the truth, and
        # must be kept even by a holder whose lease ran out while it waited for the answer
        # (a pause, a slow provider). The write is guarded by the row itself instead: only
        # the row this process claimed (its owner, still submitting, or declared ambiguous
        # meanwhile) is written, so no newer holder's work is undone.
        return self._write(work, fenced=False)

    def recover_submissions(self, provider: str, now: datetime, plan: RecoveryPlanner) -> list[int]:
        """Hand each ``submitting`` row of the provider, with its sender and deadline, to
        ``plan`` and write what it says (ambiguous when the sender died, rejected when
        syncd never claimed it, nothing while the sender lives). Returns the orders that
        raised an alert (ambiguous now)."""
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
                step = plan(order, owner, deadline, now)
                if step is None:
                    continue
                changes.append(update_row(conn, order, step.update))
                if step.alert is not None:
                    alerts.append(step.alert)
                    recovered.append(order.id)
            log_changes(conn, changes, now)
            self._insert_alerts(conn, alerts, now)
            return recovered

        return self._write(work)

    def apply_stray_orders(self, now: datetime, plan: StrayPlanner) -> list[tuple[int, str]]:
        """Hand ``plan`` the rows no job would take as they are, and write what it
        settles, each with its reason in ``error``: rows not sent yet that name a provider
        nobody configured or already carry a provider order id, active rows of an unknown
        provider, and rows in a state that is no state. Returns (order id, reason).

        Each kind is found through an index, whatever the number of orders: rows not sent
        yet and rows in no state through partial indexes, or, where the database has none
        (MariaDB), through the due index (provider, state) by the pairs it holds; active
        rows of an unknown provider by the providers the due index holds.
        """

        def work(conn: sa.Connection) -> list[tuple[int, str]]:
            known = set(conn.execute(sa.select(t.providers.c.name)).scalars())
            names = sa.select(t.providers.c.name)
            # Separate queries, not one with OR: each is answered by its own index.
            unsent = sa.or_(_o.provider.not_in(names), _o.provider_order_id.is_not(None))
            conditions: list[tuple[sa.ColumnElement[bool] | sa.TextClause, ...]] = []
            if self.backend.partial_indexes:
                present = list(conn.execute(_PROVIDERS_OF_ORDERS).scalars())
                conditions += [(sa.text(t.UNSENT), unsent), (sa.text(t.NOT_A_STATE),)]
            else:
                # MariaDB reads one entry of the due index per (provider, state) pair.
                pairs = [(name, state) for name, state in conn.execute(_PAIRS)]
                present = list(dict.fromkeys(name for name, _ in pairs))
                waiting = (OrderState.QUEUED, OrderState.SUBMITTING)
                conditions.append((_o.provider.in_(present), _o.state.in_(waiting), unsent))
                odd = [pair for pair in pairs if pair[1] not in _STATES]
                if odd:
                    conditions.append((sa.tuple_(_o.provider, _o.state).in_(odd),))
            unknown = [name for name in present if name not in known]
            if unknown:
                conditions.append((_o.state == OrderState.ACTIVE, _o.provider.in_(unknown)))
            # Every provider's orders job looks for these (in every instance): each row is
            # locked as it is read, and a row another job has locked is skipped (it is
            # being settled), so a row is settled, alerted and logged once.
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
                verdict = plan(
                    order, provider_known=order.provider in known, holds_id=holds_id, now=now
                )
                if verdict is None:
                    continue
                changes.append(update_row(conn, order, verdict.update))
                if verdict.alert is not None:
                    alerts.append(verdict.alert)
                settled.append((order.id, verdict.error))
            log_changes(conn, changes, now)
            self._insert_alerts(conn, alerts, now)
            return settled

        return self._write(work)

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


_STATES = frozenset(state.value for state in OrderState)
# The providers named by orders, one index seek each (a skip scan of the due index, whose
# first column is the provider), on SQLite and PostgreSQL: a DISTINCT reads every order.
_PROVIDERS_OF_ORDERS = sa.text(
    "WITH RECURSIVE named (provider) AS ("
    " SELECT MIN(provider) FROM orders"
    " UNION ALL"
    " SELECT (SELECT provider FROM orders WHERE provider > named.provider"
    " ORDER BY provider LIMIT 1)"
    " FROM named WHERE named.provider IS NOT NULL"
    ") SELECT provider FROM named WHERE provider IS NOT NULL"
)
# The (provider, state) pairs orders are in, where the database reads one index entry per
# group (MariaDB's loose index scan of the due index); elsewhere GROUP BY reads every order.
_PAIRS = sa.text("SELECT provider, state FROM orders GROUP BY provider, state")


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


__all__ = ["SubmissionStorage"]
