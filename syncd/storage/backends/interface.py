"""``Backend``: what storage asks of a database engine (the package docstring says why
each member exists). Nothing here imports SQLAlchemy or a database driver when the
module is imported: ``syncd status`` and the config check use backends without them."""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote, unquote

from syncd.storage.literals import starts_with

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine
    from sqlalchemy.sql.dml import Insert
    from sqlalchemy.types import TypeEngine

    from syncd.errors import DatabaseGoneError
    from syncd.storage.driver import Driver, PlainDriver

T = TypeVar("T")

# The execution option a read-only transaction carries (``engine.READ_ONLY``): an engine
# whose write transactions take their lock at BEGIN (SQLite) begins a reader plainly.
READ_ONLY_OPTION = "syncd_read_only"

# Seconds between two looks for new rows when no notification woke the reader.
POLL = 1.0

Execute = Callable[[str], object]  # how a migration runs one statement (``op.execute``)


def login_in(match: re.Match[str]) -> tuple[str | None, str | None]:
    """The user and the password of a plain URL read by a backend's pattern (groups
    ``user`` and ``password``), decoded as SQLAlchemy decodes them; None for one it
    does not hold."""
    user, password = match.group("user", "password")
    return (None if user is None else unquote(user)), (
        None if password is None else unquote(password))  # fmt: skip


def password_put(url: str, match: re.Match[str], password: str) -> str:
    """``url`` (read into ``match``, naming a user) with ``password`` in place of any it
    had, every character but letters, digits and ``-._~`` percent-encoded: still of the
    plain form, and decoded to ``password`` by SQLAlchemy and by the drivers."""
    at = match.end("password") if match["password"] is not None else match.end("user")
    return f"{url[: match.end('user')]}:{quote(password, safe='')}{url[at:]}"


class WriteProbe(Protocol):
    """A cheap look: has anyone committed a write since the last look?"""

    poll: float  # seconds between two looks

    def changed(self) -> bool: ...

    def close(self) -> None: ...


class EveryLook:
    """The probe of an engine that cannot tell cheaply: every look says yes, and the
    caller asks its real (indexed) question instead."""

    def __init__(self, poll: float = POLL) -> None:
        self.poll = poll

    def changed(self) -> bool:
        return True

    def close(self) -> None:
        pass


class FileWatch(Protocol):
    """Whether the database a storage opened is still the one its URL names."""

    def check(self) -> None:
        """Raise ``DatabaseGoneError`` if it is not (and from then on, every time)."""


class Unwatched:
    """The watch of a database that is no file of this host (a server): nothing to see."""

    def check(self) -> None:
        pass


