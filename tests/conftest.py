"""Shared fixtures: a simulator on loopback, a migrated SQLite database, configs; and the
hypothesis profiles (``ci`` by default, ``HYPOTHESIS_PROFILE=long`` for a deeper search)."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import stamina
import structlog
from hypothesis import HealthCheck, settings

from syncd import logs
from syncd.config import Config, DatabaseConfig, LoggingConfig, ProviderConfig
from syncd.provider import pace
from syncd.secret import Secret
from syncd.simulator import SimulatedProvider, SimulatorServer
from syncd.storage import Storage, open_storage
from tests.fakes import FakeClock, Receiver
from tests.helpers import Daemon
from tests.lock_order import LockOrder, lock_order

TOKEN = "sim-token-5f3a9c"  # distinctive, so a leak is easy to find in any output

# Property tests: a bounded number of cases in CI; HYPOTHESIS_PROFILE=long for many more.
# No deadline: the first examples pay for compiling patterns, and a loaded machine is slow.
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def instant_retries() -> Iterator[None]:
    """Retries keep their attempt counts but do not sleep (tests that time them opt out)."""
    with stamina.set_testing(True, attempts=3, cap=True):
        yield


@pytest.fixture(autouse=True)
def instant_pauses(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Pauses a 429 asks for pass at once, like retries, and are recorded in ``slept``
    (tests that time them opt out by giving their ``Pace`` a timer of their own)."""
    clock = FakeClock()
    monkeypatch.setattr(pace, "TIMER", clock)
    return clock


@pytest.fixture(autouse=True)
def row_locks_before_the_turn(monkeypatch: pytest.MonkeyPatch) -> Iterator[LockOrder]:
    """No transaction waits for a row lock while it holds the feeds' turn
    (``tests/lock_order.py``): checked in every test that writes."""
    with lock_order(monkeypatch) as order:
        yield order
    assert not order.broken, f"statements after the feeds' turn: {order.broken}"


@pytest.fixture
def logged() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log entry made during the test, at any level (an earlier one-shot command in
    the same process may have muted the stream)."""
    logs.configure(level="debug", stream=io.StringIO())
    with structlog.testing.capture_logs() as entries:
        yield entries


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Every `syncd run` a test starts is appended here and stopped afterwards."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Every webhook receiver a test makes is appended here and taken down afterwards."""
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.down()


@pytest.fixture
def receiver(receivers: list[Receiver]) -> Receiver:
    made = Receiver()
    receivers.append(made)
    return made


@pytest.fixture
def simulated() -> SimulatedProvider:
    return SimulatedProvider(token=TOKEN)


@pytest.fixture
def server(simulated: SimulatedProvider) -> Iterator[SimulatorServer]:
    with SimulatorServer(simulated) as running:
        yield running


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'syncd.db'}"


Rows = Callable[..., list[tuple[object, ...]]]


