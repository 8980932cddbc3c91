"""Order reads for the commands (``syncd order list|show|resolve``, ``syncd report``),
and the one write a person makes: settling an ambiguous order."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from syncd.models import Order, OrderState
from syncd.plans import OrderUpdate
from syncd.storage import tables as t
from syncd.storage.base import StorageBase
from syncd.storage.driver import Driver
from syncd.storage.order_writes import write_update
from syncd.storage.report_reads import OrderTally, order_tally
from syncd.storage.rows import ORDER_COLUMNS, PARAMS, read_order, with_params

_o = t.orders.c


class OrderReads(StorageBase):
    def order_change_count(self) -> int:
        return int(
            self._read(
                lambda conn: conn.execute(
                    sa.select(sa.func.count()).select_from(t.order_changes)
                ).scalar_one()
            )
        )

    def order_at_provider(self, provider: str, provider_order_id: int) -> Order | None:
        def work(conn: sa.Connection) -> Order | None:
            row = conn.execute(
                sa.select(*ORDER_COLUMNS).where(
                    _o.provider == provider, _o.provider_order_id == provider_order_id
                )
            ).first()
            return None if row is None else read_order(row)

        return self._read(work)

    def orders_since(self, provider: str, since: datetime) -> list[Order]:
        """The provider's orders sent or finished since ``since``, read whole (``syncd
        report``, when a sum of its counted orders would be rounded)."""

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

    def order_tally(self, provider: str, since: datetime, now: datetime) -> OrderTally:
        """The provider's orders sent or finished in ``since``..``now``, grouped as
        ``syncd report`` counts them (``syncd.storage.report_reads``)."""
        return self._read(lambda conn: order_tally(Driver(conn), provider, since, now))

    def order(self, order_id: int) -> Order | None:
        """One order, its ``params`` as the database holds them."""

        def work(conn: sa.Connection) -> Order | None:
            row = conn.execute(sa.select(*ORDER_COLUMNS, PARAMS).where(_o.id == order_id)).first()
            return None if row is None else with_params(row)

        return self._read(work)

    def orders(
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
            write_update(conn, read_order(row), update, now)
            return True

        return self._write(work)


__all__ = ["OrderReads"]