class Backend(ABC):
    """One database engine, as storage uses it. One instance per engine, chosen by
    ``syncd.storage.backends.backend_named``; every member is documented, with the reason
    it exists, in the package docstring."""

    name: str  # SQLAlchemy's dialect name, and the first word of the URL scheme

    # -- connecting ------------------------------------------------------------------------

    @abstractmethod
    def make_engine(
        self, url: sa.URL, *, busy_timeout: float, on_begin: Callable[[sa.Connection], None]
    ) -> Engine:
        """The engine, set up; ``on_begin(connection)`` runs as each transaction begins,
        before anything else of it."""

    patience_sql: str  # sets a new transaction's lock wait to ``{ms}`` milliseconds

    def database_file(self, url: str | sa.URL) -> Path | None:
        """The file the database lives in (absolute), if it is one file on this host."""
        return None

    def watch_file(self, url: str | sa.URL, gone: Callable[[DatabaseGoneError], None]) -> FileWatch:
        """A watch on the file the database lives in, taken now: its ``check`` fails once
        the path names another file or none. ``gone(error)`` is told once, the first time."""
        return Unwatched()

    @abstractmethod
    def plain_form(self, url: str) -> bool:
        """Whether ``url`` has a form read without SQLAlchemy exactly as SQLAlchemy reads it."""

    def url_problem(self, url: str) -> str | None:
        """What this engine needs of a URL beyond SQLAlchemy's reading of it, or None."""
        return None

    def plain_login(self, url: str) -> tuple[str | None, str | None] | None:
        """The user and the password a plain URL holds, decoded as SQLAlchemy decodes
        them (None for one it does not hold); None where the engine has no plain form."""
        return None

    def plain_with_password(self, url: str, password: str) -> str | None:
        """``url``, of the plain form and naming a user, with ``password`` percent-encoded
        in it, still plain; None where the engine has no plain form."""
        return None

    def driver_imports(self, url: str) -> bool:
        """Whether the driver the plain URL ``url`` names is installed."""
        return True

    driver_hint: str = ""  # how to install the driver, for the message that it is missing
    takes_password: bool  # the engine logs in with a password (else password_file is refused)

    @abstractmethod
    def read_plainly(
        self, url: str, busy_timeout: float, work: Callable[[PlainDriver], T | None]
    ) -> T | None:
        """``work`` in one read-only snapshot on a connection of the driver's own; None
        when the URL has no plain form or on any error of the driver's."""

    def write_plainly(
        self, url: str, busy_timeout: float, work: Callable[[PlainDriver], T | None]
    ) -> T | None:
        """``work`` in one write transaction on a connection of the driver's own,
        committed unless it returns None; None when this engine offers no such way."""
        return None

    def is_lock_error(self, error: BaseException | None) -> bool:
        """Whether a driver's error means "locked, try the transaction again"."""
        text = str(error).lower()
        return "locked" in text or "busy" in text

    def is_permission_error(self, error: BaseException | None) -> bool:
        """Whether a driver's error means "the role lacks a privilege": no retry helps,
        a person must grant it (an engine without roles never says so)."""
        return False

    def role(self, url: str | sa.URL) -> str:
        """The database role a URL connects as, for messages (empty: the engine has none)."""
        return ""

    # -- SQL -----------------------------------------------------------------------------

    @abstractmethod
    def clock(self, plus: float = 0.0) -> sa.ColumnElement[Any]:
        """The database's time, ``plus`` seconds, in the form times are stored."""

    now_sql: str  # the database's time as plain SQL, in the form times are stored
    now_plus_sql: str  # the same, shifted by one bound parameter (``now_plus_param``)

    @abstractmethod
    def now_plus_param(self, seconds: float) -> object: ...

    true_sql: str  # how a stored true reads in plain SQL

    def starts_with_sql(self, column: str, prefix: str) -> str:
        """A text ``column`` begins with ``prefix`` (a constant of syncd's own), as a
        condition an index on the column can serve: where partial indexes exist, one whose
        WHERE repeats it (``literals.starts_with``, the form tables.py declares)."""
        return starts_with(column, prefix)

    # A condition true of a stored time in the form syncd writes it, for a column named
    # {column}: text compares as time compares then. Typed columns hold nothing else.
    well_formed_time_sql = "1 = 1"
    # Conditions true of an order row whose times ``syncd report`` cannot leave to the
    # database, by the name of the partial index that holds the rows each is true of (so
    # that the few are found without judging every row): the time it was sent by (sent,
    # or created if never sent) or the time it finished is neither none nor in syncd's
    # form. None where the columns are typed: no row has such times.
    odd_times_sql: Mapping[str, str] = {}
    # A money column {column} as grouped by its exact value, digits after the point
    # included (PostgreSQL's NUMERIC groups 0.05 with 0.050, which print apart).
    money_group_sql = "{column}"
    # A text column {column} as compared and grouped by its exact characters: MariaDB's
    # collations pad with spaces, so 'USD' and 'USD ' (or 'Completed ') would be one.
    exact_text_sql = "{column}"
    # A condition true of a stored whole number, for a column named {column} (SQLite keeps
    # text or a float where a consumer wrote one). Typed columns hold nothing else.
    well_formed_int_sql = "1 = 1"
    # The UTC day of a time column {column} in the form syncd writes it, as YYYY-MM-DD text.
    utc_day_sql: str
    # The time from {start} to {end} (both in syncd's form) as whole seconds and
    # microseconds (seconds * 10**6 + microseconds), each summed apart: SQLite's SUM of
    # whole numbers stops at 2**63 microseconds, 292,000 years (a few hand-written ones).
    elapsed_sql: tuple[str, str]
    # GROUP BY GROUPING SETS exists: two groupings of one read in one statement (the
    # report's spend per day and per package). Elsewhere the rows are counted in Python.
    grouping_sets: bool = False
    # A short text column {column} as grouped, case and all (the ledger's kinds).
    text_group_sql = "{column}"
    row_lock_sql: str = ""  # appended to a plain SELECT: lock its rows until the commit
    # Appended to a plain SELECT of a parent row: the lock a foreign key check of a child
    # row inserted later takes on it, where that lock waits for a writer of the row
    # (InnoDB: a share lock); empty where it waits for none of syncd's (PostgreSQL's key
    # share, against FOR NO KEY UPDATE) or there are no row locks (SQLite).
    parent_lock_sql: str = ""
    # Indexes with a WHERE (``tables._partial``) exist: elsewhere they index every row, and
    # rows in a few states are found through the due index instead.
    partial_indexes: bool = True
    share_lock_sql: str = ""  # appended to a plain SELECT: keep its rows from changing
    # An UPDATE locks the rows its index lookup finds until the commit, even those the
    # rest of its WHERE then leaves alone (InnoDB at REPEATABLE READ); PostgreSQL locks
    # only the rows it changes. A conditional write to a row many transactions pass
    # (``storage/clock_marks.py``) is then tested by a plain read first.
    updates_lock_unmatched: bool = False

    sqlalchemy_dialect: str  # the module of ``sqlalchemy.dialects`` for this engine

    def upsert(
        self,
        table: sa.Table,
        values: Mapping[str, Any],
        *,
        key: Sequence[sa.Column[Any]],
        update: Mapping[str, Any],
        where: sa.ColumnElement[bool] | None = None,
    ) -> Insert:
        """INSERT ``values``; where a row with the same ``key`` exists, UPDATE it with
        ``update`` instead (only if ``where`` holds). Written ``INSERT ... ON CONFLICT
        (key) DO UPDATE``, as SQLite and PostgreSQL spell it; an engine that spells it
        otherwise overrides this."""
        dialect = importlib.import_module(f"sqlalchemy.dialects.{self.sqlalchemy_dialect}")
        statement: Insert = (
            dialect.insert(table)
            .values(**values)
            .on_conflict_do_update(index_elements=list(key), set_=dict(update), where=where)
        )
        return statement

    @abstractmethod
    def lock_migrations(self, conn: sa.Connection) -> None:
        """Take the lock every process takes before it migrates the schema, held until
        ``conn``'s transaction ends: processes started together on a new database migrate
        one after another, and the later ones find the schema at the newest revision
        (two creating the same tables at once, one would fail)."""

    @abstractmethod
    def take_feed_turn(self, conn: sa.Connection) -> None:
        """Wait for this transaction's turn to add rows to the change feeds (see
        ``syncd.storage.base.take_feed_turn``)."""

    @abstractmethod
    def insert_missing_orders(
        self,
        d: Driver,
        provider: str,
        provider_order_ids: Sequence[int],
        *,
        state: str,
        when: object,
        stored: Callable[[Sequence[int]], dict[int, int]],
    ) -> dict[int, int]:
        """Insert an order row (``state``, created and due ``when``) for each of
        ``provider_order_ids``, which this transaction did not find; a row another writer
        inserted meanwhile is left to it. Returns provider order id → local id of the rows
        inserted here; ``stored(ids)`` reads those ids as the transaction sees them."""

    def update_rows(
        self, d: Driver, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """``Driver.update_rows``: one UPDATE by id, run for each row (the driver's
        executemany, which is one prepared statement on SQLite and pipelined by psycopg)."""
        assignments = ", ".join(f"{column} = ?" for column in columns)
        d.run_many(f"UPDATE {table} SET {assignments} WHERE id = ?", rows)  # noqa: S608

    # -- the fast path's values (``syncd.storage.driver.Driver``) ----------------------------

    @staticmethod
    def sql(text: str) -> str:
        """``text``, written with ``?`` placeholders, in the driver's paramstyle."""
        return text

    @abstractmethod
    def ids_in(self, column: str, count: int) -> str:
        """``column`` is one of ``count`` values, as one indexed lookup."""

    @abstractmethod
    def id_params(self, ids: Sequence[int]) -> tuple[Any, ...]:
        """The parameters of ``ids_in``."""

    @staticmethod
    @abstractmethod
    def time_value(value: datetime | None) -> Any:
        """An aware time as the driver writes it to a time column."""

    @staticmethod
    @abstractmethod
    def money_value(value: Decimal | None) -> Any:
        """A Decimal as the driver (and the ``Money`` column type) writes it; a float is
        refused."""

    @staticmethod
    @abstractmethod
    def text_value(value: str | Enum | None) -> str | None:
        """A state or status as the text it stands for, as the driver needs it."""

    binds_enums_as_text: bool  # the driver writes a StrEnum as its text: skip text_value
    parses_json: bool  # the driver returns a JSON column parsed, not as its text

    # -- column types (``syncd.storage.types``) --------------------------------------------

    @abstractmethod
    def money_type(self) -> TypeEngine[Any]: ...

    @staticmethod
    @abstractmethod
    def time_column(value: datetime) -> datetime:
        """A UTC time as SQLAlchemy's DateTime type of this engine takes it."""

    # -- notify or poll ------------------------------------------------------------------

    notifies: bool = False  # the database can push notifications (``listen``)

    async def listen(self, url: str, channel: str, heard: Callable[[str], None]) -> None:
        """Call ``heard(payload)`` for each notification on ``channel``, for as long as
        the task runs (only where ``notifies``)."""
        raise NotImplementedError(f"{self.name} sends no notifications: it is polled")

    def watch_writes(self, url: str) -> WriteProbe:
        """A cheap look for writes committed since the last look."""
        return EveryLook()

    @abstractmethod
    def install_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        """Make the database announce writes: with ``functions``, the notification
        functions; with ``queued_state``, ``syncd_orders`` when an order enters that
        state; ``syncd_changes`` when rows are added to each of ``feeds``. Nothing on an
        engine that is polled. A migration passes what it created then, as literals."""

    @abstractmethod
    def remove_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        """Undo ``install_notify`` with the same arguments."""
