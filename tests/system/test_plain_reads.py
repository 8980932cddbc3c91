"""``syncd order list`` and ``syncd report`` read through the driver alone when they can,
and print what the usual way (SQLAlchemy) prints, on every backend and for rows a
consumer garbled by hand."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from syncd.cli import main, orders, report
from syncd.storage import command_reads, open_storage
from syncd.storage.values import read_money, read_time, readable
from tests.conftest import write_config
from tests.system.test_startup import NOT_FOR_STATUS, imported

PROVIDER_URL = "https://panel.example/v2"


def registered(url: str) -> None:
    storage = open_storage(url)
    storage.register_providers([("sim", PROVIDER_URL)])
    storage.close()


def printed(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: Path,
    *args: str,
    plainly: bool,
) -> str:
    """What ``syncd ARGS`` prints, through the driver alone or the usual way; the way
    asked for is the way taken."""
    with monkeypatch.context() as patch:
        if plainly:

            def refused(*_: object, **__: object) -> Iterator[object]:
                raise AssertionError("the usual way was taken")

            for command in (orders, report):
                patch.setattr(command, "opened", refused)
        else:
            patch.setattr(command_reads, "read_plainly", lambda *_, **__: None)
        capsys.readouterr()
        assert main(["--config", str(config), *args]) == 0
        return capsys.readouterr().out


def orders_sql(now: datetime) -> list[str]:
    day = timedelta(days=1)
    times = [(now - n * day).strftime("%Y-%m-%d %H:%M:%S") for n in range(4)]
    return [
        "INSERT INTO orders (provider, provider_order_id, service_id, link, quantity, state,"
        " status, charge, currency, created_at, submitted_at, finished_at) VALUES"
        f" ('sim', 11, 1, 'https://x.example/a', 100, 'done', 'Completed', 0.50, 'USD',"
        f" '{times[3]}', '{times[3]}', '{times[2]}'),"
        f" ('sim', 12, 2, 'https://x.example/b', 200, 'active', 'In progress', 1.25, 'usd',"
        f" '{times[2]}', '{times[2]}', NULL),"
        f" ('sim', NULL, 2, 'https://x.example/c', 10, 'queued', NULL, NULL, NULL,"
        f" '{times[1]}', NULL, NULL)",
        "INSERT INTO order_requests (order_id, kind, state) VALUES (2, 'refill', 'queued')",
    ]


GARBLED = [
    "INSERT INTO orders (provider, state, charge, created_at, quantity) VALUES"
    " ('sim', 'QUEUED', 'abc', 'garbage', 'many'), (5, 'active', x'00', 1700000000, -1),"
    " ('sim', 'done', '-3', '2026-02-30', 2)",
    "INSERT INTO order_requests (order_id, kind, state, created_at) VALUES (1, 'nonsense', 7, 'x')",
]


def run_sql(url: str, statements: list[str]) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    import sqlalchemy as sa  # noqa: PLC0415

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


LISTINGS = [
    ("order", "list"), ("order", "list", "--json"), ("order", "list", "--state", "active"),
    ("order", "list", "--provider", "sim", "--limit", "2"),
]  # fmt: skip


@pytest.mark.parametrize("args", LISTINGS)
def test_order_list_prints_the_same_either_way(
    tmp_path: Path,
    any_db_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
) -> None:
    registered(any_db_url)
    run_sql(any_db_url, orders_sql(datetime.now(UTC)))
    config = write_config(tmp_path / "syncd.toml", any_db_url, PROVIDER_URL)
    plain = printed(capsys, monkeypatch, config, *args, plainly=True)
    assert plain == printed(capsys, monkeypatch, config, *args, plainly=False)
    if args[2:] in ((), ("--json",)):  # every order, and the request of the second
        assert "refill queued" in plain or '"kind": "refill", "state": "queued"' in plain
    assert plain.count("https://x.example") == 3 or "--json" not in args


@pytest.mark.parametrize("args", LISTINGS)
def test_order_list_of_rows_garbled_by_hand_prints_the_same_either_way(
    tmp_path: Path,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
) -> None:
    registered(db_url)
    run_sql(db_url, orders_sql(datetime.now(UTC)) + GARBLED)
    config = write_config(tmp_path / "syncd.toml", db_url, PROVIDER_URL)
    plain = printed(capsys, monkeypatch, config, *args, plainly=True)
    assert plain == printed(capsys, monkeypatch, config, *args, plainly=False)


def test_a_listing_longer_than_the_plain_bound_goes_the_usual_way(
    tmp_path: Path,
    db_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registered(db_url)
    config = write_config(tmp_path / "syncd.toml", db_url, PROVIDER_URL)
    with pytest.raises(AssertionError, match="usual way"):
        printed(capsys, monkeypatch, config, "order", "list", "--limit", "0", plainly=True)


@pytest.mark.parametrize("args", [("order", "list"), ("order", "list", "--json")])
def test_order_list_imports_no_sqlalchemy(
    tmp_path: Path, any_db_url: str, args: tuple[str, ...]
) -> None:
    config = write_config(tmp_path / "syncd.toml", any_db_url, PROVIDER_URL)
    assert "sqlalchemy" in imported(config, "migrate", among=NOT_FOR_STATUS)
    assert imported(config, *args, among=NOT_FOR_STATUS) == ""


# -- syncd status: the last day's ledger counted by the database ---------------------------


def spend_row_by_row(
    rows: list[tuple[object, object, object]],
    opened: datetime,
    since: datetime,
    now: datetime,
    days: int,
) -> tuple[dict[str, Decimal], dict[date, Decimal]]:
    """What status showed when it read every row on its own: the sums per kind since
    ``since`` (or the opening) and the spend per day, of rows (kind, amount, at) the
    window's query returns."""
    start = max(since, opened)
    first = now.date() - timedelta(days=days - 1) if days else None
    sums = {kind: Decimal(0) for kind in ("charge", "surcharge", "refund", "topup", "drift")}
    daily = (
        dict.fromkeys((first + timedelta(days=n) for n in range(days)), Decimal(0)) if first else {}
    )
    for kind, value, at_value in rows:
        amount, at = readable(read_money, value), readable(read_time, at_value)
        if amount is None or at is None or kind not in sums:
            continue
        if at >= start:
            sums[str(kind)] += amount
        if kind in ("charge", "surcharge", "refund") and at.date() in daily:
            daily[at.date()] -= amount
    return sums, daily


