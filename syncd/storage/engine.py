"""Database engines and migrations.

Each engine's connection setup is its backend's (``syncd.storage.backends``); what is
kept here holds for every engine: how long a transaction waits for a lock while the
process is stopping, and migrating the schema.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from syncd.storage.backends import backend_for, backend_for_url
from syncd.storage.backends.interface import READ_ONLY_OPTION
from syncd.storage.migrations import HEAD

READ_ONLY: dict[str, Any] = {READ_ONLY_OPTION: True}


def database_file(url: str | sa.URL) -> Path | None:
    """The file a database URL names (absolute), when the database is one file on this
    host; None for another database or one in memory."""
    parsed = sa.engine.make_url(url)
    return backend_for_url(parsed).database_file(parsed)


sqlite_file = database_file  # the name older callers know


def missing_sqlite_file(url: str) -> Path | None:
    """The file a database URL names, when it does not exist (opening would create it)."""
    path = database_file(url)
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
SHORT_WAIT = 1.0  # seconds a lock is waited for once the process is stopping


def shorten_waits(engine: Engine, seconds: float = SHORT_WAIT) -> None:
    """From now on, every new transaction waits at most ``seconds`` for a lock: a process
    stopping must not spend systemd's patience behind a consumer's lock."""
    _PATIENCE[engine] = int(seconds * 1000)


def make_engine(url: str, *, busy_timeout: float = 5.0) -> Engine:
    parsed = sa.engine.make_url(url)
    backend = backend_for_url(parsed)
    setting = backend.patience_sql

    # First thing of every transaction: one that takes its lock when it begins (SQLite's
    # BEGIN IMMEDIATE) must wait for it only as long as the process allows.
    def apply_patience(connection: sa.Connection) -> None:
        want = _PATIENCE.get(connection.engine)
        info = connection.connection.info
        if want is not None and info.get("syncd_patience") != want:
            connection.exec_driver_sql(setting.format(ms=want))
            info["syncd_patience"] = want

    return backend.make_engine(parsed, busy_timeout=busy_timeout, on_begin=apply_patience)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (creates every table on a new database).

    The upgrade runs under the backend's migration lock (``lock_migrations``), in the
    transaction that reads the revision: processes started together on a new database
    migrate one after another, and each one after the first finds nothing to do."""
    if current_revision(engine) == HEAD:
        return
    from alembic import command  # noqa: PLC0415 - only when a migration is due
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    config = AlembicConfig()
    config.set_main_option("script_location", str(files("syncd.storage") / "migrations"))
    with engine.begin() as connection:
        backend_for(connection).lock_migrations(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database syncd never migrated."""
    with engine.connect().execution_options(**READ_ONLY) as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
        return next(iter(versions.scalars()), None)
