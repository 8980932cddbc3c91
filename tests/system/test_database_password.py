"""The database password from ``password_file`` or ``password_env``, on servers that
check it (PostgreSQL with scram-sha-256, MariaDB): every command and the daemon log in with it, and
no output of theirs shows it in any spelling, a refused login included."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.sql import SQL, Identifier

from syncd.secret import Scrubber, Secret
from syncd.simulator import SimulatorServer
from syncd.storage.urls import conninfo
from tests.conftest import OwnPostgres, own_mariadb_server, write_config
from tests.helpers import Daemon, sql, wait_until
from tests.system.test_startup import PROBE

# Every character a URL gives a meaning to, a space, a percent sign and a non-ASCII one.
PASSWORD = "p@ss:w/rd%?#&=+ é-7Qx"
ROLE = "syncd_pw_test"


def shows_password(text: str, password: str = PASSWORD) -> bool:
    """Whether ``text`` holds a piece of any spelling of the password (raw, percent- or
    form-encoded, escaped...): what the log redaction looks for."""
    return Scrubber([Secret(password)]).scrub(text) != text


@pytest.fixture(params=["postgresql", "mariadb"])
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL, without a password, of a database owned by a role that logs in with
    ``PASSWORD``, on a server of the test's own (the role is the server's)."""
    if request.param == "mariadb":
        # mysqlclient: PyMySQL sends a password as Latin-1, and this one has an "é".
        pytest.importorskip("MySQLdb", reason="mysqlclient is not installed (syncd[mariadb])")
        with own_mariadb_server() as server:
            root = sa.create_engine(server.admin)
            with root.begin() as conn:
                conn.exec_driver_sql(f"CREATE USER {ROLE} IDENTIFIED BY %s", (PASSWORD,))
                conn.exec_driver_sql(f"CREATE DATABASE {ROLE} CHARACTER SET utf8mb4")
                conn.exec_driver_sql(f"GRANT ALL ON {ROLE}.* TO {ROLE}")
            root.dispose()
            yield f"mysql+mysqldb://{ROLE}@127.0.0.1:{server.port}/{ROLE}"
        return
    scram_postgres: OwnPostgres = request.getfixturevalue("scram_postgres")
    with psycopg.connect(conninfo(scram_postgres.admin_url), autocommit=True) as admin:
        # DDL takes no bound parameter: the password as a quoted literal.
        create = SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(Identifier(ROLE), PASSWORD)
        admin.execute(create).close()
        admin.execute(f"CREATE DATABASE {ROLE} OWNER {ROLE}").close()
    yield f"postgresql+psycopg://{ROLE}@127.0.0.1:{scram_postgres.port}/{ROLE}"


def refused_login(said: str) -> bool:
    """Whether the server's words say the password was wrong (PostgreSQL's or MariaDB's)."""
    return "password authentication failed" in said or "Access denied for user" in said


def with_key(config: Path, line: str) -> Path:
    """The config with one more key in its ``[database]`` table."""
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[logging]", f"{line}\n\n[logging]", 1), encoding="utf-8")
    return config


