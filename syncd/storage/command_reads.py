"""``syncd order list``'s reads as plain SQL on a driver's connection, and the way the
reading commands reach the database through the driver alone.

Importing SQLAlchemy and syncd's tables costs more than half a second, more than a
reading command may take in all; ``syncd status`` never pays it (``overview``), and
``syncd order list`` and ``syncd report`` do not either when ``read_plainly`` can answer
(the database exists and is at the newest revision, and the driver raises nothing). They
run the same statements ``Storage`` runs through SQLAlchemy, and read each value the same
way (``order_values``), so both ways print the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from syncd.models import Order, OrderState
from syncd.order_requests import REQUEST_FIELDS, Request
from syncd.storage.backends import UnknownBackend, backend_for_url
from syncd.storage.driver import Driver, chunks
from syncd.storage.migrations import HEAD
from syncd.storage.order_values import ORDER_FIELDS, read_order, read_request

T = TypeVar("T")

_ORDERS = f"SELECT {', '.join(ORDER_FIELDS)} FROM orders"  # noqa: S608
_REQUESTS = f"SELECT {', '.join(REQUEST_FIELDS)} FROM order_requests"  # noqa: S608


def read_plainly(
    url: str, work: Callable[[Driver], T | None], *, busy_timeout: float = 5.0
) -> T | None:
    """``work`` on a read-only snapshot of the database at ``url``, through the driver
    alone; None when this way cannot answer as ``Storage`` would (a URL the backend does
    not read plainly, a database file that does not exist, a schema that is not at the
    newest revision, ``work`` returning None, any error of the driver's): the caller then
    opens the database the usual way, which reports what is wrong as it always has."""
    try:
        backend = backend_for_url(url)
    except UnknownBackend:
        return None
    return backend.read_plainly(url, busy_timeout, lambda db: _at_head(db, work))


def _at_head(db: Driver, work: Callable[[Driver], T | None]) -> T | None:
    versions = db.run("SELECT version_num FROM alembic_version")
    return work(db) if versions and versions[0][0] == HEAD else None


def order_page(
    db: Driver,
    *,
    state: OrderState | None = None,
    provider: str | None = None,
    before: int | None = None,
    limit: int = 500,
) -> list[Order]:
    """``Storage.orders``: newest first, ``limit`` at a time; pass the last id as
    ``before`` for the next page."""
    where, params = [], []
    for clause, value in (
        ("state = ?", None if state is None else db.text(state.value)),
        ("provider = ?", provider),
        ("id < ?", before),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    rows = db.run(f"{_ORDERS}{condition} ORDER BY id DESC LIMIT {int(limit)}", params)
    return [read_order(row) for row in rows]


def requests_of(db: Driver, order_ids: Sequence[int]) -> dict[int, list[Request]]:
    """``Storage.requests_of``: the requests of each of these orders, oldest first."""
    found: dict[int, list[Request]] = {}
    rows = [
        row
        for some in chunks(list(order_ids))
        for row in db.run(
            f"{_REQUESTS} WHERE {db.ids_in('order_id', len(some))}", db.id_params(some)
        )
    ]
    for request in sorted(map(read_request, rows), key=lambda r: r.id):
        if request.order_id is not None:
            found.setdefault(request.order_id, []).append(request)
    return found
