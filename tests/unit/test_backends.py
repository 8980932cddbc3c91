"""Database engines live in syncd/storage/backends alone: nothing else asks which engine it
runs on, state names reach storage SQL only through the enums, the migrations' triggers
stay what they always were, and each backend keeps the contract storage relies on."""

from __future__ import annotations

import ast
import os
import sys
import types
from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal, localcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

import syncd
from syncd.errors import DatabaseGoneError, StorageError
from syncd.lifecycle import HELD
from syncd.models import OrderState, RequestKind
from syncd.order_requests import RequestState
from syncd.storage.backends import UnknownBackend, backend_for_url, backend_named
from syncd.storage.engine import make_engine
from syncd.storage.urls import database_url_problem

PACKAGE = Path(syncd.__file__).parent
BACKENDS = PACKAGE / "storage" / "backends"
STORAGE = PACKAGE / "storage"
FROZEN = STORAGE / "migrations" / "versions"  # what a revision creates never changes

# -- nothing outside the backends asks which engine it runs on -------------------------------

ENGINE_NAMES = ("sqlite", "postgres", "mysql", "mariadb", "oracle", "mssql")
ENGINE_DRIVERS = ("sqlite3", "psycopg", "sqlalchemy.dialects")


def _names_an_engine(node: ast.AST) -> bool:
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return any(_names_an_engine(element) for element in node.elts)
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.lower().startswith(ENGINE_NAMES)
    )


def _asks_the_dialect(node: ast.Attribute) -> bool:
    """``x.dialect.name`` of a connection, engine or migration bind (a provider's API
    dialect is ``self.dialect``, and no question about the database)."""
    inner = node.value
    if isinstance(inner, ast.Name) and inner.id == "dialect":
        return True
    return (
        isinstance(inner, ast.Attribute)
        and inner.attr == "dialect"
        and not (isinstance(inner.value, ast.Name) and inner.value.id == "self")
    )


def engine_questions(source: str) -> list[int]:
    """The lines of ``source`` that ask which database engine the code runs on."""
    found = []
    for node in ast.walk(ast.parse(source)):
        asks = False
        if isinstance(node, ast.Attribute):
            asks = (
                node.attr == "get_backend_name"
                or node.attr.lower() in (*ENGINE_NAMES, "postgresql")
                or (node.attr == "name" and _asks_the_dialect(node))
            )
        elif isinstance(node, ast.keyword):
            asks = node.arg in ("sqlite", "postgresql")
        elif isinstance(node, ast.Compare):
            asks = any(_names_an_engine(side) for side in (node.left, *node.comparators))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            asks = node.func.attr in ("startswith", "endswith", "removeprefix") and any(
                _names_an_engine(arg) for arg in node.args
            )
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            asks = any(m == d or m.startswith(f"{d}.") for m in modules for d in ENGINE_DRIVERS)
        if asks:
            found.append(getattr(node, "lineno", 0))
    return sorted(set(found))


@pytest.mark.parametrize(
    "code",
    [
        'if conn.dialect.name == "sqlite": pass',
        "name = op.get_bind().dialect.name",
        "def f(dialect): return dialect.name",
        "form = url.get_backend_name()",
        "x = 1 if d.sqlite else 2",
        "PlainDriver(pg, sqlite=False)",
        'listens = url.startswith("postgresql")',
        'if kind in ("mysql", "mariadb"): pass',
        "import sqlite3",
        "from sqlalchemy.dialects import postgresql",
        "import psycopg",
    ],
)
def test_the_engine_question_finder_finds_each_way_of_asking(code: str) -> None:
    assert engine_questions(code) == [1]


def test_a_provider_api_dialect_is_no_engine_question() -> None:
    assert engine_questions('if self.dialect.name == "key": pass') == []


def _sources(root: Path, *, outside: Path | None = None) -> Iterator[tuple[Path, str]]:
    for path in sorted(root.rglob("*.py")):
        if outside is None or not path.is_relative_to(outside):
            yield path, path.read_text(encoding="utf-8")


