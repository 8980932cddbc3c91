"""Cheap looks at the database for the submit job and ``syncd changes --follow``: has
anyone written since the last look (SQLite), and notifications (PostgreSQL LISTEN)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import suppress

import structlog

from syncd.storage.engine import sqlite_file
from syncd.storage.urls import conninfo

log = structlog.get_logger("syncd.storage")

# How long a LISTEN connection may stay silent before it is asked whether it still lives:
# a connection cut without a word (a NAT that forgot it, a failover) would otherwise
# leave the listener waiting for ever, and only the poll would go on working.
POLL = 1.0  # seconds between two looks when no notification woke the reader
POLL_SQLITE = 0.25  # an idle SQLite poll costs one PRAGMA: look more often
LISTEN_CHECK = 15.0
RECONNECT_LONGEST = 30.0


class WriteWatch:
    """Whether anyone committed a write to a SQLite database since the last look.

    ``PRAGMA data_version`` on a connection of its own changes whenever another
    connection (any process) commits: a look costs one read of the shared-memory index,
    no query plan, no table. On other databases every look says yes and the caller asks
    its real (indexed) question instead.
    """

    def __init__(self, url: str) -> None:
        self._path = sqlite_file(url)
        self.poll = POLL if self._path is None else POLL_SQLITE
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None

    def changed(self) -> bool:
        if self._path is None:
            return True
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(self._path, check_same_thread=False)
            version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            self.close()
            return True  # the caller's own query meets the problem and says what it is
        changed = version != self._version
        self._version = version
        return changed

    def close(self) -> None:
        if self._conn is not None:
            with suppress(sqlite3.Error):
                self._conn.close()
        self._conn = None
        self._version = None


async def next_change(
    woken: asyncio.Event,
    watch: WriteWatch,
    *,
    also: Callable[[], bool] = lambda: False,
) -> None:
    """Return once there may be something new: ``woken`` was set (a notification), or a
    poll (every ``watch.poll`` seconds) finds ``also()`` true or a write since the last
    look. Clears ``woken``."""
    while True:
        with suppress(TimeoutError):
            async with asyncio.timeout(watch.poll):
                await woken.wait()
        if woken.is_set() or also() or await asyncio.to_thread(watch.changed):
            woken.clear()
            return


async def listen(url: str, channel: str, heard: Callable[[str], None]) -> None:
    """LISTEN on ``channel`` on a connection of its own and call ``heard(payload)`` for each
    notification, for as long as the task runs.

    The connection is checked after every quiet ``LISTEN_CHECK``; when the database
    restarts or the connection breaks, the loss is logged once, and the listener connects
    and LISTENs again with a growing pause (up to 30 s). Each (re)connection also calls
    ``heard("")``: notifications sent while nobody listened are lost, so the caller looks
    for itself.
    """
    import psycopg  # noqa: PLC0415 - only here: SQLite installs need no PostgreSQL driver
    from psycopg import sql  # noqa: PLC0415

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
