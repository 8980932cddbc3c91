"""Transactions, lock handling and error translation shared by every storage mixin."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import sqlalchemy as sa
import stamina
import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from syncd.errors import DatabaseGoneError, LeaseLostError, PrivilegeError, StorageError
from syncd.models import Lease
from syncd.storage import tables as t
from syncd.storage.backends import Backend, backend_for
from syncd.storage.backends.interface import FileWatch, Unwatched
from syncd.storage.driver import Driver
from syncd.storage.engine import READ_ONLY, shorten_waits

T = TypeVar("T")
log = structlog.get_logger("syncd.storage")


# The lease the current job works under, if any (a context variable: asyncio.to_thread
# copies it into the worker thread that runs each storage call of the job).
FENCE: ContextVar[Lease | None] = ContextVar("syncd_fence", default=None)


# What to do once the current write transaction has committed (logging what it
# raised): nothing of it runs when the transaction rolls back. One list per transaction
# attempt; a context variable, so that threads writing at once keep theirs apart.
_AFTER_COMMIT: ContextVar[list[Callable[[], None]] | None] = ContextVar(
    "syncd_after_commit", default=None
)


def after_commit(action: Callable[[], None]) -> None:
    """Run ``action`` once the write transaction running now has committed, never if it
    rolls back (a transaction retried after a lock runs only its last attempt's)."""
    pending = _AFTER_COMMIT.get()
    if pending is None:
        raise RuntimeError("after_commit outside a write transaction")
    pending.append(action)


class Locked(Exception):
    """The database stayed locked for a whole busy timeout; the transaction is retried."""


class StorageBase:
    """Owns the engine. Every method of every mixin runs inside ``_read`` or ``_write``.

    A database file deleted or replaced under a running syncd (an operator's ``rm``, a
    restore over it) would go on taking writes into the unlinked file, where no one can
    read them: every transaction first asks the backend's watch whether the file is still
    the one opened (``DatabaseGoneError`` when not), and ``when_gone`` is told once.
    """

    def __init__(self, engine: Engine, *, lock_attempts: int = 3) -> None:
        self.engine = engine
        self.backend = backend_for(engine)
        self._lock_attempts = lock_attempts
        self._retrying = True
        self._file: FileWatch = Unwatched()  # watched once the schema is in place
        # Told once, from the thread that noticed, that the database file is gone.
        self.when_gone: Callable[[DatabaseGoneError], None] = lambda _error: None

    def watch_file(self) -> None:
        """From now on, fail every transaction if the database file is deleted or replaced."""
        self._file = self.backend.watch_file(self.engine.url, self._gone)

    def _gone(self, error: DatabaseGoneError) -> None:
        log.error("storage.file_gone", error=str(error))
        self.when_gone(error)

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
            raise self._storage_error(exc) from None

    def _write(self, work: Callable[[sa.Connection], T], *, fenced: bool = True) -> T:
        """Run ``work`` in one write transaction; all of it is committed or none of it.

        A database another program holds locked is waited on (the busy timeout), and the
        whole transaction is tried again a few times before the job gives up. Unless
        ``fenced`` is false, the transaction first checks the current job's lease.
        """
        self._file.check()
        fence = FENCE.get() if fenced else None

        def transaction() -> T:
            committed: list[Callable[[], None]] = []
            token = _AFTER_COMMIT.set(committed)
            try:
                with self.engine.begin() as conn:
                    if fence is not None:
                        check_fence(conn, fence)
                    result = work(conn)
            finally:
                _AFTER_COMMIT.reset(token)
            for action in committed:  # only reached once the commit succeeded
                action()
            return result

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
                        if self.backend.is_lock_error(exc.orig):
                            log.warning("storage.locked", attempt=attempt.num)
                            raise Locked from exc
                        raise
        except Locked:
            raise StorageError(
                f"database is locked by another program (tried {self._lock_attempts} times)"
            ) from None
        except SQLAlchemyError as exc:
            raise self._storage_error(exc) from None
        raise AssertionError("unreachable: retry_context raises after the last attempt")

    def _storage_error(self, exc: SQLAlchemyError) -> StorageError:
        if isinstance(exc, OperationalError) and self.backend.is_lock_error(exc.orig):
            return StorageError("database is locked by another program")
        if self.backend.is_permission_error(getattr(exc, "orig", None)):
            return privilege_error(self.backend.role(self.engine.url), exc)
        return StorageError(f"database error: {driver_reason(exc)}")


def db_clock(conn: sa.Connection, plus: float = 0.0) -> sa.ColumnElement[Any]:
    """The database's own time, ``plus`` seconds, as an SQL expression. Leases are judged
    by one clock, the database's: the hosts sharing it may disagree."""
    return backend_for(conn).clock(plus)


@functools.cache
def _fence_sql(backend: Backend) -> str:
    """The fence check of ``backend``: plain SQL, built once."""
    return (
        "SELECT epoch FROM leases WHERE name = ? AND holder = ? AND epoch = ?"  # noqa: S608
        f" AND expires_at >= {backend.now_sql}{backend.share_lock_sql}"
    )


def check_fence(conn: sa.Connection, lease: Lease) -> None:
    """Raise ``LeaseLostError`` unless ``lease`` still holds, inside the transaction about
    to write. The lease row is locked for share until the commit (where rows are locked;
    elsewhere one writer at a time holds the whole database already), so no takeover can
    come between this check and the writes."""
    d = Driver(conn)
    # Every write transaction of a job asks this: plain SQL, no statement to build.
    if not d.run(_fence_sql(d.backend), (lease.name, lease.holder, lease.epoch)):
        # Said exactly: "this transaction" and no more, since a reader would take "nothing
        # was written" for the whole job, whose earlier transactions stand.
        raise LeaseLostError(
            f"{_why_fenced(d, lease)}; this transaction wrote nothing", provider=lease.name
        )


def _why_fenced(d: Driver, lease: Lease) -> str:
    """What became of a lease the fence refused: ran out while still this holder's (it
    was not renewed in time), or passed to another holder."""
    which = f"the lease of {lease.name} (epoch {lease.epoch})"
    rows = d.run("SELECT holder, epoch FROM leases WHERE name = ?", (lease.name,))
    if not rows:
        return f"{which} is gone"
    holder, epoch = rows[0]
    if (holder, epoch) == (lease.holder, lease.epoch):
        return f"{which} ran out before this write: it was not renewed in time"
    return f"{which} passed to another instance ({holder}, epoch {epoch})"


def lock_provider(conn: sa.Connection, provider: str) -> None:
    """Serialise writers working on one provider: a row lock on PostgreSQL (SQLite's
    BEGIN IMMEDIATE already lets one writer in at a time).

    FOR NO KEY UPDATE, not FOR UPDATE: a consumer's INSERT of an order holds a key share
    lock on its provider's row until it commits (its foreign key check), which FOR UPDATE
    would wait for: a long transaction of a shop would stop every claim and answer.
    MariaDB has no such lock (it takes FOR UPDATE)."""
    conn.execute(
        sa.select(t.providers.c.name)
        .where(t.providers.c.name == provider)
        .with_for_update(key_share=True)
    )


def take_feed_turn(conn: sa.Connection) -> None:
    """Wait for this transaction's turn to add rows to the change feeds (``order_changes``,
    ``package_changes``, ``alerts``); the turn lasts until the commit.

    A consumer follows a feed with ``WHERE id > :cursor ORDER BY id``. Where several
    writers run at once, a sequence hands out ids when rows are inserted, not when they
    commit: a transaction that took id 7 and commits after the one that took id 8 would
    land behind a reader already past 8, and that reader would never see it. So the
    writers take ids one transaction at a time and commit in that order (the backend's
    lock, held until the commit; nothing where one writer holds the whole database from
    its first write to its commit), and ids become visible in id order. Feed rows are
    the last writes of every transaction (a row lock waited for while holding the turn
    could deadlock).
    """
    backend_for(conn).take_feed_turn(conn)


def append_feed(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` into the feed ``table``, in this transaction's turn."""
    if rows:
        take_feed_turn(conn)
        conn.execute(sa.insert(table), list(rows))


def privilege_error(role: str, exc: SQLAlchemyError) -> PrivilegeError:
    """One line naming the role, the kind of statement refused and the database's own
    reason (which names the table): "role syncd_reader may not INSERT: permission
    denied for table orders"."""
    statement = str(getattr(exc, "statement", "") or "").split()
    verb = f" {statement[0].upper()}" if statement else " do this"
    return PrivilegeError(
        f"database role {role} may not{verb}: {driver_reason(exc)} "
        "(see docs/roles.md for what each role is granted)"
    )


def driver_reason(exc: SQLAlchemyError) -> str:
    """The driver's own message on one line, not SQLAlchemy's, which adds the statement
    and its values."""
    orig = getattr(exc, "orig", None)
    args: tuple[object, ...] = getattr(orig, "args", ())
    # MySQL-family drivers raise (code, message): the message alone reads as a sentence.
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        orig = args[1]
    return " ".join(str(orig or type(exc).__name__).split())[:300]
