"""MariaDB (10.6 and later): the engine many reseller panels already keep their orders in.

Rows are locked, not the database, as in PostgreSQL: claims skip rows another transaction
holds (``FOR UPDATE SKIP LOCKED``, new in 10.6, hence the minimum), the fence check locks
the lease row for share until the commit, and feed writers take their turn on one row
lock (``take_feed_turn``). Tables are InnoDB in ``utf8mb4`` with a binary collation (an
emoji in a link is kept; ``'a'`` and ``'A'`` stay two providers, as elsewhere).

What differs from PostgreSQL, and how syncd keeps its promises anyway:

- Times are ``DATETIME(6)``, which holds no zone: syncd writes and compares UTC only, and
  each connection sets ``time_zone = '+00:00'``, so a server in another zone changes
  nothing; the database's clock is ``UTC_TIMESTAMP(6)``, and a column's default too (a
  consumer's session in local time would otherwise write local times).
- Money is ``DECIMAL(30, 12)``: 18 whole digits and 12 places, more than any amount syncd
  accepts from a provider (12 and 12). A value that does not fit is refused before it is
  sent (MariaDB would round extra places with only a note).
- Each connection sets a strict ``sql_mode``, whatever the server's default: a value too
  long or out of range fails instead of being cut, and ``"change"`` is a column name
  (``ANSI_QUOTES``: the feed column is a reserved word here).
- Its collations ignore trailing spaces when they compare (``'sim '`` equals ``'sim'``,
  in a WHERE, a GROUP BY and a foreign key alike): Python judges the text as it is, so a
  queued row naming ``'sim '`` that the claim reads with sim's orders is rejected, never
  sent; ``syncd report`` groups text with the NO PAD twin of the collation.
- No ``UPDATE ... RETURNING``: the lease's upsert is read back in its transaction.
- No NOTIFY: the daemon and ``syncd changes --follow`` poll one indexed query four
  times a second.
- DDL is not transactional: migrations are serialised by a named lock (``GET_LOCK``),
  released when the migration's connection goes back to the pool.
"""

from __future__ import annotations

import getpass
import importlib
import math
import re
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import datetime
from decimal import Context, Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from syncd.errors import StorageError
from syncd.storage.backends.interface import (
    Backend,
    EveryLook,
    Execute,
    WriteProbe,
    login_in,
    password_put,
)
from syncd.storage.driver import PlainDriver, checked_money, utc
from syncd.storage.literals import quoted

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine
    from sqlalchemy.types import TypeEngine

    from syncd.storage.driver import Driver

T = TypeVar("T")

OLDEST_MARIADB = (10, 6)  # SKIP LOCKED
POLL_MARIADB = 0.25  # seconds between two looks for new rows (nothing is pushed)
OLDEST_MYSQL = (8, 0)
MONEY_PRECISION, MONEY_SCALE = 30, 12
IDLE_IN_TRANSACTION_S = 10
# Set on every connection: strict values, ANSI identifier quotes, UTC.
SQL_MODE = (
    "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,"
    "NO_ENGINE_SUBSTITUTION,ANSI_QUOTES"
)
# Driver error codes worth a fresh try of the whole transaction: a lock wait timed out,
# a deadlock was broken by rolling this side back.
_TRY_AGAIN = {1205, 1213}
# Codes of a missing privilege: on a table (1142), a column (1143), a database (1044),
# a command that needs one of its own (1227), a routine (1370). Not 1045, a login refused.
_DENIED = {1142, 1143, 1044, 1227, 1370}
_DBAPI = {"mysqldb": "MySQLdb", "pymysql": "pymysql"}  # URL's driver name -> module
# A named lock is the server's, not the database's: each database gets its own (a name is
# at most 64 characters, a database's name as many: its digest stands in for it).
MIGRATION_LOCK = "CONCAT('syncd.migrate.', MD5(DATABASE()))"
MIGRATION_LOCK_WAIT_S = 600
_LOCK_HELD = "syncd_migration_lock"  # connection info: this connection holds the lock
# Text columns that are in a key or an index: InnoDB indexes a VARCHAR, not a TEXT. 255
# characters of utf8mb4 make 1020 bytes, within InnoDB's 3072 per index. Every other
# string column is MEDIUMTEXT (16 MB: a list of comments, a provider's long error).
KEY_COLUMNS = frozenset({
    "providers.name", "packages.provider", "package_changes.provider", "orders.provider",
    "orders.state", "order_changes.provider", "jobs.provider", "jobs.job",
    "balance_snapshots.provider", "alert_deliveries.webhook", "leases.name",
    "instances.id", "order_requests.state", "order_requests.kind", "request_changes.provider",
    "call_pace.provider", "call_pace.action", "ledger.provider", "ledger_days.provider",
})  # fmt: skip