def test_no_code_outside_the_backends_asks_which_engine_it_runs_on() -> None:
    asked = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {source.splitlines()[line - 1].strip()}"
        for path, source in _sources(PACKAGE, outside=BACKENDS)
        for line in engine_questions(source)
    ]
    assert asked == [], "ask the database's backend instead:\n" + "\n".join(asked)


# -- state names reach storage SQL through the enums ---------------------------------------

NAMED = [*OrderState, *RequestState, *RequestKind]
VALUES = {str(value) for value in NAMED}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of ``tree`` (prose, not SQL)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def state_literals(source: str) -> list[int]:
    """Lines where a string in code (not a docstring) holds a state, kind or the held
    prefix as SQL text (``'queued'``), or is such a name by itself (``state == "sent"``)."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in prose:
            continue
        text = node.value
        quoted = any(f"'{value}'" in text for value in [*VALUES, HELD])
        if quoted or text in VALUES or text == HELD:
            found.append(node.lineno)
    return sorted(set(found))


@pytest.mark.parametrize(
    "code",
    [
        "Q = \"SELECT id FROM orders WHERE state = 'active'\"",
        "Q = f\"SELECT 1 FROM orders WHERE error LIKE '{x}' OR state IN ('queued', 'done')\"",
        'query.where(_r.state == "sent")',
        'insert(t).values(kind="refill")',
        "Q = \"substr(error, 1, 6) = 'held: '\"",
    ],
)
def test_the_state_literal_finder_finds_each_spelling(code: str) -> None:
    assert state_literals(code) == [1]


def test_no_state_name_is_written_by_hand_in_storage_sql() -> None:
    written = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {source.splitlines()[line - 1].strip()}"
        for path, source in _sources(STORAGE, outside=FROZEN)
        for line in state_literals(source)
    ]
    assert written == [], "build it from the enum (storage.literals.quoted):\n" + "\n".join(written)


# -- the migrations' notifications stay what they always were --------------------------------

# The statements revisions 0004 and 0007 ran on PostgreSQL when they were written. A
# database migrated then must look like one migrated now: these never change.
CREATED_BY_0004 = [
    """
        CREATE FUNCTION syncd_notify_orders() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('syncd_orders', coalesce(left(NEW.provider, 100), ''));
            RETURN NULL;
        END $$
        """,
    """
        CREATE TRIGGER syncd_orders_queued AFTER INSERT OR UPDATE OF state ON orders
        FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION syncd_notify_orders()
        """,
    """
        CREATE FUNCTION syncd_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('syncd_changes', TG_TABLE_NAME);
            RETURN NULL;
        END $$
        """,
    *(
        f"CREATE TRIGGER syncd_{table}_added AFTER INSERT ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION syncd_notify_changes()"
        for table in ("order_changes", "package_changes", "alerts")
    ),
]
DROPPED_BY_0004 = [
    *(
        f"DROP TRIGGER IF EXISTS syncd_{table}_added ON {table}"
        for table in ("order_changes", "package_changes", "alerts")
    ),
    "DROP FUNCTION IF EXISTS syncd_notify_changes()",
    "DROP TRIGGER IF EXISTS syncd_orders_queued ON orders",
    "DROP FUNCTION IF EXISTS syncd_notify_orders()",
]
CREATED_BY_0007 = [
    "CREATE TRIGGER syncd_request_changes_added AFTER INSERT ON request_changes "
    "FOR EACH STATEMENT EXECUTE FUNCTION syncd_notify_changes()"
]
DROPPED_BY_0007 = ["DROP TRIGGER IF EXISTS syncd_request_changes_added ON request_changes"]


class MigrationOp:
    """Alembic's ``op`` for one revision on a database of ``engine``: statements are
    recorded, and the table and index calls (not of interest here) do nothing."""

    def __init__(self, engine: str) -> None:
        self.statements: list[str] = []
        self._bind = SimpleNamespace(dialect=SimpleNamespace(name=engine))

    def get_bind(self) -> object:
        return self._bind

    def execute(self, statement: str) -> None:
        self.statements.append(statement)

    def __getattr__(self, name: str) -> object:
        return lambda *_args, **_kwargs: None


def _ran(engine: str, revision: str, step: str) -> list[str]:
    """What ``step`` (upgrade or downgrade) of ``revision`` runs on ``engine``."""
    source = (FROZEN / revision).read_text(encoding="utf-8")
    namespace: dict[str, Any] = {}
    exec(compile(source, revision, "exec"), namespace)
    op = namespace["op"] = MigrationOp(engine)
    namespace[step]()
    return op.statements


@pytest.mark.parametrize(
    ("revision", "step", "statements"),
    [
        ("0004_notify.py", "upgrade", CREATED_BY_0004),
        ("0004_notify.py", "downgrade", DROPPED_BY_0004),
        ("0007_order_requests.py", "upgrade", CREATED_BY_0007),
        ("0007_order_requests.py", "downgrade", DROPPED_BY_0007),
    ],
)
def test_a_migration_creates_the_notifications_it_always_did(
    revision: str, step: str, statements: list[str]
) -> None:
    assert _ran("postgresql", revision, step) == statements
    assert _ran("sqlite", revision, step) == []  # polled there: nothing to install


# -- one place picks the backend ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///syncd.db",
        "sqlite+pysqlite:///x.db?timeout=3",
        "sqlite://",
        "postgresql+psycopg://syncd@db.example:5432/syncd",
        "postgresql://db.example/syncd",
    ],
)
def test_a_url_names_the_backend_sqlalchemy_would_pick(url: str) -> None:
    parsed = sa.engine.make_url(url)
    named = backend_named(parsed.get_backend_name())
    assert backend_for_url(url) is backend_for_url(parsed) is named
    assert named.name == parsed.get_backend_name()


def test_an_engine_syncd_does_not_work_with_is_refused_in_one_line() -> None:
    with pytest.raises(UnknownBackend, match="does not work with oracle databases") as caught:
        make_engine("oracle+oracledb://syncd@db.example/syncd")
    assert isinstance(caught.value, StorageError)
    assert "\n" not in str(caught.value)


# -- the contract every backend keeps ------------------------------------------------------


def test_each_backend_knows_its_own_lock_errors() -> None:
    class Timeout(Exception):
        sqlstate = "55P03"  # PostgreSQL: lock_timeout ran out

    postgresql, sqlite = backend_named("postgresql"), backend_named("sqlite")
    mariadb = backend_named("mariadb")
    assert postgresql.is_lock_error(Timeout("canceling statement due to lock timeout"))
    assert sqlite.is_lock_error(Exception("database is locked"))
    assert mariadb.is_lock_error(Exception(1205, "Lock wait timeout exceeded"))
    assert mariadb.is_lock_error(Exception(1213, "Deadlock found when trying to get lock"))
    assert not postgresql.is_lock_error(Exception("relation orders does not exist"))
    assert not sqlite.is_lock_error(Exception("no such table: orders"))
    assert not mariadb.is_lock_error(Exception(1146, "Table 'syncd.orders' doesn't exist"))
    assert not mariadb.is_lock_error(Exception("database is locked"))


@pytest.mark.parametrize("driver_installed", [True, False])
@pytest.mark.parametrize(
    "url", ["oracle+oracledb://syncd:pw@db.example/syncd", "mssql+pymssql://db.example/syncd"]
)
def test_an_engine_without_a_backend_is_a_config_problem_whether_or_not_its_driver_is_there(
    url: str, driver_installed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the driver importable, SQLAlchemy would open the database, and syncd would
    # fail only at its first job: the config check must say so first, naming the engine.
    driver = url.partition("+")[2].partition(":")[0]
    if driver_installed:
        monkeypatch.setitem(sys.modules, driver, types.ModuleType(driver))
    else:
        monkeypatch.setitem(sys.modules, driver, None)  # an import of it fails
    problem = database_url_problem(url)
    assert problem is not None
    engine = url.partition("+")[0]
    assert f"does not work with {engine} databases" in problem
    assert "pw" not in problem


def test_a_sqlite_file_watch_fails_for_good_once_its_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    path.write_bytes(b"the file opened")
    told: list[DatabaseGoneError] = []
    watch = backend_named("sqlite").watch_file(f"sqlite:///{path}", told.append)
    watch.check()  # the same file: nothing to say
    kept = tmp_path / "kept.db"
    path.replace(kept)
    path.write_bytes(b"another file")
    with pytest.raises(DatabaseGoneError, match="was replaced by another file while syncd ran"):
        watch.check()
    kept.replace(path)  # the first file back: too late, writes may have gone elsewhere
    with pytest.raises(DatabaseGoneError, match="replaced"):
        watch.check()
    assert len(told) == 1


def test_a_sqlite_file_watch_moves_aside_only_the_wal_it_opened(tmp_path: Path) -> None:
    path = tmp_path / "syncd.db"
    path.write_bytes(b"db")
    wal, shm = tmp_path / "syncd.db-wal", tmp_path / "syncd.db-shm"
    wal.write_bytes(b"our wal")
    shm.write_bytes(b"our index")
    ours = backend_named("sqlite").watch_file(f"sqlite:///{path}", lambda _: None)
    path.unlink()
    kept = r"was deleted .* its WAL is kept as syncd\.db-wal\.orphaned$"
    with pytest.raises(DatabaseGoneError, match=kept):
        ours.check()
    assert (tmp_path / "syncd.db-wal.orphaned").read_bytes() == b"our wal"
    assert not wal.exists() and not shm.exists()

    # A restore that brings a WAL of its own: those files are not this process's.
    path.write_bytes(b"db")
    wal.write_bytes(b"old wal")
    theirs = backend_named("sqlite").watch_file(f"sqlite:///{path}", lambda _: None)
    # Held open, as SQLite holds its files: their inode numbers cannot be reused.
    with wal.open("rb"), path.open("rb"):
        path.unlink()
        path.write_bytes(b"restored db")
        wal.unlink()
        wal.write_bytes(b"restored wal")
        with pytest.raises(DatabaseGoneError, match=r"nobody reads$"):
            theirs.check()
    assert wal.read_bytes() == b"restored wal"


def test_a_database_server_has_no_file_to_watch() -> None:
    watch = backend_named("postgresql").watch_file("postgresql://db.example/syncd", print)
    watch.check()  # nothing to look at, nothing raised


def test_a_sqlite_file_watch_that_cannot_look_takes_nothing_for_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path that cannot be looked at (EACCES, a stale NFS handle, EIO) is no proof the
    file is gone: the live database keeps its WAL, and nobody is told it is gone."""
    path = tmp_path / "syncd.db"
    path.write_bytes(b"db")
    wal = tmp_path / "syncd.db-wal"
    wal.write_bytes(b"committed, not yet checkpointed")
    told: list[DatabaseGoneError] = []
    watch = backend_named("sqlite").watch_file(f"sqlite:///{path}", told.append)
    real_stat = os.stat

    def failing(target: object, *args: object, **kwargs: object) -> os.stat_result:
        if Path(str(target)) == path:
            raise PermissionError(13, "Permission denied")
        return real_stat(target, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", failing)
    watch.check()
    monkeypatch.setattr(os, "stat", real_stat)
    watch.check()  # and it keeps watching
    assert told == [] and wal.read_bytes() == b"committed, not yet checkpointed"


# -- MariaDB's money column ------------------------------------------------------------------


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_mariadb_takes_exactly_the_amounts_its_money_column_keeps(amount: Decimal) -> None:
    """DECIMAL(30, 12): at most 18 whole digits and 12 places, exactly; anything else is
    refused before it is sent (MariaDB would round the places away with a note)."""
    keeps = amount.is_finite() and abs(amount) < Decimal(10) ** 18
    if keeps:
        with localcontext() as exact:
            exact.prec = 40
            keeps = amount == amount.quantize(Decimal("1e-12"), rounding=ROUND_DOWN)
    money_value = backend_named("mariadb").money_value
    if keeps:
        assert money_value(amount) == amount
    else:
        with pytest.raises(ValueError, match="does not fit the database's money column"):
            money_value(amount)
    with pytest.raises(TypeError):
        money_value(1.5)  # type: ignore[arg-type]
