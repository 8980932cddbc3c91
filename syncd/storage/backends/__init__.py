"""Database engines: everything that differs between SQLite, PostgreSQL and MariaDB, in
one place.

Each engine is one module here (``sqlite.py``, ``postgresql.py``, ``mariadb.py``) holding
one ``Backend`` (``interface.py``); ``backend_named`` is the one place that picks it, by
SQLAlchemy's dialect name (the first word of the URL scheme; ``mysql`` is MariaDB's).
Nothing else in syncd asks which engine it runs on (a test reads the source to hold
that): storage asks its backend for the piece of SQL, the value form or the behaviour
instead. A new engine is a new module with its ``BACKEND``, a line in ``_MODULES``, and
the storage tests run against it.

Importing this package, or a backend module, imports neither SQLAlchemy nor a driver:
``syncd status`` and the config check use backends and must start in a fraction of a
second. Members that need SQLAlchemy import it when called.

The members, and why each exists:

Connecting
- ``make_engine(url, busy_timeout, on_begin)``: the engine with the connection setup the
  engine needs to keep syncd's promises (SQLite: WAL, busy timeout, ``synchronous=FULL``,
  ``BEGIN IMMEDIATE``; PostgreSQL: ``lock_timeout`` and
  ``idle_in_transaction_session_timeout``); ``on_begin`` runs first in every transaction.
- ``patience_sql``: the statement ``on_begin`` uses to shorten a new transaction's lock
  wait when the process is stopping (``engine.shorten_waits``), so that SIGTERM is never
  stuck behind a consumer's lock.
- ``database_file(url)``: the file a database lives in, if any: a reading command
  refuses to create it.
- ``watch_file(url, gone)``: a running syncd stops before its next transaction once the
  database file is deleted or replaced (SQLite: the file's device and inode, and the WAL
  left beside it; a server database has no file to watch).
- ``plain_form(url)``, ``driver_imports(url)``, ``driver_hint``: whether a URL is read
  without SQLAlchemy exactly as SQLAlchemy reads it, and its driver installed (and how to
  install it); every command checks the URL this way, and the plain paths below rely on it.
- ``takes_password``: whether the engine logs in with a password at all: ``[database]
  password_file`` / ``password_env`` with an engine that does not (SQLite, a file whose
  permissions are its only lock) is a config error, not a password silently ignored.
- ``read_plainly`` / ``write_plainly``: a transaction on a connection of the driver's own
  for the commands that must not pay for importing SQLAlchemy (``syncd status`` reads,
  ``syncd order track`` writes; an engine may offer neither, and the caller then goes the
  usual way).
- ``is_lock_error(error)``: which driver errors mean "locked, run the transaction again"
  (SQLite's "database is locked", PostgreSQL's lock timeout, deadlock and serialization
  SQLSTATEs).
- ``is_permission_error(error)``, ``role(url)``: which driver errors mean "the role syncd
  connects as lacks a privilege", and that role's name: such an error is one line naming
  the role and the statement refused, never retried (PostgreSQL's SQLSTATE 42501; SQLite
  has no roles and never says so). ``docs/roles.md`` grants each role what it needs.

SQL
- ``clock(plus)``, ``now_sql``, ``now_plus_sql`` / ``now_plus_param``: the database's own
  time, in the form times are stored, for SQLAlchemy statements and for plain SQL. Leases
  are judged by one clock, the database's: the hosts sharing it may disagree.
- ``true_sql``: a stored true in plain SQL (``1`` or ``true``).
- ``well_formed_time_sql``, ``well_formed_int_sql``: whether a stored value is in the
  form syncd writes (always, where the column is typed; SQLite keeps whatever a consumer
  wrote): such rows are counted by the database, any other is read whole and judged in
  Python as before; ``odd_times_sql``: an order whose times are not all in that form
  (None where columns are typed), the condition of SQLite's partial index of them.
- ``money_group_sql``, ``utc_day_sql``, ``elapsed_sql``: money grouped by its exact
  digits, a time's UTC day as text, the exact time between two times, to be summed:
  ``syncd status`` and ``syncd report`` count by these instead of reading every row;
  ``exact_text_sql``: a text column compared and grouped by its exact characters
  (MariaDB's collations ignore trailing spaces).
- ``starts_with_sql(column, prefix)``: a text column begins with a constant, as a
  condition an index serves (where partial indexes exist, the WHERE of one repeated; on
  MariaDB, LIKE on an index of the text's first characters): ``syncd status`` counts the
  orders the price guard holds by it, never reading every queued order's error.
- ``row_lock_sql``, ``share_lock_sql``: the clauses that lock a plain SELECT's rows until
  the commit (the status batch, the fence check), empty where one writer holds the whole
  database. SQLAlchemy statements say ``with_for_update(skip_locked=...)``, which each
  dialect renders itself.
- ``upsert(table, values, key, update, where)``: insert-or-update in one statement (leases
  and instances: two instances racing for a lease cannot both win).
- ``lock_migrations(conn)``: processes started together on a new database migrate one
  after another, the later ones finding the newest revision (PostgreSQL: an advisory
  lock, as DDL on tables that do not exist yet locks nothing; SQLite: nothing more than
  the write lock ``BEGIN IMMEDIATE`` took).
- ``take_feed_turn(conn)``: writers of the change feeds take ids in commit order, so a
  consumer reading ``id > cursor`` never skips a row that commits late (PostgreSQL: an
  advisory lock; SQLite: nothing, one writer at a time).
- ``insert_missing_orders(...)``: ``syncd order track``'s insert of ids not tracked yet,
  leaving rows another writer inserts meanwhile to it.

The fast path's values (``driver.Driver``: status sweeps and catalogs write thousands of
rows as plain SQL on the DBAPI cursor; the Driver takes these once per connection, never
per value)
- ``sql(text)``: the driver's paramstyle (statements are written with ``?``).
- ``ids_in(column, count)`` / ``id_params(ids)``: one indexed lookup of many ids.
- ``time_value``, ``money_value``, ``text_value``: values in the form the column holds
  (SQLite: UTC text and exact decimal text; PostgreSQL: aware datetimes and Decimals; a
  state as its text: psycopg would write an Enum's name). ``binds_enums_as_text`` lets a
  hot loop skip ``text_value`` where the driver needs no help.
- ``parses_json``: whether the driver returns a JSON column parsed or as text.

Column types (``types.Money``, ``types.UTCDateTime``)
- ``money_type()``: the column type that keeps money exact (TEXT in SQLite, whose NUMERIC
  would make it a float; NUMERIC in PostgreSQL). ``money_value`` writes it.
- ``time_column(value)``: a UTC time as the engine's DateTime type takes it.

Notify or poll
- ``notifies``, ``listen(url, channel, heard)``: a running syncd wakes at once on a new
  queued order, and ``syncd changes --follow`` on new feed rows, where the database can
  push (PostgreSQL LISTEN/NOTIFY).
- ``watch_writes(url)``: the cheap look a poll makes between real queries (SQLite's
  ``PRAGMA data_version``; elsewhere every look says "maybe").
- ``install_notify`` / ``remove_notify``: the triggers that send those notifications, as
  migrations install them; a migration passes what it created then as literals, so that a
  database migrated before looks the same whatever the code says today.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any

from syncd.errors import StorageError
from syncd.storage.backends.interface import Backend

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["Backend", "UnknownBackend", "backend_for", "backend_for_url", "backend_named"]

# Dialect name → module of this package holding its ``BACKEND``; imported when first asked.
_MODULES = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "mysql": "mariadb",
    "mariadb": "mariadb",
}


class UnknownBackend(StorageError):
    """A database URL names an engine syncd does not work with."""


@functools.cache
def backend_named(name: str) -> Backend:
    """The backend of the engine SQLAlchemy calls ``name``: the one place that decides."""
    module = _MODULES.get(name)
    if module is None:
        known = " or ".join(sorted(_MODULES))
        raise UnknownBackend(f"syncd does not work with {name or 'this kind of'} databases, "
                             f"only {known}")  # fmt: skip
    backend: Backend = importlib.import_module(f"{__name__}.{module}").BACKEND
    return backend


def backend_for(bind: Any) -> Backend:
    """The backend of a SQLAlchemy connection, engine or dialect."""
    return backend_named(getattr(bind, "dialect", bind).name)


def backend_for_url(url: str | sa.URL) -> Backend:
    """The backend a database URL names: a parsed URL's backend name, or in a URL's text
    what SQLAlchemy reads as it (``drivername`` before ``://``, then the part before
    ``+``), without importing SQLAlchemy."""
    if isinstance(url, str):
        return backend_named(url.partition("://")[0].partition("+")[0])
    return backend_named(url.get_backend_name())
