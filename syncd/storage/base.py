"""Transactions, lock handling and error translation shared by every storage mixin."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import sqlalchemy as sa
import stamina
import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from syncd.errors import StorageError
from syncd.storage import tables as t
from syncd.storage.engine import READ_ONLY

T = TypeVar("T")
log = structlog.get_logger("syncd.storage")

# Bound parameters per statement stay well below SQLite's and PostgreSQL's limits.
CHUNK = 500


class Locked(Exception):
    """The database stayed locked for a whole busy timeout; the transaction is retried."""


class StorageBase:
    """Owns the engine. Every method of every mixin runs inside ``_read`` or ``_write``."""

    def __init__(self, engine: Engine, *, lock_attempts: int = 3) -> None:
        self.engine = engine
        self._lock_attempts = lock_attempts
        self._retrying = True

    def stop_retrying(self) -> None:
        """On shutdown: a write that meets a lock waits one busy timeout, then gives up,
        so that SIGTERM ends the process within seconds even while a consumer holds a lock."""
        self._retrying = False

    def close(self) -> None:
        self.engine.dispose()

    def _read(self, work: Callable[[sa.Connection], T]) -> T:
        try:
            with self.engine.connect().execution_options(**READ_ONLY) as conn, conn.begin():
                return work(conn)
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from None

    def _write(self, work: Callable[[sa.Connection], T]) -> T:
        """Run ``work`` in one write transaction; all of it is committed or none of it.

        A database another program holds locked is waited on (the busy timeout), and the
        whole transaction is tried again a few times before the job gives up.
        """
        try:
            for attempt in stamina.retry_context(
                on=lambda exc: isinstance(exc, Locked) and self._retrying,
                attempts=self._lock_attempts,
                timeout=None,
                wait_initial=0.2,
            ):
                with attempt:
                    try:
                        with self.engine.begin() as conn:
                            return work(conn)
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


def lock_provider(conn: sa.Connection, provider: str) -> None:
    """Serialise writers working on one provider: a row lock on PostgreSQL (SQLite's
    BEGIN IMMEDIATE already lets one writer in at a time)."""
    conn.execute(
        sa.select(t.providers.c.name).where(t.providers.c.name == provider).with_for_update()
    )


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _is_locked(exc: OperationalError) -> bool:
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
