"""The catalog decider: plain function calls, no network, no database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import SuspiciousCatalogError
from syncd.jobs.catalog import plan_catalog
from syncd.models import ChangeKind, Package, SkippedEntry, StoredPackage
from syncd.plans import PackageChange
from syncd.provider.replies import ReplyShapeError, parse_packages

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


# -- entries that cannot be read ---------------------------------------------------------


def test_an_entry_read_but_for_its_id_keeps_its_package_active() -> None:
    catalog = [package(i) for i in range(1, 5)]
    skipped = [SkippedEntry(3, 4, "rate: not a number")]
    plan = plan_catalog("p", stored(*catalog), catalog[:3], NOW, skipped=skipped)
    assert plan.deactivate == [] and plan.changes == [] and plan.held == []


def test_an_entry_without_a_readable_id_holds_every_removal() -> None:
    # The reply lists 2 and 3 (3 repriced) and one entry with no `service`: it may be 1
    # or 4, so neither is removed; the rest of the reply is applied.
    catalog = [package(i) for i in range(1, 5)]
    fetched = [package(2), package(3, rate=Decimal("0.40")), package(5)]
    skipped = [SkippedEntry(0, None, "missing service")]
    plan = plan_catalog("p", stored(*catalog), fetched, NOW, skipped=skipped)
    assert plan.deactivate == [] and plan.held == [1, 4]
    assert [c.change for c in plan.changes] == [ChangeKind.UPDATED, ChangeKind.ADDED]
    assert plan.insert == [package(5)] and plan.update == [fetched[1]]


def test_held_removals_do_not_trip_the_valve() -> None:
    catalog = [package(i) for i in range(1, 11)]
    skipped = [SkippedEntry(1, None, "is a string, not an object")]
    plan = plan_catalog("p", stored(*catalog), catalog[:2], NOW, skipped=skipped)
    assert plan.deactivate == [] and plan.held == list(range(3, 11))


def test_force_removes_what_an_unreadable_id_held() -> None:
    catalog = [package(i) for i in range(1, 5)]
    skipped = [SkippedEntry(0, None, "missing service")]
    plan = plan_catalog("p", stored(*catalog), catalog[:3], NOW, skipped=skipped, force=True)
    assert plan.deactivate == [4] and plan.held == []


_ENTRY = st.fixed_dictionaries(
    {"name": st.text(max_size=5), "rate": st.sampled_from(["0.5", "1", "12.25"]),
     "min": st.integers(0, 10), "max": st.integers(10, 1000)}
)  # fmt: skip
_NO_ID = st.one_of(
    st.none(), st.booleans(), st.text(max_size=25).filter(lambda t: not t.strip().isdigit()),
    st.integers(max_value=-1), st.integers(min_value=2**63),
    st.decimals(places=2, allow_nan=False, allow_infinity=False).filter(
        lambda d: d != d.to_integral_value()
    ),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.none()),
)  # fmt: skip


def _unreadable_id_entry() -> st.SearchStrategy[object]:
    missing = _ENTRY.map(dict)  # no `service` at all
    bad = st.builds(lambda entry, sid: {**entry, "service": sid}, _ENTRY, _NO_ID)
    return st.one_of(missing, bad, st.text(max_size=5), st.integers(), st.none())


@given(
    stored_ids=st.sets(st.integers(1, 30), max_size=15),
    listed_ids=st.lists(st.integers(1, 40), max_size=15),
    unreadable=st.lists(_unreadable_id_entry(), min_size=1, max_size=3),
    data=st.data(),
)
def test_no_package_is_removed_while_an_entry_has_no_readable_id(
    stored_ids: set[int], listed_ids: list[int], unreadable: list[object], data: st.DataObject
) -> None:
    """Whatever else the reply holds, one entry whose id cannot be read removes nothing."""
    entries: list[object] = [{**data.draw(_ENTRY), "service": str(sid)} for sid in listed_ids]
    for entry in unreadable:
        entries.insert(data.draw(st.integers(0, len(entries))), entry)
    rows = stored(*(package(sid) for sid in stored_ids))
    try:
        catalog = parse_packages(entries)
    except ReplyShapeError:
        return  # no entry readable: the reply is malformed, nothing is applied
    plan = plan_catalog("p", rows, catalog.packages, NOW, skipped=catalog.skipped)
    assert plan.deactivate == []
    assert not any(c.change is ChangeKind.REMOVED for c in plan.changes)
    assert set(plan.held) == stored_ids - {p.service_id for p in catalog.packages} - {
        s.service_id for s in catalog.skipped
    }
