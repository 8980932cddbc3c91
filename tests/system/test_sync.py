"""Catalog and balance jobs end to end: the CLI, real HTTP to the simulator, a real database."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import structlog

from syncd import logs
from syncd.cli import main
from syncd.jobs.runner import run_pass
from syncd.models import Catalog
from syncd.provider import replies
from syncd.simulator import Fault, SimPackage, SimulatedProvider, SimulatorServer
from syncd.simulator.world import default_catalog
from syncd.storage import Storage, open_storage
from tests.conftest import TOKEN, make_config, provider_config, write_config

SERVICES = len(default_catalog())  # the simulator's catalog


@pytest.fixture
def config_path(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    return write_config(tmp_path / "syncd.toml", db_url, server.url)


def rows(db_url: str, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql).fetchall()


def catalog_rows(db_url: str) -> list[tuple[object, ...]]:
    return rows(db_url, "SELECT * FROM packages ORDER BY service_id")


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def run_process(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# -- the acceptance cases, as separate processes -----------------------------------------


def test_sync_catalog_over_real_http_fills_the_catalog(config_path: Path, db_url: str) -> None:
    done = run_process(config_path, "sync", "catalog")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"catalog sim: {SERVICES} packages ({SERVICES} added, 0 updated, 0 removed, 0 restored)"
    )
    assert done.stderr == ""
    assert rows(db_url, "SELECT count(*), sum(active) FROM packages") == [(SERVICES, SERVICES)]
    assert rows(db_url, "SELECT count(*) FROM package_changes WHERE change = 'added'") == [
        (SERVICES,)
    ]
    assert rows(
        db_url, "SELECT rate, extra, refill, cancel FROM packages WHERE service_id = 102"
    ) == [("4.5000", '{"dripfeed": false}', 1, 1)]  # a field syncd does not know, kept


def test_html_502_exits_1_with_one_line_and_leaves_the_catalog_alone(
    config_path: Path, db_url: str, server: SimulatorServer
) -> None:
    assert run(config_path, "sync", "catalog") == 0
    server.provider.set_rate(100, Decimal("9.99"))  # a change that must not land
    before = catalog_rows(db_url)
    server.provider.inject(Fault.HTML_502, times=None)

    done = run_process(config_path, "sync", "catalog")

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "syncd: catalog job for sim failed: "
        'HTTP 502 (HTML page "502 Bad Gateway") (after 3 attempts)'
    ]
    assert catalog_rows(db_url) == before
    assert server.provider.count("packages") == 1 + 3  # the first sync, then three attempts
    assert rows(
        db_url, "SELECT job, last_error IS NOT NULL, failing_since IS NOT NULL FROM jobs"
    ) == [("catalog", 1, 1)]


# -- catalog changes ---------------------------------------------------------------------


def test_changes_removals_and_restores_are_recorded(
    config_path: Path, db_url: str, server: SimulatorServer
) -> None:
    sim = server.provider
    assert run(config_path, "sync", "catalog") == 0
    sim.set_rate(101, Decimal("0.15"))
    sim.remove_package(105)
    sim.add_package(SimPackage(900, "New", "Default", "New things", Decimal("1"), 10, 100))
    assert run(config_path, "sync", "catalog") == 0
    sim.restore_package(105)
    assert run(config_path, "sync", "catalog") == 0

    changes = rows(
        db_url,
        "SELECT service_id, change, field, old_value, new_value FROM package_changes"
        f" WHERE id > {SERVICES} ORDER BY id",
    )
    assert changes == [
        (101, "updated", "rate", "0.1200", "0.15"),
        (900, "added", None, None, None),
        (105, "removed", None, None, None),
        (105, "restored", None, None, None),
    ]
    assert rows(db_url, "SELECT active, removed_at FROM packages WHERE service_id = 105") == [
        (1, None)
    ]


def test_a_removed_package_keeps_its_row_inactive(
    config_path: Path, db_url: str, server: SimulatorServer
) -> None:
    assert run(config_path, "sync", "catalog") == 0
    server.provider.remove_package(105)
    assert run(config_path, "sync", "catalog") == 0
    ((active, removed_at),) = rows(
        db_url, "SELECT active, removed_at FROM packages WHERE service_id = 105"
    )
    assert active == 0 and removed_at is not None


def test_json_numbers_and_string_numbers_give_the_same_catalog(tmp_path: Path) -> None:
    catalogs = []
    for as_json in (False, True):
        db_url = f"sqlite:///{tmp_path / f'{as_json}.db'}"
        with SimulatorServer(SimulatedProvider(token=TOKEN, numbers_as_json=as_json)) as server:
            config = write_config(tmp_path / f"{as_json}.toml", db_url, server.url)
            assert run(config, "sync", "catalog") == 0
        catalogs.append(
            rows(db_url, "SELECT service_id, name, rate, min, max FROM packages ORDER BY 1")
        )
    assert catalogs[0] == catalogs[1] and len(catalogs[0]) == SERVICES


def test_the_key_dialect_end_to_end(tmp_path: Path, db_url: str) -> None:
    with SimulatorServer(SimulatedProvider(dialect="key", token=TOKEN)) as server:
        config = write_config(tmp_path / "k.toml", db_url, server.url, extra='dialect = "key"')
        assert run(config, "sync") == 0
        assert (
            server.provider.count("packages") == 1
            and server.provider.count("unknown:packages") == 0
        )
    assert rows(db_url, "SELECT count(*) FROM packages") == [(SERVICES,)]
    assert rows(db_url, "SELECT balance, currency FROM providers") == [("100.00", "USD")]


# -- the safety valve, through the job ---------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.NOT_A_LIST, "catalog reply is an object, not a list of packages"),
        (Fault.ERROR_STRING, "job for sim failed: Service temporarily unavailable"),
        (Fault.ERROR_LIST, "job for sim failed: Service temporarily unavailable"),
        (Fault.ERRORS_LIST, "job for sim failed: Service temporarily unavailable"),
        (Fault.ERRORS_OBJECT, "job for sim failed: action: Service temporarily unavailable"),
        (Fault.EMPTY_LIST, "returned an empty catalog; refused"),
    ],
)
def test_a_reply_that_is_not_a_catalog_is_refused_and_changes_nothing(
    config_path: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str],
    fault: Fault, message: str,
) -> None:  # fmt: skip
    assert run(config_path, "sync", "catalog") == 0
    before = catalog_rows(db_url)
    capsys.readouterr()
    server.provider.inject(fault)
    assert run(config_path, "sync", "catalog") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and message in err[0]
    assert catalog_rows(db_url) == before


@pytest.mark.parametrize("fault", [Fault.NOT_A_LIST, Fault.ERROR_STRING])
def test_force_never_applies_an_error_object_or_a_non_list(
    config_path: Path, db_url: str, server: SimulatorServer, fault: Fault
) -> None:
    assert run(config_path, "sync", "catalog") == 0
    before = catalog_rows(db_url)
    server.provider.inject(fault)
    assert run(config_path, "sync", "catalog", "--force") == 1
    assert catalog_rows(db_url) == before


def test_losing_most_of_the_catalog_is_refused_until_forced(
    config_path: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_path, "sync", "catalog") == 0
    gone = SERVICES // 2 + 1  # more than half
    for service in range(100, 100 + gone):
        server.provider.remove_package(service)
    before = catalog_rows(db_url)
    capsys.readouterr()

    assert run(config_path, "sync", "catalog") == 1
    assert f"{gone} of {SERVICES} active packages would be removed" in capsys.readouterr().err
    assert catalog_rows(db_url) == before

    assert run(config_path, "sync", "catalog", "--force") == 0
    assert rows(db_url, "SELECT count(*) FROM packages WHERE active") == [(SERVICES - gone,)]


def test_an_empty_catalog_is_applied_only_when_forced(
    config_path: Path, db_url: str, server: SimulatorServer
) -> None:
    assert run(config_path, "sync", "catalog") == 0
    server.provider.inject(Fault.EMPTY_LIST, times=2)
    assert run(config_path, "sync", "catalog") == 1
    assert run(config_path, "sync", "catalog", "--force") == 0
    assert rows(db_url, "SELECT count(*) FROM packages WHERE active") == [(0,)]


# -- balance -----------------------------------------------------------------------------


def test_balance_snapshots_only_on_change(
    config_path: Path, db_url: str, server: SimulatorServer
) -> None:
    assert run(config_path, "sync", "balance") == 0
    assert run(config_path, "sync", "balance") == 0
    server.provider.balance = Decimal("87.12345678")
    assert run(config_path, "sync", "balance") == 0
    assert rows(db_url, "SELECT balance, currency FROM balance_snapshots ORDER BY id") == [
        ("100.00", "USD"),
        ("87.12345678", "USD"),
    ]
    ((balance, checked),) = rows(db_url, "SELECT balance, balance_checked_at FROM providers")
    assert balance == "87.12345678" and checked is not None


def test_a_balance_without_currency_keeps_the_known_one(
    config_path: Path, db_url: str, server: SimulatorServer
) -> None:
    assert run(config_path, "sync", "balance") == 0
    server.provider.currency = None
    server.provider.balance = Decimal("50")
    assert run(config_path, "sync", "balance") == 0
    assert rows(db_url, "SELECT currency FROM providers") == [("USD",)]
    assert rows(
        db_url, "SELECT balance, currency FROM balance_snapshots ORDER BY id DESC LIMIT 1"
    ) == [("50", None)]


# -- failures, exit codes and what gets printed ------------------------------------------


def test_a_bad_token_fails_the_job_with_an_auth_error(
    tmp_path: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "bad.toml", db_url, server.url, token="not-the-token")
    assert run(config, "sync", "balance") == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "token rejected: Invalid API key" in line
    assert server.provider.count("balance") == 1  # an auth error is not retried


def test_an_unreachable_provider_fails_with_a_clear_line(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "c.toml", db_url, "http://127.0.0.1:9/api/v2")
    assert run(config, "sync") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("cannot connect" in line for line in err)


def test_one_failing_job_does_not_stop_the_other(
    config_path: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.provider.inject(Fault.HTML_200, actions=["packages"], times=None)
    assert run(config_path, "sync", "all") == 1
    out, err = capsys.readouterr()
    assert out.startswith("balance sim: 100 USD")
    assert "catalog job for sim failed" in err and "HTML page" in err
    assert rows(db_url, "SELECT balance FROM providers") == [("100.00",)]


def test_the_token_never_appears_in_any_output(
    config_path: Path, server: SimulatorServer, capfd: pytest.CaptureFixture[str]
) -> None:
    sim = server.provider
    for fault in (
        Fault.HTML_502,
        Fault.TRUNCATED_JSON,
        Fault.RATE_LIMIT,
        Fault.ERROR_LIST,
        Fault.RESET,
    ):
        sim.inject(fault, times=2)
        run(config_path, "-v", "sync")
        run(config_path, "-v", "check")
        run(config_path, "status", "--json")
    out, err = capfd.readouterr()
    assert "retry.scheduled" in err  # the log stream really was on
    assert TOKEN not in out + err


def test_check_calls_balance_once_per_provider(
    config_path: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    assert run(config_path, "check") == 0
    out = capsys.readouterr().out
    assert "provider sim: ok, balance 100 USD" in out
    assert server.provider.count("balance") == 1
    assert not Path(db_url.removeprefix("sqlite:///")).exists()  # check never opens the database


def test_check_fails_with_exit_1_when_a_provider_fails(
    config_path: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.provider.inject(Fault.ERROR_STRING)
    assert run(config_path, "check") == 1
    assert "Service temporarily unavailable" in capsys.readouterr().err


def test_status_json_reports_what_the_jobs_did(
    config_path: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_path, "sync") == 0
    server.provider.inject(Fault.HTML_502, times=None, actions=["balance"])
    assert run(config_path, "sync", "balance") == 1
    capsys.readouterr()
    assert run(config_path, "status", "--json") == 0
    (provider,) = json.loads(capsys.readouterr().out)["providers"]
    assert provider["balance"] == "100" and provider["active_packages"] == SERVICES
    assert provider["jobs"]["catalog"]["ok"] is True
    assert provider["jobs"]["balance"]["ok"] is False
    assert "HTTP 502" in provider["jobs"]["balance"]["last_error"]


def test_status_text_names_a_failing_job(
    config_path: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.provider.inject(Fault.EMPTY_LIST)
    assert run(config_path, "sync", "catalog") == 1
    capsys.readouterr()
    assert run(config_path, "status") == 0
    assert "job catalog  FAILING since" in capsys.readouterr().out


def test_an_unknown_provider_is_a_usage_error(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_path, "sync", "--provider", "nope") == 2
    assert capsys.readouterr().err == "syncd: unknown provider 'nope' (configured: sim)\n"


def test_a_usage_error_shows_the_arguments_escaped(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(config_path, "status", "\x1b]0;pwned\x07")
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "syncd: unrecognized arguments: \\x1b]0;pwned\\x07 (see 'syncd --help')\n"
    )


def test_a_locked_database_fails_the_job_and_loses_nothing(
    config_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_path, "sync", "catalog") == 0
    before = catalog_rows(db_url)
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        capsys.readouterr()
        assert run(config_path, "sync", "catalog") == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "database is locked" in capsys.readouterr().err
    assert catalog_rows(db_url) == before


def test_the_demo_runs_and_exits_0() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "syncd", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{SERVICES} packages ({SERVICES} added" in done.stdout
    assert "refused" in done.stdout and "HTTP 502" in done.stdout
    assert "-> done Completed" in done.stdout and "-> done Partial" in done.stdout
    assert "-> rejected (quantity 20 is outside" in done.stdout
    # The price guard holds an order, then lets it go; a refill goes Pending to Completed.
    assert "queued: held: the package's rate 0.95 is above the order's max_rate 0.5" in done.stdout
    assert "refill request 1: sent (Pending)" in done.stdout
    assert "refill request 1: done (Completed)" in done.stdout
    for event in ("balance.low", "package.rate_changed", "provider.down", "provider.up",
                  "catalog.suspicious", "balance.recovered", "order.held"):  # fmt: skip
        assert f" {event} (signature ok): " in done.stdout, event
    assert "Traceback" not in done.stderr
    drip_feed_and_subscription_progress(done.stdout)


def drip_feed_and_subscription_progress(out: str) -> None:
    """The demo's order types step: a drip-feed seen run by run and a subscription post by
    post, each only ever rising, to the end."""
    step = out[out.index("order types:") :]
    step = step[: step.index("\n[")]  # up to the next step
    drip = [line for line in step.splitlines() if "[runs 3, interval 1]" in line]
    subscription = [line for line in step.splitlines() if '[username "demo_shop"' in line]
    runs = [int(line.split("; runs ")[1].split(",")[0]) for line in drip]
    posts = [int(line.rsplit("posts ", 1)[1]) for line in subscription]
    assert runs == sorted(runs) and len(set(runs)) >= 2 and runs[-1] == 3, step
    assert posts == sorted(posts) and len(set(posts)) >= 2 and posts[-1] == 3, step
    assert drip[-1].split(" -> ")[1].startswith("done Completed"), step
    assert subscription[-1].split(" -> ")[1].startswith("done Completed"), step
    assert "(Active)" in subscription[0], step  # the provider's word beside the fold


# -- syncd packages ------------------------------------------------------------------------


def test_packages_lists_the_catalog_with_its_flags(
    config_path: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.provider.add_package(
        SimPackage(901, "Likes \x1b[2J [Fast]", "Default", "Likes", Decimal("0.12345678"), 10, 99)
    )
    assert run(config_path, "sync", "catalog") == 0
    server.provider.remove_package(105)
    assert run(config_path, "sync", "catalog") == 0
    capsys.readouterr()

    assert run(config_path, "packages", "--json") == 0
    listed = {p["service_id"]: p for p in json.loads(capsys.readouterr().out)}
    assert len(listed) == SERVICES and 105 not in listed
    assert listed[102] | {"name": "-"} == {
        "provider": "sim", "service_id": 102, "name": "-", "type": "Custom Comments",
        "category": "Instagram Comments", "rate": "4.5", "min": 5, "max": 1000,
        "refill": True, "cancel": True, "dripfeed": False, "needs": "comments (1 per unit)",
        "active": True, "removed_at": None,
    }  # fmt: skip
    assert (listed[101]["refill"], listed[101]["cancel"]) == (False, False)
    assert listed[901]["rate"] == "0.12345678"

    assert run(config_path, "packages", "--provider", "sim", "--all") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + SERVICES + 1  # a heading, the catalog (105 removed) and 901
    (removed,) = [line for line in lines if line.startswith("sim") and " 105 " in line]
    assert removed.endswith("(removed)")
    (odd,) = [line for line in lines if " 901 " in line]
    assert "\x1b" not in odd and "Likes \\x1b[2J [Fast]" in odd
    assert "0.12345678" in odd


def test_packages_before_any_catalog_says_how_to_get_one(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_path, "migrate") == 0
    capsys.readouterr()
    assert run(config_path, "packages") == 0
    assert capsys.readouterr().out == "no packages yet: run syncd sync catalog\n"
    assert run(config_path, "packages", "--provider", "nope") == 2


def test_sigterm_ends_the_demo_and_removes_its_temporary_files(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    demo = subprocess.Popen(
        [sys.executable, "-m", "syncd", "demo", "--forever"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("syncd-demo-*")):
        assert time.monotonic() < deadline and demo.poll() is None
        time.sleep(0.05)
    demo.send_signal(signal.SIGTERM)
    _, err = demo.communicate(timeout=30)
    assert "Traceback" not in err
    assert list(tmp_path.glob("syncd-demo-*")) == []


def test_a_failing_job_is_logged_when_it_starts_failing_and_when_it_recovers(
    db_url: str, server: SimulatorServer
) -> None:
    config = make_config(db_url, provider_config(server.url))
    storage = open_storage(db_url)
    server.provider.inject(Fault.HTML_502, times=9, actions=["balance"])  # 3 passes x 3 tries
    logs.configure(level="debug", stream=io.StringIO())  # earlier tests may have muted it
    try:
        with structlog.testing.capture_logs() as logged:
            for _ in range(4):
                asyncio.run(run_pass(config, storage, ["balance"]))
    finally:
        storage.close()
    finished = [
        (e["log_level"], e["status"], e.get("failing_before"))
        for e in logged
        if e["event"] == "job.finished"
    ]
    assert finished == [
        ("warning", "error", False),  # it starts failing: news
        ("debug", "error", True),  # still failing: not news
        ("debug", "error", True),
        ("info", "ok", None),
    ]
    assert [e["event"] for e in logged if e["event"] == "job.recovered"] == ["job.recovered"]


def test_a_one_shot_pass_longer_than_its_lease_keeps_the_lease_and_writes_its_answers(
    tmp_path: Path, db_url: str, server: SimulatorServer
) -> None:
    """A sweep that outlasts lease_ttl (a big shop, a slow provider) renews its lease as
    it goes: without that, every write after the lease ran out was refused."""
    config = write_config(
        tmp_path / "syncd.toml", db_url, server.url, timeout="20s",
        extra='\n[cluster]\nlease_ttl = "6s"',
    )  # fmt: skip
    assert run(config, "sync", "catalog") == 0
    (placed,) = server.provider.create_orders(1)
    assert run(config, "order", "track", "--provider", "sim", str(placed)) == 0
    server.provider.action_latency["status"] = 8.0  # one status call outlasts the lease
    assert run(config, "sync", "orders") == 0
    ((checked_at, status),) = rows(db_url, "SELECT checked_at, status FROM orders")
    assert checked_at is not None and status is not None


def test_the_same_catalog_reply_again_is_not_read_again(
    config_path: Path,
    db_url: str,
    server: SimulatorServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run(config_path, "sync", "catalog") == 0
    before = rows(db_url, "SELECT * FROM packages ORDER BY service_id")
    ((first_synced,),) = rows(db_url, "SELECT catalog_synced_at FROM providers")
    read: list[object] = []
    real = replies.parse_packages

    def counted(reply: object) -> Catalog:
        read.append(1)
        return real(reply)

    monkeypatch.setattr(replies, "parse_packages", counted)
    capsys.readouterr()

    assert run(config_path, "sync", "catalog") == 0
    assert f"unchanged, the same reply as the last one applied ({SERVICES} active)" in (
        capsys.readouterr().out
    )
    assert read == []  # neither parsed nor compared
    assert rows(db_url, "SELECT * FROM packages ORDER BY service_id") == before
    ((synced,),) = rows(db_url, "SELECT catalog_synced_at FROM providers")
    assert str(synced) > str(first_synced)

    assert run(config_path, "sync", "catalog", "--force") == 0  # --force reads it whole
    assert read == [1]
    server.provider.remove_package(100)  # another reply: read and applied
    assert run(config_path, "sync", "catalog") == 0
    assert rows(db_url, "SELECT active FROM packages WHERE service_id = 100") == [(0,)]
    assert read == [1, 1]


def test_a_refused_catalog_reply_is_refused_again_when_it_comes_again(
    config_path: Path, db_url: str, server: SimulatorServer
) -> None:
    """Only an applied reply is remembered: the same suspicious reply twice is refused
    twice, never taken for 'unchanged'."""
    assert run(config_path, "sync", "catalog") == 0
    server.provider.inject(Fault.EMPTY_LIST, times=2)
    assert run(config_path, "sync", "catalog") == 1
    assert run(config_path, "sync", "catalog") == 1
    assert rows(db_url, "SELECT count(*) FROM packages WHERE active") == [(SERVICES,)]


def test_a_reply_with_unreadable_entries_is_read_and_reported_every_time(
    config_path: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Remembering it would skip its report of the entries left as they were."""
    assert run(config_path, "sync", "catalog") == 0
    server.provider.set_rate(101, Decimal("1e30"))
    for _ in range(2):
        capsys.readouterr()
        assert run(config_path, "sync", "catalog") == 0
        assert "1 unreadable entry left as they were (#101" in capsys.readouterr().out


