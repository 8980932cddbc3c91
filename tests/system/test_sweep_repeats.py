"""The sweep's short way for an order whose answer repeats its row.

Most orders a sweep checks have not changed since the last sweep. Such an order is
written the short way (``StatusJudge.repeated``): no order or answer is built for it, and
one UPDATE sets the check times of all such orders of a batch. Whatever a row holds (a
consumer may have written anything into it) and whatever an answer says, the short way
must leave the row, its change rows and its alerts exactly as the full check leaves
them. These tests run both ways side by side on twin rows: one answered through
``read_statuses`` (the short way may be taken), its twin through ``parse_statuses``
(plain answers: always the full check).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from hypothesis import event, given
from hypothesis import strategies as st

from syncd.lifecycle import StatusJudge
from syncd.models import Order
from syncd.plans import KEEP, StatusPlan
from syncd.provider.replies import parse_statuses, read_statuses
from syncd.storage import Storage, open_storage, sweep
from syncd.storage import tables as t
from syncd.storage.driver import Driver
from syncd.storage.order_writes import log_changes_with

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BASE = timedelta(minutes=2)
GIVE_UP = timedelta(days=30)
COLUMNS = (
    "status", "status_raw", "charge", "start_counter", "remains", "currency", "error",
    "missing_checks", "overdue_checks", "finished_at", "created_at", "checked_at",
    "next_check_at", "status_extra", "quantity",
)  # fmt: skip


def at(moment: datetime) -> str:
    """A time as syncd writes it into SQLite."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def judge(answers: Any, now: datetime) -> StatusJudge:
    return StatusJudge(answers, lambda: now, base=BASE, give_up_after=GIVE_UP)


_ids = itertools.count(1000)