LEDGER_NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
OPENED = LEDGER_NOW - timedelta(days=5, hours=3)


def ledger_rows(typed: bool) -> list[tuple[object, ...]]:
    """(kind, amount, at) over a week, amounts with more and fewer digits after the point;
    on SQLite also times and amounts no syncd process writes."""
    rows: list[tuple[object, ...]] = []
    amounts = ["-0.05", "-0.050", "0.30", "-1.2345", "12", "-0.7"]
    kinds = ["charge", "charge", "refund", "surcharge", "topup", "drift"]
    for hour in range(0, 24 * 8):  # each amount several times a day
        at = LEDGER_NOW - timedelta(hours=hour, minutes=7, microseconds=hour)
        n = hour % len(amounts)
        rows.append((kinds[n], Decimal(amounts[n]), at))
    if not typed:
        rows += [
            ("charge", "abc", LEDGER_NOW - timedelta(hours=1)),
            ("charge", "-2", "2026-03-10 11:00:00"),  # short form: read on its own
            ("charge", "-3", "2026-03-10T11:30:00+00:00"),
            ("refund", "4", "2026-02-30 10:00:00.000000"),  # no such day
            ("charge", "-5", "garbage"),
            ("mystery", "-6", LEDGER_NOW - timedelta(hours=2)),
            ("charge", "-7", 1773140000),
        ]
    return rows


@pytest.mark.parametrize("days", [0, 7])
def test_status_spend_counted_by_the_database_is_what_reading_each_row_gave(
    any_db_url: str, days: int
) -> None:
    from syncd.models import ProviderOverview  # noqa: PLC0415
    from syncd.storage.backends import backend_for_url  # noqa: PLC0415
    from syncd.storage.overview import ledger_spend, unstored  # noqa: PLC0415

    registered(any_db_url)
    typed = not any_db_url.startswith("sqlite")
    backend = backend_for_url(any_db_url)
    rows = ledger_rows(typed)

    def form(value: object) -> object:
        if isinstance(value, datetime):
            return backend.time_value(value)
        return str(value) if isinstance(value, Decimal) and not typed else value

    import sqlalchemy as sa  # noqa: PLC0415

    engine = sa.create_engine(any_db_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            backend.sql(
                "INSERT INTO ledger (provider, at, kind, amount, currency, balance_after)"
                " VALUES (?, ?, ?, ?, 'USD', ?)"
            ),
            [
                ("sim", form(at), kind, form(amount), form(Decimal(100)))
                for kind, amount, at in rows
            ],
        )
        # The window status read row by row: from the opening, or the first day's midnight.
        midnight = datetime.combine(LEDGER_NOW.date() - timedelta(days=days - 1), time.min, UTC)
        since = LEDGER_NOW - timedelta(days=1)
        bound = max(OPENED, min(since, midnight) if days else since)
        stored = conn.exec_driver_sql(
            backend.sql("SELECT kind, amount, at FROM ledger WHERE at >= ?"), (form(bound),)
        ).all()
    engine.dispose()
    p = replace(unstored("sim", PROVIDER_URL), ledger_opened_at=OPENED)
    assert isinstance(p, ProviderOverview)
    since = LEDGER_NOW - timedelta(days=1)
    found = command_reads.read_plainly(
        any_db_url, lambda db: ledger_spend(db, p, since, LEDGER_NOW, days)
    )
    assert found is not None
    sums, daily = spend_row_by_row([tuple(r) for r in stored], OPENED, since, LEDGER_NOW, days)
    spent = -(sums["charge"] + sums["surcharge"] + sums["refund"])
    assert (str(found.spent), str(found.topups), str(found.drift)) == (
        str(spent),
        str(sums["topup"]),
        str(-sums["drift"]),
    )
    assert [(d, str(a)) for d, a in found.by_day] == [(d, str(a)) for d, a in daily.items()]
    assert spent != 0 and (not days or any(daily.values()))
