"""One-shot commands import only what they use: no HTTP client, scheduler or migration
tool for a command that needs none of them (each costs start-up time on every call).

``syncd status`` goes further: on a database at the newest revision it reads through the
driver alone, without SQLAlchemy, SQLModel, pydantic or structlog, and shows exactly what
reading through ``Storage`` shows, odd rows included.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from syncd.cli import COMMANDS, build_parser
from syncd.cli.render import overview_json, overview_text
from syncd.cli.status import Report, read_directly, read_opened
from syncd.config import Config, find_config, load_config
from syncd.storage import open_storage
from syncd.storage.backends import backend_for
from syncd.storage.overview import _AMBIGUOUS_REQUESTS, _OPEN_ORDERS, read_plainly
from syncd.storage.urls import conninfo
from tests.conftest import mariadb_database, write_config
from tests.helpers import sql

PROBE = """
import sys
from syncd.cli import main
code = main(sys.argv[1:])
print('IMPORTED', ','.join(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)
"""
HEAVY = {"httpx", "apscheduler", "alembic"}
# What `syncd status` does without: together, most of a second of start-up.
NOT_FOR_STATUS = HEAVY | {"sqlalchemy", "sqlmodel", "pydantic", "structlog"}


def imported(config: Path, *args: str, among: set[str] = HEAVY) -> str:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, "--config", str(config), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    line = next(line for line in run.stderr.splitlines() if line.startswith("IMPORTED"))
    modules = set(line.removeprefix("IMPORTED").strip().split(","))
    return ",".join(sorted(modules & among))


@pytest.mark.parametrize(
    "args", [("status",), ("packages",), ("order", "list"), ("changes",), ("status", "--json")]
)
def test_reading_commands_import_no_client_scheduler_or_migrations(
    tmp_path: Path, db_url: str, args: tuple[str, ...]
) -> None:
    config = write_config(tmp_path / "syncd.toml", db_url, "https://panel.example/v2")
    assert imported(config, "migrate") == "alembic"  # creates the database
    assert imported(config, *args) == ""


@pytest.mark.parametrize("args", [("status",), ("order", "list")])
def test_status_and_order_list_start_no_event_loop(
    tmp_path: Path, db_url: str, args: tuple[str, ...]
) -> None:
    """asyncio (with ssl and sockets) was a fifth of ``order list``'s start-up; neither
    command needs it (psycopg imports it on PostgreSQL, so SQLite tells)."""
    config = write_config(tmp_path / "syncd.toml", db_url, "https://panel.example/v2")
    assert imported(config, "migrate") == "alembic"  # creates the database
    assert imported(config, "order", "show", "1", among={"asyncio"}) == "asyncio"
    assert imported(config, *args, among={"asyncio"}) == ""


@pytest.mark.parametrize("args", [("status",), ("status", "--json")])
def test_status_imports_no_sqlalchemy_sqlmodel_pydantic_or_structlog(
    tmp_path: Path, any_db_url: str, args: tuple[str, ...]
) -> None:
    config = write_config(tmp_path / "syncd.toml", any_db_url, "https://panel.example/v2")
    assert "sqlalchemy" in imported(config, "migrate", among=NOT_FOR_STATUS)
    assert imported(config, *args, among=NOT_FOR_STATUS) == ""


# -- the same report either way ------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LONG_NAME = "p" * 1_000_000  # a provider name of 1 MB, as a storefront could write
EXTRA_PROVIDERS = """
[[providers]]
name = "other"
url = "https://other.example/v2"
token = "other-token-5f3a9c"
"""


def config_for(tmp_path: Path, url: str) -> Config:
    path = write_config(tmp_path / "syncd.toml", url, "https://panel.example/v2")
    return load_config(find_config(str(path), {}))


def registered(url: str) -> None:
    """A database at the newest revision with the configured provider in it."""
    storage = open_storage(url)
    storage.register_providers([("sim", "https://panel.example/v2")])
    storage.close()


Run = Callable[..., None]


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database(request: pytest.FixtureRequest, db_url: str) -> Iterator[tuple[str, Run]]:
    """A registered database on each backend, and a way to write to it as a consumer."""
    if request.param == "sqlite":
        registered(db_url)
        path = db_url.removeprefix("sqlite:///")

        def on_sqlite(statement: str, *params: object) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute(statement, [stored(p) for p in params])

        yield db_url, on_sqlite
        return
    if request.param == "mariadb":
        with mariadb_database() as url:
            registered(url)
            engine = sa.create_engine(url)
            forms = backend_for(engine)

            def on_mariadb(statement: str, *params: object) -> None:
                values = [forms.time_value(p) if isinstance(p, datetime) else p for p in params]
                with engine.begin() as conn:
                    conn.exec_driver_sql(statement.replace("?", "%s"), tuple(values))

            yield url, on_mariadb
            engine.dispose()
        return
    pg_url = request.getfixturevalue("pg_url")
    registered(pg_url)

    def on_postgres(statement: str, *params: object) -> None:
        with psycopg.connect(conninfo(pg_url)) as conn:
            conn.execute(statement.replace("?", "%s"), params)

    yield pg_url, on_postgres


def stored(value: object) -> object:
    """A value as syncd stores it in SQLite: times as UTC text, money as text."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return str(value) if isinstance(value, Decimal) else value


def directly(config: Config) -> Report:
    report = read_directly(config, NOW)
    assert report is not None, "status did not take the driver's way"
    return report


def assert_same_report(config: Config) -> Report:
    fast, full = directly(config), read_opened(config, NOW)
    assert fast == full
    shown = (fast.providers, fast.backlog)
    assert overview_text(*shown, NOW, fast.instances) == overview_text(
        full.providers, full.backlog, NOW, full.instances
    )
    assert json.dumps(overview_json(*shown, fast.instances), indent=2) == json.dumps(
        overview_json(full.providers, full.backlog, full.instances), indent=2
    )
    return fast


def busy(run: Run) -> None:
    """Every table status reads, with rows of every kind syncd writes itself."""
    run("UPDATE providers SET balance = 12.5, currency = 'USD', balance_low = ?, health = ?,"
        " last_error = ?, balance_checked_at = ?, throttled = ?, throttled_since = ?"
        " WHERE name = 'sim'", True, "down", "HTTP 502 \x1b[2J", NOW - timedelta(hours=2), True,
        NOW - timedelta(minutes=20))  # fmt: skip
    for service, active in ((1, True), (2, True), (3, False)):
        run("INSERT INTO packages (provider, service_id, name, type, category, rate, min, max,"
            " active, first_seen_at, updated_at, extra) VALUES ('sim', ?, 'n', 'Default', 'c',"
            " 1, 1, 10, ?, ?, ?, '{}')", service, active, NOW, NOW)  # fmt: skip
    for state in ("queued", "submitting", "active", "active", "ambiguous", "done", "missing"):
        run("INSERT INTO orders (provider, state) VALUES ('sim', ?)", state)
    for order, state in ((1, "ambiguous"), (2, "ambiguous"), (3, "sent"), (4, "rejected")):
        run("INSERT INTO order_requests (order_id, kind, state, provider, created_at)"
            " VALUES (?, 'refill', ?, 'sim', ?)", order, state, NOW)  # fmt: skip
    run("INSERT INTO order_requests (order_id, kind, state, provider, created_at)"
        " VALUES (9, 'cancel', 'ambiguous', 'elsewhere', ?)", NOW)  # fmt: skip
    for hours, amount in ((30, 100), (20, 90), (10, 95), (1, 40)):
        at = NOW - timedelta(hours=hours)
        run("INSERT INTO balance_snapshots (provider, balance, currency, observed_at)"
            " VALUES ('sim', ?, 'USD', ?)", Decimal(amount), at)  # fmt: skip
    run("INSERT INTO jobs (provider, job, last_success_at, last_failure_at, failing_since,"
        " last_error) VALUES ('sim', 'balance', ?, ?, ?, 'boom'), ('sim', 'catalog', ?, NULL,"
        " NULL, NULL)", NOW, NOW, NOW, NOW)  # fmt: skip
    far = datetime(9999, 1, 1, tzinfo=UTC)  # the database's clock says these still run
    run("INSERT INTO leases (name, holder, epoch, acquired_at, renewed_at, expires_at)"
        " VALUES ('sim', 'host:1:1', 4, ?, ?, ?)", NOW, NOW, far)  # fmt: skip
    run("INSERT INTO instances (id, host, pid, version, started_at, heartbeat_at) VALUES"
        " ('host:1:1', 'host', 1, '0.1.0', ?, ?), ('gone:2:2', 'gone', 2, '0.1.0', ?, ?)",
        NOW, far, NOW, NOW - timedelta(days=1))  # fmt: skip
    run("INSERT INTO alerts (id, event, payload, created_at) VALUES (1, 'balance.low', '{}', ?),"
        " (2, 'balance.low', '{}', ?)", NOW, NOW)  # fmt: skip
    run("INSERT INTO alert_deliveries (alert_id, webhook, attempts, failed_at, last_error)"
        " VALUES (1, 'ops', 1, NULL, 'HTTP 500'), (2, 'ops', 3, ?, 'gave up')", NOW)  # fmt: skip


def test_status_shows_the_same_either_way(tmp_path: Path, database: tuple[str, Run]) -> None:
    url, run = database
    config = config_for(tmp_path, url)
    assert_same_report(config)  # nothing but the provider
    busy(run)
    report = assert_same_report(config)
    (sim,) = report.providers
    assert sim.orders == {"queued": 1, "submitting": 1, "active": 2, "ambiguous": 1}
    assert sim.ambiguous_requests == 2
    assert sim.throttled and sim.throttled_since == NOW - timedelta(minutes=20)
    assert "health down, THROTTLED: only 429s since " in overview_text(
        report.providers, report.backlog, NOW
    )
    assert "  requests 2 ambiguous (refills or cancellations" in overview_text(
        report.providers, report.backlog, NOW
    )
    assert overview_json(report.providers)["providers"][0]["ambiguous_requests"] == 2
    assert sim.active_packages == 2
    assert sim.runway_hours is not None and sim.lease is not None
    assert [w.webhook for w in report.backlog] == ["ops"]
    assert [i.id for i in report.instances] == ["host:1:1"]


@pytest.mark.parametrize(
    "statements",
    [
        ["UPDATE providers SET balance = 'abc', currency = x'01', balance_low = 'yes'"],
        ["UPDATE providers SET catalog_synced_at = 'garbage', balance_checked_at = 1700000000"],
        ["INSERT INTO jobs (provider, job, last_success_at, failing_since, last_error)"
         " VALUES ('sim', 'orders', 'garbage', 'x', x'00ff')"],
        ["INSERT INTO balance_snapshots (provider, balance, observed_at)"
         " VALUES ('sim', 'abc', 'x'), ('sim', '5', 1700000000), ('sim', x'00', '2026-02-30')"],
        ["INSERT INTO packages (provider, service_id, name, type, category, rate, min, max,"
         " active, first_seen_at, updated_at, extra) VALUES ('sim', 7, 'n', 't', 'c', '1', 1,"
         " 2, 2, 'x', 'x', '{}'), ('sim', 8, 'n', 't', 'c', '1', 1, 2, 'yes', 'x', 'x', '{}')"],
        ["INSERT INTO orders (provider, state) VALUES ('sim', 'QUEUED'), (5, 'active'),"
         " ('sim', x'00'), ('nobody', 'active'), ('sim', 'active')"],
        ["INSERT INTO leases (name, holder, epoch, acquired_at, renewed_at, expires_at) VALUES"
         " ('sim', 77, 'abc', 'x', 'x', '9999-12-31 23:59:59.000000'),"
         " ('x', 'h', 1, 'x', 'x', '9999-12-31 garbage')"],
        ["INSERT INTO instances (id, host, pid, version, started_at, heartbeat_at) VALUES"
         " ('i1', 5, 'abc', 7, 'x', '9999-12-31 23:59:59.000000'),"
         " ('i2', 'h', 2, '0.1', '2026-01-01', '9999-12-31 23:59:59.000000')"],
        ["INSERT INTO alerts (id, event, payload, created_at) VALUES (1, 'x', '{}', 'x')",
         "INSERT INTO alert_deliveries (alert_id, webhook, attempts, delivered_at, last_error)"
         " VALUES (1, 'ops', 'abc', 'x', 99), (1, 'chat', 0, NULL, char(27) || '[2J')"],
        ["INSERT INTO providers (name, url, health) VALUES (?, 'https://long.example', 'up')",
         "INSERT INTO orders (provider, state) VALUES (?, 'queued')"],
    ],
)  # fmt: skip
def test_rows_garbled_by_hand_show_the_same_either_way(
    tmp_path: Path, db_url: str, statements: list[str]
) -> None:
    """SQLite keeps any value in any column: whatever a storefront wrote shows alike."""
    registered(db_url)
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        for statement in statements:
            conn.execute(statement, (LONG_NAME,) * statement.count("?"))
    assert_same_report(config_for(tmp_path, db_url))


def test_odd_values_postgresql_takes_show_the_same_either_way(tmp_path: Path, pg_url: str) -> None:
    registered(pg_url)
    name = "".join(chr(c) for c in range(0x20, 0x7F)) * 20 + "\u202e\x1b[2J"  # fits an index
    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute("UPDATE providers SET balance = 'NaN', currency = '\x1b]0;x\x07'")
        conn.execute("INSERT INTO providers (name, url) VALUES (%s, 'https://x.example')", [name])
        conn.execute("INSERT INTO orders (provider, state) VALUES (%s, 'active')", [name])
        conn.execute(
            "INSERT INTO balance_snapshots (provider, balance, observed_at) VALUES"
            " ('sim', 'NaN', now()), ('sim', 1e20, '2026-03-01 11:00:00+05:30')"
        )
    assert_same_report(config_for(tmp_path, pg_url))


def test_the_command_prints_what_the_full_way_shows(tmp_path: Path, any_db_url: str) -> None:
    """The process, end to end: `syncd status --json` (times are absolute there)."""
    registered(any_db_url)
    config = config_for(tmp_path, any_db_url)
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", config.source, "status", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    full = read_opened(config, datetime.now(UTC))
    expected = overview_json(full.providers, full.backlog, full.instances)
    assert run.stdout == json.dumps(expected, indent=2) + "\n"
    assert run.stderr == ""


# -- when only the full way shows the truth ------------------------------------------------


def test_a_provider_new_in_the_config_is_shown_as_never_synced_and_not_registered(
    tmp_path: Path, any_db_url: str
) -> None:
    """Status only reads (a role that may only SELECT runs it): a new provider shows as
    the row it will get, and a moved URL as the database holds it until a command that
    writes registers it."""
    registered(any_db_url)
    path = write_config(
        tmp_path / "syncd.toml", any_db_url, "https://moved.example/v2", extra=EXTRA_PROVIDERS
    )
    config = load_config(find_config(str(path), {}))
    run = subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(path), "status"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "other  https://other.example/v2  health up" in run.stdout.splitlines()
    assert "sim  https://panel.example/v2  health up" in run.stdout.splitlines()
    report = directly(config)
    assert [(p.name, p.url, p.catalog_synced_at) for p in report.providers] == [
        ("other", "https://other.example/v2", None),
        ("sim", "https://panel.example/v2", None),
    ]
    assert assert_same_report(config) == report
    assert sql(any_db_url, "SELECT name, url FROM providers") == [
        ("sim", "https://panel.example/v2")
    ]


def test_a_provider_no_longer_configured_is_still_shown_either_way(
    tmp_path: Path, db_url: str
) -> None:
    registered(db_url)
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("INSERT INTO providers (name, url) VALUES ('old', 'https://old.example')")
    report = assert_same_report(config_for(tmp_path, db_url))
    assert [p.name for p in report.providers] == ["old", "sim"]


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE alembic_version SET version_num = '0003'",  # opening would migrate it
        "DELETE FROM alembic_version",
        "DROP TABLE alembic_version",
        "DROP TABLE leases",  # opening reports what is wrong, as it always has
    ],
)
def test_a_database_not_at_the_newest_revision_is_left_to_the_full_way(
    tmp_path: Path, db_url: str, change: str
) -> None:
    registered(db_url)
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute(change)
    assert read_directly(config_for(tmp_path, db_url), NOW) is None


