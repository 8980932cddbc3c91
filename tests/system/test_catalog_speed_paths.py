"""The catalog read and written as plain SQL over plain tuples: exactly the rows SQLAlchemy's
typed statements wrote, exactly the packages they read, and exactly the plans a plain
dictionary of stored packages gives, for odd values too."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from syncd.jobs.catalog import StoredRows, plan_catalog
from syncd.models import Package, StoredPackage
from syncd.plans import CatalogPlan
from syncd.provider import replies
from syncd.storage import Storage, open_storage
from syncd.storage import tables as t
from syncd.storage.catalog import stored_package
from syncd.units import parse_count, parse_money
from tests.unit.test_replies import JSON, PACKAGE

NOW = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=UTC)
LATER = NOW + timedelta(hours=1, microseconds=1)

ODD = [
    Package(1, "Plain", "Default", "Followers", Decimal("0.90"), 50, 10000),
    Package(2, "Many places", "Default", "c", Decimal("0.123456789012"), 1, 2, {}, True, False),
    Package(3, "Exponent", "Custom Comments", "", Decimal("1E+2"), 0, 2**63 - 1),
    Package(4, "Tiny", "Default", "c", Decimal("1E-12"), 1, 2, {}, False, True),
    Package(5, "Largest", "Default", "c", Decimal("999999999999.999999999999"), 1, 2),
    Package(6, "Zero", "Default", "c", Decimal("0E-8"), 1, 2),
    Package(
        7,
        "Quotes ' \" ? %s %% and \u00fcn\u00efcode \u2713",
        "Default",
        "c",
        Decimal("1"),
        1,
        2,
        {"nested": {"list": [1, "two", None, True, {"deep": []}]}, "text": "\u00fc ? %s", "e": {}},
    ),
    Package(8, "Extra", "Default", "c", Decimal("2.50"), 1, 2, {"dripfeed": True, "avg": "3h"}),
]


# -- the typed statements the catalog was written with, as the reference ------------------


def _values(p: Package) -> dict[str, Any]:
    return {
        "name": p.name, "type": p.type, "category": p.category, "rate": p.rate, "min": p.min,
        "max": p.max, "extra": p.extra, "refill": p.refill, "cancel": p.cancel,
    }  # fmt: skip


def typed_write(storage: Storage, plan: CatalogPlan) -> None:
    """``plan`` written by SQLAlchemy Core statements with typed columns."""
    c = t.packages.c
    with storage.engine.begin() as conn:
        if plan.insert:
            conn.execute(
                sa.insert(t.packages),
                [
                    {"provider": plan.provider, "service_id": p.service_id, "active": True}
                    | _values(p)
                    | {"first_seen_at": plan.now, "updated_at": plan.now}
                    for p in plan.insert
                ],
            )
        for p in plan.update:
            conn.execute(
                sa.update(t.packages)
                .where(c.provider == plan.provider, c.service_id == p.service_id)
                .values(_values(p) | {"active": True, "removed_at": None, "updated_at": plan.now})
            )
        if plan.deactivate:
            conn.execute(
                sa.update(t.packages)
                .where(c.provider == plan.provider, c.service_id.in_(plan.deactivate))
                .values(active=False, removed_at=plan.now, updated_at=plan.now)
            )
        if plan.changes:
            conn.execute(
                sa.insert(t.package_changes),
                [
                    {"provider": plan.provider, "service_id": ch.service_id,
                     "change": ch.change.value, "field": ch.field, "old_value": ch.old_value,
                     "new_value": ch.new_value, "changed_at": plan.now}
                    for ch in plan.changes
                ],
            )  # fmt: skip


def typed_read(storage: Storage, provider: str) -> dict[int, StoredPackage]:
    """The stored catalog read through the typed columns."""
    with storage.engine.connect() as conn:
        rows = conn.execute(sa.select(t.packages).where(t.packages.c.provider == provider))
        return {row.service_id: stored_package(row) for row in rows}


def _as_stored(storage: Storage, table: str, columns: Sequence[str], provider: str) -> list[Any]:
    """Every value as the database holds it: its text, and on SQLite its storage class."""
    sqlite = storage.engine.dialect.name == "sqlite"
    text = "CHAR" if storage.backend.name == "mariadb" else "TEXT"  # MariaDB casts to CHAR
    shown = ", ".join(
        f'CAST("{col}" AS {text})' + (f', typeof("{col}")' if sqlite else "") for col in columns
    )
    order = "service_id" if table == "packages" else "id"
    with storage.engine.connect() as conn:
        result = conn.exec_driver_sql(
            f"SELECT {shown} FROM {table} WHERE provider = '{provider}' ORDER BY {order}"
        )
        return [tuple(row) for row in result]


PACKAGE_COLUMNS = (
    "service_id", "name", "type", "category", "rate", "min", "max", "active", "first_seen_at",
    "updated_at", "removed_at", "extra", "refill", "cancel",
)  # fmt: skip
CHANGE_COLUMNS = ("service_id", "change", "field", "old_value", "new_value", "changed_at")


def stored_rows(storage: Storage, provider: str) -> tuple[list[Any], list[Any]]:
    return (
        _as_stored(storage, "packages", PACKAGE_COLUMNS, provider),
        _as_stored(storage, "package_changes", CHANGE_COLUMNS, provider),
    )


@pytest.fixture
def both(any_storage: Storage) -> Storage:
    """Two providers: "typed" is written by the reference statements, "plain" by syncd."""
    any_storage.register_providers([("typed", "u"), ("plain", "u")])
    return any_storage


def test_every_step_writes_and_reads_what_the_typed_statements_did(both: Storage) -> None:
    changed = [
        Package(1, "Plain", "Default", "Followers", Decimal("0.95"), 50, 10000),
        *ODD[1:2],
        *ODD[3:6],
        Package(7, "Renamed", "Default", "c", Decimal("1"), 1, 2, {"nested": {"list": []}}),
        Package(8, "Extra", "Default", "c", Decimal("2.5"), 1, 2, {"dripfeed": False}),
        Package(9, "New", "Default", "c", Decimal("3"), 1, 2, {}, None, True),
    ]
    # first sync, a sync that reprices, renames, removes #3 and adds #9, then #3 back.
    for fetched, now in ((ODD, NOW), (changed, LATER), ([*changed, ODD[2]], LATER)):
        typed_write(both, plan_catalog("typed", typed_read(both, "typed"), fetched, now))
        plan = both.apply_catalog_reply(
            "plain", partial(plan_catalog, "plain", fetched=fetched, now=now)
        )
        assert plan.changes, "every step changes something"
        assert stored_rows(both, "plain") == stored_rows(both, "typed")
        assert both.catalog("plain") == typed_read(both, "plain")
    assert both.catalog("plain")[3].active


def test_values_a_consumer_wrote_by_hand_read_as_the_typed_columns_read_them(
    any_storage: Storage,
) -> None:
    any_storage.register_providers([("p", "u")])
    any_storage.apply_catalog_reply("p", lambda stored: plan_catalog("p", stored, ODD, NOW))
    sqlite = any_storage.engine.dialect.name == "sqlite"
    with any_storage.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE packages SET active = false, removed_at = '2026-01-01' WHERE service_id = 1"
        )
        conn.exec_driver_sql(
            "UPDATE packages SET extra = 'null', refill = NULL WHERE service_id = 3"
        )
        if sqlite:  # a flag and a rate of another storage class than syncd writes
            conn.exec_driver_sql("UPDATE packages SET refill = 2, rate = 7 WHERE service_id = 4")
    assert any_storage.catalog("p") == typed_read(any_storage, "p")
    plans = both_plans(any_storage, "p", ODD)
    assert plans[0] == plans[1]
    changed = [(c.service_id, c.field, c.old_value) for c in plans[0].changes]
    assert changed == [(1, None, None)] + (
        [(4, "rate", "7"), (4, "refill", "true")] if sqlite else []
    )


def both_plans(
    storage: Storage, provider: str, fetched: Sequence[Package]
) -> tuple[CatalogPlan, CatalogPlan]:
    """The plan made against the rows as read, and the one made against the packages the
    typed columns read; the first is written."""
    typed = typed_read(storage, provider)
    planned: list[CatalogPlan] = []

    def decide(stored: Mapping[int, StoredPackage]) -> CatalogPlan:
        assert isinstance(stored, StoredRows), "the storage compares rows as read"
        planned.append(plan_catalog(provider, stored, fetched, NOW, force=True))
        assert dict(stored) == typed
        return planned[0]

    storage.apply_catalog_reply(provider, decide)
    return planned[0], plan_catalog(provider, typed, fetched, NOW, force=True)


# -- any catalog, any change ----------------------------------------------------------------

_texts = st.sampled_from(["", "a", "A", "Followers", "\u00fc ?", "%s"])
# The same few amounts in several spellings: "0.9", "0.90" and "9E-1" are one rate.
_rates = st.sampled_from(["0", "0.0", "0.9", "0.90", "9E-1", "1E+2", "100", "0.123456789012"])
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "x", "1.50"]),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_texts, inner, max_size=2),
    max_leaves=4,
)
_packages = st.builds(
    Package,
    service_id=st.integers(1, 6),
    name=_texts,
    type=st.sampled_from(["Default", "Package"]),
    category=_texts,
    rate=_rates.map(Decimal),
    min=st.integers(0, 2),
    max=st.sampled_from([1, 2, 2**63 - 1]),
    extra=st.dictionaries(st.sampled_from(["dripfeed", "average_time"]), _json, max_size=2),
    refill=st.sampled_from([None, True, False]),
    cancel=st.sampled_from([None, True, False]),
)
_catalogs = st.lists(_packages, max_size=6, unique_by=lambda p: p.service_id)
_FIELDS = ("name", "type", "category", "rate", "min", "max", "extra", "refill", "cancel")


@st.composite
def _next(draw: st.DrawFn, catalog: list[Package]) -> list[Package]:
    """The catalog a provider may send next: most packages as they were, some with one
    field changed (or the same rate written otherwise), some gone, some new."""
    following = []
    for package in catalog:
        fate = draw(st.sampled_from(["same", "same", "changed", "gone"]))
        if fate == "same":
            following.append(package)
        elif fate == "changed":
            field = draw(st.sampled_from(_FIELDS))
            following.append(replace(package, **{field: getattr(draw(_packages), field)}))
    taken = {p.service_id for p in following}
    following += [p for p in draw(_catalogs) if p.service_id not in taken]
    return following


@st.composite
def _histories(draw: st.DrawFn) -> list[list[Package]]:
    first = draw(_catalogs)
    second = draw(_next(first))
    return [first, second, draw(_next(second)), draw(_next(first))]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    """One database for every example: each example syncs a provider of its own."""
    path: Path = tmp_path_factory.mktemp("speed") / "syncd.db"
    opened = open_storage(f"sqlite:///{path}")
    yield opened
    opened.close()


_providers = itertools.count()


@given(history=_histories())
def test_planning_against_rows_as_read_is_planning_against_packages(
    shared: Storage, history: list[list[Package]]
) -> None:
    """Whatever was stored, removed and restored, and whatever comes next, the plan made
    against the rows as the database returned them (unchanged packages told from the rows
    themselves) is the plan made against the packages the typed columns read, and what
    was written reads back the same both ways."""
    provider = f"p{next(_providers)}"
    shared.register_providers([(provider, "u")])
    for fetched in history:
        lazy, plain = both_plans(shared, provider, fetched)
        assert lazy == plain
    assert shared.catalog(provider) == typed_read(shared, provider)


# -- a catalog entry read in fewer calls ------------------------------------------------------


def entry_read_field_by_field(item: object) -> Package:
    """How a catalog entry was read before it was read in fewer calls: the reference."""
    if not isinstance(item, Mapping):
        raise ValueError(f"is {replies._kind(item)}, not an object")
    missing = [k for k in ("service", "name", "rate", "min", "max") if item.get(k) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    rate = replies._field(item, "rate", parse_money)
    low, high = replies._field(item, "min", parse_count), replies._field(item, "max", parse_count)
    if rate < 0 or low < 0 or high < 0:
        raise ValueError("rate, min and max must not be negative")
    try:
        extra = {str(k): replies._jsonable(v) for k, v in item.items() if k not in FIELDS}
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return Package(
        service_id=replies._field(item, "service", replies._id),
        name=replies._field(item, "name", replies._text),
        type=replies._optional(item.get("type"), replies._text) or "Default",
        category=replies._optional(item.get("category"), replies._text) or "",
        rate=rate,
        min=low,
        max=high,
        extra=extra,
        refill=replies._flag(item.get("refill")),
        cancel=replies._flag(item.get("cancel")),
    )


FIELDS = {"service", "name", "type", "category", "rate", "min", "max", "refill", "cancel"}
# Entries a panel sends, then the same with any field given any JSON value.
_SENT = st.fixed_dictionaries(
    {"service": st.sampled_from(["1", "01", 7, " 2 "]), "name": _texts,
     "rate": st.sampled_from(["0.9", "1E+2", "-1", "0.1234567890123", "x", "5"]),
     "min": st.sampled_from(["50", "0", 10, "1.00", "-3"]), "max": st.just("100")},
    optional={"type": _texts, "category": _texts, "refill": st.sampled_from([True, "1", None]),
              "cancel": st.sampled_from([False, "no", 2]), "dripfeed": _json},
)  # fmt: skip


def _outcome(read: Callable[[object], Package], item: object) -> Package | str:
    try:
        return read(item)
    except ValueError as exc:
        return f"refused: {exc}"


@given(st.one_of(_SENT, PACKAGE, JSON, st.builds(dict, _SENT, extra=JSON)))
def test_a_catalog_entry_reads_as_it_did_field_by_field(item: object) -> None:
    assert _outcome(replies._package, item) == _outcome(entry_read_field_by_field, item)