def twins(storage: Storage, row: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two active rows holding ``row`` as written, each (local id, provider order id)."""
    made = []
    for _ in range(2):
        held = next(_ids)
        values = {"provider": "sim", "provider_order_id": held, "state": "active", **row}
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with storage.engine.begin() as conn:
            local = conn.exec_driver_sql(
                f"INSERT INTO orders ({names}) VALUES ({marks}) RETURNING id",
                tuple(values.values()),
            ).scalar_one()
        made.append((int(local), held))
    return made[0], made[1]


def both_ways(
    storage: Storage, row: dict[str, Any], entry: object, now: datetime = NOW
) -> tuple[StatusPlan, StatusPlan, int, int]:
    """Answer twin rows with ``entry``: one as the sweep does, one by the full check."""
    (short, short_held), (full, full_held) = twins(storage, row)
    asked = now - timedelta(seconds=1)
    quick = storage.apply_status_answers(
        [short], asked, judge(read_statuses({str(short_held): entry}, [short_held]), now)
    )
    whole = storage.apply_status_answers(
        [full], asked, judge(parse_statuses({str(full_held): entry}, [full_held]), now)
    )
    return quick, whole, short, full


def same_outcome(storage: Storage, quick: StatusPlan, whole: StatusPlan, a: int, b: int) -> None:
    """The twins were left alike: row, change rows, alerts, and what was counted."""

    def kept(order_id: int) -> Order:
        order = storage.order(order_id)
        assert order is not None
        return dataclasses.replace(order, id=0, provider_order_id=0)

    assert kept(a) == kept(b)

    def changes(order_id: int) -> list[dict[str, Any]]:
        rows = storage.feed_rows("orders", 0, 10_000)
        return [
            {k: v for k, v in r.items() if k not in ("id", "order_id")}
            for r in rows
            if r["order_id"] == order_id
        ]

    assert changes(a) == changes(b)
    assert [x.event for x in quick.alerts] == [x.event for x in whole.alerts]
    assert len(quick.updates) + quick.repeated == len(whole.updates)
    assert whole.repeated == 0


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Storage]:
    path: Path = tmp_path_factory.mktemp("repeats") / "syncd.db"
    opened = open_storage(f"sqlite:///{path}")
    opened.register_providers([("sim", "https://panel.example/api/v2")])
    yield opened
    opened.close()


PLAIN = {
    "status": "In progress", "status_raw": "In progress", "charge": "0.27819",
    "start_counter": 1234, "remains": 80, "currency": "USD", "error": None,
    "missing_checks": 0, "overdue_checks": 0, "finished_at": None,
    "created_at": at(NOW - timedelta(hours=3)), "checked_at": at(NOW - timedelta(minutes=4)),
    "next_check_at": at(NOW - timedelta(minutes=1)), "status_extra": None, "quantity": 100,
}  # fmt: skip
SAME = {
    "status": "In progress", "charge": "0.27819", "start_counter": "1234", "remains": "80",
    "currency": "USD",
}  # fmt: skip


def test_a_repeated_answer_takes_the_short_way_and_writes_what_the_full_check_does(
    storage: Storage,
) -> None:
    quick, whole, a, b = both_ways(storage, PLAIN, SAME)
    assert quick.repeated == 1 and quick.updates == [] and whole.updates
    same_outcome(storage, quick, whole, a, b)
    order = storage.order(a)
    assert order is not None and order.checked_at == NOW
    # Twice the last interval (3 minutes): 6 minutes on.
    assert order.next_check_at == NOW + timedelta(minutes=6)


@pytest.mark.parametrize(
    ("row", "entry"),
    [
        pytest.param({}, {**SAME, "remains": "79"}, id="remains moved"),
        pytest.param({}, {**SAME, "status": "Completed"}, id="status moved"),
        pytest.param({}, {**SAME, "status": " In progress"}, id="status text spaced"),
        pytest.param({}, {**SAME, "runs": "1"}, id="a drip-feed field"),
        pytest.param({}, {**SAME, "charge": Decimal("0.27819")}, id="charge a JSON number"),
        pytest.param({"error": "unreadable answer"}, SAME, id="an error to clear"),
        pytest.param({"missing_checks": 1}, SAME, id="a not-found count to clear"),
        pytest.param({"quantity": "lots"}, SAME, id="an unreadable column"),
        pytest.param({"status": "Completed"}, SAME, id="stored status differs from its text"),
        pytest.param({"created_at": at(NOW - timedelta(days=31))}, SAME, id="past give_up_after"),
    ],
)
def test_anything_more_than_a_repeat_takes_the_full_check(
    storage: Storage, row: dict[str, Any], entry: dict[str, Any]
) -> None:
    quick, whole, a, b = both_ways(storage, {**PLAIN, **row}, entry)
    assert quick.repeated == 0
    same_outcome(storage, quick, whole, a, b)


def _times() -> st.SearchStrategy[str]:
    offsets = st.sampled_from([-40 * 24 * 60, -29 * 24 * 60, -60, -4, -1, 0, 3, 600])
    return offsets.map(lambda m: at(NOW + timedelta(minutes=m)))


STATUS_TEXTS = ["In progress", "Pending", "Completed", "Partial", "in progress", " Pending", ""]
# Each column holds what syncd writes (PLAIN) most of the time, and otherwise something a
# consumer or an older answer could have left: most rows are then close to a repeat.
ODD: dict[str, st.SearchStrategy[Any]] = {
    "status": st.sampled_from([None, "Pending", "Completed", "Unknown"]),
    "status_raw": st.sampled_from([None, *STATUS_TEXTS]),
    "charge": st.sampled_from([None, "0.1", "0.10", "1E+1", "abc", "-0.5"]),
    "start_counter": st.sampled_from([None, 0, -5, "12", 2**63 - 1]),
    "remains": st.sampled_from([None, 0, -3, "80"]),
    "currency": st.sampled_from([None, "usd", "EUR", ""]),
    "error": st.just("unreadable row: x"),
    "missing_checks": st.sampled_from([1, 2]),  # NOT NULL, as overdue_checks
    "overdue_checks": st.just(1),
    "finished_at": _times(),
    "created_at": _times(),  # NOT NULL
    "checked_at": st.one_of(st.none(), _times()),
    "next_check_at": st.one_of(st.none(), _times()),
    "status_extra": st.sampled_from(['{"runs": 1}', "{runs"]),
    "quantity": st.sampled_from([None, "lots"]),
}


@st.composite
def stored_row(draw: st.DrawFn) -> dict[str, Any]:
    return {
        name: draw(ODD[name]) if draw(st.integers(0, 14)) == 0 else value
        for name, value in PLAIN.items()
    }


@st.composite
def answer_to(draw: st.DrawFn, row: dict[str, Any]) -> object:
    """An entry that mostly repeats ``row``, in the spellings providers use, and
    sometimes says something else."""

    def field(stored: object, *others: object) -> object:
        if draw(st.integers(0, 3)) > 0:  # mostly what the row holds, as it is or as text
            return draw(st.sampled_from([stored, None if stored is None else str(stored)]))
        return draw(st.sampled_from(others))

    entry: dict[str, object] = {}
    fields = {
        "status": field(row["status_raw"], *STATUS_TEXTS, 5),
        "charge": field(row["charge"], "0.27819", "0.10", " 0.10", Decimal("0.1"), "", "NaN"),
        "start_counter": field(row["start_counter"], "", " 12", "12.0", 1234, True),
        "remains": field(row["remains"], "", "80", 80, "-3", "0080", "\u0668\u0660", 2**63),
        "currency": field(row["currency"], "usd", " USD", "", "12", "$"),
    }
    for name, value in fields.items():
        if draw(st.integers(0, 9)) > 0:  # a field left out, now and then
            entry[name] = value
    if draw(st.integers(0, 9)) == 0:
        entry[draw(st.sampled_from(["runs", "link", "error", "posts"]))] = "1"
    return draw(st.sampled_from([entry, entry, entry, "Order not found", None]))


@given(data=st.data())
def test_whatever_a_row_holds_and_an_answer_says_both_ways_leave_it_alike(
    storage: Storage, data: st.DataObject
) -> None:
    row = data.draw(stored_row())
    entry = data.draw(answer_to(row))
    now = NOW + timedelta(minutes=data.draw(st.sampled_from([0, 5, 60 * 24 * 40])))
    quick, whole, a, b = both_ways(storage, row, entry, now)
    event("short way" if quick.repeated else "full check")
    same_outcome(storage, quick, whole, a, b)


# Every column a status update writes, by the update's own field names.
WRITTEN = (
    "state", "status", "status_raw", "charge", "start_counter", "remains", "currency", "error",
    "checked_at", "next_check_at", "finished_at", "missing_checks", "overdue_checks",
)  # fmt: skip


@given(data=st.data())
def test_a_changed_row_written_without_error_and_finish_time_ends_as_one_written_with_them(
    storage: Storage, data: st.DataObject
) -> None:
    """A row that stays active, held no error and no finish time and gets neither, is
    written without those two columns (each named in SET costs SQLite its indexes): it
    must end exactly as its twin written the plain way, every column of each update by
    SQLAlchemy, whatever the row held."""
    row = data.draw(stored_row())
    entry = data.draw(answer_to(row))
    (short, short_held), (full, full_held) = twins(storage, row)
    asked = NOW - timedelta(seconds=1)

    def every_column(d: Driver, plan: StatusPlan, *, unsent: Any = (), clean: Any = ()) -> None:
        """The plan written the plain way: each update with all its columns."""
        for u in plan.updates:
            values = {name: getattr(u, name) for name in WRITTEN}
            if u.status_extra is not KEEP:
                values["status_extra"] = u.status_extra
            d.conn.execute(sa.update(t.orders).where(t.orders.c.id == u.order_id).values(values))
        log_changes_with(d, plan.changes, plan.now, unsent)

    quick = storage.apply_status_answers(
        [short], asked, judge(parse_statuses({str(short_held): entry}, [short_held]), NOW)
    )
    with mock.patch.object(sweep, "_write_status_plan", every_column):
        whole = storage.apply_status_answers(
            [full], asked, judge(parse_statuses({str(full_held): entry}, [full_held]), NOW)
        )
    event("still active" if any(u.state.value == "active" for u in quick.updates) else "left")
    same_outcome(storage, quick, whole, short, full)


def test_on_every_backend_a_repeat_takes_the_short_way_and_a_change_the_full_check(
    any_storage: Storage,
) -> None:
    """Money and times come back from each database in its own form (text in SQLite,
    NUMERIC and timestamps elsewhere): the short way reads them all."""
    any_storage.register_providers([("sim", "https://panel.example/api/v2")])
    typed = {
        **PLAIN,
        "charge": Decimal("0.27819"),
        **{k: datetime.strptime(str(PLAIN[k]), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
           for k in ("created_at", "checked_at", "next_check_at")},
    }  # fmt: skip
    with any_storage.engine.begin() as conn:
        ids = [
            conn.execute(
                sa.insert(t.orders)
                .values(provider="sim", provider_order_id=held, state="active", **typed)
                .returning(t.orders.c.id)
            ).scalar_one()
            for held in (501, 502)
        ]
    asked = NOW - timedelta(seconds=1)
    reply = {"501": SAME, "502": {**SAME, "remains": "79"}}
    plan = any_storage.apply_status_answers(
        ids, asked, judge(read_statuses(reply, [501, 502]), NOW)
    )
    assert plan.repeated == 1 and [u.order_id for u in plan.updates] == [ids[1]]
    assert [c.order_id for c in plan.changes] == [ids[1]]
    repeated, changed = (any_storage.order(i) for i in ids)
    assert repeated is not None and changed is not None
    assert repeated.checked_at == changed.checked_at == NOW
    assert repeated.next_check_at == NOW + timedelta(minutes=6)
    assert changed.next_check_at == NOW + BASE and changed.remains == 79
    assert repeated.charge == Decimal("0.27819") and repeated.remains == 80