@pytest.fixture
def sql(db_url: str) -> Rows:
    """Run one statement (with ``?`` parameters) on the test's SQLite database, as a
    consumer program would, and return its rows."""

    def query(statement: str, *params: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            return conn.execute(statement, params).fetchall()

    return query


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    opened = open_storage(db_url, busy_timeout=0.2)
    yield opened
    opened.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh empty PostgreSQL database, dropped afterwards.

    PostgreSQL runs when SYNCD_TEST_POSTGRES_URL names a server where the user may create
    databases (.ci/run starts one when the machine has PostgreSQL); each test gets its own.
    """
    admin_url = os.environ.get("SYNCD_TEST_POSTGRES_URL")
    if not admin_url:
        pytest.skip("SYNCD_TEST_POSTGRES_URL is not set")
    name = f"syncd_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextlib.contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh empty MariaDB database (``utf8mb4``, binary collation), dropped afterwards.

    MariaDB runs when SYNCD_TEST_MARIADB_URL names a server where the user may create
    databases (.ci/run starts one when the machine has MariaDB) and its driver is
    installed (``pip install '.[mariadb]'``); each test gets its own database.
    """
    admin_url = os.environ.get("SYNCD_TEST_MARIADB_URL")
    if not admin_url:
        pytest.skip("SYNCD_TEST_MARIADB_URL is not set")
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    except ImportError as exc:
        pytest.skip(f"the MariaDB driver is not installed ({exc})")
    name = f"syncd_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        admin.dispose()


# The database servers the storage tests run on besides SQLite, each its own fresh database.
SERVER_DATABASES = {"postgresql": postgres_database, "mariadb": mariadb_database}


@pytest.fixture(params=["sqlite", *SERVER_DATABASES])
def any_db_url(request: pytest.FixtureRequest, db_url: str) -> Iterator[str]:
    """A fresh empty database on each backend the storage layer supports."""
    if request.param == "sqlite":
        yield db_url
        return
    with SERVER_DATABASES[request.param]() as url:
        yield url


@pytest.fixture(params=list(SERVER_DATABASES))
def server_db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh empty database on each server backend: where several writers run at once."""
    with SERVER_DATABASES[request.param]() as url:
        yield url


class OwnPostgres:
    """A PostgreSQL server of the test's own, which it may stop and start: restarting the
    shared one would cut every other test's connections."""

    def __init__(self, root: Path, *, host_auth: str = "trust") -> None:
        self.data = root / "data"
        self.as_pg: list[str] = []
        if os.getuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(root, "postgres")
            self.as_pg = ["runuser", "-u", "postgres", "--"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.root = root
        # The superuser always comes in by the socket without a password (``admin_url``);
        # ``host_auth`` is what TCP connections, the ones syncd makes in tests, must pass.
        self._pg(
            "initdb", "-D", str(self.data), "--auth-local=trust", f"--auth-host={host_auth}",
            "-U", "postgres",
        )  # fmt: skip
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.admin_url = f"postgresql+psycopg://postgres@/postgres?host={root}&port={self.port}"

    def _pg(self, *command: str) -> None:
        subprocess.run([*self.as_pg, *command], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "log")
        self._pg("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def running_postgres(*, host_auth: str = "trust") -> Iterator[OwnPostgres]:
    if not os.environ.get("SYNCD_TEST_POSTGRES_URL") or shutil.which("initdb") is None:
        pytest.skip("PostgreSQL is not installed here (SYNCD_TEST_POSTGRES_URL is not set)")
    # Not under pytest's temporary directory: its parents are private to this user, and
    # the server may run as another.
    root = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
    try:
        server = OwnPostgres(root, host_auth=host_auth)
        server.start()
        yield server
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class OwnMariaDB:
    """A MariaDB server of the test's own, which it may stop and start, started with
    ``options`` (a server's odd defaults: another time zone, a lax ``sql_mode``)."""

    def __init__(self, root: Path, *options: str) -> None:
        self.root, self.options = root, options
        self.as_mysql: list[str] = []
        if os.getuid() == 0:  # mariadbd runs as root only when told to
            shutil.chown(root, "mysql")
            self.as_mysql = ["runuser", "-u", "mysql", "--"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # The bootstrap server now and then dies of a segfault when several install at
        # once (as xdist's workers do): a fresh try on an empty directory succeeds.
        for attempt in range(3):
            shutil.rmtree(root / "data", ignore_errors=True)
            done = subprocess.run(
                [*self.as_mysql, "mariadb-install-db", f"--datadir={root / 'data'}",
                 "--skip-test-db", "--auth-root-authentication-method=normal"],
                check=attempt == 2, capture_output=True, timeout=120,
            )  # fmt: skip
            if done.returncode == 0:
                break
        self.process: subprocess.Popen[bytes] | None = None
        self.admin = f"mysql+pymysql://root@127.0.0.1:{self.port}/mysql"
        self.url = f"mysql+pymysql://root@127.0.0.1:{self.port}/syncd"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self.as_mysql, "mariadbd", f"--datadir={self.root / 'data'}",
             f"--socket={self.root / 'sock'}", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--skip-name-resolve",
             "--innodb-flush-log-at-trx-commit=0", f"--pid-file={self.root / 'pid'}",
             f"--log-error={self.root / 'log'}", *self.options],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("the test's MariaDB server did not start") from None
                time.sleep(0.1)
        engine = sa.create_engine(self.admin)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE DATABASE IF NOT EXISTS syncd CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
        engine.dispose()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None


@contextlib.contextmanager
def own_mariadb_server(*options: str) -> Iterator[OwnMariaDB]:
    if not os.environ.get("SYNCD_TEST_MARIADB_URL") or shutil.which("mariadbd") is None:
        pytest.skip("MariaDB is not installed here (SYNCD_TEST_MARIADB_URL is not set)")
    root = Path(tempfile.mkdtemp(prefix="syncd-mariadb-"))  # not private to this user
    try:
        server = OwnMariaDB(root, *options)
        server.start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_mariadb() -> Iterator[OwnMariaDB]:
    with own_mariadb_server() as server:
        yield server


@pytest.fixture(params=["postgresql", "mariadb"])
def own_server(request: pytest.FixtureRequest) -> OwnPostgres | OwnMariaDB:
    """A database server of the test's own, on each server backend."""
    name = {"postgresql": "own_postgres", "mariadb": "own_mariadb"}[request.param]
    server: OwnPostgres | OwnMariaDB = request.getfixturevalue(name)
    return server


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def scram_postgres() -> Iterator[OwnPostgres]:
    """A server of the test's own where a TCP connection must give its role's password
    (``scram-sha-256``); the shared test server trusts every connection."""
    with running_postgres(host_auth="scram-sha-256") as server:
        yield server


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def server_storage(server_db_url: str) -> Iterator[Storage]:
    """A migrated database on each server backend (``server_db_url``)."""
    opened = open_storage(server_db_url, busy_timeout=0.2)
    yield opened
    opened.close()


@pytest.fixture
def pg_storage(pg_url: str) -> Iterator[Storage]:
    """A migrated PostgreSQL database (``pg_url``)."""
    opened = open_storage(pg_url, busy_timeout=0.2)
    yield opened
    opened.close()


@pytest.fixture
def any_storage(any_db_url: str) -> Iterator[Storage]:
    opened = open_storage(any_db_url, busy_timeout=0.2)
    yield opened
    opened.close()


def provider_config(
    url: str, *, name: str = "sim", token: str = TOKEN, **overrides: object
) -> ProviderConfig:
    return ProviderConfig(
        name=name,
        url=url,
        token=Secret(token),
        timeout=overrides.pop("timeout", timedelta(seconds=2)),  # type: ignore[arg-type]
        **overrides,  # type: ignore[arg-type]
    )


def make_config(db_url: str, *providers: ProviderConfig) -> Config:
    return Config("(test)", DatabaseConfig(db_url), LoggingConfig(), tuple(providers))


def write_config(
    path: Path,
    db_url: str,
    provider_url: str,
    *,
    token: str = TOKEN,
    timeout: str = "2s",
    extra: str = "",
    log_format: str = "json",
) -> Path:
    """A config file as an operator would write it."""
    path.write_text(
        f"""
[database]
url = "{db_url}"

[logging]
format = "{log_format}"

[[providers]]
name = "sim"
url = "{provider_url}"
token = "{token}"
timeout = "{timeout}"
{extra}
""",
        encoding="utf-8",
    )
    return path
