"""Reading ``orders`` rows that other programs may have written, without SQLAlchemy.

A shop places orders by inserting ``orders`` rows itself, and SQLite keeps any value in
any column: text in an integer column, a unix number where a time belongs, ``'abc'`` where
money belongs, a ``state`` of ``'QUEUED'``. So order rows are fetched as the database
holds them (the columns of ``ORDER_FIELDS``, in that order) and converted here, one value
at a time: a value that cannot be read becomes ``None`` and is named in the order's
``problem``. The reading commands that run through the driver alone (``syncd order
list``, ``syncd report``) read rows here; ``syncd.storage.rows`` offers the same names
beside the SQLAlchemy columns that fetch them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from syncd.models import Order, OrderState, RefillStatus, RequestKind, Status
from syncd.order_requests import REQUEST_FIELDS, Request, RequestState
from syncd.status_extra import stored_extra
from syncd.storage.values import read_int, read_money, read_text, read_time
from syncd.units import LARGEST, shown

_STATES = {s.value: s for s in OrderState}


def read_state(value: object) -> OrderState | str:
    """A known state, or the stored text as it is (the row is then set aside)."""
    if isinstance(value, str) and (state := _STATES.get(value)) is not None:
        return state
    return value if isinstance(value, str) else shown(value)


_STATUSES = {s.value: s for s in Status}


def read_status(value: object) -> Status | None:
    if value is None:
        return None
    return _STATUSES.get(value, Status.UNKNOWN) if isinstance(value, str) else Status.UNKNOWN


_READERS: dict[str, Callable[[object], object]] = {
    "provider_order_id": read_int,
    "service_id": read_int,
    "link": read_text,
    "quantity": read_int,
    "custom_data": read_text,
    "status_raw": read_text,
    "charge": read_money,
    "start_counter": read_int,
    "remains": read_int,
    "currency": read_text,
    "error": read_text,
    "created_at": read_time,
    "submitted_at": read_time,
    "checked_at": read_time,
    "next_check_at": read_time,
    "finished_at": read_time,
    "missing_checks": read_int,
    "overdue_checks": read_int,
    "max_rate": read_money,
    "quoted_rate": read_money,
    "status_extra": stored_extra,
}
# Every column an Order carries, in the order of its fields, fetched without conversion
# (``params`` apart: only where queued orders are judged).
ORDER_FIELDS = tuple(f.name for f in fields(Order) if f.name not in ("problem", "params"))
_PLAN = [(index, _READERS.get(name)) for index, name in enumerate(ORDER_FIELDS)]
_STATE, _STATUS, _PROVIDER = (ORDER_FIELDS.index(n) for n in ("state", "status", "provider"))
PROVIDER_NAME_LONGEST = 100
_COUNTERS = [ORDER_FIELDS.index(n) for n in ("missing_checks", "overdue_checks")]
_EXTRA = ORDER_FIELDS.index("status_extra")


def read_order(row: Sequence[Any]) -> Order:
    """An ``Order`` from a row of ``ORDER_FIELDS``; unreadable values are None and named
    in ``problem``."""
    values = list(row)
    problems = []
    for index, reader in _PLAN:
        if reader is None or values[index] is None:
            continue
        try:
            values[index] = reader(values[index])
        except ValueError as exc:
            values[index] = None
            problems.append(f"{ORDER_FIELDS[index]}: {exc}")
    state = values[_STATE] = read_state(values[_STATE])
    if not isinstance(state, OrderState):
        problems.insert(0, f"state {shown(state)} is not a state")
    values[_STATUS] = read_status(values[_STATUS])
    if not isinstance(values[_PROVIDER], str):
        values[_PROVIDER] = shown(values[_PROVIDER])
    elif len(values[_PROVIDER]) > PROVIDER_NAME_LONGEST:
        # No configured name is this long: it goes into errors, logs and alerts cut short.
        values[_PROVIDER] = values[_PROVIDER][:PROVIDER_NAME_LONGEST] + "…"
    for index in _COUNTERS:
        values[index] = values[index] or 0
    values.append("; ".join(problems) or None)  # the last field: problem
    return Order(*values)


def read_orders(rows: Iterable[Sequence[Any]]) -> list[Order]:
    """``read_order`` of each row, faster for rows as syncd writes them.

    A status batch reads thousands of rows whose values all have the type their column
    holds (a row is known by the types of its values: its signature), and that share
    their times and money. Such a row skips the per-value checks, and each distinct time
    or amount text is read once per call. Any other row, or one whose time or money
    text does not read, goes through ``read_order``.
    """
    times: dict[object, datetime | None] = {}
    amounts: dict[str, Decimal | None] = {}
    orders = []
    for row in rows:
        values = plain_values(row, times, amounts)
        orders.append(read_order(row) if values is None else Order(*values))
    return orders


def plain_values(
    row: Sequence[Any], times: dict[object, datetime | None], amounts: dict[str, Decimal | None]
) -> list[Any] | None:
    """The values of an ``Order`` (``Order(*values)``) from a row of ``ORDER_FIELDS`` as
    syncd writes them, reading times and amounts through the memos ``times`` and
    ``amounts`` (kept by the caller for a batch of rows); None when the row needs
    ``read_order``. The status sweep reads most rows this far only, and builds no order
    for those whose answer repeats them."""
    if not _plain_signature(tuple(map(type, row))):
        return None
    return _read_plain(row, times, amounts)


_TIME_COLUMNS = [i for i, name in enumerate(ORDER_FIELDS) if _READERS.get(name) is read_time]
_MONEY_COLUMNS = [i for i, name in enumerate(ORDER_FIELDS) if _READERS.get(name) is read_money]
# The types a value may have and pass unchecked, per column: None anywhere; whole numbers
# and text as such; times and money as the driver returns them (text in SQLite), which
# are then read through the memo.
_READ_AS: dict[object, set[type]] = {
    read_int: {int},
    read_text: {str},
    read_time: {str, datetime},
    read_money: {str, Decimal},
    stored_extra: {str, dict},  # JSON text, or parsed where the driver parses JSON
}
_NEVER_NULL: dict[str, set[type]] = {"id": {int}, "provider": {str}}  # else the long way
_PLAIN_TYPES = [
    frozenset(_NEVER_NULL.get(name) or {type(None), *_READ_AS.get(_READERS.get(name), {str})})
    for name in ORDER_FIELDS  # state and status are text
]
# Whole-number columns: -2**63 fits a BIGINT but not LARGEST, and is refused by read_int.
_INT_COLUMNS = [i for i, name in enumerate(ORDER_FIELDS) if _READERS.get(name) is read_int]
_SIGNATURES: dict[tuple[type, ...], bool] = {}


def _plain_signature(signature: tuple[type, ...]) -> bool:
    known = _SIGNATURES.get(signature)
    if known is None:
        known = len(signature) == len(_PLAIN_TYPES) and all(
            kind in allowed for kind, allowed in zip(signature, _PLAIN_TYPES, strict=True)
        )
        if len(_SIGNATURES) < 4096:  # a few in practice; bounded whatever rows hold
            _SIGNATURES[signature] = known
    return known


def _read_plain(
    row: Sequence[Any], times: dict[object, datetime | None], amounts: dict[str, Decimal | None]
) -> list[Any] | None:
    """``read_order``'s values of a row of plain types; None when a value needs the full
    reading.

    Times and amounts have a memo each: a text read as a time must never come back as
    the charge of another row, nor an amount as a time. Only amount *texts* are kept: two
    equal Decimals may differ in their digits (``1.0``, ``1.00``), which must be kept."""
    values = list(row)
    for index in _INT_COLUMNS:
        if values[index] is not None and values[index] < -LARGEST:
            return None
    try:
        for index in _TIME_COLUMNS:
            value = values[index]
            if value is not None:
                moment = times.get(value)
                if moment is None:
                    moment = times[value] = read_time(value)
                values[index] = moment
        for index in _MONEY_COLUMNS:
            money = values[index]
            if type(money) is str:
                amount = amounts.get(money)
                if amount is None:
                    amount = amounts[money] = read_money(money)
                values[index] = amount
            elif money is not None:
                values[index] = read_money(money)
        values[_EXTRA] = stored_extra(values[_EXTRA])  # None, nearly always: one look
    except ValueError:
        return None
    state = _STATES.get(values[_STATE])
    provider = values[_PROVIDER]
    if state is None or len(provider) > PROVIDER_NAME_LONGEST:
        return None
    values[_STATE] = state
    status = values[_STATUS]
    values[_STATUS] = None if status is None else _STATUSES.get(status, Status.UNKNOWN)
    for index in _COUNTERS:
        values[index] = values[index] or 0
    values.append(None)  # the last field: problem
    return values


# -- refill and cancel requests (``order_requests``) ------------------------------------

_REQUEST_KINDS = {k.value: k for k in RequestKind}
_REQUEST_STATES = {s.value: s for s in RequestState}
_REFILL_STATUSES = {s.value: s for s in RefillStatus}
_REQUEST_READERS: dict[str, Callable[[object], object]] = {
    "order_id": read_int,
    "provider_request_id": read_int,
    "status_raw": read_text,
    "error": read_text,
    "provider": read_text,
    "created_at": read_time,
    "sent_at": read_time,
    "checked_at": read_time,
    "next_check_at": read_time,
    "finished_at": read_time,
}


def read_request(row: Sequence[Any]) -> Request:
    """A ``Request`` from a row of ``REQUEST_FIELDS``; unreadable values are None and named
    in ``problem``."""
    values = dict(zip(REQUEST_FIELDS, row, strict=True))
    problems = []
    for name, reader in _REQUEST_READERS.items():
        if values[name] is None:
            continue
        try:
            values[name] = reader(values[name])
        except ValueError as exc:
            values[name] = None
            problems.append(f"{name}: {exc}")
    kind, state, status = values["kind"], values["state"], values["status"]
    values["kind"] = _REQUEST_KINDS.get(kind, str(kind)) if isinstance(kind, str) else str(kind)
    values["state"] = (
        _REQUEST_STATES.get(state, str(state)) if isinstance(state, str) else str(state)
    )
    values["status"] = (
        None
        if status is None
        else _REFILL_STATUSES.get(status, RefillStatus.UNKNOWN)
        if isinstance(status, str)
        else RefillStatus.UNKNOWN
    )
    if values["order_id"] is None and "order_id" not in " ".join(problems):
        problems.append("order_id: missing")
    return Request(**values, problem="; ".join(problems) or None)
