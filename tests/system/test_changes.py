"""`syncd changes`: the change feeds as JSON lines, after a cursor, and followed as rows
commit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syncd.models import Event
from syncd.plans import AlertIntent
from syncd.simulator import SimulatorServer
from syncd.storage import Storage, open_storage
from tests.conftest import write_config
from tests.helpers import query, syncd

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def synced(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    """A config whose database holds a catalog's package changes and two tracked orders."""
    config = write_config(tmp_path / "syncd.toml", db_url, server.url)
    assert syncd(config, "sync", "catalog").returncode == 0
    storage = open_storage(db_url)
    storage.track_orders("sim", [7001, 7002], NOW)
    down = AlertIntent(Event.PROVIDER_DOWN, "sim", "sim is down")
    storage._write(lambda conn: storage._insert_alerts(conn, [down], NOW))
    storage.close()
    return config


def test_each_feed_prints_its_rows_in_id_order_after_a_cursor(synced: Path, db_url: str) -> None:
    packages = syncd(synced, "changes", "packages")
    assert packages.returncode == 0, packages.stderr
    rows = lines(packages.stdout)
    stored = query(db_url, "SELECT id, service_id, change FROM package_changes ORDER BY id")
    assert [(r["id"], r["service_id"], r["change"]) for r in rows] == stored
    assert packages.stdout.isascii()
    assert rows[0]["changed_at"].endswith("+00:00")

    after = rows[2]["id"]
    later = lines(syncd(synced, "changes", "packages", "--since", str(after)).stdout)
    assert [r["id"] for r in later] == [r["id"] for r in rows[3:]]
    limited = lines(
        syncd(synced, "changes", "packages", "--since", str(after), "--limit", "2").stdout
    )
    assert [r["id"] for r in limited] == [r["id"] for r in rows[3:5]]

    orders = lines(syncd(synced, "changes").stdout)  # the default feed
    assert [(r["state_old"], r["state_new"]) for r in orders] == [(None, "active")] * 2
    alerts = lines(syncd(synced, "changes", "alerts").stdout)
    assert [(a["event"], a["payload"]["text"]) for a in alerts] == [
        ("provider.down", "sim is down")
    ]


def test_a_feed_longer_than_one_read_is_printed_whole(tmp_path: Path, db_url: str) -> None:
    storage = open_storage(db_url)
    storage.register_providers([("sim", "https://panel.example/v2")])
    storage.track_orders("sim", list(range(1, 1202)), NOW)  # more than two reads of 500
    storage.close()
    config = write_config(tmp_path / "syncd.toml", db_url, "https://panel.example/v2")
    rows = lines(syncd(config, "changes", "orders").stdout)
    assert [r["id"] for r in rows] == list(range(1, 1202))
    assert len(lines(syncd(config, "changes", "--limit", "700").stdout)) == 700