def test_a_missing_or_unreadable_database_file_is_left_to_the_full_way(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    assert read_plainly(f"sqlite:///{missing}", lambda _: True) is None
    assert not missing.exists()  # the driver's way creates nothing
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    assert read_plainly(f"sqlite:///{garbage}", lambda _: True) is None
    assert read_plainly("sqlite:///:memory:", lambda _: True) is None
    assert read_plainly("postgresql+psycopg://127.0.0.1:1/nothing", lambda _: True) is None


def test_the_driver_s_way_writes_nothing(tmp_path: Path, db_url: str) -> None:
    registered(db_url)
    path = Path(db_url.removeprefix("sqlite:///"))

    def write(snapshot: Any) -> bool:
        snapshot.db.run("INSERT INTO providers (name, url) VALUES ('w', 'https://w.example')")
        return True

    assert read_plainly(db_url, write) is None  # a read-only connection refuses
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM providers").fetchall() == [("sim",)]


# -- cheap on a big database ---------------------------------------------------------------


def test_open_orders_are_counted_by_seeking_the_index_not_by_scanning_orders(
    db_url: str,
) -> None:
    registered(db_url)
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {_OPEN_ORDERS}")]
    assert any(p.startswith("SEARCH orders USING COVERING INDEX ix_orders_due") for p in plan)
    assert not any(p.startswith("SCAN orders") for p in plan), plan


def test_ambiguous_requests_are_counted_by_seeking_the_index(db_url: str) -> None:
    registered(db_url)
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {_AMBIGUOUS_REQUESTS}")]
    assert any("USING INDEX ix_order_requests_state" in p for p in plan), plan
    assert not any(p.startswith("SCAN order_requests") for p in plan), plan


# -- parsing only the command named --------------------------------------------------------


def test_the_parser_knows_every_command() -> None:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if a.dest == "command")
    assert set(commands.choices) == COMMANDS  # type: ignore[arg-type]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_alone_parses_and_helps_as_among_all(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def outcome(parser: Any, words: list[str]) -> tuple[object, str, str]:
        try:
            result: object = vars(parser.parse_args(words))
        except SystemExit as exc:
            result = exc.code
        out, err = capsys.readouterr()
        return result, out, err

    lines = [[command, "--help"], [command, "--bogus"], ["-v", "--config", "x", command]]
    for words in lines:
        assert outcome(build_parser(command), words) == outcome(build_parser(), words)


