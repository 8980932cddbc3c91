"""How fast syncd may call one provider: its limits, and its 429s, held across processes.

A provider's limits (``requests_per_minute`` for every call together, ``limits`` per
action) and the pause its last 429 asked for are kept in a ``Ledger``: the database
(``syncd.storage.pacing``), so that every process sharing it (the daemon's instances,
one-shot commands, a restarted daemon) takes its turns from the same line; or, without a
database, this process's own memory. What a turn is, is ``syncd.limits``'s to
decide:

- Calls are spread, never sent in a burst: one call every ``61/N`` seconds of a limit's
  window for a limit of N (the extra second in 61 keeps a call that travels slower than
  the one after it from making the provider count N + 1 in its own window).
- A 429 pauses every call of the provider, in every process, until its ``Retry-After``
  has passed (or, without one, for a second, doubling with each 429 in a row up to a
  minute). A restart does not forget it.
- For a minute after a pause ends, calls go at most one a second, even without a
  configured limit: the calls that waited out the pause together would otherwise all
  leave in the same instant and meet the provider's limit again.
- A call that would have to wait longer than its caller allows (``budget``) for a pause,
  or longer than its longest turn (``deadlines.longest_turn``) for a limit, is not sent:
  ``RateLimitedError`` says so, and the job defers its work to its next pass.

Turns are reserved several at a time: the calls of one action waiting in this process
together (a status sweep's ``max_concurrency``) take one transaction. A provider with no
limit configured costs no transaction per call: the pause is looked up at most once a
second (``LOOK_EVERY``), and at once after a 429 of this process's own.

A provider that answers nothing but 429s for minutes would fill the log with a line a
second. ``RateLimitRun`` decides what is worth a line instead: the first 429 of a run
(info), then at most one summary a minute with the count so far (info; each 429 between
is a debug line), and the run's end (info) at the first attempt that is not a 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal, Protocol, Self, TypeVar

from syncd.deadlines import CAREFUL_SPACING, call_spacing, longest_turn
from syncd.errors import RateLimitedError
from syncd.limits import (
    CAREFUL_FOR,
    EVERY_ACTION,
    FIRST_PAUSE,
    LONGEST_PAUSE,
    CallLimit,
    Shared,
    paused,
    reserve,
)

__all__ = ["CAREFUL_FOR", "LONGEST_PAUSE", "MINUTE", "Ledger", "MemoryLedger", "Pace"]

T = TypeVar("T")
MINUTE: Final = 60.0  # seconds; the tests shrink it to run a limit in seconds, not minutes
LOOK_EVERY: Final = 1.0  # seconds between two looks at the shared pause, without a limit
OFFSET_FOR: Final = 10.0  # seconds an estimate of the ledger's clock is kept (``_saw``)
RUN_SUMMARY_EVERY: Final = 60.0  # seconds: at most one info line a minute in a run of 429s


class Timer(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicTimer:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# What pauses are kept on. The tests swap in a clock whose sleep only moves that clock,
# as stamina's testing mode makes retries instant.
TIMER: Timer = MonotonicTimer()


@dataclass(frozen=True)
class RunNote:
    """What to say about a run of 429s in a row: it ``started`` (its first 429),
    ``continues`` (another 429 in it) or ``ended`` (the first attempt after it that was
    not a 429). ``count`` is the run's 429s so far, ``seconds`` the time since its first
    one; ``loud`` is whether it is worth an info line (else debug)."""

    kind: Literal["started", "continues", "ended"]
    count: int
    seconds: float
    loud: bool


class RateLimitRun:
    """A provider's current run of 429s, so that the log shows its start, a summary at
    most every ``every`` seconds and its end, not every 429. Pure: it is told the time."""

    def __init__(self, every: float = RUN_SUMMARY_EVERY) -> None:
        self._every = every
        self._started: float | None = None  # the run's first 429; None outside a run
        self._said: float = 0.0  # the last loud line about it
        self._count = 0

    @property
    def count(self) -> int:
        """429s in the current run; 0 outside one."""
        return self._count

    def limited(self, now: float) -> RunNote:
        """A 429."""
        if self._started is None:
            self._started, self._said, self._count = now, now, 1
            return RunNote("started", 1, 0.0, loud=True)
        self._count += 1
        loud = now - self._said >= self._every
        if loud:
            self._said = now
        return RunNote("continues", self._count, now - self._started, loud=loud)

    def answered(self, now: float) -> RunNote | None:
        """An attempt that ended other than in a 429: the end of the run, if one ran."""
        if self._started is None:
            return None
        note = RunNote("ended", self._count, now - self._started, loud=True)
        self._started, self._count = None, 0
        return note


# A decision about the pace kept in a ledger: told what it keeps and the time on its
# clock (seconds), it returns what to keep from now on and what to tell the caller.
Decide = Callable[[Shared, float], tuple[Shared, T]]


class Ledger(Protocol):
    """Where a provider's pace is kept (see the module's docstring)."""

    async def apply(self, provider: str, keys: Sequence[str], decide: Decide[T]) -> T:
        """Hand ``decide`` the pace of ``keys`` (``EVERY_ACTION`` always among them) and
        the time, and keep what it returns, in one locked transaction."""
        ...

    async def look(self, provider: str) -> tuple[Shared, float]:
        """The provider's pause as kept now, and the time, without locking anything."""
        ...


