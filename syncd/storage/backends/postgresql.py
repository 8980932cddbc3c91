"""PostgreSQL: many writers at once, on one host or many.

Rows are locked, not the database: claims skip rows another transaction holds, the
fence check locks the lease row for share until the commit, and feed writers take one
advisory lock in turn (``take_feed_turn``). Times are ``timestamptz``, money ``NUMERIC``.
Triggers ``NOTIFY`` new queued orders and new feed rows, and a reader ``LISTEN``s.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from syncd.storage.backends.interface import Backend, Execute, login_in, password_put
from syncd.storage.driver import PlainDriver, checked_money, utc

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine
    from sqlalchemy.types import TypeEngine

    from syncd.storage.driver import Driver

T = TypeVar("T")

# SQLAlchemy's URL grammar for this one driver: [user[:password]@][host][:port][/db][?query].
_PLAIN = re.compile(
    r"postgresql\+psycopg://(?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?"
    r"(?:\[[^/?]+\]|[^/:?]+)?(?::(?P<port>[^/?]*))?(?:/[^?]*)?(?:\?[^\n]*)?"
)
IDLE_IN_TRANSACTION_MS = 10_000
# SQLSTATEs worth a fresh try of the whole transaction: lock_timeout ran out, a deadlock
# was broken by aborting this side, a serialization failure.
_TRY_AGAIN = {"55P03", "40P01", "40001"}
INSUFFICIENT_PRIVILEGE = "42501"  # the role lacks a privilege (``is_permission_error``)
# The key of the one advisory lock every feed writer takes (``take_feed_turn``): "syncd".
FEED_LOCK_KEY = 0x73796E6364
# The key of the advisory lock a migration is run under (``lock_migrations``): "syncdm".
MIGRATION_LOCK_KEY = 0x73796E63646D
# How long a LISTEN connection may stay silent before it is asked whether it still lives:
# a connection cut without a word (a NAT that forgot it, a failover) would otherwise
# leave the listener waiting for ever, and only the poll would go on working.
LISTEN_CHECK = 15.0
RECONNECT_LONGEST = 30.0


def is_plain(url: str) -> bool:
    """Whether ``url`` is a ``postgresql+psycopg://`` URL of the plain form, with a port of
    ASCII digits if any (SQLAlchemy reads it with ``int``, which also takes other digits
    and a sign, and refuses an empty one; libpq reads neither the same)."""
    match = _PLAIN.fullmatch(url) if "\n" not in url else None
    if match is None:
        return False
    return match["port"] is None or re.fullmatch(r"[0-9]+", match["port"]) is not None


def plain_login(url: str) -> tuple[str | None, str | None]:
    """The user and the password a plain URL (``is_plain``) holds, decoded as SQLAlchemy
    decodes them; None for one it does not hold."""
    match = _PLAIN.fullmatch(url)
    return (None, None) if match is None else login_in(match)


def plain_with_password(url: str, password: str) -> str:
    """A plain URL that names a user, with ``password`` in it (in place of any it had),
    every character but letters, digits and ``-._~`` percent-encoded: still a plain URL,
    which SQLAlchemy and libpq both decode to ``password``."""
    match = _PLAIN.fullmatch(url)
    assert match is not None and match["user"], "not a plain URL naming a user"
    return password_put(url, match, password)


def conninfo(url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL: the same URL under the
    scheme libpq knows (libpq decodes the percent-escapes SQLAlchemy does)."""
    return "postgresql://" + url.partition("://")[2]


def _notify_changes(table: str) -> str:
    return (
        f"CREATE TRIGGER syncd_{table}_added AFTER INSERT ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION syncd_notify_changes()"
    )


