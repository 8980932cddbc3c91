"""The catalog decider: plain function calls, no network, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from syncd.errors import SuspiciousCatalogError
from syncd.jobs.catalog import plan_catalog
from syncd.models import ChangeKind, Package, StoredPackage
from syncd.plans import PackageChange

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def package(service_id: int, **fields: object) -> Package:
    base = Package(
        service_id, f"Service {service_id}", "Default", "Followers", Decimal("0.30"), 50, 10000
    )
    return replace(base, **fields)  # type: ignore[arg-type]


def stored(*packages: Package, inactive: tuple[int, ...] = ()) -> dict[int, StoredPackage]:
    return {
        p.service_id: StoredPackage(
            p, p.service_id not in inactive, NOW if p.service_id in inactive else None
        )
        for p in packages
    }


def test_first_sync_adds_everything() -> None:
    fetched = [package(1), package(2)]
    plan = plan_catalog("p", {}, fetched, NOW)
    assert plan.insert == fetched
    assert plan.update == [] and plan.deactivate == []
    assert plan.changes == [PackageChange(1, ChangeKind.ADDED), PackageChange(2, ChangeKind.ADDED)]


def test_unchanged_catalog_plans_nothing() -> None:
    catalog = [package(i) for i in range(1, 5)]
    plan = plan_catalog("p", stored(*catalog), catalog, NOW)
    assert (plan.insert, plan.update, plan.deactivate, plan.changes) == ([], [], [], [])
    assert plan.unchanged == 4


def test_each_changed_field_is_one_updated_row_with_old_and_new_text() -> None:
    old = package(7)
    new = package(7, rate=Decimal("0.3150"), max=20000, name="Renamed")
    plan = plan_catalog("p", stored(old, package(8)), [new, package(8)], NOW)
    assert plan.update == [new]
    assert sorted((c.field, c.old_value, c.new_value) for c in plan.changes) == [
        ("max", "10000", "20000"),
        ("name", "Service 7", "Renamed"),
        ("rate", "0.30", "0.3150"),
    ]
    assert all(c.change is ChangeKind.UPDATED and c.service_id == 7 for c in plan.changes)


def test_same_rate_written_differently_is_not_a_change() -> None:
    plan = plan_catalog("p", stored(package(1)), [package(1, rate=Decimal("0.3000"))], NOW)
    assert plan.changes == [] and plan.update == []


def test_vanished_package_is_deactivated_not_deleted() -> None:
    catalog = [package(i) for i in range(1, 5)]
    plan = plan_catalog("p", stored(*catalog), catalog[:3], NOW)
    assert plan.deactivate == [4]
    assert plan.changes == [PackageChange(4, ChangeKind.REMOVED)]


def test_returning_package_is_restored_with_its_field_changes() -> None:
    catalog = [package(i) for i in range(1, 5)]
    back = package(4, rate=Decimal("0.50"))
    plan = plan_catalog("p", stored(*catalog, inactive=(4,)), [*catalog[:3], back], NOW)
    assert plan.update == [back]
    assert [c.change for c in plan.changes] == [ChangeKind.RESTORED, ChangeKind.UPDATED]
    assert plan.changes[1].field == "rate"


def test_already_removed_package_is_not_removed_again() -> None:
    catalog = [package(i) for i in range(1, 5)]
    plan = plan_catalog("p", stored(*catalog, inactive=(4,)), catalog[:3], NOW)
    assert plan.deactivate == [] and plan.changes == []


def test_extra_fields_are_kept_current_without_change_rows() -> None:
    old = package(1, extra={"refill": False})
    new = package(1, extra={"refill": True, "dripfeed": True})
    plan = plan_catalog("p", stored(old), [new], NOW)
    assert plan.update == [new]
    assert plan.changes == []


# -- the safety valve ------------------------------------------------------------------


def test_empty_reply_is_refused_even_on_first_sync() -> None:
    with pytest.raises(SuspiciousCatalogError, match="empty catalog"):
        plan_catalog("p", {}, [], NOW)


def test_empty_reply_is_refused_for_a_known_catalog() -> None:
    with pytest.raises(SuspiciousCatalogError, match="empty catalog"):
        plan_catalog("p", stored(package(1), package(2)), [], NOW)


def test_losing_more_than_half_the_active_catalog_is_refused() -> None:
    catalog = [package(i) for i in range(1, 11)]
    with pytest.raises(SuspiciousCatalogError, match="6 of 10 active packages"):
        plan_catalog("p", stored(*catalog), catalog[:4], NOW)


def test_losing_exactly_half_is_accepted() -> None:
    catalog = [package(i) for i in range(1, 11)]
    plan = plan_catalog("p", stored(*catalog), catalog[:5], NOW)
    assert plan.deactivate == [6, 7, 8, 9, 10]


def test_inactive_rows_do_not_count_towards_the_valve() -> None:
    # 10 known, 6 already inactive: losing 2 of the 4 active ones is exactly half.
    catalog = [package(i) for i in range(1, 11)]
    plan = plan_catalog("p", stored(*catalog, inactive=(5, 6, 7, 8, 9, 10)), catalog[:2], NOW)
    assert plan.deactivate == [3, 4]


def test_force_applies_what_the_valve_refused() -> None:
    catalog = [package(i) for i in range(1, 11)]
    plan = plan_catalog("p", stored(*catalog), catalog[:1], NOW, force=True)
    assert plan.deactivate == list(range(2, 11))
    forced_empty = plan_catalog("p", stored(*catalog), [], NOW, force=True)
    assert forced_empty.deactivate == list(range(1, 11))