# SQLAlchemy's URL grammar for these drivers, without a query (its parameters are
# SQLAlchemy's to read): [user[:password]@][host][:port][/database].
_PLAIN = re.compile(
    r"(?:mysql|mariadb)\+(?P<driver>mysqldb|pymysql)://(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:\[(?P<ipv6>[^/?]+)\]|(?P<host>[^/:?]+))?(?::(?P<port>[0-9]+))?(?:/(?P<database>[^?]*))?"
)


def _plain(url: str) -> re.Match[str] | None:
    """``url`` read by ``_PLAIN``; None for a URL of any other form."""
    return _PLAIN.fullmatch(url) if "\n" not in url else None


def plain_parts(url: str) -> tuple[str, dict[str, Any]] | None:
    """The driver and the connection arguments of a URL of the plain form, as SQLAlchemy's
    dialect passes them (the parts percent-decoded, what is absent left to the driver's
    default); None for a URL of any other form."""
    match = _plain(url)
    if match is None:
        return None
    args: dict[str, Any] = {}
    for part, name in (("user", "user"), ("password", "password"), ("database", "database")):
        if match[part]:
            args[name] = unquote(match[part])
    if match["ipv6"] or match["host"]:
        args["host"] = match["ipv6"] or match["host"]
    if match["port"] and int(match["port"]):
        args["port"] = int(match["port"])
    if match["driver"] == "mysqldb":  # MySQLdb's older names
        args = {{"password": "passwd", "database": "db"}.get(k, k): v for k, v in args.items()}
    return match["driver"], args


def _code(error: BaseException | None) -> object:
    """A MySQL driver error's code: both drivers raise ``(code, message)``."""
    args: tuple[object, ...] = getattr(error, "args", ())
    return args[0] if args else None


def setup_sql(busy_timeout: float) -> str:
    """The statement that sets up each connection (see ``MariaDB.make_engine``)."""
    return (
        f"SET time_zone = '+00:00', sql_mode = '{SQL_MODE}', "
        f"innodb_lock_wait_timeout = {max(1, math.ceil(busy_timeout))}"
    )


class ServerTooOld(StorageError):
    """The server is older than the oldest MariaDB (or MySQL) syncd works with."""


def server_problem(version: str) -> str | None:
    """Why syncd cannot work with a server reporting ``version`` (``SELECT VERSION()``),
    or None. MariaDB names itself in its version ("10.11.6-MariaDB-0+deb12u1")."""
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if numbers is None:
        return f"database server version {version!r} is not one syncd knows"
    found = (int(numbers[1]), int(numbers[2]))
    kind, oldest = ("MariaDB", OLDEST_MARIADB) if "mariadb" in version.lower() else (
        "MySQL", OLDEST_MYSQL)  # fmt: skip
    if found >= oldest:
        return None
    return (
        f"{kind} {found[0]}.{found[1]} is too old for syncd: it needs {kind} "
        f"{oldest[0]}.{oldest[1]} or later (for SKIP LOCKED)"
    )


def _server(cursor: Any) -> tuple[str, str | None]:
    """The version of the server a DBAPI cursor is connected to, and ``server_problem``."""
    cursor.execute("SELECT VERSION()")
    version = str(cursor.fetchone()[0])
    return version, server_problem(version)


