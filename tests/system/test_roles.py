"""The three roles of docs/roles.md on PostgreSQL and MariaDB, made by running that
document's own SQL (so that the two cannot drift apart), each used through the real
command line."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from syncd.simulator import SimulatorServer
from syncd.storage.engine import make_engine, migrate
from syncd.storage.migrations import HEAD
from tests.conftest import write_config
from tests.helpers import sql, syncd

DOC = Path(__file__).parents[2] / "docs" / "roles.md"
BLOCK = re.compile(r"^```(sql|sh)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SECTIONS = {"postgresql": "PostgreSQL", "mariadb": "MariaDB"}  # the document's headings
ADMIN_URLS = {"postgresql": "SYNCD_TEST_POSTGRES_URL", "mariadb": "SYNCD_TEST_MARIADB_URL"}
NAMES = re.compile(r"\bsyncd(?:_writer|_reader)?\b(?!:)")  # not the "syncd:" of a message
BEHIND = "0007"
READING = [
    ["changes", "packages"],
    ["changes", "packages", "--follow", "--limit", "1"],
    ["status"],
    ["status", "--json"],
    ["report"],
    ["report", "--csv"],
    ["order", "list"],
    ["order", "show", "1"],
    ["packages"],
]


@dataclass
class Roles:
    """A database set up by docs/roles.md, under role names of this test's own (roles
    belong to the whole server, which other tests share)."""

    backend: str
    prefix: str
    admin_url: str
    database: str
    tmp_path: Path
    provider_url: str

    def name(self, doc_name: str) -> str:
        return self.prefix + doc_name

    def url(self, role: str | None) -> str:
        url = sa.engine.make_url(self.admin_url).set(database=self.database)
        if role is not None:
            url = url.set(username=self.name(role), password=None)
        return url.render_as_string(hide_password=False)

    def config(self, role: str) -> Path:
        return write_config(self.tmp_path / f"{role}.toml", self.url(role), self.provider_url)

    def run(self, role: str, *args: str) -> tuple[int, str, str]:
        done = syncd(self.config(role), *args)
        return done.returncode, done.stdout, done.stderr

    def renamed(self, text: str) -> str:
        return NAMES.sub(lambda m: self.name(m[0]), text)

    def denied(self, role: str, verb: str, table: str, *, mariadb: str = "") -> str:
        """The database's own words for a statement the role may not make (MariaDB names
        every privilege an upsert needs: ``mariadb``)."""
        if self.backend == "mariadb":
            return (
                f"{mariadb or verb} command denied to user '{self.name(role)}'@'127.0.0.1'"
                f" for table `{self.database}`.`{table}`"
            )
        return f"permission denied for table {table}"


def doc_blocks(backend: str) -> list[tuple[str, str]]:
    """The fenced ``sql`` and ``sh`` blocks of the document's section on ``backend``."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"\n## {SECTIONS[backend]}\n", 1)[1].split("\n## ", 1)[0]
    return [(kind, body) for kind, body in BLOCK.findall(section)]


def _execute(url: str, block: str, *, autocommit: bool) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT" if autocommit else None)
    try:
        with engine.begin() as conn:
            for statement in block.split(";"):  # no statement of the document holds one
                if statement.strip():
                    conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def set_up(roles: Roles, *, migrate_to: str | None = None) -> None:
    """Run the document, block by block, as each block says; ``migrate_to`` stands in for
    ``syncd migrate`` to leave the schema at an older revision."""
    for kind, body in doc_blocks(roles.backend):
        if kind == "sh":
            assert body.strip() == "syncd migrate", body
            if migrate_to is None:
                code, out, err = roles.run("syncd", "migrate")
                assert (code, out, err) == (0, f"created the schema at revision {HEAD}\n", "")
            else:
                engine = make_engine(roles.url("syncd"))
                migrate(engine, to=migrate_to)
                engine.dispose()
            continue
        who = body.splitlines()[0]
        block = roles.renamed(body)
        if who == "-- as a superuser, in any database":
            _execute(roles.admin_url, block, autocommit=True)
        elif who == "-- as a superuser, in the database syncd":
            _execute(roles.url(None), block, autocommit=False)
        elif who == "-- as syncd, in the database syncd":
            _execute(roles.url("syncd"), block, autocommit=False)
        else:
            raise AssertionError(f"a block of {DOC.name} says not who runs it: {who!r}")