class MemoryLedger:
    """This process's own ledger, on the pace's timer (a pace without a database)."""

    def __init__(self, timer: Timer | None = None) -> None:
        self._timer = timer
        self._kept: dict[str, Shared] = {}

    def _now(self) -> float:
        return (self._timer or TIMER).monotonic()

    async def apply(self, provider: str, keys: Sequence[str], decide: Decide[T]) -> T:
        after, told = decide(self._kept.get(provider, Shared({})), self._now())
        self._kept[provider] = after
        return told

    async def look(self, provider: str) -> tuple[Shared, float]:
        return self._kept.get(provider, Shared({})), self._now()


@dataclass(frozen=True)
class _Seen:
    """The pause as last looked up, on the pace's timer."""

    at: float = float("-inf")
    paused_until: float = 0.0
    careful_until: float = 0.0
    pause: float = 0.0  # the pause's end as the ledger keeps it, on the ledger's clock


class _Offset:
    """How far a local clock is from the ledger's: the smallest difference seen over the
    last ``OFFSET_FOR`` seconds (each one is too large by the time its transaction took
    to come back). One offset for every turn, not each transaction's own: a transaction
    quicker than the one before would otherwise bring its turns closer to the earlier
    ones than their spacing."""

    def __init__(self) -> None:
        self._offset, self._at = float("inf"), float("-inf")

    def saw(self, local: float, ledger: float) -> Self:
        seen = local - ledger
        if seen < self._offset or local - self._at >= OFFSET_FOR:
            self._offset, self._at = seen, local
        return self

    def local(self, ledger: float) -> float:
        """A moment on the ledger's clock, on the local one."""
        return ledger + self._offset


