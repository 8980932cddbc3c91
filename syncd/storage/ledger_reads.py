"""Reading the money ledger by day (``syncd report``): one provider's rows of a window,
the row just before it, and where its current ledger stands.

The cost follows the window, not the ledger's years: the window's rows are found by
``ix_ledger_provider_at`` (provider, at) and the row before them by
``ix_ledger_provider`` (provider, id), one row. Orders are never read. Every statement is
a SELECT, so a role that may only read runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from syncd.ledger import Kind
from syncd.models import LedgerRecord, LedgerWindow
from syncd.storage.base import StorageBase
from syncd.storage.driver import Driver
from syncd.storage.values import read_int, read_money, read_text, read_time, readable

_COLUMNS = "id, at, kind, amount, currency, balance_after"
# No ORDER BY: sorting by id here would let the database prefer (provider, id) and walk
# all of the provider's rows to find the window's; they are sorted once read.
_WINDOW = f"SELECT {_COLUMNS} FROM ledger WHERE provider = ? AND at >= ?"  # noqa: S608
_LAST = f"SELECT {_COLUMNS} FROM ledger WHERE provider = ? ORDER BY id DESC LIMIT 1"  # noqa: S608
_BEFORE = _LAST.replace("? ORDER", "? AND id < ? ORDER")
_STATE = (
    "SELECT ledger_opened_at, ledger_currency, ledger_opening, ledger_since_id"
    " FROM providers WHERE name = ?"
)
_KINDS = frozenset(k.value for k in Kind)


class LedgerReads(StorageBase):
    def ledger_window(self, provider: str, start: datetime) -> LedgerWindow:
        """``provider``'s ledger rows written at or after ``start``, by id, with the row
        before the first of them (the last row, when the window holds none), and its
        current ledger's currency and running balance."""
        return self._read(lambda conn: _window(Driver(conn), provider, start))


def _window(db: Driver, provider: str, start: datetime) -> LedgerWindow:
    rows = sorted(_records(db.run(_WINDOW, (provider, db.time(start)))), key=lambda r: r.id)
    # The row just before the window's first; the window empty, the last of all.
    before = _records(
        db.run(_BEFORE, (provider, rows[0].id)) if rows else db.run(_LAST, (provider,))
    )
    state = db.run(_STATE, (provider,))
    if not state or readable(read_time, state[0][0]) is None:
        return LedgerWindow(provider, tuple(rows), before[0] if before else None)
    _, currency, opening, since = state[0]
    since_id = readable(read_int, since) or 0
    newest = rows[-1] if rows else (before[0] if before else None)
    balance = (
        newest.balance_after
        if newest is not None and newest.id > since_id
        else readable(read_money, opening)
    )
    return LedgerWindow(
        provider, tuple(rows), before[0] if before else None,
        opened=True, currency=readable(read_text, currency), balance=balance,
        since_id=since_id,
    )  # fmt: skip


def _records(found: Sequence[Sequence[object]]) -> list[LedgerRecord]:
    """The rows that read as what syncd writes; one someone garbled or wrote by hand (a
    kind syncd does not write, a time or an amount that is none) is left out."""
    records = []
    for row_id, at, kind, amount, currency, after in found:
        number, moment = readable(read_int, row_id), readable(read_time, at)
        money, balance = readable(read_money, amount), readable(read_money, after)
        if number is None or moment is None or money is None or balance is None:
            continue
        if kind in _KINDS:
            text = readable(read_text, currency)
            records.append(LedgerRecord(number, moment, str(kind), money, text, balance))
    return records
