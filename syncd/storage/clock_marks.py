"""``providers.clock_mark``: the latest time syncd's clock wrote into a provider's orders
or requests, which the repair of a clock that ran ahead reads (``recover_future_checks``).

A pass leaves marks of its own (``orders_synced_at``, its job's times); a single write
does not: ``syncd order add`` run once on a host whose clock is ahead sends its order and
makes it due "now" by that clock, and nothing else would tell the next pass that this
"now" lies in the future. So every transaction that writes a time into a provider's
orders or requests raises the provider's mark to its ``now``, in the same transaction.

It is raised only when it lies more than ``MARK_STEP`` behind ``now``: most writes then
find it fresh and the statement changes no row (an index lookup, no row written and, on
PostgreSQL, no row locked), and at most one write a minute per provider writes it. On
MariaDB an UPDATE locks the row it looks up whether it changes it or not, until the
commit: every status batch would hold its provider's row while it waits for the feeds'
turn, and a sending, which locks that row first, would wait behind the whole queue. There
a plain read (no lock) tests the mark first, and only a stale one is written; the
UPDATE's own condition still decides, so a mark raised meanwhile by another writer is
left as it is. Callers raise the mark before they take the feeds' turn (every row lock
first, the turn last). The
mark so never lies ahead of a time a clock wrote, and never more than ``MARK_STEP``
behind the latest; a clock ahead by more than ``CLOCK_SKEW`` plus that step is always
seen. Statements are SQL text for ``Driver`` and ``PlainDriver`` alike (``syncd order
track`` writes with the driver alone), and nothing here imports SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from syncd.storage.driver import Driver

MARK_STEP: Final = timedelta(minutes=1)
_STALE_WHERE = "name = ? AND (clock_mark IS NULL OR clock_mark < ?)"
_RAISE = f"UPDATE providers SET clock_mark = ? WHERE {_STALE_WHERE}"  # noqa: S608
_STALE = f"SELECT 1 FROM providers WHERE {_STALE_WHERE}"  # noqa: S608


def raise_clock_mark(d: Driver, providers: Iterable[str | None], now: datetime) -> None:
    """Raise the mark of each of ``providers`` to ``now`` where it lies more than
    ``MARK_STEP`` behind (never lowered here); a None (an unreadable row) is skipped."""
    at, stale = d.time(now), d.time(now - MARK_STEP)
    for name in sorted({p for p in providers if p is not None}):  # one, nearly always
        if d.backend.updates_lock_unmatched and not d.run(_STALE, (name, stale)):
            continue
        d.run(_RAISE, (at, name, stale))


__all__ = ["MARK_STEP", "raise_clock_mark"]
