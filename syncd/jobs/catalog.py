"""The catalog job: keep ``packages`` in step with the provider's service list.

``plan_catalog`` is the decider (pure: stored rows, fetched packages, now → plan);
``sync_catalog`` is the thin pipeline around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, localcontext
from typing import Protocol, runtime_checkable

from syncd.errors import JobError, MalformedReplyError, RefusedError, SuspiciousCatalogError
from syncd.jobs.context import JobContext
from syncd.models import ChangeKind, Event, Package, SkippedEntry, StoredPackage
from syncd.plans import AlertIntent, CatalogPlan, PackageChange
from syncd.units import money_text, value_text

# Fields whose changes are recorded in package_changes; `extra` is kept current silently.
TRACKED_FIELDS = ("name", "type", "category", "rate", "min", "max", "refill", "cancel")


@runtime_checkable
class StoredRows(Protocol):
    """A stored catalog that answers two questions without making a ``StoredPackage`` of
    every row (the storage layer's does, from the rows as the database returned them)."""

    def same(self, package: Package) -> bool:
        """True only if the package's row is active and holds exactly these values;
        False when unsure."""

    def active_ids(self) -> list[int]:
        """The service ids of the active rows."""


def plan_catalog(
    provider: str,
    stored: Mapping[int, StoredPackage],
    fetched: Sequence[Package],
    now: datetime,
    *,
    force: bool = False,
    skipped: Sequence[SkippedEntry] = (),
) -> CatalogPlan:
    """Decide what a fetched catalog changes. Raises ``SuspiciousCatalogError``.

    Safety valve: an empty reply, or one that would deactivate more than half of the
    active catalog, looks like a provider fault rather than a real change and is refused
    unless ``force`` (an operator said it is real).

    Entries of the reply that were ``skipped`` (they could not be read) change nothing:
    a package whose entry was skipped with its id read is left exactly as stored (the
    provider still lists it, so it is not removed, and nothing garbled is written). An
    entry whose id could not be read at all may be any stored package, so while one is in
    the reply no package is removed (they are ``held``); the other entries are applied as
    usual. ``force`` removes them all the same.
    """
    same: Callable[[Package], bool] | None = None
    if isinstance(stored, StoredRows):
        same, active = stored.same, stored.active_ids()
    else:
        active = [sid for sid, row in stored.items() if row.active]
    listed = {p.service_id for p in fetched}
    listed.update(s.service_id for s in skipped if s.service_id is not None)
    gone = [sid for sid in active if sid not in listed]
    held: list[int] = []
    if gone and not force and any(s.service_id is None for s in skipped):
        held, gone = sorted(gone), []
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
        # Nearly every package of a sync is as stored: one comparison of the whole package
        # settles it (``same`` on the stored rows themselves, when the storage offers it,
        # then the stored package, where equal rates compare equal however written), and
        # only the others are compared field by field.
        if same is not None and same(package):
            continue
        row = stored.get(package.service_id)
        if row is None:
            insert.append(package)
            changes.append(PackageChange(package.service_id, ChangeKind.ADDED))
            continue
        if row.active and row.package == package:
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
    # The first sync of a provider fills the catalog: that is no news worth an alert.
    alert = catalog_alert(provider, stored, fetched, changes) if stored else None
    return CatalogPlan(
        provider,
        now,
        insert=insert,
        update=update,
        deactivate=deactivate,
        changes=changes,
        unchanged=len(fetched) - len(insert) - len(update),
        alerts=[alert] if alert else [],
        held=held,
    )


def _text(value: object) -> str | None:
    return None if value is None else value_text(value)


LISTED = 100  # packages listed per kind in an alert's data; the counts are always whole


def catalog_alert(
    provider: str,
    stored: Mapping[int, StoredPackage],
    fetched: Sequence[Package],
    changes: Sequence[PackageChange],
) -> AlertIntent | None:
    """One alert summarising a sync's added, removed and repriced packages (no storms).

    Its ``event`` is the most significant kind present (a price change, then a removal,
    then an addition); ``data.events`` names every kind, so a webhook subscribed to any of
    them receives it.
    """
    by_id = {p.service_id: p for p in fetched}
    added = [
        {"service_id": c.service_id, "name": by_id[c.service_id].name,
         "rate": money_text(by_id[c.service_id].rate), "restored": c.change is ChangeKind.RESTORED}
        for c in changes
        if c.change in (ChangeKind.ADDED, ChangeKind.RESTORED)
    ]  # fmt: skip
    removed = [
        {"service_id": c.service_id, "name": stored[c.service_id].package.name}
        for c in changes
        if c.change is ChangeKind.REMOVED
    ]
    repriced = [
        {"service_id": c.service_id, "name": by_id[c.service_id].name,
         "old_rate": c.old_value, "new_rate": c.new_value, "percent": _percent(c)}
        for c in changes
        if c.change is ChangeKind.UPDATED and c.field == "rate"
    ]  # fmt: skip
    kinds = [
        event
        for event, items in (
            (Event.PACKAGE_RATE_CHANGED, repriced),
            (Event.PACKAGE_REMOVED, removed),
            (Event.PACKAGE_ADDED, added),
        )
        if items
    ]
    if not kinds:
        return None
    counts = f"{len(added)} added, {len(removed)} removed, {len(repriced)} repriced"
    shown = [
        f"#{r['service_id']} {r['name']} {r['old_rate']} -> {r['new_rate']}"
        + (f" ({r['percent']:+}%)" if r["percent"] is not None else "")
        for r in repriced[:5]
    ]
    more = f"; and {len(repriced) - 5} more" if len(repriced) > 5 else ""
    return AlertIntent(
        kinds[0],
        provider,
        f"{provider} catalog: {counts}" + (f": {'; '.join(shown)}{more}" if shown else ""),
        {
            "events": [k.value for k in kinds],
            "counts": {"added": len(added), "removed": len(removed), "repriced": len(repriced)},
            "added": added[:LISTED],
            "removed": removed[:LISTED],
            "repriced": repriced[:LISTED],
        },
    )


def _percent(change: PackageChange) -> float | None:
    old, new = Decimal(change.old_value or "0"), Decimal(change.new_value or "0")
    if old == 0:
        return None
    # Rates are bounded (below 10^12, 12 places), so the ratio fits a wide context.
    with localcontext(prec=60):
        return float(((new - old) / old * 100).quantize(Decimal("0.1")))


async def sync_catalog(ctx: JobContext) -> str:
    """Fetch, plan, write. Returns a one-line summary for people."""
    name = ctx.provider.name
    try:
        # A reply that is no JSON at all (a maintenance page, a proxy's error page, broken
        # JSON) is the provider failing, not a suspicious catalog: the call counts against
        # the provider's health like any failed call, and the job fails without an alert.
        # An error object is JSON the provider meant: it is refused as a catalog below.
        reply = await ctx.client.catalog_reply()
    except RefusedError as exc:
        await _refuse(ctx, exc)
        raise
    try:
        if not ctx.force:
            # The same bytes as the reply last applied: the same plan, which changes nothing.
            active = await ctx.db(
                ctx.storage.record_catalog_unchanged, name, reply.digest, ctx.now()
            )
            if active is not None:
                ctx.log.info("catalog.synced", packages=active, unchanged=True)
                return f"unchanged, the same reply as the last one applied ({active} active)"
        catalog = ctx.client.read_catalog(reply)
        fetched, skipped = catalog.packages, catalog.skipped
        now = ctx.now()
        plan = await ctx.db(
            ctx.storage.apply_catalog_reply,
            name,
            lambda stored: plan_catalog(
                name, stored, fetched, now, force=ctx.force, skipped=skipped
            ),
            # A reply with entries that cannot be read is not remembered: it is read (and
            # its skipped entries reported) every time.
            None if catalog.skipped else reply.digest,
        )
    except (SuspiciousCatalogError, MalformedReplyError) as exc:
        # The safety valve refused a readable reply: JSON that is not a list of packages,
        # an empty list, or most of the catalog gone.
        await _refuse(ctx, exc)
        raise
    added, removed = plan.count(ChangeKind.ADDED), plan.count(ChangeKind.REMOVED)
    updated, restored = plan.count(ChangeKind.UPDATED), plan.count(ChangeKind.RESTORED)
    ctx.log.info(
        "catalog.synced",
        packages=len(fetched),
        added=added,
        removed=removed,
        updated=updated,
        restored=restored,
        skipped=len(catalog.skipped),
    )
    if catalog.skipped:
        ctx.log.warning("catalog.entries_skipped", entries=[str(s) for s in catalog.skipped[:20]])
    if plan.held:
        ctx.log.warning(
            "catalog.removals_held",
            packages=len(plan.held),
            service_ids=plan.held[:20],
            reason="an entry without a readable id may be any of them",
        )
    return (
        f"{len(fetched)} packages ({added} added, {updated} updated, "
        f"{removed} removed, {restored} restored)"
        + _skipped_text(catalog.skipped)
        + _held_text(plan.held)
    )


async def _refuse(ctx: JobContext, exc: JobError) -> None:
    """Raise ``catalog.suspicious`` for a refused reply (once per streak of them)."""
    alert = AlertIntent(
        Event.CATALOG_SUSPICIOUS,
        ctx.provider.name,
        f"{ctx.provider.name} catalog refused: {exc.detail}",
        {"reason": exc.detail},
    )
    await ctx.db(ctx.storage.record_suspicious_catalog, ctx.provider.name, alert, ctx.now())


def _held_text(held: Sequence[int]) -> str:
    """Why packages the reply left out are still active, for the job's one-line result."""
    if not held:
        return ""
    shown = ", ".join(f"#{sid}" for sid in held[:5]) + (" ..." if len(held) > 5 else "")
    noun = "package" if len(held) == 1 else "packages"
    return (
        f"; {len(held)} {noun} not listed kept active ({shown}): an entry without a "
        "readable id may be any of them, so nothing was removed (--force removes them)"
    )


def _skipped_text(skipped: Sequence[SkippedEntry]) -> str:
    """The entries left as they were, for the job's one-line result."""
    if not skipped:
        return ""
    shown = "; ".join(str(s) for s in skipped[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    noun = "entry" if len(skipped) == 1 else "entries"
    return f"; {len(skipped)} unreadable {noun} left as they were ({shown}{more})"
