"""``syncd changes``: a change feed as JSON lines, for people and for scripts.

Each line is one row of ``order_changes`` (``orders``, the default), ``package_changes``
(``packages``), ``request_changes`` (``requests``), ``alerts`` or ``ledger``, with its
``id``; ``--since ID`` starts after that id, so a script that keeps the last id it
printed never misses a row nor sees one twice (the
feeds' ids become visible in id order). ``--follow`` keeps printing rows as they commit:
woken by NOTIFY ``syncd_changes`` on PostgreSQL (unless ``[database] notify = false``)
with a poll every second as the backstop; on SQLite by a poll that asks ``PRAGMA
data_version`` whether anyone wrote, four times a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import signal
import sys
from collections.abc import Coroutine
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncd.cli.commands import load, opened
from syncd.cli.exits import EXIT_OK
from syncd.config import Config
from syncd.errors import StorageError
from syncd.units import LARGEST, shown

if TYPE_CHECKING:
    from syncd.storage import Storage

# The feeds' names (storage.feeds.FEEDS, which imports SQLAlchemy, maps them to tables;
# a test checks that both name the same feeds): the parser is built for every command,
# --help included, and must not cost them SQLAlchemy.
FEED_NAMES = ("alerts", "ledger", "orders", "packages", "requests")


def _count(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, not {shown(text)}") from None
        if not low <= value <= LARGEST:
            raise argparse.ArgumentTypeError(f"must be between {low} and {LARGEST}")
        return value

    return parse


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    changes = commands.add_parser(
        "changes",
        help="a change feed (orders, packages, requests, alerts, ledger) as JSON lines, "
        "each with its id",
    )
    changes.add_argument(
        "feed", nargs="?", choices=FEED_NAMES, default="orders", help="default: orders"
    )
    changes.add_argument(
        "--since", metavar="ID", type=_count(0), default=0,
        help="only rows after this id (the last one a script printed)",
    )  # fmt: skip
    changes.add_argument(
        "--follow", action="store_true", help="keep printing rows as they commit, until Ctrl-C"
    )
    changes.add_argument("--limit", metavar="N", type=_count(1), help="stop after N rows")


def changes(args: argparse.Namespace) -> int:
    config = load(args)
    # Reading a feed creates nothing (not an empty database where a path has a typo)
    # and migrates nothing: a role that may only SELECT follows the feeds.
    with opened(config, register=False, migrate=False) as storage:
        if not args.follow:
            _print_new(storage, args.feed, Cursor(args.since), args.limit)
            return EXIT_OK
        asyncio.run(_until_signalled(_follow(config, storage, args.feed, args.since, args.limit)))
    return EXIT_OK


class Outage:
    """The database failing a follower's reads: said on stderr once when it starts and
    once when it ends, with waits growing from 1 s to 10 s between tries."""

    FIRST, LONGEST = 1.0, 10.0

    def __init__(self) -> None:
        self.wait: float | None = None

    def failed(self, reason: str) -> float:
        """Seconds to wait before the next try."""
        if self.wait is None:
            print(f"syncd: the database failed ({reason}); trying again", file=sys.stderr)
            self.wait = self.FIRST
        else:
            self.wait = min(self.wait * 2, self.LONGEST)
        return self.wait

    def over(self) -> None:
        if self.wait is not None:
            print("syncd: the database answers again; following on", file=sys.stderr)
            self.wait = None


def _reader_gone() -> bool:
    """Whether stdout is a pipe whose reader went away. A follower waiting for rows would
    otherwise learn it only at its next write, which on a quiet feed may never come."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    looked = select.poll()
    looked.register(fd, select.POLLERR)  # a pipe's write end reports POLLERR once unread
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in looked.poll(0))


def _unless_reader_gone() -> bool:
    if _reader_gone():
        raise BrokenPipeError
    return False


async def _until_signalled(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` until it ends or SIGINT/SIGTERM asks to stop: following a feed is
    stopped by a signal, and that is a clean end (exit 0), not an error."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    task = asyncio.create_task(work)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
    with suppress(asyncio.CancelledError):
        await task


@dataclass
class Cursor:
    """Where a reader of a feed is: the last id printed, and how many rows so far."""

    after: int
    printed: int = 0


def _print_new(storage: Storage, feed: str, cursor: Cursor, limit: int | None) -> None:
    """Print every row after the cursor (up to ``limit`` rows in all), moving it past each
    chunk printed: a read that fails midway leaves it at the last row printed."""
    from syncd.storage.driver import CHUNK  # noqa: PLC0415

    while limit is None or cursor.printed < limit:
        left = CHUNK if limit is None else min(CHUNK, limit - cursor.printed)
        rows = storage.feed_rows(feed, cursor.after, left)
        for row in rows:
            # ASCII-only JSON: no byte of a stored text can act on the terminal.
            sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        if rows:
            cursor.after = rows[-1]["id"]
        cursor.printed += len(rows)
        if len(rows) < left:
            break


async def _follow(
    config: Config, storage: Storage, feed: str, after: int, limit: int | None
) -> None:
    from syncd.storage.watch import WriteWatch, listen, next_change  # noqa: PLC0415

    url = config.database.connect_url
    woken = asyncio.Event()
    listener = None
    if config.database.listens:
        listener = asyncio.create_task(listen(url, "syncd_changes", lambda _: woken.set()))
    watch = WriteWatch(url)
    cursor = Cursor(after)
    outage = Outage()
    try:
        while limit is None or cursor.printed < limit:
            try:
                await asyncio.to_thread(_print_new, storage, feed, cursor, limit)
            except StorageError as exc:
                # A database restarting or out of reach for a while: a follower waits for
                # it, as the daemon does, instead of ending a script's pipe. The cursor
                # is at the last row printed: none is printed twice, none skipped.
                await asyncio.sleep(outage.failed(exc.detail))
                continue
            outage.over()
            if limit is not None and cursor.printed >= limit:
                return
            # `syncd changes --follow | head -1` on a quiet feed ends at the next poll.
            await next_change(woken, watch, also=_unless_reader_gone)
    finally:
        if listener is not None:
            listener.cancel()
        watch.close()
