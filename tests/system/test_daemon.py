"""`syncd run` as systemd runs it: a real subprocess, a notify socket, signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from syncd.config import load_config
from syncd.daemon.notify import Notifier
from syncd.daemon.service import ClockWatch, Service, next_run
from syncd.process import owner, owner_is_gone
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.simulator.world import default_catalog
from tests.conftest import TOKEN, write_config
from tests.fakes import FakeClock
from tests.helpers import Daemon, query, syncd, wait_until

SERVICES = len(default_catalog())  # the simulator's catalog

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "syncd.service"
SECRET = "whsec_c3luY2QtdGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ=="


def test_run_notifies_systemd_runs_every_job_and_stops_on_sigterm(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    config = write_config(
        tmp_path / "syncd.toml", db_url, server.url, extra='orders_interval = "1s"'
    )
    # An order placed elsewhere, so that the orders job has something to write.
    (tracked,) = server.provider.create_orders(1)
    assert syncd(config, "order", "track", "--provider", "sim", str(tracked)).returncode == 0
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)

    daemon.wait_for("READY=1")
    daemon.wait_for("WATCHDOG=1")
    wait_until(lambda: query(db_url, "SELECT count(*) FROM packages") == [(SERVICES,)])
    wait_until(lambda: query(db_url, "SELECT count(*) FROM balance_snapshots") == [(1,)])
    # Any status: on a loaded machine the first pass may come after the order's Pending.
    wait_until(lambda: query(db_url, "SELECT status IS NOT NULL FROM orders") == [(1,)])
    wait_until(
        lambda: len(query(db_url, "SELECT job FROM jobs WHERE last_success_at IS NOT NULL")) == 3
    )
    daemon.wait_for("STATUS=1 providers, 4 jobs ran, 0 failing")  # catalog, balance, orders, alerts
    ready = next(i for i, m in enumerate(daemon.messages) if "READY=1" in m)
    assert not any("WATCHDOG=1" in m for m in daemon.messages[:ready])  # never before READY

    code, took, _, err = daemon.stop()
    assert code == 0 and took < 10
    assert "STOPPING=1" in daemon.messages[-1]
    lines = [json.loads(line) for line in err.splitlines()]  # JSON lines: stderr is no TTY
    job_lines = [line for line in lines if line.get("job") not in (None, "alerts")]
    assert {line["job"] for line in job_lines} == {"catalog", "balance", "orders"}
    assert all(line["provider"] == "sim" for line in job_lines)  # every line of a provider job
    assert lines[-1]["event"] == "daemon.stopped"


def test_sigterm_in_a_long_sweep_exits_0_within_10_seconds_and_keeps_batches_whole(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    ids = server.provider.create_orders(3000)
    config = write_config(tmp_path / "s.toml", db_url, server.url, extra="max_concurrency = 1")
    assert syncd(config, "sync", "catalog").returncode == 0
    query(db_url, "SELECT 1")
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.executemany(
            "INSERT INTO orders (provider, provider_order_id, state, next_check_at)"
            " VALUES ('sim', ?, 'active', '2000-01-01 00:00:00')",
            [(i,) for i in ids],
        )
    server.provider.latency = 0.2  # 30 calls of 0.2 s: the sweep is still running at SIGTERM
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    checked_count = "SELECT count(*) FROM orders WHERE checked_at IS NOT NULL"
    wait_until(lambda: cast(int, query(db_url, checked_count)[0][0]) > 0)
    code, took, _, err = daemon.stop()
    assert code == 0 and took < 10, err
    (checked,) = query(db_url, checked_count)[0]
    assert isinstance(checked, int)
    assert 0 < checked < 3000 and checked % 100 == 0  # whole batches only
    assert query(db_url, "SELECT count(*) FROM order_changes")[0][0] == checked


def test_sighup_reloads_the_config_and_keeps_it_when_broken(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    config = write_config(tmp_path / "r.toml", db_url, server.url)
    daemon = Daemon(config, tmp_path, log_to=tmp_path / "daemon.log")
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    wait_until(
        lambda: len(query(db_url, "SELECT job FROM jobs WHERE last_success_at IS NOT NULL")) == 3
    )

    config.write_text(config.read_text() + "\nthis is not toml\n")
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "config.reload_failed" in daemon.logged())  # the signal was handled...
    assert daemon.process.poll() is None  # ...and it still serves with the old config

    write_config(config, db_url, server.url, extra='[[providers]]\nname = "second"\n'
                 f'url = "{server.url}"\ntoken = "{TOKEN}"\n')  # fmt: skip
    daemon.process.send_signal(signal.SIGHUP)
    wait_until(lambda: ("second",) in query(db_url, "SELECT name FROM providers"))
    wait_until(
        lambda: (
            query(db_url, "SELECT count(*) FROM packages WHERE provider = 'second'")
            == [(SERVICES,)]
        )
    )
    code, _, _, _ = daemon.stop()
    assert code == 0
    assert "config.reloaded" in daemon.logged()


def test_a_daemon_run_with_faults_writes_the_token_nowhere(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    config = write_config(
        tmp_path / "f.toml",
        db_url,
        server.url,
        extra='orders_interval = "1s"\nbalance_interval = "1s"\ncatalog_interval = "1s"\n'
        f'[[webhooks]]\nname = "ops"\nurl = "http://127.0.0.1:9/hook"\nsecret = "{SECRET}"\n',
    )
    server.provider.create_orders(5)
    for fault in (
        Fault.HTML_502,
        Fault.TRUNCATED_JSON,
        Fault.RATE_LIMIT,
        Fault.ERROR_LIST,
        Fault.RESET,
    ):
        server.provider.inject(fault, times=3)
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    wait_until(lambda: ("provider.down",) in query(db_url, "SELECT event FROM alerts"))
    code, _, out, err = daemon.stop()
    assert code == 0
    assert "retry.scheduled" in err and "not JSON" in err  # the faults did happen
    for secret in (TOKEN, SECRET, SECRET.removeprefix("whsec_")):
        assert secret not in out + err + "".join(daemon.messages)


def test_a_broken_config_stops_run_before_it_starts(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path / "b.toml", db_url, "http://example.com/api/v2")
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "plain http:// is refused" in done.stderr
    assert not Path(db_url.removeprefix("sqlite:///")).exists()


# -- the notify protocol and process ownership ------------------------------------------


def test_notifier_is_a_no_op_without_notify_socket() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("x")
    notifier.watchdog()
    notifier.stopping()


def test_notifier_speaks_to_abstract_sockets_and_halves_the_watchdog(tmp_path: Path) -> None:
    name = f"syncd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"})
        notifier.ready("starting")
        assert listener.recv(100) == b"READY=1\nSTATUS=starting"
    assert notifier.watchdog_interval == 15.0
    other = Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None  # meant for another process


def test_nothing_but_stopping_is_told_once_stopping(tmp_path: Path) -> None:
    """A job that ends during the shutdown sends no STATUS after STOPPING=1: systemd would
    show the daemon as working again."""
    name = f"syncd-test-stop-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(0.2)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        notifier.status("1 providers")
        notifier.stopping()
        notifier.status("1 providers, 1 jobs ran")
        assert listener.recv(100) == b"STATUS=1 providers"
        assert listener.recv(100) == b"STOPPING=1\nSTATUS=stopping"
        with pytest.raises(TimeoutError):
            listener.recv(100)


def test_owner_of_a_live_or_dead_process() -> None:
    now = datetime.now(UTC)
    assert not owner_is_gone(owner(), None, now)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    assert owner_is_gone(f"{host}:{child.pid}:1", None, now)
    assert owner_is_gone(f"{host}:{os.getpid()}:1", None, now)  # our pid, another start time
    assert owner_is_gone(None, None, now)


def test_owner_on_another_host_is_trusted_until_its_deadline() -> None:
    now = datetime.now(UTC)
    assert not owner_is_gone("elsewhere:123:456", now + timedelta(seconds=1), now)
    assert owner_is_gone("elsewhere:123:456", now, now)


def test_a_deadline_beyond_any_claim_was_set_by_a_clock_that_ran_ahead() -> None:
    now = datetime.now(UTC)
    longest = timedelta(minutes=4)
    assert not owner_is_gone("elsewhere:1:2", now + timedelta(minutes=3), now, longest=longest)
    assert owner_is_gone("elsewhere:1:2", now + timedelta(days=1), now, longest=longest)


# -- the unit file ---------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)
def test_the_unit_is_hardened_to_an_exposure_of_2_or_less() -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(UNIT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for syncd\.service: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= 2.0


def test_the_unit_is_a_notify_service_with_watchdog_credentials_and_state() -> None:
    text = UNIT.read_text(encoding="utf-8")
    for line in ("Type=notify", "Restart=on-failure", "User=syncd", "StateDirectory=syncd",
                 "ExecReload=/bin/kill -HUP $MAINPID"):  # fmt: skip
        assert f"\n{line}\n" in text, line
    assert re.search(r"\nWatchdogSec=\d+", text) and "\nLoadCredential=" in text


def test_sigterm_while_a_consumer_holds_the_write_lock_exits_within_10_seconds(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    config = write_config(
        tmp_path / "l.toml",
        db_url,
        server.url,
        extra='catalog_interval = "1s"\nbalance_interval = "1s"',
    )
    daemon = Daemon(config, tmp_path, log_to=tmp_path / "daemon.log")
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    wait_until(
        lambda: len(query(db_url, "SELECT job FROM jobs WHERE last_success_at IS NOT NULL")) == 3
    )
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # every write of the daemon now waits on this lock
    try:
        # A job stuck behind it: it waited a whole busy timeout, and waits again.
        wait_until(lambda: "storage.locked" in daemon.logged(), timeout=30)
        code, took, _, _ = daemon.stop()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 0 and took < 10, daemon.logged()


# -- a wall clock that steps -------------------------------------------------------------


def test_the_clock_watch_reports_steps_not_time_passing() -> None:
    clock = FakeClock()
    watch = ClockWatch(wall=clock.wall, monotonic=clock.monotonic)
    clock.advance(hours=1)
    assert watch.stepped() is None  # an hour went by: no step
    clock.advance(seconds=5)
    clock.step(days=-1)
    assert watch.stepped() == -86400
    assert watch.stepped() is None  # reported once
    clock.advance(seconds=5)
    clock.step(seconds=30)  # NTP slewing or a small correction: left alone
    assert watch.stepped() is None


def test_a_clock_stepped_back_a_day_runs_every_job_now(tmp_path: Path, db_url: str) -> None:
    config = load_config(write_config(tmp_path / "syncd.toml", db_url, "http://127.0.0.1:9/api/v2"))
    clock = FakeClock()

    async def scenario() -> list[datetime]:
        service = Service(tmp_path / "syncd.toml", config, Notifier({}))
        service.clock = ClockWatch(wall=clock.wall, monotonic=clock.monotonic)
        service._schedule()
        service.scheduler.start(paused=True)  # jobs are scheduled, none runs
        try:
            later = datetime.now(UTC) + timedelta(days=1)
            for job in service.scheduler.get_jobs():
                job.modify(next_run_time=later)  # as if the clock had run a day ahead
            service.check_clock()
            assert all(j.next_run_time >= later for j in service.scheduler.get_jobs())
            clock.advance(seconds=5)
            clock.step(days=-1)
            service.check_clock()
            return [j.next_run_time for j in service.scheduler.get_jobs()]
        finally:
            service.scheduler.shutdown(wait=False)

    next_runs = asyncio.run(scenario())
    assert len(next_runs) == 4  # catalog, balance, orders, alerts
    assert all(when <= datetime.now(UTC) + timedelta(seconds=1) for when in next_runs)


def test_sigterm_during_a_submission_lets_the_provider_s_answer_be_recorded(
    tmp_path: Path, db_url: str, daemons: list[Daemon]
) -> None:
    # The provider takes a second to answer an add: SIGTERM arrives while it is in flight.
    sim = SimulatedProvider(token=TOKEN, action_latency={"add": 1.5})
    with SimulatorServer(sim) as server:
        config = write_config(tmp_path / "syncd.toml", db_url, server.url, timeout="5s")
        assert syncd(config, "sync", "catalog").returncode == 0
        query(db_url, "INSERT INTO orders (provider, service_id, link, quantity) "
                      "VALUES ('sim', 100, 'https://x.example/p', 100)")  # fmt: skip
        daemon = Daemon(config, tmp_path)
        daemons.append(daemon)
        wait_until(lambda: query(db_url, "SELECT state FROM orders") == [("submitting",)])
        code, took, _, _ = daemon.stop()
    assert code == 0 and took < 10
    (provider_order_id,) = sim.orders
    assert query(db_url, "SELECT state, provider_order_id FROM orders") == [
        ("active", provider_order_id)
    ]


def test_sigterm_while_a_consumer_holds_the_lock_logs_the_answer_it_cannot_write(
    tmp_path: Path, db_url: str, daemons: list[Daemon]
) -> None:
    sim = SimulatedProvider(token=TOKEN, action_latency={"add": 1.0})
    with SimulatorServer(sim) as server:
        config = write_config(tmp_path / "syncd.toml", db_url, server.url, timeout="5s")
        assert syncd(config, "sync", "catalog").returncode == 0
        query(db_url, "INSERT INTO orders (provider, service_id, link, quantity) "
                      "VALUES ('sim', 100, 'https://x.example/p', 100)")  # fmt: skip
        daemon = Daemon(config, tmp_path)
        daemons.append(daemon)
        wait_until(lambda: query(db_url, "SELECT state FROM orders") == [("submitting",)])
        holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a consumer's long write transaction
        try:
            code, took, _, err = daemon.stop()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert code == 0 and took < 10
    (provider_order_id,) = sim.orders
    logged = [json.loads(line) for line in err.splitlines()]
    taken = [line for line in logged if line.get("provider_order_id") == provider_order_id]
    assert taken and taken[0]["order_id"] == 1, err  # the answer is on record


def test_a_log_that_cannot_be_written_does_not_stop_the_daemon(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    config = write_config(tmp_path / "syncd.toml", db_url, server.url)
    with open("/dev/full", "w") as full:  # every log line fails: no space left
        daemon = Daemon(config, tmp_path, stderr=full)
        daemons.append(daemon)
        daemon.wait_for("READY=1")
        wait_until(lambda: query(db_url, "SELECT count(*) FROM packages") == [(SERVICES,)])
        daemon.wait_for("STATUS=1 providers, 4 jobs ran, 0 failing")
        code, took, _, _ = daemon.stop()
    assert code == 0 and took < 10


def test_a_provider_taken_over_goes_on_with_the_last_holder_s_schedule() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert next_run(None, hour, now) == now  # never ran: at once
    assert next_run(now - timedelta(minutes=20), hour, now) == now + timedelta(minutes=40)
    assert next_run(now - 2 * hour, hour, now) == now  # overdue
    assert next_run(now + timedelta(minutes=3), hour, now) == now + timedelta(minutes=63)
    assert next_run(now + timedelta(days=1), hour, now) == now  # a clock that ran ahead


@pytest.mark.parametrize("accident", ["deleted", "replaced by another file"])
def test_a_database_file_deleted_or_replaced_under_the_daemon_stops_it_with_one_line(
    tmp_path: Path, db_url: str, server: SimulatorServer, daemons: list[Daemon], accident: str
) -> None:
    config = write_config(tmp_path / "gone.toml", db_url, server.url)
    log = tmp_path / "daemon.log"
    daemon = Daemon(config, tmp_path, log_to=log)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    path = Path(db_url.removeprefix("sqlite:///"))
    if accident == "deleted":
        path.unlink()  # a mistaken rm
    else:
        restored = tmp_path / "restored.db"
        with sqlite3.connect(restored) as conn:
            conn.execute("CREATE TABLE restored_marker (a)")
        conn.close()
        restored.replace(path)  # a restore moved over the live file
    daemon.process.send_signal(signal.SIGHUP)  # a reload writes the providers at once

    code = daemon.process.wait(timeout=15)
    assert code == 1  # systemd (Restart=on-failure) starts it again
    said = f"the database file {path} was {accident} while syncd ran; stopping so that nothing"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    telling = [line for line in lines if said in json.dumps(line)]
    assert [line["event"] for line in telling] == ["storage.file_gone"]
    assert telling[0]["level"] == "error"
    assert lines[-1]["event"] == "daemon.stopped" and lines[-1]["status"] == 1
    assert not any("Traceback" in json.dumps(line) for line in lines)
    assert path.exists() == (accident != "deleted")  # no new empty file was made