class MoneyDoesNotFit(StorageError, ValueError):
    """An amount the money column would round or refuse (``fits_money``)."""


def fits_money(value: Decimal) -> Decimal:
    """``value`` if ``DECIMAL(30, 12)`` keeps it exactly; else a clear error (MariaDB
    would round the places away with only a note, or refuse the whole digits)."""
    if value.is_finite():
        # Trailing zeros are no places; a context as wide as the value rounds nothing away.
        exact = Context(prec=max(1, len(value.as_tuple().digits)))
        exponent = value.normalize(exact).as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        whole = max(0, value.adjusted() + 1) if value else 0
        if places <= MONEY_SCALE and whole <= MONEY_PRECISION - MONEY_SCALE:
            return value
    raise MoneyDoesNotFit(
        f"amount {value} does not fit the database's money column (at most "
        f"{MONEY_PRECISION - MONEY_SCALE} whole digits and {MONEY_SCALE} decimal places)"
    )


def text_form(table: str, column: str) -> str:
    """The column type of a string column without a length."""
    return "VARCHAR(255)" if f"{table}.{column}" in KEY_COLUMNS else "MEDIUMTEXT"


_ddl_installed = False


def install_ddl() -> None:
    """Teach SQLAlchemy's MySQL DDL what syncd's columns need here (once per process):
    a length for every string column (``text_form``), microseconds for every time, UTC
    for a time column's default, and InnoDB in ``utf8mb4`` for every table."""
    global _ddl_installed  # noqa: PLW0603 - compiler hooks are process-wide by nature
    if _ddl_installed:
        return
    import sqlalchemy as sa  # noqa: PLC0415
    from sqlalchemy.ext.compiler import compiles  # noqa: PLC0415
    from sqlalchemy.schema import CreateColumn, CreateTable  # noqa: PLC0415

    @compiles(sa.String, "mysql")
    @compiles(sa.String, "mariadb")
    def _string(element: sa.String, compiler: Any, **kw: Any) -> str:
        column = kw.get("type_expression")
        if element.length is None and isinstance(column, sa.Column) and column.table is not None:
            return text_form(column.table.name, column.name)
        return str(compiler.visit_string(element, **kw))

    @compiles(sa.DateTime, "mysql")
    @compiles(sa.DateTime, "mariadb")
    def _datetime(element: sa.DateTime, compiler: Any, **kw: Any) -> str:
        return "DATETIME(6)"

    @compiles(CreateColumn, "mysql")
    @compiles(CreateColumn, "mariadb")
    def _column(element: CreateColumn, compiler: Any, **kw: Any) -> str:
        text = str(compiler.visit_create_column(element, **kw))
        return re.sub(
            r"DEFAULT \(?CURRENT_TIMESTAMP(?:\(\d?\))?\)?", "DEFAULT (UTC_TIMESTAMP(6))", text
        )

    @compiles(CreateTable, "mysql")
    @compiles(CreateTable, "mariadb")
    def _table(element: CreateTable, compiler: Any, **kw: Any) -> str:
        text = str(compiler.visit_create_table(element, **kw)).rstrip()
        return f"{text} ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

    _ddl_installed = True