@pytest.fixture(params=list(SECTIONS))
def roles(
    request: pytest.FixtureRequest, tmp_path: Path, server: SimulatorServer
) -> Iterator[Roles]:
    backend = request.param
    admin_url = os.environ.get(ADMIN_URLS[backend])
    if not admin_url:
        pytest.skip(f"{ADMIN_URLS[backend]} is not set: no {SECTIONS[backend]} server for roles")
    prefix = f"roles_{uuid.uuid4().hex[:8]}_"
    made = Roles(backend, prefix, admin_url, prefix + "syncd", tmp_path, server.url)
    try:
        yield made
    finally:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if backend == "mariadb":
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{made.database}`")
                for role in ("syncd_writer", "syncd_reader", "syncd_daemon", "syncd"):
                    conn.exec_driver_sql(f"DROP USER IF EXISTS `{made.name(role)}`")
            else:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{made.database}" WITH (FORCE)')
                for role in ("syncd_writer", "syncd_reader", "syncd_daemon", "syncd"):
                    conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{made.name(role)}"')
        admin.dispose()


@pytest.mark.parametrize(
    ("backend", "kinds"),
    [("postgresql", ["sql", "sql", "sh", "sql"]), ("mariadb", ["sql", "sh", "sql"])],
)
def test_the_document_names_each_block_s_role_and_runs_the_migration_between(
    backend: str, kinds: list[str]
) -> None:
    assert [kind for kind, _ in doc_blocks(backend)] == kinds


def test_the_reader_runs_every_reading_command_and_may_not_write(roles: Roles) -> None:
    set_up(roles)
    assert roles.run("syncd", "sync", "catalog")[0] == 0
    assert roles.run("syncd", "sync", "balance")[0] == 0  # opens the ledger
    sql(
        roles.url("syncd_writer"),
        "INSERT INTO orders (provider, service_id, link, quantity)"
        " VALUES ('sim', 100, 'https://instagram.com/p/x', 100)",
    )
    for command in READING:
        code, out, err = roles.run("syncd_reader", *command)
        assert (code, err) == (0, ""), command
        assert out, command
    assert roles.run("syncd_reader", "changes", "ledger") == (0, "", "")  # no order sent yet
    ledger = roles.run("syncd_reader", "report", "--csv")[1].splitlines()
    provider, currency, _, *amounts = ledger[1].split(",")
    assert (provider, currency) == ("sim", "USD")
    assert [Decimal(a) for a in amounts] == [100, 0, 0, 0, 0, 100]
    listed = roles.run("syncd_reader", "order", "list")[1].splitlines()
    assert listed[1].split()[:6] == ["1", "sim", "-", "100", "100", "queued"]

    with pytest.raises(
        DBAPIError, match=re.escape(roles.denied("syncd_reader", "INSERT", "orders"))
    ):
        sql(
            roles.url("syncd_reader"),
            "INSERT INTO orders (provider, service_id, link, quantity)"
            " VALUES ('sim', 100, 'https://instagram.com/p/y', 100)",
        )
    code, out, err = roles.run(
        "syncd_reader", "order", "add", "--provider", "sim", "--package", "100",
        "--link", "https://instagram.com/p/z", "--quantity", "100",
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err == (
        f"syncd: database role {roles.name('syncd_reader')} may not INSERT:"
        f" {roles.denied('syncd_reader', 'INSERT', 'orders')}"
        " (see docs/roles.md for what each role is granted)\n"
    )
    assert sql(roles.url("syncd"), "SELECT count(*) FROM orders") == [(1,)]


def test_the_writer_inserts_orders_and_requests_and_changes_nothing_else(roles: Roles) -> None:
    set_up(roles)
    assert roles.run("syncd", "sync", "catalog")[0] == 0
    writer = roles.url("syncd_writer")
    (order,) = sql(
        writer,
        "INSERT INTO orders (provider, service_id, link, quantity)"
        " VALUES ('sim', 100, 'https://instagram.com/p/x', 100) RETURNING id",
    )  # RETURNING: MariaDB has it for INSERT
    sql(writer, "INSERT INTO order_requests (order_id, kind) VALUES (:id, 'refill')", id=order[0])
    assert sql(roles.url("syncd"), "SELECT order_id, kind, state FROM order_requests") == [
        (order[0], "refill", "queued")
    ]
    with pytest.raises(
        DBAPIError, match=re.escape(roles.denied("syncd_writer", "UPDATE", "orders"))
    ):
        sql(writer, "UPDATE orders SET quantity = 1")
    with pytest.raises(
        DBAPIError, match=re.escape(roles.denied("syncd_writer", "INSERT", "providers"))
    ):
        sql(writer, "INSERT INTO providers (name, url) VALUES ('x', 'https://x.example')")
    code, out, _ = roles.run("syncd_writer", "order", "show", str(order[0]))
    assert code == 0 and "https://instagram.com/p/x" in out


def test_the_daemon_under_the_reader_says_in_one_line_what_the_role_may_not(
    roles: Roles,
) -> None:
    """The example of docs/roles.md, word for word: a first start after `syncd migrate`."""
    set_up(roles)
    code, out, err = roles.run("syncd_reader", "run")
    assert (code, out) == (1, "")
    assert "Traceback" not in err
    if roles.backend == "postgresql":
        example = re.search(r"^syncd: database role syncd_reader .*$", DOC.read_text(), re.M)
        assert example is not None
        assert err.splitlines()[-1] == roles.renamed(example[0])
    assert err.splitlines()[-1] == (
        f"syncd: database role {roles.name('syncd_reader')} may not INSERT:"
        f" {roles.denied('syncd_reader', 'INSERT', 'providers', mariadb='INSERT, UPDATE')}"
        " (see docs/roles.md for what each role is granted)"
    )


@pytest.mark.parametrize("role", ["syncd_writer", "syncd_reader"])
def test_the_daemon_under_a_role_that_may_not_write_its_tables_stops_at_start(
    roles: Roles, role: str
) -> None:
    """Up to date, providers registered: the first write it meets is its heartbeat."""
    set_up(roles)
    assert roles.run("syncd", "sync", "catalog")[0] == 0
    code, out, err = roles.run(role, "run")
    assert (code, out) == (1, "")
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"syncd: database role {roles.name(role)} may not INSERT:"
        f" {roles.denied(role, 'INSERT', 'instances', mariadb='INSERT, UPDATE')}"
        " (see docs/roles.md for what each role is granted)"
    )


@pytest.mark.parametrize("role", ["syncd_writer", "syncd_daemon"])
def test_the_daemon_under_a_role_that_may_not_migrate_says_to_run_migrate_on_a_schema_behind(
    roles: Roles, role: str
) -> None:
    """``syncd_daemon`` may read and write every table, as a daemon needs, but change
    none of them: the schema is the owner's to migrate."""
    set_up(roles, migrate_to=BEHIND)
    daemon = roles.name("syncd_daemon")
    if roles.backend == "mariadb":
        _execute(
            roles.admin_url,
            f"CREATE USER `{daemon}`; GRANT SELECT, INSERT, UPDATE, DELETE ON"
            f" `{roles.database}`.* TO `{daemon}`",
            autocommit=True,
        )
    else:
        _execute(
            roles.url(None),
            f'CREATE ROLE "{daemon}" LOGIN; GRANT CONNECT ON DATABASE "{roles.database}" TO'
            f' "{daemon}"; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public'
            f' TO "{daemon}"; GRANT USAGE, UPDATE ON ALL SEQUENCES IN SCHEMA public TO "{daemon}"',
            autocommit=False,
        )
    code, out, err = roles.run(role, "run")
    assert (code, out) == (2, "")
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"syncd: the database {roles.url(role)} is at schema revision {BEHIND}, this syncd"
        f" needs {HEAD}, and role {roles.name(role)} may not migrate it: run syncd migrate"
        " as the role that owns the schema"
    )
    assert sql(roles.url("syncd"), "SELECT version_num FROM alembic_version") == [(BEHIND,)]

    code, out, err = roles.run("syncd", "migrate")
    assert (code, out, err) == (0, f"migrated from revision {BEHIND} to {HEAD}\n", "")
    code, out, err = roles.run("syncd_reader", "changes")
    assert (code, err) == (0, "")
