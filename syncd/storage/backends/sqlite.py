"""SQLite: the embedded default, one file on one host.

One writer at a time holds the whole database, from its first write to its commit: no
row locks, no feed turn, and what a transaction did not find nobody inserts meanwhile.
Times are stored as ``"YYYY-MM-DD HH:MM:SS.ffffff"`` text in UTC (the form SQLAlchemy's
``DATETIME`` writes, so that both kinds of writes compare and sort alike) and money as
exact decimal text (SQLite's NUMERIC affinity would make ``0.1`` a binary float).
Nothing is pushed: a reader polls ``PRAGMA data_version``.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from syncd.errors import DatabaseGoneError
from syncd.storage.backends.interface import (
    POLL,
    READ_ONLY_OPTION,
    Backend,
    EveryLook,
    Execute,
    Unwatched,
    WriteProbe,
)
from syncd.storage.driver import PlainDriver, checked_money, utc
from syncd.units import money_text

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine
    from sqlalchemy.types import TypeEngine

    from syncd.storage.driver import Driver

T = TypeVar("T")

# The plain form ``sqlite:///PATH``; no query: its parameters are SQLAlchemy's to read.
_PLAIN = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<database>[^?]*)")
POLL_SQLITE = 0.25  # an idle look costs one PRAGMA: look more often than elsewhere
_MEMORY = (None, "", ":memory:")


def _clock(shift: str = "") -> str:
    """The database's time in the text times are stored as; ``shift`` is a modifier
    argument of ``strftime`` (``", '+1.000 seconds'"`` or ``", ?"``)."""
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now'{shift}) || '000'"


def plain_file(url: str) -> Path | None:
    """The file a ``sqlite:///PATH`` URL names (absolute), as SQLAlchemy reads it (the path
    percent-decoded); None for a URL of any other form, or a database in memory."""
    match = _PLAIN.fullmatch(url)
    if match is None:
        return None
    database = unquote(match["database"])
    return None if database in _MEMORY else Path(database).absolute()


def _odd_times(well_formed: str) -> dict[str, str]:
    """``Backend.odd_times_sql`` from a check of one column (which says false, never NULL,
    so NOT is true of each odd row): the time sent by (sent, or created if never sent) is
    odd; the finish time is odd. Two conditions, each its own partial index: the status
    sweep sets ``finished_at`` in every row it writes, and SQLite then judges the
    condition of each index on that column, which for the second is one NULL test."""
    sent = well_formed.format(column="submitted_at")
    created = well_formed.format(column="created_at")
    finished = well_formed.format(column="finished_at")
    return {
        "ix_orders_odd_sent": (
            f"NOT (({sent}) OR (submitted_at IS NULL AND (created_at IS NULL OR {created})))"
        ),
        "ix_orders_odd_finished": f"finished_at IS NOT NULL AND NOT {finished}",
    }


class SQLite(Backend):
    name = "sqlite"
    sqlalchemy_dialect = "sqlite"
    patience_sql = "PRAGMA busy_timeout = {ms}"
    now_sql = _clock()
    now_plus_sql = _clock(", ?")
    true_sql = "1"
    # syncd's own form, "2026-03-01 12:00:00.000000", and a real date and time that
    # Python reads too: the whole seconds go through a Julian day and back (which rolls
    # 2026-02-30 over to March and 24:00 to the next day, where strftime alone gives them
    # back as they were, and writes only digits where digits belong), the decimals are six
    # digits. Given the decimals, SQLite would round them to milliseconds, and .000500
    # would never come back; year 0 is SQLite's, not Python's. IS, not =: a text SQLite
    # reads as no time makes datetime() NULL, and the check must say false, not NULL
    # (NOT NULL is NULL too: such a row would be neither counted nor read whole). Its
    # length in bytes: length() of a text stops at a NUL, and a NUL and anything after
    # a plain time would pass.
    well_formed_time_sql = (
        "(typeof({column}) = 'text' AND length(CAST({column} AS BLOB)) = 26"
        " AND substr({column}, 20) GLOB '.[0-9][0-9][0-9][0-9][0-9][0-9]'"
        " AND substr({column}, 1, 4) <> '0000'"
        " AND datetime(julianday(substr({column}, 1, 19))) IS substr({column}, 1, 19))"
    )
    odd_times_sql = _odd_times(well_formed_time_sql)
    well_formed_int_sql = "typeof({column}) = 'integer'"
    utc_day_sql = "substr({column}, 1, 10)"
    # Whole seconds by strftime, of the time cut before its point (given the decimals,
    # SQLite rounds them to milliseconds: 23:59:59.9999 would be midnight), and the six
    # decimals of syncd's form added apart, as whole numbers.
    elapsed_sql = (
        "CAST(strftime('%s', substr({end}, 1, 19)) AS INTEGER)"
        " - CAST(strftime('%s', substr({start}, 1, 19)) AS INTEGER)",
        "CAST(substr({end}, 21, 6) AS INTEGER) - CAST(substr({start}, 21, 6) AS INTEGER)",
    )
    binds_enums_as_text = True  # sqlite3 binds a StrEnum as its text
    parses_json = False
    takes_password = False  # a file: who may read it is the file system's to say

    def make_engine(
        self, url: sa.URL, *, busy_timeout: float, on_begin: Callable[[sa.Connection], None]
    ) -> Engine:
        """WAL (readers never block the daemon), a busy timeout (a consumer's write lock
        is waited on), foreign keys, ``synchronous=FULL`` (a committed "submitting" row
        must survive a power cut, or an order could be sent twice), and ``BEGIN
        IMMEDIATE`` for write transactions, so that a transaction takes the write lock
        when it starts and waits for it there instead of failing half-way on a lock
        upgrade."""
        import sqlalchemy as sa  # noqa: PLC0415 - never for the commands that read plainly

        engine = sa.create_engine(url, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event, not the driver, decide how transactions start.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if url.database not in _MEMORY:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            on_begin(connection)  # before BEGIN IMMEDIATE, which waits for the lock
            read_only = connection.get_execution_options().get(READ_ONLY_OPTION, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine

    def database_file(self, url: str | sa.URL) -> Path | None:
        import sqlalchemy as sa  # noqa: PLC0415

        database = sa.engine.make_url(url).database
        return None if database in _MEMORY else Path(str(database)).absolute()

    def watch_file(
        self, url: str | sa.URL, gone: Callable[[DatabaseGoneError], None]
    ) -> SameFile | Unwatched:
        path = self.database_file(url)
        return Unwatched() if path is None else SameFile(path, gone)

    def plain_form(self, url: str) -> bool:
        return _PLAIN.fullmatch(url) is not None

    def read_plainly(
        self, url: str, busy_timeout: float, work: Callable[[PlainDriver], T | None]
    ) -> T | None:
        path = plain_file(url)
        if path is None or not path.is_file():
            return None  # opening would create it: the usual way does that
        try:
            # mode=ro: a reader must never write, not even the journal mode.
            connection = sqlite3.connect(
                f"{path.as_uri()}?mode=ro", uri=True, timeout=busy_timeout, isolation_level=None
            )
        except sqlite3.Error:
            return None
        try:
            connection.execute("BEGIN")  # one snapshot for every query
            return work(PlainDriver(connection, self))
        except sqlite3.Error:
            return None
        finally:
            connection.close()

    def write_plainly(
        self, url: str, busy_timeout: float, work: Callable[[PlainDriver], T | None]
    ) -> T | None:
        """Set up as ``make_engine``'s connections are: every commit waits for the disk,
        foreign keys are checked, and the write lock is taken when the transaction
        begins."""
        path = plain_file(url)
        if path is None or not path.is_file():
            return None
        try:
            connection = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("BEGIN IMMEDIATE")
            done = work(PlainDriver(connection, self))
            connection.execute("ROLLBACK" if done is None else "COMMIT")
            return done
        except sqlite3.Error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            return None
        finally:
            connection.close()

    def clock(self, plus: float = 0.0) -> sa.ColumnElement[Any]:
        import sqlalchemy as sa  # noqa: PLC0415

        return sa.literal_column(_clock(f", '{plus:+.3f} seconds'"))

    def now_plus_param(self, seconds: float) -> object:
        return f"{seconds:+.3f} seconds"

    def insert_missing_orders(
        self,
        d: Driver,
        provider: str,
        provider_order_ids: Sequence[int],
        *,
        state: str,
        when: object,
        stored: Callable[[Sequence[int]], dict[int, int]],
    ) -> dict[int, int]:
        # This transaction holds the only write lock: what it did not find, nobody else
        # can insert meanwhile.
        d.run_many(
            "INSERT INTO orders (provider, provider_order_id, state, created_at, "
            "next_check_at) VALUES (?, ?, ?, ?, ?)",
            [(provider, poid, state, when, when) for poid in provider_order_ids],
        )
        return stored(provider_order_ids)

    def ids_in(self, column: str, count: int) -> str:
        return f"{column} IN ({', '.join('?' * count)})"

    def id_params(self, ids: Sequence[int]) -> tuple[Any, ...]:
        return tuple(ids)

    @staticmethod
    def time_value(value: datetime | None) -> str | None:
        if value is None:
            return None
        return utc(value).replace(tzinfo=None).isoformat(" ", "microseconds")

    @staticmethod
    def money_value(value: Decimal | None) -> str | None:
        return None if value is None else money_text(checked_money(value))

    @staticmethod
    def text_value(value: str | Enum | None) -> str | None:
        return value  # type: ignore[return-value]  # sqlite3 binds a StrEnum as its text

    def money_type(self) -> TypeEngine[Any]:
        from sqlalchemy import Text  # noqa: PLC0415

        return Text()

    @staticmethod
    def time_column(value: datetime) -> datetime:
        return value.replace(tzinfo=None)  # UTC, kept without an offset

    def lock_migrations(self, conn: sa.Connection) -> None:
        """Nothing more to take: the migration's transaction began with ``BEGIN
        IMMEDIATE``, which holds the database's one write lock until the commit, so a
        second process waits for it there (the busy timeout) and then reads the newest
        revision."""

    def take_feed_turn(self, conn: sa.Connection) -> None:
        """Nothing to wait for: one writer holds the whole database from its first write
        to its commit, so feed ids already become visible in id order."""

    def install_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        """Nothing: SQLite sends no notifications, its readers poll (``watch_writes``)."""

    def remove_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        """Nothing was installed."""

    def watch_writes(self, url: str) -> WriteProbe:
        path = self.database_file(url)
        return EveryLook(POLL) if path is None else DataVersion(path)


class SameFile:
    """The SQLite file a storage opened, known by its device and inode: ``check`` (before
    every transaction) costs one ``os.stat``, a few microseconds.

    A file deleted (an ``rm``) or replaced (a restore moved over it) under a running
    syncd would go on taking its writes in the unlinked copy, where nobody reads them,
    while the next program to open the path finds another database or makes a new empty
    one. Once the path names another file or none, every transaction of this process
    fails before it touches the database, and ``gone`` is told once (the daemon stops).

    The WAL left beside the path belongs to the unlinked file, and the next program to
    open the path would replay it into whatever file is there now: a restored database
    would read as the deleted one, and be overwritten by it at the next checkpoint. So
    the WAL this process opened is moved aside (``NAME-wal.orphaned``) and its index
    (``NAME-shm``, no data) removed, when they are still the files this process opened.
    """

    def __init__(self, path: Path, gone: Callable[[DatabaseGoneError], None]) -> None:
        self.path = path
        self._gone = gone
        self._identity = _identity(path)
        self._wal = _identity(_beside(path, "-wal"))
        self._shm = _identity(_beside(path, "-shm"))
        self._error: str | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        if self._error is None:
            try:
                if _identity(self.path, strict=True) == self._identity:
                    return
            except OSError:
                # The path cannot be looked at (permissions, a stale NFS handle, an I/O
                # error): no sign the file is gone, and moving its WAL aside would take
                # committed writes from a live database. The transaction shows the fault.
                return
        with self._lock:
            first = self._error is None
            if first:
                self._error = self._noticed()
        if first:
            self._gone(DatabaseGoneError(self._error))
        raise DatabaseGoneError(self._error)

    def _noticed(self) -> str:
        happened = "deleted" if _identity(self.path) is None else "replaced by another file"
        moved = ""
        wal, shm = _beside(self.path, "-wal"), _beside(self.path, "-shm")
        if self._wal is not None and _identity(wal) == self._wal:
            aside = _beside(self.path, "-wal.orphaned")
            try:
                wal.replace(aside)
                moved = f"; its WAL is kept as {aside.name}"
            except OSError as exc:
                moved = (
                    f"; move its WAL {wal.name} aside before syncd starts again "
                    f"(it could not: {exc.strerror})"
                )
        if self._shm is not None and _identity(shm) == self._shm:
            with suppress(OSError):
                shm.unlink()
        return (
            f"the database file {self.path} was {happened} while syncd ran; stopping so "
            f"that nothing is written to a file nobody reads{moved}"
        )


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _identity(path: Path, *, strict: bool = False) -> tuple[int, int] | None:
    """The file's device and inode; None when no file is there. Any other failure to
    look is None too, unless ``strict`` (then it is raised: it proves nothing)."""
    try:
        found = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        if strict:
            raise
        return None
    return found.st_dev, found.st_ino


class DataVersion:
    """Whether anyone committed a write to a SQLite file since the last look.

    ``PRAGMA data_version`` on a connection of its own changes whenever another
    connection (any process) commits: a look costs one read of the shared-memory index,
    no query plan, no table.
    """

    poll = POLL_SQLITE

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None

    def changed(self) -> bool:
        try:
            if self._conn is None:
                # mode=rw: a file deleted meanwhile is not created anew by a look.
                self._conn = sqlite3.connect(
                    f"{self._path.as_uri()}?mode=rw", uri=True, check_same_thread=False
                )
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return True  # the caller's own query meets the problem and says what it is
        changed = version != self._version
        self._version = version
        return changed

    def close(self) -> None:
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._version = None


BACKEND = SQLite()