class MariaDB(Backend):
    name = "mariadb"
    sqlalchemy_dialect = "mysql"
    patience_sql = "SET innodb_lock_wait_timeout = GREATEST(1, CEILING({ms} / 1000))"
    now_sql = "UTC_TIMESTAMP(6)"
    now_plus_sql = "UTC_TIMESTAMP(6) + INTERVAL ? MICROSECOND"
    true_sql = "TRUE"
    # Times are DATETIME(6) holding UTC; DATE_FORMAT would need a ``%`` the paramstyle takes.
    utc_day_sql = "CAST(DATE({column}) AS CHAR)"
    elapsed_sql = ("0", "TIMESTAMPDIFF(MICROSECOND, {start}, {end})")  # SUM gives DECIMAL
    # utf8mb4_bin ignores trailing spaces in = and GROUP BY; its NO PAD twin does not.
    exact_text_sql = "{column} COLLATE utf8mb4_nopad_bin"
    row_lock_sql = " FOR UPDATE"
    share_lock_sql = " LOCK IN SHARE MODE"
    parent_lock_sql = " LOCK IN SHARE MODE"
    partial_indexes = False  # MariaDB has none
    updates_lock_unmatched = True
    # A MEDIUMTEXT is grouped in a temporary table on disk, a VARCHAR in memory: a third
    # of the time of status's read of the last day's ledger. LEFT keeps the column's
    # binary collation; a longer text is no kind syncd knows, cut or not.
    text_group_sql = "LEFT({column}, 255)"
    binds_enums_as_text = False  # the drivers escape an Enum by its repr
    parses_json = False
    takes_password = True
    driver_hint = " (pip install 'syncd[mariadb]' for mysqlclient, or pip install pymysql)"

    def starts_with_sql(self, column: str, prefix: str) -> str:
        """LIKE with a constant prefix: a range of an index on the column (a prefix of the
        text, as MariaDB indexes a long one), where a function of the column is none, and
        every row's text would be read. ``%`` is written as CHAR(37): a ``%`` in the
        statement is the drivers' paramstyle. The prefix holds no wildcard of LIKE."""
        if any(c in prefix for c in "%_\\"):
            raise ValueError(f"a LIKE prefix must hold no wildcard or escape: {prefix!r}")
        return f"{column} LIKE CONCAT({quoted(prefix)}, CHAR(37 USING utf8mb4))"

    def make_engine(
        self, url: sa.URL, *, busy_timeout: float, on_begin: Callable[[sa.Connection], None]
    ) -> Engine:
        """Every connection is set up the same whatever the server's defaults: UTC, a
        strict ``sql_mode``, READ COMMITTED (each statement sees what committed before
        it, as in PostgreSQL, and no gap locks block a consumer's INSERT), a lock wait as
        long as SQLite's busy timeout, and a transaction left idle by a frozen syncd
        rolled back after 10 s instead of holding its locks against every instance."""
        import sqlalchemy as sa  # noqa: PLC0415

        install_ddl()
        engine = sa.create_engine(
            url,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
            connect_args={"charset": "utf8mb4", "init_command": setup_sql(busy_timeout)},
        )

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                version, problem = _server(cursor)
                if problem is not None:
                    raise ServerTooOld(problem)
                if "mariadb" in version.lower():
                    cursor.execute(f"SET idle_transaction_timeout = {IDLE_IN_TRANSACTION_S}")
            finally:
                cursor.close()

        @sa.event.listens_for(engine, "checkin")
        def _on_checkin(dbapi_connection: Any, record: Any) -> None:
            # A named lock belongs to the connection, not the transaction.
            if record.info.pop(_LOCK_HELD, False):
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute("SELECT RELEASE_ALL_LOCKS()")
                finally:
                    cursor.close()

        sa.event.listen(engine, "begin", on_begin)
        return engine

    def plain_form(self, url: str) -> bool:
        return plain_parts(url) is not None

    def url_problem(self, url: str) -> str | None:
        """A database to work in: without one, MariaDB has no current database, and the
        first look at a table fails."""
        parts = plain_parts(url)
        if parts is not None:
            named = bool(parts[1].get("db") or parts[1].get("database"))
        else:
            import sqlalchemy as sa  # noqa: PLC0415 - a URL of another form: read by it

            named = bool(sa.engine.make_url(url).database)
        return None if named else "names no database: end it with /DATABASE, syncd's own"

    def plain_login(self, url: str) -> tuple[str | None, str | None] | None:
        match = _plain(url)
        return None if match is None else login_in(match)

    def plain_with_password(self, url: str, password: str) -> str | None:
        """As PostgreSQL's: every character but letters, digits and ``-._~``
        percent-encoded, which SQLAlchemy's URL and ``plain_parts`` both decode."""
        match = _plain(url)
        return None if match is None or not match["user"] else password_put(url, match, password)

    def driver_imports(self, url: str) -> bool:
        parts = plain_parts(url)
        try:
            importlib.import_module(_DBAPI[parts[0]] if parts else "MySQLdb")
        except ImportError:
            return False  # SQLAlchemy names what is missing
        return True

    def read_plainly(
        self, url: str, busy_timeout: float, work: Callable[[PlainDriver], T | None]
    ) -> T | None:
        """One consistent snapshot (REPEATABLE READ, read only) on a connection of the
        URL's driver, set up as ``make_engine``'s are."""
        parts = plain_parts(url)
        if parts is None:
            return None
        driver, args = parts
        try:
            dbapi: Any = importlib.import_module(_DBAPI[driver])
        except ImportError:
            return None  # the usual way names the missing driver
        try:
            connection = dbapi.connect(**args, charset="utf8mb4", init_command=setup_sql(
                busy_timeout))  # fmt: skip
        except dbapi.Error:
            return None
        try:
            cursor = connection.cursor()
            if _server(cursor)[1] is not None:
                return None  # the usual way says what is wrong
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT")
            cursor.close()
            return work(PlainDriver(connection, self))
        except dbapi.Error:
            return None
        finally:
            with suppress(dbapi.Error):
                connection.close()

    def is_lock_error(self, error: BaseException | None) -> bool:
        return _code(error) in _TRY_AGAIN

    def is_permission_error(self, error: BaseException | None) -> bool:
        """A statement on a table or column not granted ("INSERT command denied to user
        ... for table"), DDL included, or a database not granted."""
        return _code(error) in _DENIED

    def role(self, url: str | sa.URL) -> str:
        """The URL's user; without one, the drivers' default: the user running the
        process."""
        if isinstance(url, str):
            import sqlalchemy as sa  # noqa: PLC0415

            url = sa.engine.make_url(url)
        return url.username or getpass.getuser()

    def clock(self, plus: float = 0.0) -> sa.ColumnElement[Any]:
        import sqlalchemy as sa  # noqa: PLC0415

        return sa.literal_column(
            f"(UTC_TIMESTAMP(6) + INTERVAL {round(plus * 1_000_000)} MICROSECOND)"
        )

    def now_plus_param(self, seconds: float) -> object:
        return round(seconds * 1_000_000)

    def upsert(
        self,
        table: sa.Table,
        values: Any,
        *,
        key: Sequence[sa.Column[Any]],
        update: Any,
        where: sa.ColumnElement[bool] | None = None,
    ) -> Any:
        """``INSERT ... ON DUPLICATE KEY UPDATE``; ``where`` becomes an ``IF`` in each
        assignment. MariaDB assigns left to right, each later one seeing the earlier ones'
        new values, so the columns ``where`` reads are assigned last, and every
        assignment reads the row's values as they were."""
        import sqlalchemy as sa  # noqa: PLC0415
        from sqlalchemy.dialects import mysql  # noqa: PLC0415
        from sqlalchemy.sql import visitors  # noqa: PLC0415

        statement = mysql.insert(table).values(**values)
        if where is None:
            return statement.on_duplicate_key_update(**update)
        read = {c.name for c in visitors.iterate(where) if isinstance(c, sa.Column)}
        ordered = sorted(update.items(), key=lambda item: item[0] in read)
        return statement.on_duplicate_key_update(
            [(name, sa.func.IF(where, value, table.c[name])) for name, value in ordered]
        )

    def lock_migrations(self, conn: sa.Connection) -> None:
        """A named lock (DDL commits as it goes here, so no transaction can hold it),
        released when the connection returns to the pool. Whatever engine runs the
        migration, its DDL is MariaDB's as syncd needs it (``install_ddl``)."""
        import sqlalchemy as sa  # noqa: PLC0415

        install_ddl()
        got = conn.execute(
            sa.select(sa.func.GET_LOCK(sa.literal_column(MIGRATION_LOCK), MIGRATION_LOCK_WAIT_S))
        ).scalar()
        if got != 1:
            raise StorageError("another process is migrating the database; try again later")
        conn.connection.info[_LOCK_HELD] = True

    def take_feed_turn(self, conn: sa.Connection) -> None:
        """Auto-increment hands out ids when rows are inserted, not when they commit; a
        lock on the one row of ``alembic_version``, taken just before the feed rows are
        inserted and held until the commit, makes writers take ids one transaction at a
        time and commit in that order."""
        conn.exec_driver_sql("SELECT version_num FROM alembic_version FOR UPDATE").all()

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
        # Another command may be tracking the same ids right now, unseen until it
        # commits: INSERT IGNORE leaves its rows to it, RETURNING names ours.
        made: dict[int, int] = {}
        for start in range(0, len(provider_order_ids), 200):
            part = provider_order_ids[start : start + 200]
            rows = ", ".join(["(?, ?, ?, ?, ?)"] * len(part))
            params = [v for poid in part for v in (provider, poid, state, when, when)]
            made.update(
                d.run(
                    "INSERT IGNORE INTO orders (provider, provider_order_id, state, created_at,"  # noqa: S608
                    f" next_check_at) VALUES {rows} RETURNING provider_order_id, id",
                    params,
                )
            )
        return made

    def update_rows(
        self, d: Driver, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Both drivers send an executemany UPDATE one row at a time, a round trip each
        (they batch only ``INSERT ... VALUES``): 100 rows cost 150-250 ms against 4-8 ms
        for one UPDATE joined to the rows as a derived table (MariaDB reads no ``VALUES``
        list there), which this sends, 200 rows at a time."""
        names = ("id", *columns)
        first = "SELECT " + ", ".join(f"? AS {name}" for name in names)
        other = "SELECT " + ", ".join("?" * len(names))
        assignments = ", ".join(f"t.{column} = v.{column}" for column in columns)
        for start in range(0, len(rows), 200):
            part = rows[start : start + 200]
            derived = " UNION ALL ".join([first] + [other] * (len(part) - 1))
            d.run(
                f"UPDATE {table} AS t JOIN ({derived}) AS v ON t.id = v.id SET {assignments}",  # noqa: S608
                [value for row in part for value in (row[-1], *row[:-1])],
            )

    @staticmethod
    def sql(text: str) -> str:
        # Both drivers take ``%s``; no ``%`` may appear in syncd's statements otherwise.
        return text.replace("?", "%s")

    def ids_in(self, column: str, count: int) -> str:
        return f"{column} IN ({', '.join('?' * count)})"

    def id_params(self, ids: Sequence[int]) -> tuple[Any, ...]:
        return tuple(ids)

    @staticmethod
    def time_value(value: datetime | None) -> datetime | None:
        return None if value is None else utc(value).replace(tzinfo=None)

    @staticmethod
    def money_value(value: Decimal | None) -> Decimal | None:
        return None if value is None else fits_money(checked_money(value))

    @staticmethod
    def text_value(value: str | Enum | None) -> str | None:
        return value.value if isinstance(value, Enum) else value

    def money_type(self) -> TypeEngine[Any]:
        from sqlalchemy import Numeric  # noqa: PLC0415

        return Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True)

    @staticmethod
    def time_column(value: datetime) -> datetime:
        return value.replace(tzinfo=None)  # UTC, kept without an offset

    def watch_writes(self, url: str) -> WriteProbe:
        """Nothing tells cheaply that anyone wrote: every look asks the real (indexed)
        question, four times a second, so that an order is sent well within a second
        of its INSERT."""
        return EveryLook(POLL_MARIADB)

    def install_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        """Nothing: MariaDB sends no notifications, its readers poll."""

    def remove_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        """Nothing was installed."""


BACKEND = MariaDB()
