"""Transactions, lock handling and error translation shared by every storage mixin."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import stamina
import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from syncd.errors import LeaseLostError, StorageError
from syncd.models import Lease
from syncd.storage import tables as t
from syncd.storage.driver import Driver
from syncd.storage.engine import READ_ONLY, shorten_waits, sqlite_file

T = TypeVar("T")
log = structlog.get_logger("syncd.storage")


# The lease the current job works under, if any (a context variable: asyncio.to_thread
# copies it into the worker thread that runs each storage call of the job).
FENCE: ContextVar[Lease | None] = ContextVar("syncd_fence", default=None)


class Locked(Exception):
    """The database stayed locked for a whole busy timeout; the transaction is retried."""


class StorageBase:
    """Owns the engine. Every method of every mixin runs inside ``_read`` or ``_write``.

    A SQLite file deleted or replaced under a running syncd (an operator's ``rm``, a
    restore over it) would go on taking writes into the unlinked file, where no one can
    read them: every transaction first checks that the path still names the file opened.
    """

    def __init__(self, engine: Engine, *, lock_attempts: int = 3) -> None:
        self.engine = engine
        self._lock_attempts = lock_attempts
        self._retrying = True
        self._file = DatabaseFile(None)  # watched once the schema is in place

    def watch_file(self) -> None:
        """From now on, fail every transaction if the SQLite file is deleted or replaced."""
        self._file = DatabaseFile.of(self.engine)

    def stop_retrying(self) -> None:
        """On shutdown: a write that meets a lock gives up after one wait, and transactions
        that begin from now on wait a second at most, so that SIGTERM ends the process
        within seconds even while a consumer holds a lock."""
        self._retrying = False
        shorten_waits(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        self._file.check()
        try:
            with self.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
                return work(conn)
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from None

    def _write(self, work: Callable[[sa.Connection], T], *, fenced: bool = True) -> T:
        """Run ``work`` in one write transaction; all of it is committed or none of it.

        A database another program holds locked is waited on (the busy timeout), and the
        whole transaction is tried again a few times before the job gives up. Unless
        ``fenced`` is false, the transaction first checks the current job's lease.
        """
        self._file.check()
        fence = FENCE.get() if fenced else None

        def transaction() -> T:
            with self.engine.begin() as conn:
                if fence is not None:
                    check_fence(conn, fence)
                return work(conn)

        return self.retry_locked(transaction)

    def retry_locked(self, transaction: Callable[[], T]) -> T:
        """Run ``transaction`` (which opens its own), again while the database is locked."""
        try:
            for attempt in stamina.retry_context(
                on=lambda exc: isinstance(exc, Locked) and self._retrying,
                attempts=self._lock_attempts,
                timeout=None,
                wait_initial=0.2,
            ):
                with attempt:
                    try:
                        return transaction()
                    except OperationalError as exc:
                        if _is_locked(exc):
                            log.warning("storage.locked", attempt=attempt.num)
                            raise Locked from exc
                        raise
        except Locked:
            raise StorageError(
                f"database is locked by another program (tried {self._lock_attempts} times)"
            ) from None
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from None
        raise AssertionError("unreachable: retry_context raises after the last attempt")


class DatabaseFile:
    """The SQLite file a storage opened, known by its device and inode."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._identity = _identity(path) if path is not None else None

    @classmethod
    def of(cls, engine: Engine) -> DatabaseFile:
        return cls(sqlite_file(engine.url))

    def check(self) -> None:
        if self.path is None or _identity(self.path) == self._identity:
            return
        log.error("storage.file_replaced", path=str(self.path))
        raise StorageError(
            f"the database file {self.path} was deleted or replaced while syncd had it open; "
            "nothing more is written to it: stop syncd, put the file back or let it start "
            f"afresh (the process's open copy is /proc/{os.getpid()}/fd/... until it stops)"
        )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def db_clock(conn: sa.Connection, plus: float = 0.0) -> sa.ColumnElement[Any]:
    """The database's own time, ``plus`` seconds, as an SQL expression. Leases are judged
    by one clock, the database's: the hosts sharing it may disagree."""
    if conn.dialect.name == "sqlite":
        # The text syncd stores times as ("YYYY-MM-DD HH:MM:SS.ffffff"), so they compare.
        return sa.literal_column(
            f"strftime('%Y-%m-%d %H:%M:%f', 'now', '{plus:+.3f} seconds') || '000'"
        )
    return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, plus)