def test_a_database_file_deleted_during_a_pass_ends_the_command_with_one_line(
    config_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(db_url.removeprefix("sqlite:///"))
    recorded = Storage.record_job_success

    def then_deleted(self: Storage, *args: Any, **kwargs: Any) -> bool:
        done = recorded(self, *args, **kwargs)
        path.unlink(missing_ok=True)  # a mistaken rm, once the catalog job is done
        return done

    with patch.object(Storage, "record_job_success", then_deleted):
        code = run(config_path, "sync", "all")
    out, err = capsys.readouterr()
    assert code == 1
    said = f"syncd: the database file {path} was deleted while syncd ran; stopping so that"
    assert err.startswith(said) and err.count("\n") == 1  # that line, once, nothing more
    assert out == ""  # no job reported as failed for it
    assert not path.exists()


def test_an_entry_without_a_service_id_removes_no_package(
    config_path: Path, db_url: str, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The entry could be any package the reply leaves out: none of them is removed, and
    the rest of the reply is applied."""
    assert run(config_path, "sync", "catalog") == 0
    fields = ("service", "name", "type", "category", "rate", "min", "max", "refill", "cancel")
    listed = rows(db_url, f"SELECT {', '.join(fields[1:])}, service_id FROM packages")
    entries: list[object] = [
        dict(zip(fields, (row[-1], *row[:-1]), strict=True)) | {"rate": str(row[3])}
        for row in listed
        if row[-1] not in (100, 101)
    ]
    entries.append({"name": "Followers", "rate": "0.9", "min": 10, "max": 1000})
    entries.append({"service": 900, "name": "New", "rate": "1.5", "min": 10, "max": 100})
    server.provider.inject(Fault.REPLY, reply=entries)
    capsys.readouterr()
    assert run(config_path, "sync", "catalog") == 0
    out = capsys.readouterr().out
    assert "0 removed" in out and "2 packages not listed kept active (#100, #101)" in out
    assert rows(db_url, "SELECT active FROM packages WHERE service_id IN (100, 101)") == [
        (1,),
        (1,),
    ]
    assert rows(db_url, "SELECT change FROM package_changes WHERE service_id <> 900") == [
        ("added",)
    ] * len(listed)  # the first sync's: nothing removed, nothing else changed
    assert rows(db_url, "SELECT event FROM alerts") == [("package.added",)]


@pytest.mark.parametrize(
    "words",
    [("-v", "sync", "balance"), ("sync", "balance", "-v"), ("sync", "-v", "balance")],
    ids=["before", "after", "between"],
)
def test_verbose_shows_the_log_wherever_it_stands_on_the_line(
    config_path: Path, capsys: pytest.CaptureFixture[str], words: tuple[str, ...]
) -> None:
    assert main(["--config", str(config_path), *words]) == 0
    assert "job.finished" in capsys.readouterr().err  # the log stream, shown
    assert main(["--config", str(config_path), "sync", "balance"]) == 0
    assert "job.finished" not in capsys.readouterr().err  # and not without -v


def test_the_config_may_follow_the_command(
    config_path: Path, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one given last wins: a value after the command, read later, overrides one before
    it (a wrapper script that puts its own --config first can still be overridden)."""
    missing = tmp_path / "missing.toml"
    assert main(["sync", "balance", "--config", str(config_path)]) == 0
    assert main(["--config", str(missing), "sync", "balance", "--config", str(config_path)]) == 0
    assert rows(db_url, "SELECT count(*) FROM balance_snapshots") == [(1,)]
    capsys.readouterr()
    assert main(["--config", str(config_path), "sync", "balance", "--config", str(missing)]) == 2
    assert "missing.toml" in capsys.readouterr().err
