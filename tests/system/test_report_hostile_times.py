"""`syncd report` on SQLite over times a consumer wrote in forms syncd never writes, beyond
those of ``test_report_counted``: integers, floats and blobs, ISO text with a 'T' or a
zone, without or with seven decimals, days that do not exist, years 0000 and 9999, a time
before the window in text but inside it in UTC. The counted figures must print what
reading every order one by one prints; and the partial indexes must follow a row a
consumer edits from odd to plain and back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.cli.report import counted_figures
from syncd.storage import Storage, open_storage
from syncd.storage.driver import Driver
from tests.system.test_report_counted import NOW, PROVIDERS, SINCE, oracle, printed

TIMES = ("created_at", "submitted_at", "finished_at")
PLAIN = "2026-11-14 10:00:00.000000"
HOSTILE: list[object] = [
    PLAIN, "2026-11-13 23:59:59.999999", "2026-11-15 10:30:00.250000",
    "2026-11-15 10:30:00.250001", "2026-11-12 10:30:00.250000", "2026-11-12 10:30:00.249999",
    1763164800, 1763164800.5, PLAIN.encode(), b"\x00\xff", "2026-11-14T10:00:00.000000",
    PLAIN + "Z", PLAIN + "+00:00", PLAIN[:19], PLAIN + "0", "2026-02-30 10:00:00.000000",
    "0000-11-14 10:00:00.000000", "9999-12-31 23:59:59.999999", "2026-11-14 24:00:00.000000",
    "2026-11-14 10:00:60.000000", " " + PLAIN[:-1], PLAIN[:-1] + " ", PLAIN.replace(".", ","),
    "2026-11-14T10:00:00+05:00", "2026-11-13T23:00:00-05:00", "2026-11-12 05:30:00-08:00",
    "2026-11-14", "", "9999-12-31 23:59:59", PLAIN[:-1] + "\n", PLAIN + "\x00junk",
    PLAIN[:-1] + "\x00",
]  # fmt: skip
_COLUMNS = ("provider", "service_id", "state", "status", "charge", "currency", *TIMES)
rows = st.lists(
    st.fixed_dictionaries({
        "provider": st.sampled_from(PROVIDERS),
        "service_id": st.sampled_from([None, 1, 2]),
        "state": st.sampled_from(["done", "done", "active"]),
        "status": st.sampled_from([None, "Completed", "Completed", "Partial"]),
        "charge": st.sampled_from([None, "0.05", "0.050", "1", "0.1", "0.10"]),
        "currency": st.sampled_from([None, "USD", "usd"]),
        "created_at": st.sampled_from(HOSTILE),  # NOT NULL
        "submitted_at": st.sampled_from([None, *HOSTILE]),
        "finished_at": st.sampled_from([None, *HOSTILE]),
    }),
    max_size=20,
)  # fmt: skip


@pytest.fixture
def registered(db_url: str) -> Iterator[Storage]:
    storage = open_storage(db_url, busy_timeout=0.2)
    storage.register_providers((p, f"https://{p}.example/api/v2") for p in PROVIDERS)
    yield storage
    storage.close()


def put(storage: Storage, orders: list[dict[str, Any]]) -> None:
    """The orders as written, each with a provider order id; the ones before gone."""
    names = ", ".join(("provider_order_id", *_COLUMNS))
    marks = ", ".join("?" for _ in range(len(_COLUMNS) + 1))

    def work(conn: Any) -> None:
        db = Driver(conn)
        db.run("DELETE FROM orders")
        for n, order in enumerate(orders, 1):
            db.run(f"INSERT INTO orders ({names}) VALUES ({marks})",
                   [n, *(order[c] for c in _COLUMNS)])  # fmt: skip

    storage._write(work, fenced=False)


def write(storage: Storage, sql: str) -> None:
    storage._write(lambda conn: Driver(conn).run(sql), fenced=False)


def same_as_read(storage: Storage, provider: str) -> list[int]:
    """The counted figures print what reading every order prints; the odd rows' ids."""
    tally = storage.order_tally(provider, SINCE, NOW)
    counted = counted_figures(provider, tally, SINCE, NOW)
    assert counted is not None
    assert printed(counted) == printed(
        oracle(provider, storage.orders_since(provider, SINCE), SINCE, NOW)
    )
    return [o.id for o in tally.odd]


@settings(
    max_examples=settings().max_examples * 3,  # the profile's, thrice: many forms
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(orders=rows)
def test_times_in_any_form_are_counted_as_reading_every_order(
    registered: Storage, orders: list[dict[str, Any]]
) -> None:
    put(registered, orders)
    for provider in PROVIDERS:
        same_as_read(registered, provider)


def test_the_partial_indexes_follow_a_row_edited_from_odd_to_plain_and_back(
    registered: Storage,
) -> None:
    order = {
        "provider": "alpha", "service_id": 1, "state": "done", "status": "Completed",
        "charge": "0.05", "currency": "USD", "created_at": PLAIN, "submitted_at": PLAIN,
        "finished_at": "2026-11-14 11:00:00.000000",
    }  # fmt: skip
    put(registered, [order, order, order])
    assert same_as_read(registered, "alpha") == []
    write(registered, "UPDATE orders SET submitted_at = '2026-11-14T10:00:00' WHERE id = 1")
    write(registered, "UPDATE orders SET finished_at = 5 WHERE id = 2")
    assert same_as_read(registered, "alpha") == [1, 2]
    write(registered, f"UPDATE orders SET submitted_at = '{PLAIN}' WHERE id = 1")
    assert same_as_read(registered, "alpha") == [2]
    # Odd only in created_at: odd while never sent, plain once sent.
    write(registered, "UPDATE orders SET submitted_at = NULL, created_at = 'x' WHERE id = 3")
    assert same_as_read(registered, "alpha") == [2, 3]
    write(registered, f"UPDATE orders SET submitted_at = '{PLAIN}' WHERE id = 3")
    write(registered, "UPDATE orders SET finished_at = '2026-11-14 11:00:00.000000' WHERE id = 2")
    assert same_as_read(registered, "alpha") == []
    # Moved to another provider while odd, and back.
    write(registered, "UPDATE orders SET provider = 'beta', finished_at = 'x' WHERE id = 2")
    assert same_as_read(registered, "alpha") == []
    assert same_as_read(registered, "beta") == [2]
    write(registered, "UPDATE orders SET provider = 'alpha' WHERE id = 2")
    assert same_as_read(registered, "alpha") == [2]
