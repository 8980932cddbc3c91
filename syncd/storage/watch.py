"""Cheap looks at the database for the submit job and ``syncd changes --follow``: has
anyone written since the last look, and notifications where the database sends them.
How each database does either is its backend's (``watch_writes``, ``listen``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

from syncd.storage.backends import backend_for_url
from syncd.storage.backends.postgresql import conninfo  # where older callers found it

__all__ = ["WriteWatch", "conninfo", "listen", "next_change"]


class WriteWatch:
    """Whether anyone committed a write to the database at ``url`` since the last look.

    Where the database can tell cheaply (SQLite's ``PRAGMA data_version``: one read of
    the shared-memory index, no query plan, no table), a look costs almost nothing and is
    made often (``poll`` seconds apart); elsewhere every look says yes and the caller asks
    its real (indexed) question instead.
    """

    def __init__(self, url: str) -> None:
        self._probe = backend_for_url(url).watch_writes(url)
        self.poll = self._probe.poll

    def changed(self) -> bool:
        return self._probe.changed()

    def close(self) -> None:
        self._probe.close()


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
    """Call ``heard(payload)`` for each notification on ``channel`` for as long as the
    task runs, reconnecting when the connection is lost; each (re)connection also calls
    ``heard("")``, since notifications sent while nobody listened are lost (only for a
    database whose backend ``notifies``)."""
    await backend_for_url(url).listen(url, channel, heard)
