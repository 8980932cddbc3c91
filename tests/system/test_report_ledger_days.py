"""`syncd report`'s ledger read from ``ledger_days`` prints what the rows print, read one
by one, over hostile ledgers: several currencies, a currency switch and a ledger opened
anew mid-day, negative top-ups, days with only some kinds, a row written a moment before
the one ahead of it, a row garbled by hand (SQLite), amounts with more and fewer places."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from syncd.cli.daybook import days
from syncd.cli.report import _csv, _day_json, _ledger_text
from syncd.ledger import Entry, Kind
from syncd.models import LedgerStretch, LedgerWindow
from syncd.storage import Storage
from syncd.storage.driver import Driver
from syncd.storage.ledger import _Opened, append
from syncd.storage.ledger_days import catch_up
from syncd.storage.ledger_window import window

START = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TODAY = date(2026, 11, 12)
PROVIDERS = ("alpha", "beta")


def write(storage: Storage, provider: str, at: datetime, opened: _Opened, *moves: Any) -> _Opened:
    """Rows ``(kind, amount)`` appended at ``at`` through the storage's one append point;
    the ledger as it stands after them."""
    entries = [Entry(provider, Kind(kind), None, Decimal(amount)) for kind, amount in moves]
    storage._write(lambda conn: append(Driver(conn), entries, at, {provider: opened}), fenced=False)
    balance = opened.balance + sum((e.amount for e in entries), Decimal(0))
    return _Opened(opened.currency, opened.since_id, balance)


def hostile(storage: Storage, provider: str) -> None:
    usd = _Opened("USD", 0, Decimal("100.00"))
    day = START
    usd = write(storage, provider, day, usd, ("charge", "-0.05"), ("charge", "-0.050"),
                ("refund", "0.01"), ("surcharge", "-0.003"))  # fmt: skip
    usd = write(storage, provider, day + timedelta(hours=2), usd, ("topup", "-5"), ("drift", "2"))
    day += timedelta(days=1)  # only charges
    usd = write(storage, provider, day, usd, *[("charge", "-1.123456789012")] * 3)
    day += timedelta(days=2)  # a day of top-ups alone, after a day without rows
    usd = write(storage, provider, day, usd, ("topup", "50"), ("topup", "-0.5"))
    # A currency switch mid-day: a new ledger at another balance, then back to USD,
    # opened anew at a balance that does not continue the first USD ledger.
    write(storage, provider, day + timedelta(hours=3), _Opened("EUR", 0, Decimal("7")),
                ("charge", "-2"), ("refund", "0.5"))  # fmt: skip
    usd = write(storage, provider, day + timedelta(hours=4), _Opened("USD", 0, Decimal("3")),
                ("drift", "-1"), ("charge", "-0.25"))  # fmt: skip
    # A row written a moment before midnight after one past it (two processes).
    day += timedelta(days=1)
    midnight = datetime.combine(day.date() + timedelta(days=1), time(), UTC)
    usd = write(storage, provider, midnight + timedelta(seconds=1), usd, ("charge", "-0.1"))
    usd = write(storage, provider, midnight - timedelta(seconds=1), usd, ("refund", "0.1"))
    day += timedelta(days=3)
    usd = write(storage, provider, day, usd, ("charge", "-0.000000000001"), ("refund", "0"))
    if storage.engine.dialect.name == "sqlite":
        # A row garbled by hand, mid-day: both ways pass over it; later rows are taken
        # in. (Just before a window's first row, the rows' way would open that window's
        # first line at its first row's balance less its amount: equal, in other digits.)
        with storage.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO ledger (provider, at, kind, amount, currency, balance_after)"
                    " VALUES (:p, 'soon', 'charge', 'a lot', 'USD', '1')"
                ),
                {"p": provider},
            )
    usd = write(storage, provider, day + timedelta(hours=1), usd, ("charge", "-0.2"))
    usd = write(storage, provider, day + timedelta(days=2), _Opened("GBP", 0, Decimal("0")),
                ("topup", "10"))  # fmt: skip


def shown(storage: Storage, first: date, *, by_rows: bool) -> tuple[list[Any], str, str]:
    """The ledger as `syncd report` prints it (JSON days, text, CSV) from ``first``."""
    start = datetime.combine(first, time(), UTC)
    found = []
    for p in PROVIDERS:

        def read(conn: sa.Connection, p: str = p) -> LedgerWindow:
            return window(Driver(conn), p, start, by_rows=by_rows)

        found += days(storage._read(read), TODAY)
    text, table = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(text):
        _ledger_text(found, first)
    with contextlib.redirect_stdout(table):
        _csv(found)
    return [_day_json(d) for d in found], text.getvalue(), table.getvalue()


def stretches_read(storage: Storage, first: date) -> bool:
    start = datetime.combine(first, time(), UTC)
    read = storage._read(lambda c: window(Driver(c), PROVIDERS[0], start))
    return any(isinstance(r, LedgerStretch) and r.rows > 1 for r in read.rows)


def test_the_ledger_by_day_prints_what_the_rows_print(any_storage: Storage) -> None:
    any_storage.register_providers((p, f"https://{p}.example/api/v2") for p in PROVIDERS)
    for p in PROVIDERS:
        hostile(any_storage, p)
    assert stretches_read(any_storage, START.date())  # the fast way is the one taken
    for back in range(14):  # every window, so every day is once the first
        first = TODAY - timedelta(days=back)
        assert shown(any_storage, first, by_rows=False) == shown(any_storage, first, by_rows=True)
    rows = any_storage._read(
        lambda c: c.execute(sa.text("SELECT count(*) FROM ledger_days")).scalar_one()
    )
    assert 0 < rows < 40  # a few stretches a day, not a row each


def rebuild(conn: sa.Connection) -> None:
    for p in PROVIDERS:
        catch_up(Driver(conn), p)


def test_the_ledger_by_day_taken_in_again_is_the_same(any_storage: Storage) -> None:
    """What the migration does (rebuild from the rows) gives the stretches the appends
    kept."""
    any_storage.register_providers((p, f"https://{p}.example/api/v2") for p in PROVIDERS)
    for p in PROVIDERS:
        hostile(any_storage, p)
    query = sa.text("SELECT * FROM ledger_days ORDER BY provider, first_id")
    kept = any_storage._read(lambda c: [tuple(r) for r in c.execute(query)])
    any_storage._write(lambda c: c.execute(sa.text("DELETE FROM ledger_days")), fenced=False)
    any_storage._write(rebuild, fenced=False)
    assert any_storage._read(lambda c: [tuple(r) for r in c.execute(query)]) == kept
