"""How fast syncd may call one provider: its configured rate, and its 429s.

One ``Pace`` serves every job of a provider in a process (the daemon keeps one per
provider; a one-shot command makes its own), so the catalog, balance, orders and submit
jobs together stay within ``requests_per_minute``:

- Requests are spread, never sent in a burst: one request every ``61/N`` seconds for a
  limit of N a minute. A leaky bucket one request deep (``aiolimiter``) gives exactly
  that spacing; the extra second in 61 keeps a request that travels slower than the one
  after it from making the provider count N + 1 in its own minute.
- A 429 pauses every request of the provider until its ``Retry-After`` has passed (or,
  without one, for a second, doubling with each 429 in a row up to a minute). A pause is
  kept on the monotonic clock, so a wall clock that jumps cannot stretch or cut it.
- For a minute after a pause ends, requests go at most one a second, even without a
  configured limit: the requests that waited out the pause together would otherwise all
  leave in the same instant and meet the provider's limit again.
- A request that would have to wait longer than its caller allows (``budget``) is not
  sent: ``RateLimitedError`` says so, and the job defers its work to its next pass.

A provider that answers nothing but 429s for minutes would fill the log with a line a
second. ``RateLimitRun`` decides what is worth a line instead: the first 429 of a run
(info), then at most one summary a minute with the count so far (info; each 429 between
is a debug line), and the run's end (info) at the first attempt that is not a 429.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from aiolimiter import AsyncLimiter

from syncd.deadlines import CAREFUL_SPACING, call_spacing
from syncd.errors import RateLimitedError

MINUTE: Final = 60.0  # seconds; the tests shrink it to run a limit in seconds, not minutes
# A Retry-After further ahead than this is read as this long: an HTTP date from a
# provider whose clock is a day off must not silence it for a day.
LONGEST_PAUSE: Final = 600.0
FIRST_PAUSE: Final = 1.0  # after a 429 that names no wait; doubled for each one in a row
LONGEST_GUESS: Final = 60.0
CAREFUL_FOR: Final = 60.0  # seconds after a pause in which requests are spread out
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


class Pace:
    def __init__(
        self,
        provider: str,
        per_minute: int | None = None,
        *,
        timer: Timer | None = None,
    ) -> None:
        self.provider = provider
        self.per_minute = per_minute
        self._timer = timer or TIMER
        self._resume_at = 0.0  # on the timer's clock: no request leaves before it
        self._guess = FIRST_PAUSE  # the next pause after a 429 without Retry-After
        self._careful_until = 0.0  # on the timer's clock: spread requests out until then
        self._next_careful = 0.0  # the next free slot while careful
        self._limiter = (
            AsyncLimiter(1, self.spacing) if per_minute is not None and self.spacing else None
        )
        self.paused = 0  # 429s seen, for the logs and the tests
        self.run = RateLimitRun()  # what to log of the 429s in a row

    @property
    def spacing(self) -> float:
        """Seconds between two requests; 0 without a limit."""
        return call_spacing(self.per_minute, MINUTE)

    def now(self) -> float:
        return self._timer.monotonic()

    async def wait_pause(self, budget: float) -> None:
        """Wait out a pause a 429 asked for, without taking a turn: a sender waits here
        before it claims an order, so no order sits claimed through a pause."""
        while (left := self.pause_left()) > 0:  # another 429 may lengthen it meanwhile
            if left > budget:
                raise RateLimitedError(
                    self.provider,
                    f"rate limited: the provider asked to wait {left:.0f}s more; "
                    "the next pass tries again",
                )
            await self._timer.sleep(left)
            budget -= left

    def pause_left(self) -> float:
        return max(0.0, self._resume_at - self._timer.monotonic())

    async def turn(self, budget: float) -> None:
        """Wait for this request's turn: first any pause a 429 asked for, then a slot of
        the limit. Raises ``RateLimitedError`` instead of waiting longer than ``budget``."""
        await self.wait_pause(budget)
        now = self._timer.monotonic()
        if now < self._careful_until and self.spacing < CAREFUL_SPACING:
            slot = max(now, self._next_careful)
            self._next_careful = slot + CAREFUL_SPACING
            if slot > now:
                await self._timer.sleep(slot - now)
        if self._limiter is not None:
            await self._limiter.acquire()

    def slow_down(self, retry_after: float | None) -> float:
        """A 429: pause every request of the provider; returns the pause in seconds."""
        self.paused += 1
        if retry_after is None or not retry_after > 0:  # NaN too
            pause = max(self._guess, self.spacing)
            self._guess = min(self._guess * 2, LONGEST_GUESS)
        else:
            pause = min(retry_after, LONGEST_PAUSE)
        self._resume_at = max(self._resume_at, self._timer.monotonic() + pause)
        self._careful_until = max(self._careful_until, self._resume_at + CAREFUL_FOR)
        return pause

    def answered(self) -> None:
        """A reply that was not a 429: the next 429 without Retry-After starts short again."""
        self._guess = FIRST_PAUSE
