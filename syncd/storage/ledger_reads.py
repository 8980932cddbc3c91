"""Reading the money ledger by day (``syncd report``): one provider's rows of a window,
the row just before it, and where its current ledger stands.

The cost follows the window's days, not its rows nor the ledger's years: the window is
read as stretches from ``ledger_days`` (found by provider and first_at, a few a day, each
standing for its rows summed: ``syncd.storage.ledger_days``), and the stretch before them
by its key, one row. Where ``ledger_days`` has not taken in every row (a row written
after its newest stretch, which only a hand or a program other than syncd writes), the
rows themselves are read as before, found by ``ix_ledger_provider_at`` (provider, at)
and the row before them by ``ix_ledger_provider`` (provider, id): slower, but always
what the rows say. Orders are never read. Every statement is a SELECT, so a role that
may only read runs it.
"""

from __future__ import annotations

from datetime import datetime

from syncd.models import LedgerWindow
from syncd.storage.base import StorageBase
from syncd.storage.driver import Driver
from syncd.storage.ledger_window import window as _window


class LedgerReads(StorageBase):
    def ledger_window(self, provider: str, start: datetime) -> LedgerWindow:
        """``provider``'s ledger rows written at or after ``start``, by id, with the row
        before the first of them (the last row, when the window holds none), and its
        current ledger's currency and running balance."""
        return self._read(lambda conn: _window(Driver(conn), provider, start))


__all__ = ["LedgerReads"]
