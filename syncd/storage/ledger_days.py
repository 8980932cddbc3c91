"""``ledger_days``: the ledger summed by day, so that ``syncd report`` reads a line a day
instead of every row (a month of a busy provider is hundreds of thousands of rows).

A row of it is a stretch (``LedgerStretch``): consecutive rows of one provider written on
one UTC day, each continuing the one before (the same currency, its balance before it the
previous row's balance after), with their sums per kind and the balances before and after.
A currency switch or a ledger opened anew starts another stretch on the same day.

It is kept by ``catch_up``, which takes in the provider's rows written after its last
stretch, and which ``ledger.append`` calls in the transaction that writes the rows, in
the feeds' turn: no other writer adds a row meanwhile, and the stretches commit with the
rows or not at all, so the two never disagree. Migration 0013 fills it from the rows
already written the same way. The sums are added in Python, as ``Decimal``: SQLite keeps
money as text, which SQL would add as binary floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from syncd.ledger import Kind, continues, stretch_of, taken
from syncd.models import LedgerRecord, LedgerStretch
from syncd.storage.driver import Driver
from syncd.storage.values import read_int, read_money, read_text, read_time, readable

_KINDS = frozenset(k.value for k in Kind)
STRETCHES = (  # a provider's stretches, as ``stretches`` reads them
    "SELECT first_id, last_id, first_at, currency, opening, closing, charges, refunds,"
    " topups, drift, row_count FROM ledger_days WHERE provider = ?"
)
_LAST = f"{STRETCHES} ORDER BY first_id DESC LIMIT 1"
_ROWS = (
    "SELECT id, at, kind, amount, currency, balance_after FROM ledger"
    " WHERE provider = ? AND id > ? ORDER BY id LIMIT {limit}"
)
_INSERT = (
    "INSERT INTO ledger_days (provider, first_id, last_id, first_at, currency, opening,"  # noqa: S608
    f" closing, charges, refunds, topups, drift, row_count) VALUES ({', '.join('?' * 12)})"
)
_UPDATE = (
    "UPDATE ledger_days SET last_id = ?, closing = ?, charges = ?, refunds = ?, topups = ?,"
    " drift = ?, row_count = ? WHERE provider = ? AND first_id = ?"
)
BATCH = 10_000  # rows read at a time when catching up a long ledger (the migration)


def records(found: Sequence[Sequence[object]]) -> list[LedgerRecord]:
    """The rows that read as what syncd writes; one someone garbled or wrote by hand (a
    kind syncd does not write, a time or an amount that is none) is left out."""
    read = []
    for row_id, at, kind, amount, currency, after in found:
        number, moment = readable(read_int, row_id), readable(read_time, at)
        money, balance = readable(read_money, amount), readable(read_money, after)
        if number is None or moment is None or money is None or balance is None:
            continue
        if kind in _KINDS:
            text = readable(read_text, currency)
            read.append(LedgerRecord(number, moment, str(kind), money, text, balance))
    return read


def stretches(found: Sequence[Sequence[Any]]) -> list[LedgerStretch]:
    """Stretches as ``ledger_days`` holds them (syncd's own: none is garbled)."""
    read = []
    for first, last, at, currency, opening, closing, *sums, rows in found:
        moment = read_time(at)
        assert moment is not None
        charges, refunds, topups, drift = (readable(read_money, s) for s in sums)
        read.append(
            LedgerStretch(
                int(first), int(last), moment, readable(read_text, currency),
                _amount(opening), _amount(closing),
                charges, refunds, topups, drift, int(rows),
            )
        )  # fmt: skip
    return read


def _amount(value: object) -> Decimal:
    amount = read_money(value)
    assert amount is not None  # NOT NULL
    return amount


def last_stretch(d: Driver, provider: str) -> LedgerStretch | None:
    """The provider's newest stretch."""
    found = stretches(d.run(_LAST, (provider,)))
    return found[0] if found else None


def catch_up(d: Driver, provider: str) -> None:
    """Take the provider's ledger rows written after its newest stretch into
    ``ledger_days``: the newest stretch grows while they continue it, a new one starts
    where one does not. A row that cannot be read (garbled by hand) is passed over, as
    the report passes over it."""
    current = last_stretch(d, provider)
    stored = current is not None  # ``current`` has its row in ledger_days already
    after = 0 if current is None else current.last_id
    while True:
        found = d.run(_ROWS.format(limit=BATCH), (provider, after))
        if not found:
            return
        after = max(int(row[0]) for row in found)
        inserts: list[LedgerStretch] = []
        updates: list[LedgerStretch] = []
        dirty = False
        for row in records(found):
            if current is not None and continues(current, row):
                current, dirty = taken(current, row), True
                continue
            if current is not None and dirty:
                (updates if stored else inserts).append(current)
            current, stored, dirty = stretch_of(row), False, True
        if current is not None and dirty:
            (updates if stored else inserts).append(current)
            stored = True
        d.run_many(_INSERT, [(provider, s.id, *_values(d, s)) for s in inserts])
        d.run_many(_UPDATE, [(*_grown(d, s), provider, s.id) for s in updates])
        if len(found) < BATCH:
            return


def _values(d: Driver, s: LedgerStretch) -> tuple[object, ...]:
    """last_id, first_at, currency, opening, closing, the sums, rows (``_INSERT``'s)."""
    return (s.last_id, d.time(s.at), s.currency, d.money(s.opening), d.money(s.balance_after),
            *_sums(d, s))  # fmt: skip


def _grown(d: Driver, s: LedgerStretch) -> tuple[object, ...]:
    """last_id, closing, the sums, rows (``_UPDATE``'s)."""
    return (s.last_id, d.money(s.balance_after), *_sums(d, s))


def _sums(d: Driver, s: LedgerStretch) -> tuple[object, ...]:
    sums = (s.charges, s.refunds, s.topups, s.drift)
    return (*(None if a is None else d.money(a) for a in sums), s.rows)
