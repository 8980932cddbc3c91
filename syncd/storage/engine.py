"""Database engines and migrations.

Each engine's connection setup is its backend's (``syncd.storage.backends``); what is
kept here holds for every engine: how long a transaction waits for a lock while the
process is stopping, and migrating the schema.
"""

from __future__ import annotations

import functools
import re
from importlib.resources import files
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from syncd.errors import SchemaError
from syncd.storage.backends import backend_for, backend_for_url
from syncd.storage.backends.interface import READ_ONLY_OPTION
from syncd.storage.migrations import HEAD
from syncd.storage.urls import QUERY_PASSWORDS

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
    """A database URL with its password hidden, for messages: the one before the host,
    and one given as a query parameter (``?passwd=``)."""
    try:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        shown = url.rsplit("@", maxsplit=1)[-1]
    return _query_password_hidden(shown)


_QUERY_PASSWORD = re.compile(rf"([?&](?:{'|'.join(QUERY_PASSWORDS)})=)[^&]*")


def _query_password_hidden(shown: str) -> str:
    """A rendered URL with a password given as a query parameter replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", shown)


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


def migrate(engine: Engine, to: str = HEAD) -> str | None:
    """Bring the schema to revision ``to``, the newest unless a test asks for an older
    one (creates every table on a new database); returns the revision it found (None: a
    new database).

    The upgrade runs under the backend's migration lock (``lock_migrations``), in the
    transaction that reads the revision: processes started together on a new database
    migrate one after another, and each one after the first finds nothing to do. A
    database at a revision this syncd does not know (a newer syncd migrated it) is left
    as it is: ``SchemaError``."""
    found = current_revision(engine)
    if found == to:
        return found
    from alembic import command  # noqa: PLC0415 - only when a migration is due
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    config = AlembicConfig()
    config.set_main_option("script_location", str(files("syncd.storage") / "migrations"))
    with engine.begin() as connection:
        backend_for(connection).lock_migrations(connection)
        found = _revision(connection)
        if found is not None and found not in known_revisions():
            raise SchemaError(_unknown(engine, found))
        config.attributes["connection"] = connection
        command.upgrade(config, to)
    return found


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database syncd never migrated."""
    with engine.connect().execution_options(**READ_ONLY) as connection:
        return _revision(connection)


def _revision(connection: sa.Connection) -> str | None:
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    versions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
    return next(iter(versions.scalars()), None)


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this syncd has a migration for (the scripts are named for them)."""
    scripts = files("syncd.storage") / "migrations" / "versions"
    return frozenset(s.name[:4] for s in scripts.iterdir() if s.name[:4].isdigit())


def check_schema(engine: Engine) -> None:
    """Raise ``SchemaError`` unless the database is at this syncd's revision: for the
    commands that never migrate (they read, and a role that may only read runs them)."""
    found = current_revision(engine)
    if found == HEAD:
        return
    if found is None:
        raise SchemaError(
            f"the database {safe_url(engine)} holds no syncd schema: run syncd migrate "
            "(or syncd run) to create it"
        )
    raise SchemaError(
        behind(engine, found) if found in known_revisions() else _unknown(engine, found)
    )


def behind(engine: Engine, found: str | None, why: str = "") -> str:
    """What to do about a schema older than this syncd's (``found`` None: none at all)."""
    at = "holds no syncd schema" if found is None else f"is at schema revision {found}"
    return (
        f"the database {safe_url(engine)} {at}, this syncd needs {HEAD}{why}: run "
        "syncd migrate as the role that owns the schema"
    )


def _unknown(engine: Engine, found: str) -> str:
    return (
        f"the database {safe_url(engine)} is at schema revision {found}, newer than this "
        f"syncd knows ({HEAD}): a newer syncd migrated it; run that version"
    )


def safe_url(engine: Engine) -> str:
    return _query_password_hidden(engine.url.render_as_string(hide_password=True))
