"""Instant pickup: a queued order is sent within about a second of its INSERT, whatever
the intervals.

``Pickup`` looks at the queue of every provider this instance holds the lease of and
starts the provider's submit job when its queue changed since the submit job last saw it.
It looks

- when woken: on PostgreSQL a trigger on ``orders`` notifies channel ``syncd_orders``
  whenever an order becomes ``queued`` (a consumer's plain INSERT included), and the
  daemon LISTENs to it; a provider taken over is a wake-up too;
- at every poll, at most one second apart, as the backstop for a lost notification, and
  the only way with ``[database] notify = false`` or on SQLite. On SQLite a poll first
  asks ``PRAGMA data_version`` whether anyone wrote at all: an idle database costs no
  query.

A look is one indexed query (count and sum of the queued ids per provider). The submit
job runs when that fingerprint differs from the one it last ran for, so orders that stay
queued (waiting for funds, or for a provider that failed) do not start a job every
second: the orders job tries them again at its interval, or any change to the queue does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine
from typing import Any

import structlog

from syncd.errors import StorageError
from syncd.storage import Storage
from syncd.storage.watch import WriteWatch, next_change

log = structlog.get_logger("syncd.pickup")

Fingerprint = tuple[int, int]


class Pickup:
    def __init__(
        self,
        storage: Storage,
        watch: WriteWatch,
        *,
        held: Callable[[], Collection[str]],
        submit: Callable[[str], Coroutine[Any, Any, None]],
    ) -> None:
        self.storage = storage
        self.watch = watch
        self._held, self._submit = held, submit
        self._woken = asyncio.Event()
        self._seen: dict[str, Fingerprint] = {}  # what the last submit run started from
        self._running: dict[str, asyncio.Task[None]] = {}
        self._failing = False

    def wake(self, _payload: str = "") -> None:
        """Look now (a notification arrived, a lease was taken)."""
        self._woken.set()

    async def run(self) -> None:
        while True:
            # A look that failed is tried again at the next poll, written to or not.
            await next_change(self._woken, self.watch, also=lambda: self._failing)
            await self.look()

    async def look(self) -> list[str]:
        """Start the submit job of every held provider whose queue changed; returns their
        names."""
        held = [name for name in self._held() if name not in self._running]
        if not held:
            return []
        try:
            queued = await asyncio.to_thread(self.storage.queued_fingerprints, held)
        except StorageError as exc:
            if not self._failing:
                log.warning("pickup.look_failed", error=exc.detail)
            self._failing = True
            return []
        if self._failing:
            log.info("pickup.looking_again")
        self._failing = False
        started = []
        for name in held:
            fingerprint = queued.get(name)
            if fingerprint is None:
                self._seen.pop(name, None)
            elif fingerprint != self._seen.get(name):
                self._seen[name] = fingerprint
                self._start(name)
                started.append(name)
        return started

    def _start(self, name: str) -> None:
        task = asyncio.create_task(self._submit(name), name=f"submit {name}")
        self._running[name] = task

        def finished(done: asyncio.Task[None]) -> None:
            self._running.pop(name, None)
            if not done.cancelled() and (exc := done.exception()) is not None:
                log.error("pickup.submit_crashed", provider=name, error=repr(exc))
            self._woken.set()  # what it wrote may have changed the queue: look again

        task.add_done_callback(finished)

    def run_now(self, name: str) -> None:
        """Start the provider's submit job now unless it runs already (a provider taken
        over: what its last holder left is settled at once)."""
        if name not in self._running:
            self._start(name)

    def forget(self, name: str) -> None:
        """A lease given up: the next holder (maybe this instance again) starts afresh."""
        self._seen.pop(name, None)
