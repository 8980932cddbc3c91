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

A submit run that failed while orders stay queued is run again by itself, so that its
state in ``syncd status`` follows the provider's, not the arrival of the next order:
when sending is paused, once the pause is due (``resume_in``); otherwise after
``min(orders_interval, 30 s)``, doubling up to ``orders_interval`` while it keeps
failing (``retry_delay``), until a run succeeds. It also runs again as soon as the queue
it failed on changes: another fingerprint, or no queue at all (an orders pass sent what
waited) ends a stale failure at once, at the cost of the look made anyway. A run that
left orders queued behind another process's call in flight is no failure, and runs
again a moment later (``SubmitRun.resume_in``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from syncd.errors import StorageError
from syncd.storage import Storage
from syncd.storage.watch import WriteWatch, next_change

log = structlog.get_logger("syncd.pickup")

Fingerprint = tuple[int, int]
FIRST_RETRY = 30.0  # seconds before a failed submit run is tried again, at most


@dataclass(frozen=True, slots=True)
class SubmitRun:
    """How a submit run ended, as the pickup needs it to plan the next one."""

    ok: bool
    interval: float  # the provider's orders_interval, in seconds
    # Failed: seconds until a send pause is due for its trial. Ok: seconds until it runs
    # again (orders left queued while another process's call was in flight).
    resume_in: float | None = None


def retry_delay(last: float | None, run: SubmitRun) -> float:
    """Seconds until a failed submit run is tried again (``last``: the previous delay of
    this run of failures, None after a success)."""
    if run.resume_in is not None:
        return max(1.0, run.resume_in)
    first = min(run.interval, FIRST_RETRY)
    return first if last is None else min(run.interval, max(first, 2 * last))


class Pickup:
    def __init__(
        self,
        storage: Storage,
        watch: WriteWatch,
        *,
        held: Callable[[], Collection[str]],
        submit: Callable[[str], Coroutine[Any, Any, SubmitRun | None]],
    ) -> None:
        self.storage = storage
        self.watch = watch
        self._held, self._submit = held, submit
        self._woken = asyncio.Event()
        self._seen: dict[str, Fingerprint] = {}  # what the last submit run started from
        self._running: dict[str, asyncio.Task[SubmitRun | None]] = {}
        self._failing = False
        self._retry_at: dict[str, float] = {}  # event-loop time a failed run goes again
        self._delay: dict[str, float] = {}  # the last retry delay of a run of failures

    def wake(self, _payload: str = "") -> None:
        """Look now (a notification arrived, a lease was taken)."""
        self._woken.set()

    async def run(self) -> None:
        while True:
            # A look that failed is tried again at the next poll, written to or not.
            await next_change(
                self._woken, self.watch, also=lambda: self._failing or bool(self._due())
            )
            await self.look()

    async def look(self) -> list[str]:
        """Start the submit job of every held provider whose queue changed; returns their
        names."""
        due = self._due()
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
                # Emptied (by the orders pass, a resolve, another instance) while the
                # last run failed on it: one run now shows it is ok, not at its retry.
                if name in self._retry_at:
                    self._start(name)
                    started.append(name)
            elif fingerprint != self._seen.get(name) or name in due:
                self._seen[name] = fingerprint
                self._start(name)
                started.append(name)
        return started

    def _due(self) -> list[str]:
        """The providers whose failed submit run is due to go again."""
        if not self._retry_at:
            return []
        now = asyncio.get_running_loop().time()
        return [name for name, at in self._retry_at.items() if at <= now]

    def _forget_failures(self, name: str) -> None:
        self._retry_at.pop(name, None)
        self._delay.pop(name, None)

    def _start(self, name: str) -> None:
        self._retry_at.pop(name, None)
        task = asyncio.create_task(self._submit(name), name=f"submit {name}")
        self._running[name] = task

        def finished(done: asyncio.Task[SubmitRun | None]) -> None:
            self._running.pop(name, None)
            loop = asyncio.get_running_loop()
            run = None
            if not done.cancelled():
                if (exc := done.exception()) is not None:
                    log.error("pickup.submit_crashed", provider=name, error=repr(exc))
                else:
                    run = done.result()
            if run is not None and run.ok and run.resume_in is not None:
                self._forget_failures(name)
                self._retry_at[name] = loop.time() + max(1.0, run.resume_in)
            elif run is None or run.ok:
                self._forget_failures(name)
            else:
                delay = retry_delay(self._delay.get(name), run)
                if run.resume_in is None:
                    self._delay[name] = delay
                self._retry_at[name] = loop.time() + delay
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
        self._forget_failures(name)