def test_rows_garbled_by_hand_are_printed_as_they_are(synced: Path, db_url: str) -> None:
    query(db_url, "INSERT INTO order_changes (order_id, changed_at, charge_new, status_new) "
                  "VALUES (1, 'yesterday', 'abc', char(27) || '[2J' || char(8238))")  # fmt: skip
    query(db_url, "INSERT INTO alerts (event, payload, created_at) "
                  "VALUES ('x', '{not json', '2026-11-26 12:00:00.000000')")  # fmt: skip
    result = syncd(synced, "changes")
    assert result.returncode == 0, result.stderr
    last = lines(result.stdout)[-1]
    assert last["changed_at"] == "yesterday" and last["charge_new"] == "abc"
    assert last["status_new"] == "\x1b[2J\u202e" and result.stdout.isascii()  # escaped
    alerts = lines(syncd(synced, "changes", "alerts").stdout)
    assert alerts[-1]["payload"] == "{not json"
    assert alerts[-1]["created_at"] == "2026-11-26T12:00:00+00:00"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "-1"], "argument --since: must be between 0 and"),
        (["--since", "1e3"], "argument --since: must be a whole number, not '1e3'"),
        (["--limit", "0"], "argument --limit: must be between 1 and"),
        (["--limit", str(2**63)], "argument --limit: must be between 1 and"),
        (["requests!"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(synced: Path, args: list[str], message: str) -> None:
    result = syncd(synced, "changes", *args)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def follow(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "syncd", "--config", str(config), "changes", "--follow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_lines(process: subprocess.Popen[str], count: int, timeout: float = 15) -> list[str]:
    """``count`` lines of the process's output, failing after ``timeout`` seconds."""
    got: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        while len(got) < count and (line := process.stdout.readline()):
            got.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert len(got) == count, f"{len(got)} of {count} lines; stderr: {process.stderr}"
    return got


def _follow_sees_rows_as_they_commit(config: Path, storage: Storage) -> None:
    first = lines(syncd(config, "changes").stdout)
    process = follow(config, "--since", str(first[-1]["id"]), "--limit", "3")
    try:
        storage.track_orders("sim", [9001], NOW)
        (one,) = read_lines(process, 1)
        assert json.loads(one)["id"] == first[-1]["id"] + 1
        storage.track_orders("sim", [9002, 9003], NOW)
        two = read_lines(process, 2)
        assert [json.loads(line)["id"] for line in two] == [first[-1]["id"] + n for n in (2, 3)]
        assert process.wait(timeout=10) == 0  # --limit 3: done
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_follow_prints_rows_as_they_commit_on_sqlite(synced: Path, db_url: str) -> None:
    storage = open_storage(db_url)
    try:
        _follow_sees_rows_as_they_commit(synced, storage)
    finally:
        storage.close()


def test_follow_prints_rows_as_they_commit_on_a_server(
    tmp_path: Path, server_db_url: str, server_storage: Storage
) -> None:
    server_storage.register_providers([("sim", "https://panel.example/v2")])
    server_storage.track_orders("sim", [7001], NOW)
    config = write_config(tmp_path / "syncd.toml", server_db_url, "https://panel.example/v2")
    _follow_sees_rows_as_they_commit(config, server_storage)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_follow_ends_cleanly_on_a_signal(synced: Path, signum: int) -> None:
    process = follow(synced)
    try:
        read_lines(process, 2)  # caught up, now waiting for new rows
        process.send_signal(signum)
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and err == ""


def test_follow_into_a_closed_pipe_ends_without_a_traceback(synced: Path) -> None:
    command = [sys.executable, "-m", "syncd", "--config", str(synced), "changes", "alerts"]
    # One alert: head leaves after it, and the follower, waiting for more, must notice.
    command.append("--follow")
    pipeline = subprocess.Popen(
        f"{' '.join(command)} | head -1", shell=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = pipeline.communicate(timeout=30)
    finally:  # a follower that never noticed must not outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pipeline.pid, signal.SIGKILL)
    shell = subprocess.CompletedProcess(command, pipeline.returncode, out, err)
    assert json.loads(shell.stdout)["id"] == 1
    assert "Traceback" not in shell.stderr and shell.stderr == ""


def test_a_database_that_does_not_exist_is_not_created_by_reading_a_feed(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo.db"
    config = write_config(tmp_path / "syncd.toml", f"sqlite:///{missing}", "https://x.example/v2")
    result = syncd(config, "changes")
    assert result.returncode == 2 and not missing.exists()
    assert (
        result.stderr
        == f"syncd: no database at {missing}: check database.url, or create it with syncd migrate\n"
    )


def test_the_parser_names_the_same_feeds_as_the_storage() -> None:
    from syncd.cli.changes import FEED_NAMES  # noqa: PLC0415
    from syncd.storage.feeds import FEEDS  # noqa: PLC0415

    assert tuple(sorted(FEEDS)) == FEED_NAMES


def test_follow_waits_out_a_database_that_fails_and_prints_every_row_once(
    synced: Path, db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database restart caught mid-read (PostgreSQL's "the database system is shutting
    down") must not end a script's pipe: the follower says so once, waits, and goes on
    from the row after the last one it printed."""
    from syncd.cli import main  # noqa: PLC0415
    from syncd.cli.changes import Outage  # noqa: PLC0415
    from syncd.errors import StorageError  # noqa: PLC0415

    monkeypatch.setattr("syncd.storage.driver.CHUNK", 1)  # a read per row: fail midway
    monkeypatch.setattr(Outage, "FIRST", 0.0)
    monkeypatch.setattr(Outage, "LONGEST", 0.0)
    stored = [row[0] for row in query(db_url, "SELECT id FROM order_changes ORDER BY id")]
    real, calls = Storage.feed_rows, []

    def failing_twice(self: Storage, feed: str, after: int, limit: int) -> Any:
        calls.append(after)
        if len(calls) in (2, 3):  # after the first row, twice in a row
            raise StorageError("database error: the database system is shutting down")
        return real(self, feed, after, limit)

    monkeypatch.setattr(Storage, "feed_rows", failing_twice)
    limit = len(stored)
    code = main(["--config", str(synced), "changes", "orders", "--follow", "--limit", str(limit)])
    out, err = capsys.readouterr()
    assert code == 0
    assert [row["id"] for row in lines(out)] == stored
    assert err.splitlines() == [
        "syncd: the database failed (database error: the database system is shutting down);"
        " trying again",
        "syncd: the database answers again; following on",
    ]
