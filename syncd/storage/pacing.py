"""A provider's pace (``call_pace``), shared by every process calling it.

``apply_pace`` is one write transaction: it makes sure the rows of the limits a call
counts against exist, locks them (``SELECT ... FOR UPDATE`` on PostgreSQL and MariaDB;
SQLite's ``BEGIN IMMEDIATE`` lets one writer in at a time), reads the database's clock,
hands both to the caller's decision (``syncd.limits``) and writes back what
changed. Keys are locked in one order, so two processes never wait on each other's rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from syncd.limits import EVERY_ACTION, FIRST_PAUSE, LONGEST_GUESS, Shared
from syncd.storage import tables as t
from syncd.storage.base import StorageBase, db_clock
from syncd.storage.rows import raw
from syncd.storage.types import UTCDateTime
from syncd.storage.values import read_time, readable

T = TypeVar("T")
_c = t.call_pace.c


class PaceStorage(StorageBase):
    def apply_pace(
        self,
        provider: str,
        keys: Sequence[str],
        decide: Callable[[Shared, float], tuple[Shared, T]],
    ) -> T:
        """Hand ``decide`` the provider's pace for ``keys`` and the database's time (in
        seconds), and write what it keeps, in one transaction holding the rows' locks."""
        keys = sorted({EVERY_ACTION, *keys})

        def work(conn: sa.Connection) -> T:
            for key in keys:  # one by one, in order: the locks are always taken alike
                conn.execute(
                    self.backend.upsert(
                        t.call_pace,
                        {"provider": provider, "action": key, "guess": FIRST_PAUSE},
                        key=[_c.provider, _c.action],
                        update={"guess": _c.guess},
                    )
                )
            rows = conn.execute(
                sa.select(*_COLUMNS)
                .where(_c.provider == provider, _c.action.in_(keys))
                .order_by(_c.action)
                .with_for_update()
            ).all()
            now = _now(conn).timestamp()
            before = _shared(rows)
            after, told = decide(before, now)
            for key in keys:
                values: dict[str, Any] = {}
                if after.next_at.get(key) != before.next_at.get(key):
                    values["next_at"] = _time(after.next_at.get(key))
                if key == EVERY_ACTION and (
                    (after.paused_until, after.careful_until, after.guess)
                    != (before.paused_until, before.careful_until, before.guess)
                ):
                    values.update(
                        paused_until=_time(after.paused_until),
                        careful_until=_time(after.careful_until),
                        guess=after.guess,
                    )
                if values:
                    conn.execute(
                        sa.update(t.call_pace)
                        .where(_c.provider == provider, _c.action == key)
                        .values(**values)
                    )
            return told

        return self._write(work, fenced=False)

    def look_pace(self, provider: str) -> tuple[Shared, float]:
        """The provider's pause as kept (no lock), and the database's time in seconds."""

        def work(conn: sa.Connection) -> tuple[Shared, float]:
            rows = conn.execute(
                sa.select(*_COLUMNS).where(_c.provider == provider, _c.action == EVERY_ACTION)
            ).all()
            return _shared(rows), _now(conn).timestamp()

        return self._read(work)


# Read as stored (``raw``): a time garbled by hand must not fail the read itself.
_COLUMNS = (_c.action, raw(_c.next_at), raw(_c.paused_until), raw(_c.careful_until), raw(_c.guess))


def _now(conn: sa.Connection) -> datetime:
    now: datetime = conn.execute(
        sa.select(sa.type_coerce(db_clock(conn), UTCDateTime()))
    ).scalar_one()
    return now


def _shared(rows: Sequence[Sequence[Any]]) -> Shared:
    """The pace as the rows keep it, read as stored: a value garbled by hand reads as
    none (a time) or the first guess, never as an error of every call."""
    next_at: dict[str, float] = {}
    shared = Shared(next_at)
    for action, at, paused_until, careful_until, guess in rows:
        if (seconds := _seconds(at)) is not None:
            next_at[action] = seconds
        if action == EVERY_ACTION:
            shared = Shared(next_at, _seconds(paused_until) or 0.0,
                            _seconds(careful_until) or 0.0, _guess(guess))  # fmt: skip
    return shared


def _seconds(stored: object) -> float | None:
    when = readable(read_time, stored)
    return None if when is None else when.timestamp()


def _guess(stored: object) -> float:
    """The next guessed pause, within the bounds syncd writes (a 429 without Retry-After
    waits at most ``LONGEST_GUESS``)."""
    if isinstance(stored, int | float) and not isinstance(stored, bool) and math.isfinite(stored):
        return min(max(float(stored), FIRST_PAUSE), LONGEST_GUESS)
    return FIRST_PAUSE


def _time(seconds: float | None) -> datetime | None:
    return None if seconds is None or seconds <= 0 else datetime.fromtimestamp(seconds, UTC)
