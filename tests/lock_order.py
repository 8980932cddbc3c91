"""Every row lock before the feeds' turn: a check every test runs under.

A transaction that adds feed rows (``order_changes``, the ledger, alerts...) first takes
the feeds' turn (``syncd.storage.base.take_feed_turn``), which it holds until its commit
and which every other writer waits for. A row lock it then waits for can deadlock: a
sending holds its provider's row while it waits for the turn, and a status batch that
took the turn and then wanted the same row waited for it. So after the turn a
transaction may only add feed rows, keep the ledger's day rows (written nowhere else),
write a table whose row it locked before the turn, and read without locking. A ledger
row (and its day row) names its provider, whose row the database checks: InnoDB's
foreign key check locks that row for share, a wait as any other, so the provider's row is
locked before the turn (``Backend.parent_lock_sql``) by a transaction that adds them
(SQLite has no row locks; PostgreSQL's check takes a key share lock, which syncd's
writers, locking FOR NO KEY UPDATE, never hold it up for).
``LockOrder`` records each statement a transaction sends after its turn, on every
backend, and names those that break the rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from syncd.storage.backends import backend_for
from syncd.storage.backends.mariadb import MariaDB
from syncd.storage.backends.postgresql import PostgreSQL
from syncd.storage.backends.sqlite import SQLite
from syncd.storage.driver import Driver, PlainDriver

_TURN = "syncd feed turn"
_LOCKED = "syncd tables locked before the turn"
_FEEDS = "order_changes|package_changes|request_changes|alerts|alert_deliveries|ledger|ledger_days"
# What a transaction may still send once it holds the turn.
ALLOWED = re.compile(
    rf"""\s*(
        INSERT\s+INTO\s+"?({_FEEDS})"?[\s(]
      | UPDATE\s+"?ledger_days"?\s
      | SELECT\s(?!.*\b(FOR\s+UPDATE|FOR\s+SHARE|FOR\s+NO\s+KEY|FOR\s+KEY|LOCK\s+IN\s+SHARE)\b)
      | SELECT\s+version_num\s+FROM\s+alembic_version\s+FOR\s+UPDATE\s*$  # the turn again
      | (RELEASE\s+)?SAVEPOINT\s | ROLLBACK\s+TO\s
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


_UPDATE = re.compile(r'\s*UPDATE\s+"?(\w+)', re.IGNORECASE)
_LOCKING_SELECT = re.compile(
    r'\s*SELECT\s.*?\bFROM\s+"?(\w+).*\b(FOR\s+(UPDATE|NO\s+KEY\s+UPDATE|SHARE|KEY\s+SHARE)'
    r"|LOCK\s+IN\s+SHARE\s+MODE)\b",
    re.IGNORECASE | re.DOTALL,
)
# Rows whose foreign key names a provider: inserting one locks the provider's row.
_NAMES_PROVIDER = re.compile(r'\s*(INSERT\s+INTO|UPDATE)\s+"?(ledger|ledger_days)\b', re.I)


class LockOrder:
    def __init__(self) -> None:
        self.broken: list[str] = []

    def sent(self, info: dict[Any, Any], statement: str, *, row_locks: bool = True) -> None:
        locked = info.setdefault(_LOCKED, set())
        written = _UPDATE.match(statement) or _LOCKING_SELECT.match(statement)
        if not info.get(_TURN):
            if written:
                locked.add(written.group(1).lower())
            return
        if row_locks and _NAMES_PROVIDER.match(statement) and "providers" not in locked:
            self.broken.append(" ".join(statement.split())[:200])
            return
        # A row this transaction locked before its turn is no new wait (the ledger's
        # state in ``providers``, after a balance poll locked its provider's row).
        if ALLOWED.match(statement) or (written and written.group(1).lower() in locked):
            return
        self.broken.append(" ".join(statement.split())[:200])


@contextmanager
def lock_order(monkeypatch: pytest.MonkeyPatch) -> Iterator[LockOrder]:
    order = LockOrder()

    def turned(take: Any) -> Any:
        def take_feed_turn(self: Any, conn: sa.Connection) -> None:
            take(self, conn)
            conn.info[_TURN] = True

        return take_feed_turn

    for backend in (SQLite, PostgreSQL, MariaDB):
        monkeypatch.setattr(backend, "take_feed_turn", turned(backend.take_feed_turn))
    on_cursor = Driver._on_cursor

    def checked(self: Driver, text: str, act: Any) -> list[Any]:
        if not isinstance(self, PlainDriver):
            order.sent(self.conn.info, text, row_locks=bool(self.backend.parent_lock_sql))
        return on_cursor(self, text, act)

    monkeypatch.setattr(Driver, "_on_cursor", checked)

    def before(conn: sa.Connection, _c: Any, statement: str, *_: Any) -> None:
        order.sent(conn.info, statement, row_locks=bool(backend_for(conn).parent_lock_sql))

    def ended(conn: sa.Connection) -> None:
        conn.info.pop(_TURN, None)
        conn.info.pop(_LOCKED, None)

    def checked_in(_dbapi: Any, record: Any) -> None:
        record.info.pop(_TURN, None)
        record.info.pop(_LOCKED, None)

    listeners: list[tuple[type, str, Callable[..., None]]] = [
        (sa.engine.Engine, "before_cursor_execute", before),
        (sa.engine.Engine, "begin", ended),
        (sa.engine.Engine, "commit", ended),
        (sa.engine.Engine, "rollback", ended),
        (sa.pool.Pool, "checkin", checked_in),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield order
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)
