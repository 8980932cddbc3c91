"""``syncd order list`` and ``syncd report`` read through the driver alone when they can,
and print what the usual way (SQLAlchemy) prints, on every backend and for rows a
consumer garbled by hand."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.cli import main, orders, report
from syncd.storage import command_reads, open_storage
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
