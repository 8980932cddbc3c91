"""How long a provider call may take, and how far hosts' clocks may disagree.

A submission (an order, or a refill or cancel request) is committed as ``submitting``
with its sender and a deadline before any byte leaves. Until that deadline the row is
the sender's: another instance sharing the database leaves it alone, because the call may
still be on its way. After it, the sender is taken for dead and the row becomes
``ambiguous``, for a person to settle. So the deadline must cover the longest a call can
*legitimately* take, waits included:

    attempts * (its turn under the provider's limit + the 429 pauses it accepts + timeout)
      + the waits between attempts

where its turn is one spacing of ``requests_per_minute`` (or of the careful spacing after
a 429) for every call of the provider that may stand ahead of it. A deadline shorter
than that would let a slow but healthy provider (``timeout = "1h"``,
``requests_per_minute = 1``) have its order declared ambiguous, and settled by a person,
while it is still being sent.

Another host cannot ask the sender how it is set, so it waits for any deadline up to the
longest that *any* configuration syncd accepts can produce (``farthest_lease``), plus the
skew hosts' clocks may have; a deadline further ahead than that was written by a clock
that ran ahead, and is no reason to wait for hours. Both numbers come from this module,
so they cannot drift apart.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

# How far other hosts' clocks may run ahead of ours. A time another host wrote further
# ahead than this (a check, a last success, a deadline) was written by a wrong clock.
CLOCK_SKEW: Final = timedelta(minutes=5)

# What the configuration accepts at the most patient end (config checks against these).
LONGEST_TIMEOUT: Final = timedelta(hours=1)  # a provider's `timeout`
MOST_CONCURRENT: Final = 64  # a provider's `max_concurrency`
FEWEST_PER_MINUTE: Final = 1  # a provider's `requests_per_minute`

# The client's own settings: tries of a call, the wait between two tries at the most
# (stamina's cap and its jitter), and the 429 pauses one try waits out at the most.
ATTEMPTS: Final = 3
RETRY_WAIT: Final = 10.0
RETRY_JITTER: Final = 1.0
PAUSES_PER_TRY: Final = 60.0

# For a minute after a 429 pause, calls go at least this many seconds apart (provider.pace).
CAREFUL_SPACING: Final = 1.0

# Calls of one provider that may wait for their turn besides a status sweep's
# `max_concurrency`: catalog, balance, submission, and refill/cancel requests.
OTHER_CALLERS: Final = 4

# The longest spacing a call waits for at each turn (``longest_turn``).
SLOWEST_SPACING: Final = 61.0 / FEWEST_PER_MINUTE

# Added to the longest call: the database write around it and a slow thread switch.
MARGIN: Final = timedelta(minutes=1)


def call_spacing(per_minute: int | None, minute: float = 60.0) -> float:
    """Seconds between two calls under a limit of ``per_minute``; 0 without one. One call
    every 61/N seconds: the extra second keeps a call that travels slower than the one
    after it from making the provider count N + 1 in its own minute."""
    if per_minute is None:
        return 0.0
    return minute * 61 / 60 / per_minute


def longest_call(
    *,
    timeout: float,
    spacing: float,
    concurrency: int,
    attempts: int = ATTEMPTS,
    pauses: float = PAUSES_PER_TRY,
) -> float:
    """Seconds one call may take at the most, every wait included (see the docstring)."""
    turn = longest_turn(spacing, concurrency)
    between = (attempts - 1) * (RETRY_WAIT + RETRY_JITTER)
    return attempts * (turn + pauses + timeout) + between


def longest_turn(spacing: float, concurrency: int) -> float:
    """Seconds a call waits for its turn at the most: one spacing (or the careful one) for
    every call of the provider that may stand ahead of it. A spacing longer than the
    slowest ``requests_per_minute`` (a per-action limit such as "10/hour") counts as that
    one: a call that would wait longer is not sent, and its job tries again next pass."""
    return (concurrency + OTHER_CALLERS) * (min(spacing, SLOWEST_SPACING) + CAREFUL_SPACING)


def submission_lease(longest: float) -> timedelta:
    """The deadline a sender gives its submission: its longest call, and a margin."""
    return timedelta(seconds=longest) + MARGIN


def farthest_lease() -> timedelta:
    """The furthest ahead any sender's deadline may lie, seen from another host: the most
    patient configuration's lease plus the clock skew."""
    longest = longest_call(
        timeout=LONGEST_TIMEOUT.total_seconds(),
        spacing=call_spacing(FEWEST_PER_MINUTE),
        concurrency=MOST_CONCURRENT + 1,  # the client's connections: one more, for sending
    )
    return submission_lease(longest) + CLOCK_SKEW


# How long a provider answers nothing but 429 before provider.throttled: the default of
# its ``throttled_after``.
THROTTLED_AFTER: Final = timedelta(minutes=15)

# The longest any call of any configuration waits for its turn (``longest_turn``).
LONGEST_TURN: Final = longest_turn(SLOWEST_SPACING, MOST_CONCURRENT + 1)