class PostgreSQL(Backend):
    name = "postgresql"
    sqlalchemy_dialect = "postgresql"
    patience_sql = "SET lock_timeout = {ms}"
    now_sql = "now()"
    now_plus_sql = "now() + make_interval(secs => ?)"
    true_sql = "true"
    money_group_sql = "CAST({column} AS TEXT)"
    grouping_sets = True
    # to_char, not a cast to text: that follows the session's DateStyle.
    utc_day_sql = "to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    # EXTRACT gives NUMERIC (PostgreSQL 14 and later): exact to the microsecond; SUM of
    # BIGINT gives NUMERIC.
    elapsed_sql = ("0", "CAST(EXTRACT(EPOCH FROM {end} - {start}) * 1000000 AS BIGINT)")
    row_lock_sql = " FOR UPDATE"
    share_lock_sql = " FOR SHARE"
    # No parent_lock_sql: a foreign key check takes a key share lock, which waits for no
    # writer of syncd's (they lock FOR NO KEY UPDATE: ``base.lock_provider``).
    binds_enums_as_text = False  # psycopg would write an Enum's name
    parses_json = True
    notifies = True
    takes_password = True
    driver_hint = " (pip install 'syncd[postgres]')"

    def make_engine(
        self, url: sa.URL, *, busy_timeout: float, on_begin: Callable[[sa.Connection], None]
    ) -> Engine:
        """A consumer's lock (or a session left idle in a transaction) is waited on as
        long as SQLite's busy timeout, not forever: the statement then fails as "locked"
        and the transaction is retried like one that met a locked SQLite database. And a
        syncd that stops mid-transaction (paused, frozen, stopped by a debugger) loses
        that transaction after 10 s instead of holding its locks, the lease rows' among
        them, against every other instance."""
        import sqlalchemy as sa  # noqa: PLC0415 - never for the commands that read plainly

        waits = (
            f"-c lock_timeout={int(busy_timeout * 1000)} "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
        )
        engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"options": waits})
        sa.event.listen(engine, "begin", on_begin)
        return engine

    def plain_form(self, url: str) -> bool:
        return is_plain(url)

    def plain_login(self, url: str) -> tuple[str | None, str | None] | None:
        return plain_login(url) if is_plain(url) else None

    def plain_with_password(self, url: str, password: str) -> str | None:
        return plain_with_password(url, password) if is_plain(url) else None

    def driver_imports(self, url: str) -> bool:
        try:
            import psycopg  # noqa: F401, PLC0415
        except ImportError:
            return False  # SQLAlchemy names what is missing
        return True

    def read_plainly(
        self, url: str, busy_timeout: float, work: Callable[[PlainDriver], T | None]
    ) -> T | None:
        if not is_plain(url):
            return None
        try:
            import psycopg  # noqa: PLC0415 - only here: SQLite installs may lack it
        except ImportError:
            return None  # the usual way names the missing driver
        try:
            # Waits for a lock as long as a SQLite reader would, like Storage's connections.
            with psycopg.connect(
                conninfo(url), options=f"-c lock_timeout={int(busy_timeout * 1000)}"
            ) as pg:
                pg.read_only = True
                pg.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot
                return work(PlainDriver(pg, self))
        except psycopg.Error:
            return None

    def is_lock_error(self, error: BaseException | None) -> bool:
        return getattr(error, "sqlstate", None) in _TRY_AGAIN or super().is_lock_error(error)

    def is_permission_error(self, error: BaseException | None) -> bool:
        """SQLSTATE 42501, insufficient_privilege: a table not granted, and DDL on a
        table or schema the role does not own ("must be owner of table ...")."""
        return getattr(error, "sqlstate", None) == INSUFFICIENT_PRIVILEGE

    def role(self, url: str | sa.URL) -> str:
        """The URL's user; without one, libpq's own default: ``$PGUSER``, else the name of
        the user running the process."""
        if isinstance(url, str):
            import sqlalchemy as sa  # noqa: PLC0415

            url = sa.engine.make_url(url)
        return url.username or os.environ.get("PGUSER") or getpass.getuser()

    def clock(self, plus: float = 0.0) -> sa.ColumnElement[Any]:
        import sqlalchemy as sa  # noqa: PLC0415

        return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, plus)

    def now_plus_param(self, seconds: float) -> object:
        return seconds

    def lock_migrations(self, conn: sa.Connection) -> None:
        """A transaction-level advisory lock: DDL locks only the tables it touches, and
        a table that does not exist yet locks nothing, so two processes would both
        create ``alembic_version`` (one failing on the catalog's unique index). Waited
        for as long as any lock (``lock_timeout``), then tried again like one."""
        import sqlalchemy as sa  # noqa: PLC0415

        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))

    def take_feed_turn(self, conn: sa.Connection) -> None:
        """A sequence hands out ids when rows are inserted, not when they commit; one
        transaction-level advisory lock, taken just before the feed rows are inserted,
        makes writers take ids one transaction at a time and commit in that order."""
        import sqlalchemy as sa  # noqa: PLC0415

        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(FEED_LOCK_KEY)))

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
        # commits: its rows are left to it.
        return dict(
            d.run(
                "INSERT INTO orders (provider, provider_order_id, state, created_at,"
                " next_check_at) SELECT ?, poid, ?, ?, ? FROM unnest(?::bigint[])"
                " WITH ORDINALITY AS wanted(poid, n) ORDER BY n"
                " ON CONFLICT (provider, provider_order_id) DO NOTHING"
                " RETURNING provider_order_id, id",
                (provider, state, when, when, list(provider_order_ids)),
            )
        )

    @staticmethod
    def sql(text: str) -> str:
        # psycopg takes ``%s``; no ``%`` may appear in syncd's statements otherwise.
        return text.replace("?", "%s")

    def ids_in(self, column: str, count: int) -> str:
        # One array: one prepared statement serves any count.
        return f"{column} = ANY(?)"

    def id_params(self, ids: Sequence[int]) -> tuple[Any, ...]:
        return (list(ids),)

    @staticmethod
    def time_value(value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)

    @staticmethod
    def money_value(value: Decimal | None) -> Decimal | None:
        return None if value is None else checked_money(value)

    @staticmethod
    def text_value(value: str | Enum | None) -> str | None:
        return value.value if isinstance(value, Enum) else value

    def money_type(self) -> TypeEngine[Any]:
        from sqlalchemy import Numeric  # noqa: PLC0415

        return Numeric(asdecimal=True)

    @staticmethod
    def time_column(value: datetime) -> datetime:
        return value

    async def listen(self, url: str, channel: str, heard: Callable[[str], None]) -> None:
        """LISTEN on a connection of its own. The connection is checked after every quiet
        ``LISTEN_CHECK``; when the database restarts or the connection breaks, the loss
        is logged once, and the listener connects and LISTENs again with a growing pause
        (up to 30 s). Each (re)connection also calls ``heard("")``: notifications sent
        while nobody listened are lost, so the caller looks for itself."""
        import asyncio  # noqa: PLC0415 - the commands that read plainly need none of these

        import psycopg  # noqa: PLC0415
        import structlog  # noqa: PLC0415
        from psycopg import sql  # noqa: PLC0415

        log = structlog.get_logger("syncd.storage")
        pause, lost = 1.0, False
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    conninfo(url), autocommit=True, connect_timeout=5
                )
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    if lost:
                        log.info("notify.listening_again", channel=channel)
                    pause, lost = 1.0, False
                    heard("")
                    while True:
                        async for note in conn.notifies(timeout=LISTEN_CHECK):
                            heard(note.payload)
                        async with asyncio.timeout(5):
                            await conn.execute("SELECT 1")
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if not lost:
                    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                    log.warning("notify.lost", channel=channel, error=reason, fallback="polling")
                lost = True
                await asyncio.sleep(pause)
                pause = min(RECONNECT_LONGEST, pause * 2)

    def install_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        """A notification's payload is at most 8000 bytes and an oversized one would fail
        the consumer's INSERT: the provider name in ``syncd_orders`` is cut to 100
        characters, and a feed's payload is only its table name."""
        if functions:
            execute(
                """
        CREATE FUNCTION syncd_notify_orders() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('syncd_orders', coalesce(left(NEW.provider, 100), ''));
            RETURN NULL;
        END $$
        """
            )
        if queued_state is not None:
            execute(
                f"""
        CREATE TRIGGER syncd_orders_queued AFTER INSERT OR UPDATE OF state ON orders
        FOR EACH ROW WHEN (NEW.state = '{queued_state}') EXECUTE FUNCTION syncd_notify_orders()
        """
            )
        if functions:
            execute(
                """
        CREATE FUNCTION syncd_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('syncd_changes', TG_TABLE_NAME);
            RETURN NULL;
        END $$
        """
            )
        for table in feeds:
            execute(_notify_changes(table))

    def remove_notify(
        self, execute: Execute, *, functions: bool, queued_state: str | None, feeds: Sequence[str]
    ) -> None:
        for table in feeds:
            execute(f"DROP TRIGGER IF EXISTS syncd_{table}_added ON {table}")
        if functions:
            execute("DROP FUNCTION IF EXISTS syncd_notify_changes()")
        if queued_state is not None:
            execute("DROP TRIGGER IF EXISTS syncd_orders_queued ON orders")
        if functions:
            execute("DROP FUNCTION IF EXISTS syncd_notify_orders()")


BACKEND = PostgreSQL()
