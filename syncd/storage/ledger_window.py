"""Reading the money ledger by day through a ``Driver`` alone (no SQLAlchemy imported):
``Storage.ledger_window`` (``syncd.storage.ledger_reads``) and ``syncd report``'s reading
through the driver run the same statements here."""

from __future__ import annotations

from datetime import datetime

from syncd.models import LedgerRecord, LedgerStretch, LedgerWindow
from syncd.storage.driver import Driver
from syncd.storage.ledger_days import STRETCHES, last_stretch, records, stretches
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
_STRETCHES_SINCE = f"{STRETCHES} AND first_at >= ?"
_STRETCH_BEFORE = f"{STRETCHES} AND first_id < ? ORDER BY first_id DESC LIMIT 1"
_ANY_AFTER = "SELECT id FROM ledger WHERE provider = ? AND id > ? ORDER BY id LIMIT 1"


def window(db: Driver, provider: str, start: datetime, *, by_rows: bool = False) -> LedgerWindow:
    # ``by_rows``: read the rows even where the stretches hold them (a test compares).
    rows: list[LedgerRecord] | list[LedgerStretch]
    before: list[LedgerRecord] | list[LedgerStretch]
    newest = last_stretch(db, provider)
    taken_in = not db.run(_ANY_AFTER, (provider, 0 if newest is None else newest.last_id))
    if taken_in and not by_rows:
        # Every row is in a stretch, and a stretch's rows share its day: the stretches
        # that start at or after ``start`` hold the window's rows and no other.
        rows = sorted(
            stretches(db.run(_STRETCHES_SINCE, (provider, db.time(start)))), key=lambda r: r.id
        )
        before = stretches(db.run(_STRETCH_BEFORE, (provider, rows[0].id))) if rows else (
            [newest] if newest is not None else []
        )  # fmt: skip
    else:
        rows = sorted(records(db.run(_WINDOW, (provider, db.time(start)))), key=lambda r: r.id)
        # The row just before the window's first; the window empty, the last of all.
        before = records(
            db.run(_BEFORE, (provider, rows[0].id)) if rows else db.run(_LAST, (provider,))
        )
    state = db.run(_STATE, (provider,))
    if not state or readable(read_time, state[0][0]) is None:
        return LedgerWindow(provider, tuple(rows), before[0] if before else None)
    _, currency, opening, since = state[0]
    since_id = readable(read_int, since) or 0
    last = rows[-1] if rows else (before[0] if before else None)
    last_id = last.last_id if isinstance(last, LedgerStretch) else last.id if last else 0
    balance = (
        last.balance_after
        if last is not None and last_id > since_id
        else readable(read_money, opening)
    )
    return LedgerWindow(
        provider, tuple(rows), before[0] if before else None,
        opened=True, currency=readable(read_text, currency), balance=balance,
        since_id=since_id,
    )  # fmt: skip
