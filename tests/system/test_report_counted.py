"""`syncd report`'s order figures counted by the database print what reading every order
printed, on every backend, over hostile orders: charges with many places, zero, huge,
negative, unknown; times a microsecond either side of UTC midnight and of the window's
ends; several currencies and providers; on SQLite, values a consumer wrote by hand in
forms syncd never writes."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.cli.report import Figures, _json, _key, _text, counted_figures, figures
from syncd.models import Order, OrderState, Status
from syncd.storage import Storage
from syncd.storage.driver import Driver
from syncd.storage.report_reads import OrderTally

PROVIDERS = ("alpha", "beta")
NOW = datetime(2026, 11, 15, 10, 30, 0, 250000, tzinfo=UTC)
DAYS = 3
SINCE = NOW - timedelta(days=DAYS)
MIDNIGHT = datetime(2026, 11, 15, tzinfo=UTC)
_COLUMNS = (
    "provider", "provider_order_id", "service_id", "state", "status", "charge", "currency",
    "created_at", "submitted_at", "finished_at",
)  # fmt: skip


def oracle(provider: str, orders: list[Order], since: datetime, now: datetime) -> list[Figures]:
    """The report's figures as it computed them reading every order (kept as it was)."""
    by_currency: dict[str, Figures] = {}
    per_day: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    per_package: dict[str, dict[int | None, list[Any]]] = defaultdict(
        lambda: defaultdict(lambda: [0, Decimal(0)])
    )

    def of(currency: str | None) -> Figures:
        key = (currency or "").upper() or "currency unknown"
        if key not in by_currency:
            by_currency[key] = Figures(provider, currencies={key})
        return by_currency[key]

    for o in orders:
        sent = o.submitted_at or o.created_at
        if sent is not None and since <= sent <= now and o.provider_order_id:
            f = of(o.currency)
            if o.charge is None or o.charge < 0:
                f.charge_unknown += 1
            else:
                key = next(iter(f.currencies))
                per_day[key][sent.date().isoformat()] += o.charge
                per_package[key][o.service_id][0] += 1
                per_package[key][o.service_id][1] += o.charge
        finished = o.finished_at
        if o.state is OrderState.DONE and finished is not None and since <= finished <= now:
            f = of(o.currency)
            f.final_statuses[o.status.value if o.status else "Unknown"] += 1
            if o.status is Status.COMPLETED and sent is not None and sent <= finished:
                # The one change: the mean of the exact times, not of floats added up.
                f.completed += 1
                f.completion_micros += (finished - sent) // timedelta(microseconds=1)
    for key, f in by_currency.items():
        f.spend_per_day = dict(sorted(per_day[key].items()))
        f.spend_per_package = {
            k: (n, s) for k, (n, s) in sorted(per_package[key].items(), key=_key)
        }
    return [by_currency[k] for k in sorted(by_currency)] or [Figures(provider)]