class Pace:
    """The turns of one provider's calls in this process, kept in its ledger."""

    def __init__(
        self,
        provider: str,
        per_minute: int | None = None,
        *,
        limits: Mapping[str, CallLimit] | None = None,
        ledger: Ledger | None = None,
        concurrency: int = 8,
        timer: Timer | None = None,
    ) -> None:
        self.provider = provider
        self.per_minute = per_minute
        self.limits = dict(limits or {})
        self._timer = timer or TIMER
        self._ledger = ledger or MemoryLedger(self._timer)
        self._concurrency = concurrency
        self._seen = _Seen()
        self._served = 0.0  # the end (ledger's clock) of the last pause waited out here
        # The ledger's clock, told apart from the timer's (pauses) and the event loop's
        # (turns under a limit): see ``_Offset``.
        self._timer_offset, self._loop_offset = _Offset(), _Offset()
        self._guessed = False  # a 429 without Retry-After was seen: a reply resets the guess
        self._waiting: dict[str, int] = defaultdict(int)
        self._ready: dict[str, deque[float]] = defaultdict(deque)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.paused = 0  # 429s seen, for the logs and the tests
        self.run = RateLimitRun()  # what to log of the 429s in a row

    @property
    def spacing(self) -> float:
        """Seconds between two calls under ``requests_per_minute``; 0 without it."""
        return call_spacing(self.per_minute, MINUTE)

    @property
    def slowest(self) -> float:
        """The longest spacing any call of the provider keeps to (for its deadlines)."""
        return max([self.spacing, *map(_spacing, self.limits.values())])

    def same_limits(self, per_minute: int | None, limits: Mapping[str, CallLimit]) -> bool:
        return per_minute == self.per_minute and dict(limits) == self.limits

    def now(self) -> float:
        return self._timer.monotonic()

    async def wait_pause(self, budget: float) -> None:
        """Wait out a pause a 429 asked for (in any process), without taking a turn: a
        sender waits here before it claims an order, so no order sits claimed through a
        pause."""
        while (left := await self.pause_left()) > 0:  # another 429 may lengthen it meanwhile
            if left > budget:
                raise RateLimitedError(
                    self.provider,
                    f"rate limited: the provider asked to wait {left:.0f}s more; "
                    "the next pass tries again",
                )
            await self._timer.sleep(left)
            budget -= left
            # This pause is served: only a longer one (a 429 answered to another call
            # meanwhile) is waited for again. Judged on the ledger's value, not by the
            # clocks again, which a pause that has just been slept through on the pace's
            # timer must not make longer.
            self._served = max(self._served, self._seen.pause)

    async def pause_left(self, *, fresh: bool = False) -> float:
        """Seconds left of the pause; looked up in the ledger at most every ``LOOK_EVERY``."""
        now = self.now()
        if fresh or now - self._seen.at >= LOOK_EVERY:
            now = self._saw(*await self._ledger.look(self.provider))
        if self._seen.pause <= self._served:
            return 0.0
        return max(0.0, self._seen.paused_until - now)

    def _spacings(self, action: str) -> dict[str, float]:
        spacings = {EVERY_ACTION: self.spacing}
        if (limit := self.limits.get(action)) is not None:
            spacings[action] = _spacing(limit)
        return spacings

    async def turn(self, budget: float, action: str = EVERY_ACTION) -> None:
        """Wait for this call's turn: first any pause a 429 asked for, then a turn of the
        limits of ``action``. Raises ``RateLimitedError`` instead of waiting longer than
        ``budget`` for a pause, or than its longest turn for a limit."""
        await self.wait_pause(budget)
        spacings = self._spacings(action)
        if not any(spacings.values()) and self.now() >= self._seen.careful_until:
            return  # no limit, and no careful spell: nothing to reserve
        # A turn under a limit is waited for on the event loop's clock, as any timer; a
        # careful spell's (no limit) on the pace's timer, as the pause it follows.
        limited = any(spacings.values())
        offset = self._loop_offset if limited else self._timer_offset
        clock = asyncio.get_running_loop().time if limited else self.now
        key = action if action in spacings else EVERY_ACTION
        self._waiting[key] += 1
        try:
            async with self._locks[key]:
                ready = self._ready[key]
                late = max(*spacings.values(), CAREFUL_SPACING) / 61  # a spacing's allowance
                while ready and offset.local(ready[0]) < clock() - late:
                    ready.popleft()
                if not ready:
                    ready.extend(await self._reserve(spacings, self._waiting[key]))
                if not ready:
                    raise RateLimitedError(
                        self.provider,
                        f"rate limited: no turn for {action} within "
                        f"{self._turn_budget(spacings):.0f}s under its limits; "
                        "the next pass tries again",
                    )
                slot = offset.local(ready.popleft())
        finally:
            self._waiting[key] -= 1
        while (wait := slot - clock()) > 0:
            await (asyncio.sleep(wait) if limited else self._timer.sleep(wait))

    def _turn_budget(self, spacings: Mapping[str, float]) -> float:
        return longest_turn(max(spacings.values()), self._concurrency)

    async def _reserve(self, spacings: dict[str, float], count: int) -> list[float]:
        """Reserve ``count`` turns in the ledger; their moments on the ledger's clock."""
        budget = self._turn_budget(spacings)

        def decide(shared: Shared, now: float) -> tuple[Shared, tuple[list[float], Shared, float]]:
            # A pause this process has waited out is over for it, whatever the ledger's
            # clock said when it looked (its clock and the pace's timer agree only to
            # within a transaction's time).
            made = reserve(
                shared,
                spacings,
                now=max(now, min(self._served, now + LONGEST_PAUSE)),
                count=count,
                budget=budget,
            )
            return made.after, (list(made.slots), made.after, now)

        slots, shared, then = await self._ledger.apply(self.provider, sorted(spacings), decide)
        self._saw(shared, then)
        return slots

    def _saw(self, shared: Shared, then: float) -> float:
        """Note the pause as the ledger keeps it (its clock read ``then``); returns now."""
        now = self.now()
        self._loop_offset.saw(asyncio.get_running_loop().time(), then)
        offset = self._timer_offset.saw(now, then)
        # No pause runs longer than a 429 may ask for, whatever the row says (a database
        # clock set back, a time written by hand): a jump costs a wait, never a stop.
        paused_until = min(shared.paused_until, then + LONGEST_PAUSE)
        careful_until = min(shared.careful_until, then + LONGEST_PAUSE + CAREFUL_FOR)
        self._seen = _Seen(
            now, offset.local(paused_until), offset.local(careful_until), paused_until
        )
        return now

    async def slow_down(self, retry_after: float | None) -> float:
        """A 429: pause every call of the provider, in every process; returns the pause
        in seconds."""
        self.paused += 1
        spacing = self.spacing

        def decide(shared: Shared, now: float) -> tuple[Shared, tuple[Shared, float, float]]:
            after, pause = paused(shared, now=now, retry_after=retry_after, spacing=spacing)
            return after, (after, now, pause)

        self._guessed = self._guessed or retry_after is None or not retry_after > 0
        shared, then, pause = await self._ledger.apply(self.provider, [EVERY_ACTION], decide)
        self._saw(shared, then)
        self._ready.clear()  # turns reserved before the pause would leave in it
        return pause

    async def answered(self) -> None:
        """A reply that was not a 429: the next 429 without Retry-After starts short again
        (written only after a guessed pause of this process's: a reply costs nothing)."""
        if not self._guessed:
            return
        self._guessed = False

        def decide(shared: Shared, now: float) -> tuple[Shared, None]:
            return replace(shared, guess=FIRST_PAUSE), None

        await self._ledger.apply(self.provider, [EVERY_ACTION], decide)


def _spacing(limit: CallLimit) -> float:
    """A limit's spacing, its window shrunk as ``MINUTE`` is (by the tests)."""
    return call_spacing(limit.count, limit.seconds * MINUTE / 60)