_FENCE = "SELECT epoch FROM leases WHERE name = ? AND holder = ? AND epoch = ? AND expires_at >= "
# db_clock's two spellings, written out.
_FENCE_SQLITE = _FENCE + "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
_FENCE_POSTGRES = _FENCE + "now() FOR SHARE"


def check_fence(conn: sa.Connection, lease: Lease) -> None:
    """Raise ``LeaseLostError`` unless ``lease`` still holds, inside the transaction about
    to write. On PostgreSQL the lease row is locked for share until the commit, so no
    takeover can come between this check and the writes; on SQLite one writer at a time
    holds the whole database already."""
    d = Driver(conn)
    # Every write transaction of a job asks this: plain SQL, no statement to build.
    query = _FENCE_SQLITE if d.sqlite else _FENCE_POSTGRES
    if not d.run(query, (lease.name, lease.holder, lease.epoch)):
        raise LeaseLostError(
            f"the lease of {lease.name} (epoch {lease.epoch}) is no longer this instance's; "
            "nothing was written",
            provider=lease.name,
        )


def lock_provider(conn: sa.Connection, provider: str) -> None:
    """Serialise writers working on one provider: a row lock on PostgreSQL (SQLite's
    BEGIN IMMEDIATE already lets one writer in at a time)."""
    conn.execute(
        sa.select(t.providers.c.name).where(t.providers.c.name == provider).with_for_update()
    )


# The key of the one advisory lock every feed writer takes (``take_feed_turn``): "syncd".
FEED_LOCK_KEY = 0x73796E6364


def take_feed_turn(conn: sa.Connection) -> None:
    """Wait for this transaction's turn to add rows to the change feeds (``order_changes``,
    ``package_changes``, ``alerts``); the turn lasts until the commit.

    A consumer follows a feed with ``WHERE id > :cursor ORDER BY id``. On PostgreSQL a
    sequence hands out ids when rows are inserted, not when they commit: a transaction
    that took id 7 and commits after the one that took id 8 would land behind a reader
    already past 8, and that reader would never see it. With one transaction-level
    advisory lock taken just before the feed rows are inserted, the writers take ids one
    transaction at a time and commit in that order, so ids become visible in id order.
    Feed rows are the last writes of every transaction (the lock is held until commit,
    and a row lock waited for while holding it could deadlock). SQLite needs nothing:
    one writer holds the whole database from its first write to its commit.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(FEED_LOCK_KEY)))


def append_feed(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` into the feed ``table``, in this transaction's turn."""
    if rows:
        take_feed_turn(conn)
        conn.execute(sa.insert(table), list(rows))


# PostgreSQL's SQLSTATEs worth a fresh try of the whole transaction: lock_timeout ran
# out, a deadlock was broken by aborting this side, a serialization failure.
_TRY_AGAIN = {"55P03", "40P01", "40001"}


def _is_locked(exc: OperationalError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in _TRY_AGAIN:
        return True
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def driver_reason(exc: SQLAlchemyError) -> str:
    """The driver's own message on one line, not SQLAlchemy's, which adds the statement
    and its values."""
    return " ".join(str(getattr(exc, "orig", None) or type(exc).__name__).split())[:300]


def _storage_error(exc: SQLAlchemyError) -> StorageError:
    if isinstance(exc, OperationalError) and _is_locked(exc):
        return StorageError("database is locked by another program")
    return StorageError(f"database error: {driver_reason(exc)}")
