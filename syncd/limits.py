"""Limits as providers publish them ("60 adds a minute"), and the pure decider that holds
them however many processes call the provider.

A limit of N calls a window is held by spacing: one call every ``window * 61/60 / N``
seconds, never a burst (the extra second in 61 keeps a call that travels slower than the
one after it from making the provider count N + 1 in its own window). Spacing is GCRA
without burst tolerance: each limit keeps one moment, ``next_at``, the earliest the next
call may leave; a call takes the latest of every ``next_at`` that applies to it (its
action's, the provider's ``requests_per_minute``), and moves each one on by its spacing.

The moments live in the database (``syncd.storage.pacing``) and are read and written in
one locked transaction on the database's clock, so every process sharing it takes its
turn from the same line. ``reserve`` is the decision that transaction makes; it touches
nothing and is told the time.

Clocks that jump backwards: a ``next_at`` further ahead than any reservation can put it
(``HORIZON`` past now, plus one spacing) was written before the clock went back, and
counts as that far ahead. Calls already reserved leave at most ``HORIZON`` after their
reservation, so the first call after the jump still comes a spacing after all of them:
a jump costs a wait, never a burst.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from syncd.deadlines import CAREFUL_SPACING, LONGEST_TURN, call_spacing
from syncd.provider.dialects import CORE_ACTIONS, OPTIONAL_ACTIONS
from syncd.units import parse_duration, shown

# Every action a limit may name: syncd's own names for them, whatever the dialect's.
ACTIONS: Final = (*CORE_ACTIONS, *OPTIONAL_ACTIONS)
# The key of the limit every call of the provider counts against (``requests_per_minute``),
# and of the pause a 429 asks for.
EVERY_ACTION: Final = "*"
UNITS: Final = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
# The furthest ahead a call may reserve its turn: the longest turn any configuration waits.
HORIZON: Final = LONGEST_TURN
LONGEST_PAUSE: Final = 600.0  # a Retry-After further ahead than this is read as this long
FIRST_PAUSE: Final = 1.0  # after a 429 that names no wait; doubled for each one in a row
LONGEST_GUESS: Final = 60.0
CAREFUL_FOR: Final = 60.0  # seconds after a pause in which calls are spread out
LONGEST_WINDOW: Final = timedelta(days=1)
_LIMIT = re.compile(r"\s*(\d{1,9})\s*/\s*(\S+)\s*")


@dataclass(frozen=True, order=True)
class CallLimit:
    """At most ``count`` calls in any ``seconds``."""

    count: int
    seconds: float

    @property
    def spacing(self) -> float:
        return call_spacing(self.count, self.seconds)

    def __str__(self) -> str:
        for unit, size in UNITS.items():
            if self.seconds == size:
                return f"{self.count}/{unit}"
        return f"{self.count}/{int(self.seconds)}s"


def parse_limit(text: str) -> CallLimit:
    """``"60/minute"`` (second, minute, hour or day), or a window as a duration:
    ``"20/10s"``, ``"100/2m"``."""
    match = _LIMIT.fullmatch(text)
    if match is None:
        raise ValueError(f'not a limit: {shown(text)} (use "N/second", "N/minute", "N/hour", '
                         '"N/day" or "N/<duration>" such as "20/10s")')  # fmt: skip
    count = int(match[1])
    if count < 1:
        raise ValueError(f"a limit allows at least one call: {shown(text)}")
    unit = match[2]
    seconds = UNITS.get(unit) or parse_duration(unit, longest=LONGEST_WINDOW).total_seconds()
    return CallLimit(count, seconds)


@dataclass(frozen=True)
class Shared:
    """What the database keeps of a provider's pace: each limit's ``next_at`` (by action,
    ``EVERY_ACTION`` for ``requests_per_minute``), the 429 pause, the careful spell after
    it and the next guessed pause. Times in seconds on the database's clock."""

    next_at: Mapping[str, float]
    paused_until: float = 0.0
    careful_until: float = 0.0
    guess: float = FIRST_PAUSE


@dataclass(frozen=True)
class Reservation:
    """The moments the calls reserved may leave (none: not within the budget), and what
    the database keeps from now on."""

    slots: tuple[float, ...]
    after: Shared


def reserve(
    shared: Shared, spacings: Mapping[str, float], *, now: float, count: int, budget: float
) -> Reservation:
    """Up to ``count`` turns for calls counted against the limits ``spacings`` (action →
    seconds between two calls; ``EVERY_ACTION`` is always among them), none before
    ``now`` or the pause, none later than ``now + budget``. In the careful spell after a
    pause, calls go at least ``CAREFUL_SPACING`` apart."""
    budget = min(max(budget, 0.0), HORIZON)
    spacings = {EVERY_ACTION: 0.0, **spacings}
    nexts = {key: _bounded(shared.next_at.get(key), now, gap) for key, gap in spacings.items()}
    paused = min(shared.paused_until, now + LONGEST_PAUSE)
    careful = min(shared.careful_until, now + LONGEST_PAUSE + CAREFUL_FOR)
    slots: list[float] = []
    for _ in range(count):
        at = max(now, paused, *nexts.values())
        if at > now + budget:
            break
        slots.append(at)
        for key, spacing in spacings.items():
            careful_gap = key == EVERY_ACTION and at < careful
            gap = max(spacing, CAREFUL_SPACING) if careful_gap else spacing
            if gap > 0:  # a limit of none must not hold the other actions to this turn
                nexts[key] = at + gap
    if not slots:
        return Reservation((), shared)
    kept = {**shared.next_at, **nexts}
    return Reservation(tuple(slots), Shared(kept, shared.paused_until, careful, shared.guess))


def _bounded(next_at: float | None, now: float, gap: float) -> float:
    """A stored ``next_at``, no further ahead than a reservation can put it (see the
    module's docstring: further, the clock went back since)."""
    if next_at is None or math.isnan(next_at):
        return now
    return min(next_at, now + HORIZON + max(gap, CAREFUL_SPACING))


def paused(
    shared: Shared, *, now: float, retry_after: float | None, spacing: float
) -> tuple[Shared, float]:
    """A 429: every call of the provider waits until the pause it asks for has passed
    (without a ``Retry-After``, the guess, doubling with each 429 in a row), and calls
    are spread out for ``CAREFUL_FOR`` after it. Returns the pause too (a later 429
    never shortens one already running)."""
    guess = shared.guess
    if retry_after is None or not retry_after > 0:  # NaN too
        pause = max(guess, spacing)
        guess = min(guess * 2, LONGEST_GUESS)
    else:
        pause = min(retry_after, LONGEST_PAUSE)
    until = max(min(shared.paused_until, now + LONGEST_PAUSE), now + pause)
    careful = max(min(shared.careful_until, now + LONGEST_PAUSE + CAREFUL_FOR), until + CAREFUL_FOR)
    return Shared(shared.next_at, until, careful, guess), pause
