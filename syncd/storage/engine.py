"""Database engines and migrations.

SQLite gets WAL (readers never block the daemon), a busy timeout (a consumer's write lock
is waited on), foreign keys, ``synchronous=FULL`` (a committed "submitting" row must
survive a power cut, or an order could be sent twice) and ``BEGIN IMMEDIATE`` for write
transactions, so a transaction takes the write lock when it starts and waits for it there
instead of failing half-way on a lock upgrade.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from syncd.storage.migrations import HEAD

READ_ONLY: dict[str, Any] = {"syncd_read_only": True}


def sqlite_file(url: str | sa.URL) -> Path | None:
    """The file a SQLite URL names (absolute); None for another database or one in memory."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).absolute()


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, when it does not exist (opening would create it)."""
    path = sqlite_file(url)
    return path if path is not None and not path.exists() else None


def parsed_safe(url: str) -> str:
    """A database URL with its password hidden, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.rsplit("@", maxsplit=1)[-1]


# How long a transaction that begins now waits for a lock, per engine, in milliseconds;
# ``shorten_waits`` lowers it when the process is stopping.
_PATIENCE: WeakKeyDictionary[Engine, int] = WeakKeyDictionary()
IDLE_IN_TRANSACTION_MS = 10_000
SHORT_WAIT = 1.0  # seconds a lock is waited for once the process is stopping


def shorten_waits(engine: Engine, seconds: float = SHORT_WAIT) -> None:
    """From now on, every new transaction waits at most ``seconds`` for a lock: a process
    stopping must not spend systemd's patience behind a consumer's lock."""
    _PATIENCE[engine] = int(seconds * 1000)


def _apply_patience(connection: sa.Connection, setting: str) -> None:
    want = _PATIENCE.get(connection.engine)
    info = connection.connection.info
    if want is not None and info.get("syncd_patience") != want:
        connection.exec_driver_sql(setting.format(ms=want))
        info["syncd_patience"] = want


def make_engine(url: str, *, busy_timeout: float = 5.0) -> Engine:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        # A consumer's lock (or a session left idle in a transaction) is waited on as long
        # as SQLite's busy timeout, not forever: the statement then fails as "locked" and
        # the transaction is retried like one that met a locked SQLite database.
        # And a syncd that stops mid-transaction (paused, frozen, stopped by a debugger)
        # loses that transaction after 10 s instead of holding its locks, the lease rows'
        # among them, against every other instance.
        waits = (
            f"-c lock_timeout={int(busy_timeout * 1000)} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
        )
        engine = sa.create_engine(parsed, pool_pre_ping=True, connect_args={"options": waits})

        @event.listens_for(engine, "begin")
        def _on_pg_begin(connection: sa.Connection) -> None:
            _apply_patience(connection, "SET lock_timeout = {ms}")

        return engine
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    engine = sa.create_engine(parsed, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if parsed.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        _apply_patience(connection, "PRAGMA busy_timeout = {ms}")
        read_only = connection.get_execution_options().get("syncd_read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates every table on a new database)."""
    if current_revision(engine) == HEAD:
        return
    from alembic import command  # noqa: PLC0415 - only when a migration is due
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    config = AlembicConfig()
    config.set_main_option("script_location", str(files("syncd.storage") / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database syncd never migrated."""
    with engine.connect().execution_options(**READ_ONLY) as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        return next(iter(versions.scalars()), None)