def printed(reports: list[Figures]) -> str:
    """The order figures as `syncd report` prints them, as JSON and as text."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        _text(reports, [], DAYS, SINCE, SINCE.date())
    return json.dumps(_json(reports, DAYS, SINCE), indent=2) + text.getvalue()


# Times a microsecond either side of each UTC midnight and of the window's ends, or anywhere.
near = st.sampled_from([-1, 0, 1]).map(lambda us: timedelta(microseconds=us))
moments = st.one_of(
    st.builds(lambda d, dt: MIDNIGHT + timedelta(days=d) + dt, st.integers(-5, 1), near),
    st.builds(lambda end, dt: end + dt, st.sampled_from([SINCE, NOW]), near),
    st.builds(
        lambda d, us: MIDNIGHT + timedelta(days=d, microseconds=us),
        st.integers(-5, 0),
        st.integers(0, 86_400_000_000 - 1),
    ),
)
HOSTILE_CHARGES = [
    "0", "0.000", "-0.5", "0.05", "0.050", "999999999999.999999999999", "0.000000000001", "-0",
]  # fmt: skip
charges = st.one_of(
    st.none(),
    st.sampled_from(HOSTILE_CHARGES),
    st.decimals(min_value=0, max_value=Decimal("1e12") - 1, places=12).map(str),
    st.decimals(min_value=0, max_value=100, places=2).map(str),
)
# Values only SQLite keeps (a consumer's hand): per column, forms syncd never writes.
ODD: dict[str, list[object]] = {
    "provider_order_id": ["{n}", "{n}.5", "-9223372036854775808"],  # the last: -(2**63) + n
    "service_id": ["x", 2.5],
    "state": ["DONE", 5],
    "status": [7, "completed"],
    "charge": ["abc", 5, "1e3", " 0.5"],
    "currency": [5, " usd"],
    "created_at": [
        "2026-11-14 23:59:59",
        "2026-11-14T23:59:59.999999-01:00",
        "soon",
        1763164800,
        "2026-11-15",
        "2026-W46-6 10:00:00.000000",  # Python reads an ISO week date, SQLite none
    ],
    "submitted_at": [
        "2026-11-13 10:30:00",
        "2026-11-14T23:30:00+00:00",
        "later",
        17,
        "2026-11-14",
        "2026-W46-6 10:00:00.000000",
    ],
    "finished_at": [
        "2026-11-15 00:00:00",
        "2026-11-15T01:00:00+02:00",
        "never",
        1.5,
        "xxxxxxxxxxxxxxxxxxx.000000",  # its decimals in place, no time before them
    ],
}
orders = st.fixed_dictionaries({
    "provider": st.sampled_from(PROVIDERS),
    "has_id": st.sampled_from([True, True, True, False]),
    "service_id": st.sampled_from([None, 1, 2, 3]),
    "state": st.sampled_from(["done", "done", "active", "rejected"]),
    "status": st.sampled_from(
        [None, "Completed", "Completed", "Partial", "Canceled", "Queer", "Completed "]
    ),
    "charge": charges,
    "currency": st.sampled_from([None, "", "USD", "usd", "EUR", "USD "]),
    "created_at": moments,
    "submitted_at": st.one_of(st.none(), moments),
    "finished_at": st.one_of(st.none(), moments),
    "odd": st.dictionaries(st.sampled_from(sorted(ODD)), st.integers(0, 4), max_size=2),
})  # fmt: skip


def insert(storage: Storage, rows: list[dict[str, Any]]) -> None:
    """The rows, the one before (a case) gone; odd values on SQLite only."""
    sqlite = storage.engine.dialect.name == "sqlite"

    def work(conn: Any) -> None:
        db = Driver(conn)
        db.run("DELETE FROM orders")
        for n, row in enumerate(rows):
            values: dict[str, object] = {
                "provider": row["provider"],
                # One 0 at most (the provider order id is unique): none, to the report.
                "provider_order_id": n if row["has_id"] else None,
                "service_id": row["service_id"],
                "state": row["state"],
                "status": row["status"],
                "charge": None if row["charge"] is None else db.money(Decimal(row["charge"])),
                "currency": row["currency"],
                **{c: db.time(row[c]) for c in ("created_at", "submitted_at", "finished_at")},
            }
            if sqlite:
                for column, pick in row["odd"].items():
                    values[column] = ODD[column][pick % len(ODD[column])]
                if row["odd"].get("provider_order_id") is not None:  # unique per provider
                    form = str(values["provider_order_id"])
                    number = int(form) + n if form.startswith("-") else None
                    values["provider_order_id"] = (
                        number if number is not None
                        else float(form.format(n=n)) if "." in form else form.format(n=n)
                    )  # fmt: skip
            marks = ", ".join("?" for _ in _COLUMNS)
            db.run(
                f"INSERT INTO orders ({', '.join(_COLUMNS)}) VALUES ({marks})",
                [values[c] for c in _COLUMNS],
            )

    storage._write(work, fenced=False)


@pytest.fixture
def registered(any_storage: Storage) -> Storage:
    any_storage.register_providers((p, f"https://{p}.example/api/v2") for p in PROVIDERS)
    return any_storage


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(orders, max_size=25))
def test_the_counted_report_prints_what_reading_every_order_printed(
    registered: Storage, rows: list[dict[str, Any]]
) -> None:
    insert(registered, rows)
    for p in PROVIDERS:
        tally = registered.order_tally(p, SINCE, NOW)
        counted = counted_figures(p, tally, SINCE, NOW)
        assert counted is not None  # 25 orders of under 10^12 add up in 28 digits
        read = oracle(p, registered.orders_since(p, SINCE), SINCE, NOW)
        assert printed(counted) == printed(read)
        assert counted == read


def test_the_database_counts_orders_in_groups_and_reads_only_odd_rows_whole(
    registered: Storage,
) -> None:
    """Forty orders sent and completed on two days at one charge are a few groups, their
    completion times one sum; only the row in a form syncd never writes is read whole."""
    moment = NOW - timedelta(days=2)
    rows = [
        {"provider": "alpha", "has_id": True, "service_id": 1 + n % 2, "state": "done",
         "status": "Completed", "charge": "0.05", "currency": "USD",
         "created_at": moment, "submitted_at": moment + timedelta(hours=n % 2 * 30),
         "finished_at": moment + timedelta(hours=n % 2 * 30 + 1), "odd": {}}
        for n in range(40)
    ]  # fmt: skip
    odd = dict(rows[0], odd={"submitted_at": 0})  # a time without its microseconds
    insert(registered, [dict(rows[0], provider="beta"), *rows, odd])  # ids 1, 2-41, 42
    tally = registered.order_tally("alpha", SINCE, NOW)
    sqlite = registered.engine.dialect.name == "sqlite"
    assert sorted(n for *_, n in tally.per_day) == ([20, 20] if sqlite else [20, 21])
    assert len(tally.per_package) == 2 and len(tally.finished) == 1
    (finished,) = tally.finished
    assert finished[2:4] == ((40, 40) if sqlite else (41, 41))
    assert [o.id for o in tally.odd] == ([42] if sqlite else [])
    (usd,) = counted_figures("alpha", tally, SINCE, NOW) or []
    assert usd.spend_per_package == {1: (21, Decimal("1.05")), 2: (20, Decimal("1.00"))}
    assert usd.completed == 41
    assert [usd] == oracle("alpha", registered.orders_since("alpha", SINCE), SINCE, NOW)


def test_an_odd_row_in_every_range_is_read_once_and_counted_by_no_statement(
    registered: Storage,
) -> None:
    """An order sent (a time without its microseconds) and finished in the window is in
    the sent range and the finished one: it is read whole once, judged once, and left out
    of both counts; plain orders beside it are counted as ever."""
    moment = NOW - timedelta(days=1)
    row = {
        "provider": "alpha", "has_id": True, "service_id": 1, "state": "done",
        "status": "Completed", "charge": "0.25", "currency": "USD", "created_at": moment,
        "submitted_at": moment, "finished_at": moment + timedelta(hours=1), "odd": {},
    }  # fmt: skip
    # id 1 beta's (its provider order id 0), 2-4 plain, 5 odd when sent, 6 odd when
    # finished (sent plainly, in the window), 7 both (in both partial indexes: read once)
    odd_sent, odd_finished = dict(row, odd={"submitted_at": 0}), dict(row, odd={"finished_at": 0})
    odd_both = dict(row, odd={"submitted_at": 0, "finished_at": 0})
    insert(
        registered, [dict(row, provider="beta"), row, row, row, odd_sent, odd_finished, odd_both]
    )
    tally = registered.order_tally("alpha", SINCE, NOW)
    sqlite = registered.engine.dialect.name == "sqlite"
    assert [o.id for o in tally.odd] == ([5, 6, 7] if sqlite else [])
    assert sum(n for *_, n in tally.per_day) == (3 if sqlite else 6)
    assert sum(n for *_, n in tally.per_package) == (3 if sqlite else 6)
    assert [f[2:4] for f in tally.finished] == [(3, 3) if sqlite else (6, 6)]
    (usd,) = counted_figures("alpha", tally, SINCE, NOW) or []
    assert usd.completed == 6 and sum(n for n, _ in usd.spend_per_package.values()) == 6
    assert [usd] == oracle("alpha", registered.orders_since("alpha", SINCE), SINCE, NOW)


def test_times_sqlite_cannot_read_at_all_are_read_whole_not_dropped(
    registered: Storage,
) -> None:
    """A text of syncd's length with its six decimals that SQLite reads as no time (an
    ISO week date Python reads; letters) made the form check NULL, not false: the row
    was neither counted nor read whole, and vanished from the report."""
    moment = NOW - timedelta(days=2)
    row = {
        "provider": "alpha", "has_id": True, "service_id": 1, "state": "done",
        "status": "Completed", "charge": "0.25", "currency": "USD", "created_at": moment,
        "submitted_at": moment, "finished_at": moment + timedelta(hours=1), "odd": {},
    }  # fmt: skip
    week = len(ODD["submitted_at"]) - 1
    letters = len(ODD["finished_at"]) - 1
    insert(
        registered, [dict(row, odd={"submitted_at": week}), dict(row, odd={"finished_at": letters})]
    )
    tally = registered.order_tally("alpha", SINCE, NOW)
    read = oracle("alpha", registered.orders_since("alpha", SINCE), SINCE, NOW)
    assert read and read[0].spend_per_package  # the rows are in the report
    assert counted_figures("alpha", tally, SINCE, NOW) == read


def test_a_sum_that_would_be_rounded_is_left_to_the_orders_one_by_one() -> None:
    """29 digits do not fit the 28 a Decimal keeps: the order of the additions would
    decide the last digit, so counted groups give no figures (the report then adds the
    orders one by one, in the order of their ids, as it always did)."""
    huge = Decimal("999999999999.999999999999")
    tally = OrderTally(per_day=[("USD", "2026-11-14", huge, 10_001)])
    assert counted_figures("alpha", tally, SINCE, NOW) is None
    small = OrderTally(per_day=[("USD", "2026-11-14", huge, 2)])
    (usd,) = counted_figures("alpha", small, SINCE, NOW) or []
    assert usd.spend_per_day == {"2026-11-14": Decimal("1999999999999.999999999998")}


def test_figures_read_from_orders_are_those_of_the_oracle() -> None:
    """The report's own reading of orders (kept for sums that would be rounded) is the
    oracle's: both over the same orders, built by hand."""
    o = Order(
        id=1, provider="alpha", provider_order_id=5, service_id=1, link=None, quantity=None,
        custom_data=None, state=OrderState.DONE, status=Status.COMPLETED, status_raw=None,
        charge=Decimal("0.10"), start_counter=None, remains=None, currency="usd", error=None,
        created_at=NOW - timedelta(hours=3), submitted_at=NOW - timedelta(hours=2),
        checked_at=None, next_check_at=None, finished_at=NOW - timedelta(hours=1),
        missing_checks=0, overdue_checks=0, max_rate=None, quoted_rate=None,
    )  # fmt: skip
    assert figures("alpha", [o], SINCE, NOW) == oracle("alpha", [o], SINCE, NOW)
    assert printed(figures("alpha", [o], SINCE, NOW)) == printed(oracle("alpha", [o], SINCE, NOW))


