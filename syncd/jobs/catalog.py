"""The catalog job: keep ``packages`` in step with the provider's service list.

``plan_catalog`` is the decider (pure: stored rows, fetched packages, now → plan);
``sync_catalog`` is the thin pipeline around it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from syncd.errors import SuspiciousCatalogError
from syncd.jobs.context import JobContext
from syncd.models import ChangeKind, Package, StoredPackage
from syncd.plans import CatalogPlan, PackageChange
from syncd.units import money_text

# Fields whose changes are recorded in package_changes; `extra` is kept current silently.
TRACKED_FIELDS = ("name", "type", "category", "rate", "min", "max")


def plan_catalog(
    provider: str,
    stored: Mapping[int, StoredPackage],
    fetched: Sequence[Package],
    now: datetime,
    *,
    force: bool = False,
) -> CatalogPlan:
    """Decide what a fetched catalog changes. Raises ``SuspiciousCatalogError``.

    Safety valve: an empty reply, or one that would deactivate more than half of the
    active catalog, looks like a provider fault rather than a real change and is refused
    unless ``force`` (an operator said it is real).
    """
    active = [sid for sid, row in stored.items() if row.active]
    fetched_ids = {p.service_id for p in fetched}
    gone = [sid for sid in active if sid not in fetched_ids]
    if not force:
        if not fetched:
            raise SuspiciousCatalogError(
                "returned an empty catalog; refused "
                "(use --force if the provider really has no services)",
                provider=provider,
            )
        if len(gone) * 2 > len(active):
            raise SuspiciousCatalogError(
                f"{len(gone)} of {len(active)} active packages would be removed; "
                "refused as suspicious (use --force if this is real)",
                provider=provider,
            )

    insert: list[Package] = []
    update: list[Package] = []
    changes: list[PackageChange] = []
    for package in fetched:
        row = stored.get(package.service_id)
        if row is None:
            insert.append(package)
            changes.append(PackageChange(package.service_id, ChangeKind.ADDED))
            continue
        diffs = [
            PackageChange(package.service_id, ChangeKind.UPDATED, name, _text(old), _text(new))
            for name in TRACKED_FIELDS
            if (old := getattr(row.package, name)) != (new := getattr(package, name))
        ]
        if not row.active:
            changes.append(PackageChange(package.service_id, ChangeKind.RESTORED))
        changes.extend(diffs)
        if diffs or not row.active or row.package.extra != package.extra:
            update.append(package)
    deactivate = sorted(gone)
    changes.extend(PackageChange(sid, ChangeKind.REMOVED) for sid in deactivate)
    return CatalogPlan(
        provider,
        now,
        insert=insert,
        update=update,
        deactivate=deactivate,
        changes=changes,
        unchanged=len(fetched) - len(insert) - len(update),
    )


def _text(value: object) -> str:
    return money_text(value) if isinstance(value, Decimal) else str(value)


async def sync_catalog(ctx: JobContext) -> str:
    """Fetch, plan, write. Returns a one-line summary for people."""
    stored = await ctx.db(ctx.storage.load_catalog, ctx.provider.name)
    fetched = await ctx.client.packages()
    plan = plan_catalog(ctx.provider.name, stored, fetched, ctx.now(), force=ctx.force)
    await ctx.db(ctx.storage.apply_catalog, plan)
    added, removed = plan.count(ChangeKind.ADDED), plan.count(ChangeKind.REMOVED)
    updated, restored = plan.count(ChangeKind.UPDATED), plan.count(ChangeKind.RESTORED)
    ctx.log.info(
        "catalog.synced",
        packages=len(fetched),
        added=added,
        removed=removed,
        updated=updated,
        restored=restored,
    )
    return (
        f"{len(fetched)} packages ({added} added, {updated} updated, "
        f"{removed} removed, {restored} restored)"
    )