@pytest.mark.parametrize(
    ("words", "config", "verbose"),
    [
        (["status"], None, False),
        (["-v", "--config", "a.toml", "status"], "a.toml", True),
        (["status", "--json", "-v", "--config", "a.toml"], "a.toml", True),
        (["--config", "a.toml", "-v", "order", "list"], "a.toml", True),  # kept below
        (["order", "list", "--verbose", "--config", "b.toml"], "b.toml", True),
        (["order", "--config", "b.toml", "list"], "b.toml", False),
        (["--config", "a.toml", "sync", "balance", "--config", "b.toml"], "b.toml", False),
    ],
)
def test_the_global_options_go_before_or_after_the_command_the_last_one_winning(
    words: list[str], config: str | None, verbose: bool
) -> None:
    only = "order" if "order" in words else None  # the parser built for that command alone
    for parser in (build_parser(), build_parser(only)):
        args = parser.parse_args(words)
        assert (args.config, args.verbose) == (config, verbose)


def test_status_with_its_options_after_it_stays_light(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path / "syncd.toml", db_url, "https://panel.example/v2")
    imported(config, "migrate")  # creates the database
    run = subprocess.run(
        [sys.executable, "-c", PROBE, "status", "--json", "--config", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stderr.splitlines() if line.startswith("IMPORTED"))
    assert set(line.removeprefix("IMPORTED").strip().split(",")) & NOT_FOR_STATUS == set()


def test_the_heap_is_settled_once_when_the_first_job_runner_exists() -> None:
    """What start-up made is frozen out of the collector's sight once; a daemon that makes
    runners all day must not freeze each job's leftovers."""
    code = (
        "import gc\n"
        "from syncd.process import settle_heap\n"
        "assert gc.get_freeze_count() == 0\n"
        "settle_heap()\n"
        "frozen = gc.get_freeze_count()\n"
        "assert frozen > 1000, frozen\n"
        "garbage = [[] for _ in range(5000)]\n"
        "settle_heap()\n"
        "assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_imports_no_storage_layer() -> None:
    """The parser of every command is built for --help: none may cost SQLAlchemy."""
    probe = PROBE.replace(
        "code = main(sys.argv[1:])", "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, "--help"], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0 and "changes" in run.stdout
    line = next(line for line in run.stderr.splitlines() if line.startswith("IMPORTED"))
    modules = set(line.removeprefix("IMPORTED").strip().split(","))
    assert modules & {"sqlalchemy", "sqlmodel", "pydantic", "httpx", "structlog"} == set()
