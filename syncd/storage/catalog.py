"""Catalog storage: the ``packages`` and ``package_changes`` tables."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from syncd.models import ChangeKind, Package, PackageChangeRecord, StoredPackage
from syncd.plans import AlertIntent, CatalogPlan
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import append_feed, chunks, lock_provider

_p = t.packages.c


class CatalogStorage(AlertStorage):
    def load_catalog(self, provider: str) -> dict[int, StoredPackage]:
        """Every package ever seen for ``provider``, active or not, by service id."""

        def work(conn: sa.Connection) -> dict[int, StoredPackage]:
            rows = conn.execute(sa.select(t.packages).where(_p.provider == provider))
            return {row.service_id: stored_package(row) for row in rows}

        return self._read(work)

    def package_changes(
        self, provider: str, *, after: int = 0, limit: int = 1000
    ) -> list[PackageChangeRecord]:
        """Recorded changes with ``id > after``, oldest first: how a consumer follows them."""
        c = t.package_changes.c

        def work(conn: sa.Connection) -> list[PackageChangeRecord]:
            rows = conn.execute(
                sa.select(t.package_changes)
                .where(c.provider == provider, c.id > after)
                .order_by(c.id)
                .limit(limit)
            )
            return [
                PackageChangeRecord(
                    r.id,
                    r.provider,
                    r.service_id,
                    ChangeKind(r.change),
                    r.field,
                    r.old_value,
                    r.new_value,
                    r.changed_at,
                )
                for r in rows
            ]

        return self._read(work)

    def flag_suspicious_catalog(self, provider: str, alert: AlertIntent, now: datetime) -> bool:
        """Raise ``catalog.suspicious`` unless it is already raised for this provider (it
        stays raised until a catalog is applied). Returns whether it was raised now."""

        def work(conn: sa.Connection) -> bool:
            flagged = conn.execute(
                sa.update(t.providers)
                .where(t.providers.c.name == provider, t.providers.c.catalog_suspicious.is_(False))
                .values(catalog_suspicious=True)
            )
            if flagged.rowcount:
                self._insert_alerts(conn, [alert], now)
            return bool(flagged.rowcount)

        return self._write(work)

    def apply_catalog_reply(
        self, provider: str, decide: Callable[[dict[int, StoredPackage]], CatalogPlan]
    ) -> CatalogPlan:
        """Read the stored catalog, let ``decide`` plan against it, write the plan: one
        transaction, so that two processes syncing at once never record a change twice."""

        def work(conn: sa.Connection) -> CatalogPlan:
            lock_provider(conn, provider)
            rows = conn.execute(sa.select(t.packages).where(_p.provider == provider))
            plan = decide({row.service_id: stored_package(row) for row in rows})
            self._write_catalog(conn, plan)
            return plan

        return self._write(work)

    def apply_catalog(self, plan: CatalogPlan) -> None:
        """Write a catalog plan and stamp ``providers.catalog_synced_at``, in one transaction."""
        self._write(lambda conn: self._write_catalog(conn, plan))

    def _write_catalog(self, conn: sa.Connection, plan: CatalogPlan) -> None:
        now = plan.now
        if plan.insert:
            conn.execute(
                sa.insert(t.packages),
                [
                    _row(plan.provider, p) | {"first_seen_at": now, "updated_at": now}
                    for p in plan.insert
                ],
            )
        if plan.update:
            statement = (
                sa.update(t.packages)
                .where(_p.provider == sa.bindparam("b_provider"))
                .where(_p.service_id == sa.bindparam("b_service_id"))
                .values(
                    {name: sa.bindparam(name) for name in PACKAGE_COLUMNS}
                    | {"active": True, "removed_at": None, "updated_at": now}
                )
            )
            conn.execute(
                statement,
                [
                    {"b_provider": plan.provider, "b_service_id": p.service_id} | _fields(p)
                    for p in plan.update
                ],
            )
        for ids in chunks(plan.deactivate):
            conn.execute(
                sa.update(t.packages)
                .where(_p.provider == plan.provider, _p.service_id.in_(ids))
                .values(active=False, removed_at=now, updated_at=now)
            )
        conn.execute(
            sa.update(t.providers)
            .where(t.providers.c.name == plan.provider)
            .values(catalog_synced_at=now, catalog_suspicious=False)
        )
        # The feed rows come last (see ``take_feed_turn``).
        append_feed(
            conn,
            t.package_changes,
            [
                {
                    "provider": plan.provider,
                    "service_id": c.service_id,
                    "change": c.change.value,
                    "field": c.field,
                    "old_value": c.old_value,
                    "new_value": c.new_value,
                    "changed_at": now,
                }
                for c in plan.changes
            ],
        )
        self._insert_alerts(conn, plan.alerts, now)


PACKAGE_COLUMNS = ("name", "type", "category", "rate", "min", "max", "extra", "refill", "cancel")


def _fields(p: Package) -> dict[str, Any]:
    return {
        "name": p.name,
        "type": p.type,
        "category": p.category,
        "rate": p.rate,
        "min": p.min,
        "max": p.max,
        "extra": p.extra,
        "refill": p.refill,
        "cancel": p.cancel,
    }


def _row(provider: str, p: Package) -> dict[str, Any]:
    return {"provider": provider, "service_id": p.service_id, "active": True} | _fields(p)


def stored_package(row: Any) -> StoredPackage:
    package = Package(
        service_id=row.service_id,
        name=row.name,
        type=row.type,
        category=row.category,
        rate=row.rate,
        min=row.min,
        max=row.max,
        extra=row.extra or {},
        refill=row.refill,
        cancel=row.cancel,
    )
    return StoredPackage(package, bool(row.active), row.removed_at)