def syncd(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", "--config", str(config), *args],
        capture_output=True, text=True, check=False, timeout=60,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def password_file(tmp_path: Path, password: str = PASSWORD) -> Path:
    path = tmp_path / "credentials" / "dbpass"
    path.parent.mkdir()
    path.write_text(f"{password}\n", encoding="utf-8")  # as `echo` or an editor writes it
    return path


def connected_url(url: str) -> str:
    """The URL with the password, for the test's own queries."""
    return url.replace(f"{ROLE}@", f"{ROLE}:p%40ss%3Aw%2Frd%25%3F%23%26%3D%2B%20%C3%A9-7Qx@")


COMMANDS = [
    ("migrate",),
    ("status",),  # the driver alone reads
    ("status", "--json"),
    ("sync", "catalog"),
    ("packages",),
    ("order", "add", "--provider", "sim", "--package", "100", "--link", "https://x.example/p",
     "--quantity", "100"),
    ("order", "list"),
    ("changes", "orders"),
    ("report",),
]  # fmt: skip


@pytest.mark.parametrize("source", ["file", "env"])
def test_every_command_logs_in_with_the_password_and_never_shows_it(
    tmp_path: Path, database: str, server: SimulatorServer, source: str
) -> None:
    config = write_config(tmp_path / "syncd.toml", database, server.url)
    env: dict[str, str] = {}
    if source == "file":
        password_file(tmp_path)
        with_key(config, 'password_file = "${CREDENTIALS_DIRECTORY}/dbpass"')
        env["CREDENTIALS_DIRECTORY"] = str(tmp_path / "credentials")
    else:
        with_key(config, 'password_env = "SYNCD_TEST_DB_PASSWORD"')
        env["SYNCD_TEST_DB_PASSWORD"] = PASSWORD
    for args in COMMANDS:
        done = syncd(config, "-v", *args, env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert not shows_password(done.stdout + done.stderr), args
    assert sql(connected_url(database), "SELECT count(*) FROM orders") == [(1,)]
    # `syncd status` read through the driver alone, with the password: had it failed, the
    # command would have gone the usual way, which imports SQLAlchemy.
    probe = [sys.executable, "-c", PROBE, "--config", str(config), "status"]
    done = subprocess.run(probe, capture_output=True, text=True, check=True, env=os.environ | env)
    imported = done.stderr.splitlines()[-1].removeprefix("IMPORTED ").split(",")
    assert "syncd" in imported
    assert "sqlalchemy" not in imported


def test_the_daemon_logs_in_listens_and_sends_with_the_password(
    tmp_path: Path, database: str, server: SimulatorServer, daemons: list[Daemon]
) -> None:
    password_file(tmp_path)
    config = write_config(
        tmp_path / "syncd.toml", database, server.url, extra='orders_interval = "1h"'
    )
    with_key(config, f'password_file = "{tmp_path}/credentials/dbpass"')
    log = tmp_path / "daemon.log"
    daemon = Daemon(config, tmp_path, log_to=log)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    url = connected_url(database)
    wait_until(lambda: sql(url, "SELECT count(*) FROM packages") != [(0,)])
    sql(
        url,
        "INSERT INTO orders (provider, service_id, link, quantity, state) "
        "VALUES ('sim', 100, 'https://x.example/p', 100, 'queued')",
    )
    # Sent within the hour's orders interval only by the pickup, which NOTIFY wakes.
    wait_until(lambda: sql(url, "SELECT state FROM orders") == [("active",)], timeout=10)
    code, *_ = daemon.stop()
    assert code == 0
    text = log.read_text(encoding="utf-8")
    assert "daemon.started" in text
    assert "notify.lost" not in text  # the listener logged in too
    assert not shows_password(text)


def test_a_wrong_password_is_one_line_without_it(tmp_path: Path, database: str) -> None:
    wrong = "Wr0ng-p@ss:w/rd%é"
    password_file(tmp_path, wrong)
    config = write_config(tmp_path / "syncd.toml", database, "https://panel.example/v2")
    with_key(config, f'password_file = "{tmp_path}/credentials/dbpass"')
    for args in [("status",), ("-v", "status"), ("order", "list")]:
        done = syncd(config, *args)
        assert done.returncode == 1, args
        assert done.stdout == ""
        (line,) = done.stderr.splitlines()
        # The URL is shown with *** where a password was sent.
        scheme = database.partition("://")[0]
        assert line.startswith(f"syncd: cannot open database {scheme}://{ROLE}:***@")
        assert refused_login(line)
        assert not shows_password(line, wrong)


def test_the_password_of_the_file_is_the_one_sent(tmp_path: Path, database: str) -> None:
    """A space at either end is part of a password; only the file's line end is not."""
    password_file(tmp_path, f" {PASSWORD} ")
    config = write_config(tmp_path / "syncd.toml", database, "https://panel.example/v2")
    with_key(config, f'password_file = "{tmp_path}/credentials/dbpass"')
    done = syncd(config, "status")
    assert done.returncode == 1
    assert refused_login(done.stderr)
