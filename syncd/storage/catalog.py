"""Catalog storage: the ``packages`` and ``package_changes`` tables.

A provider's catalog holds thousands of packages, read whole and compared on every sync.
SQLAlchemy Core would compile parameters and run a type processor for every value of
every row (``Money``, ``UTCDateTime``, ``JSON``), which at 10,000 packages cost more than
the database itself; so catalog rows are read and written through ``Driver``, as plain SQL
over plain tuples, with each value converted once to the form its column's type gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from syncd.models import ChangeKind, Package, PackageChangeRecord, StoredPackage
from syncd.plans import AlertIntent, CatalogPlan
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import lock_provider, take_feed_turn
from syncd.storage.driver import Driver

_p = t.packages.c


class CatalogStorage(AlertStorage):
    def catalog(self, provider: str) -> dict[int, StoredPackage]:
        """Every package ever seen for ``provider``, active or not, by service id."""
        return self._read(lambda conn: dict(_stored_catalog(Driver(conn), provider)))

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

    def record_suspicious_catalog(self, provider: str, alert: AlertIntent, now: datetime) -> bool:
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
        self,
        provider: str,
        decide: Callable[[Mapping[int, StoredPackage]], CatalogPlan],
        digest: str | None = None,
    ) -> CatalogPlan:
        """Read the stored catalog, let ``decide`` plan against it, write the plan: one
        transaction, so that two processes syncing at once never record a change twice.
        ``digest`` (of the reply planned) is kept, to know the same reply next time."""

        def work(conn: sa.Connection) -> CatalogPlan:
            lock_provider(conn, provider)
            plan = decide(_stored_catalog(Driver(conn), provider))
            self._write_catalog(conn, plan, digest)
            return plan

        return self._write(work)

    def record_catalog_unchanged(self, provider: str, digest: str, now: datetime) -> int | None:
        """When ``digest`` is that of the last catalog reply applied: stamp
        ``catalog_synced_at`` and return how many packages are active (nothing else has
        to be read or written). None when the reply differs, or none was applied yet."""

        def work(conn: sa.Connection) -> int | None:
            d = Driver(conn)
            stamped = conn.execute(
                sa.update(t.providers)
                .where(t.providers.c.name == provider, t.providers.c.catalog_digest == digest)
                .values(catalog_synced_at=now, catalog_suspicious=False)
            )
            if not stamped.rowcount:
                return None
            ((active,),) = d.run(
                "SELECT count(*) FROM packages WHERE provider = ?"  # noqa: S608
                f" AND active = {d.backend.true_sql}",
                (provider,),
            )
            return int(active)

        return self._write(work)

    def _write_catalog(
        self, conn: sa.Connection, plan: CatalogPlan, digest: str | None = None
    ) -> None:
        driver = Driver(conn)
        now = driver.time(plan.now)
        if plan.insert:
            driver.run_many(
                "INSERT INTO packages (provider, service_id, name, type, category, rate, min,"
                " max, extra, refill, cancel, active, first_seen_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (plan.provider, p.service_id, *_fields(driver, p), True, now, now)
                    for p in plan.insert
                ],
            )
        if plan.update:
            driver.run_many(
                "UPDATE packages SET name = ?, type = ?, category = ?, rate = ?, min = ?,"
                " max = ?, extra = ?, refill = ?, cancel = ?, active = ?, removed_at = NULL,"
                " updated_at = ? WHERE provider = ? AND service_id = ?",
                [
                    (*_fields(driver, p), True, now, plan.provider, p.service_id)
                    for p in plan.update
                ],
            )
        if plan.deactivate:
            driver.run_many(
                "UPDATE packages SET active = ?, removed_at = ?, updated_at = ?"
                " WHERE provider = ? AND service_id = ?",
                [(False, now, now, plan.provider, sid) for sid in plan.deactivate],
            )
        conn.execute(
            sa.update(t.providers)
            .where(t.providers.c.name == plan.provider)
            .values(catalog_synced_at=plan.now, catalog_suspicious=False, catalog_digest=digest)
        )
        # The feed rows come last (see ``take_feed_turn``).
        if plan.changes:
            take_feed_turn(conn)
            driver.run_many(
                "INSERT INTO package_changes (provider, service_id, \"change\", field, old_value,"
                " new_value, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    # The kind's text: psycopg would write an enumeration's name.
                    (plan.provider, c.service_id, c.change.value, c.field, c.old_value,
                     c.new_value, now)
                    for c in plan.changes
                ],
            )  # fmt: skip
        self._insert_alerts(conn, plan.alerts, plan.now)


def _fields(driver: Driver, p: Package, *, as_read: bool = False) -> tuple[Any, ...]:
    """The columns ``name`` to ``cancel`` of one package as the database stores them;
    ``extra`` as the JSON text the ``JSON`` column type writes (``json.dumps``). With
    ``as_read``, as the driver reads them back (parsed, where the driver parses JSON)."""
    extra: Any = p.extra
    if not (as_read and driver.backend.parses_json):
        extra = "{}" if p.extra == {} else json.dumps(p.extra)
    return (p.name, p.type, p.category, driver.money(p.rate), p.min, p.max, extra,
            p.refill, p.cancel)  # fmt: skip


_ACTIVE = 10  # where ``active`` is in a row of ``_SELECT``
_SELECT = (
    "SELECT service_id, name, type, category, rate, min, max, extra, refill, cancel,"
    " active, removed_at FROM packages WHERE provider = ?"
)


def _stored_catalog(driver: Driver, provider: str) -> StoredCatalog:
    return StoredCatalog(driver, driver.run(_SELECT, (provider,)))


class StoredCatalog(Mapping[int, StoredPackage]):
    """Every package of a provider, active or not, by service id: the rows as the driver
    returned them, each made a ``StoredPackage`` only when asked for.

    A sync compares every fetched package with its row, and nearly all are unchanged:
    ``same`` tells that from the row's own values, so that a sync where little changed
    builds no object per stored package (at 10,000 packages, building them cost more than
    reading them).
    """

    def __init__(self, driver: Driver, rows: Sequence[Any]) -> None:
        self._rows: dict[int, tuple[Any, ...]] = {row[0]: tuple(row) for row in rows}
        self._driver = driver
        self._json_text = not driver.backend.parses_json
        dialect = driver.conn.dialect
        # A removal time is rare, and may be one a consumer wrote by hand in any form the
        # column's own type reads: it is read by that type.
        self._read_time = _p.removed_at.type.dialect_impl(dialect).result_processor(dialect, None)

    def __getitem__(self, service_id: int) -> StoredPackage:
        sid, name, kind, category, rate, low, high, extra, refill, cancel, active, removed = (
            self._rows[service_id]
        )
        if self._json_text and extra is not None:  # else the driver parsed it already
            extra = {} if extra == "{}" else json.loads(extra)
        package = Package(
            sid, name, kind, category, Decimal(rate), low, high, extra or {},
            None if refill is None else bool(refill),
            None if cancel is None else bool(cancel),
        )  # fmt: skip
        if removed is not None and self._read_time is not None:
            removed = self._read_time(removed)
        return StoredPackage(package, bool(active), removed)

    # Without these, Mapping's own would raise and catch a KeyError for every package a
    # first sync adds.
    def get(self, service_id: int, default: Any = None) -> Any:
        return self[service_id] if service_id in self._rows else default

    def __contains__(self, service_id: object) -> bool:
        return service_id in self._rows

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def active_ids(self) -> list[int]:
        return [sid for sid, row in self._rows.items() if row[_ACTIVE]]

    def same(self, package: Package) -> bool:
        """Whether the row of ``package`` is active and holds exactly its values, in the
        form this database stores them. False also when only the forms differ (a rate
        stored as "0.90" and sent as "0.9"): the caller then compares the package with
        ``self[service_id]``, value by value."""
        row = self._rows.get(package.service_id)
        if row is None or not row[_ACTIVE]:
            return False
        # A flag stored as 1 or 0 equals True or False.
        return row[1:_ACTIVE] == _fields(self._driver, package, as_read=True)


def stored_package(row: Any) -> StoredPackage:
    """A ``packages`` row read through SQLAlchemy's typed columns (one at a time)."""
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