def test_texts_that_differ_by_trailing_spaces_are_counted_apart(registered: Storage) -> None:
    """MariaDB's collations ignore trailing spaces in ``=`` and ``GROUP BY``: 'USD ' was
    counted as 'USD', 'Completed ' as completed and 'done ' as finished, where the orders
    read one by one are another currency, no status and no final state."""
    moment = NOW - timedelta(hours=5)
    base = {
        "provider": "alpha", "has_id": True, "service_id": 1, "state": "done",
        "status": "Completed", "charge": "0.50", "currency": "USD", "created_at": moment,
        "submitted_at": moment, "finished_at": moment + timedelta(minutes=1), "odd": {},
    }  # fmt: skip
    rows = [
        base,
        dict(base, currency="USD "),
        dict(base, status="Completed "),
        dict(base, state="done "),
        dict(base, currency="usd  ", status="Partial "),
    ]
    insert(registered, rows)
    tally = registered.order_tally("alpha", SINCE, NOW)
    counted = counted_figures("alpha", tally, SINCE, NOW)
    read = oracle("alpha", registered.orders_since("alpha", SINCE), SINCE, NOW)
    assert counted is not None
    assert printed(counted) == printed(read)
    assert counted == read
    usd = next(f for f in counted if f.currencies == {"USD"})
    assert usd.final_statuses == {"Completed": 1, "Unknown": 1} and usd.completed == 1
