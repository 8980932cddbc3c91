"""``syncd order track`` through the driver alone: the same rows as the usual way, and
the usual way whenever the plain one cannot do what it would."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.storage import open_storage
from syncd.storage.plain_orders import track_plainly
from tests.conftest import write_config
from tests.system.test_startup import imported

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PROVIDER = ("sim", "https://panel.example/v2")


def dump(path: Path) -> list[list[tuple[object, ...]]]:
    with sqlite3.connect(path) as conn:
        return [
            conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            for table in ("orders", "order_changes")
        ]


def database(tmp_path: Path, name: str) -> tuple[str, Path]:
    path = tmp_path / name
    storage = open_storage(f"sqlite:///{path}")
    storage.register_providers([PROVIDER])
    storage.close()
    return f"sqlite:///{path}", path


def test_the_plain_way_writes_what_the_usual_way_writes(tmp_path: Path) -> None:
    plain_url, plain = database(tmp_path, "plain.db")
    usual_url, usual = database(tmp_path, "usual.db")
    batches = ([5, 3, 5, 9_000_000_000], [3, 4, 1], list(range(10, 1300)))  # repeats, chunks
    for ids in batches:
        assert track_plainly(plain_url, [PROVIDER], "sim", ids, NOW) is not None
        storage = open_storage(usual_url)
        storage.track_orders("sim", ids, NOW)
        storage.close()
    assert dump(plain) == dump(usual)
    assert len(dump(plain)[1]) == len({i for ids in batches for i in ids})


def test_the_plain_way_steps_aside_when_it_would_not_do_the_same(tmp_path: Path) -> None:
    url, path = database(tmp_path, "syncd.db")
    assert track_plainly(f"sqlite:///{tmp_path}/absent.db", [PROVIDER], "sim", [1], NOW) is None
    assert not (tmp_path / "absent.db").exists()  # nothing created
    moved = (PROVIDER[0], "https://moved.example/v2")
    assert track_plainly(url, [moved], "sim", [1], NOW) is None  # the URL is registered anew
    assert track_plainly(url, [PROVIDER, ("new", "https://n.example")], "sim", [1], NOW) is None
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
    assert track_plainly(url, [PROVIDER], "sim", [1], NOW) is None  # a migration is due
    assert dump(path) == [[], []]  # and nothing was written by any of these


def test_a_locked_database_leaves_the_plain_way_with_nothing_written(tmp_path: Path) -> None:
    url, path = database(tmp_path, "syncd.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        assert track_plainly(url, [PROVIDER], "sim", [1], NOW, busy_timeout=0.1) is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert dump(path) == [[], []]


def test_track_on_a_ready_database_imports_no_sqlalchemy(tmp_path: Path) -> None:
    url, _ = database(tmp_path, "syncd.db")
    config = write_config(tmp_path / "syncd.toml", url, PROVIDER[1])
    heavy = {"sqlalchemy", "sqlmodel", "pydantic", "structlog", "httpx"}
    assert imported(config, "order", "track", "--provider", "sim", "7", among=heavy) == ""


def test_the_command_goes_the_usual_way_to_register_a_new_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/syncd.db"  # not even created yet
    config = write_config(tmp_path / "syncd.toml", url, PROVIDER[1])
    assert main(["--config", str(config), "order", "track", "--provider", "sim", "8", "9"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sim order 8 -> local order 1",
        "sim order 9 -> local order 2",
    ]
    assert main(["--config", str(config), "order", "track", "--provider", "sim", "9", "10"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sim order 9 -> local order 2",
        "sim order 10 -> local order 3",
    ]


def test_two_plain_tracks_at_once_track_each_id_once(tmp_path: Path) -> None:
    url, path = database(tmp_path, "syncd.db")
    results: list[dict[int, int] | None] = []

    def run(ids: list[int]) -> None:
        results.append(track_plainly(url, [PROVIDER], "sim", ids, NOW))

    threads = [threading.Thread(target=run, args=(list(range(s, s + 3000)),)) for s in (1, 1501)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result is not None for result in results)
    orders, changes = dump(path)
    assert len(orders) == len(changes) == 4500
