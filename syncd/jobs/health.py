"""Provider health: failed calls in a row, and runs of 429s, across every job of a provider.

``plan_health`` is the decider; ``HealthTracker`` is handed to the provider client and
records each outcome, touching the database only when something is to be written (a
failure, a 429, or the first success after them).

Two states are kept, each raising its alerts on its transitions only:

- **Down.** Every call counts once, after its retries: the third failed call in a row
  raises ``provider.down``, the next success ``provider.up``. A 429 is neither: the
  provider answered, it only asked to slow down.
- **Throttled.** Every 429 answer is told as it comes (not only a call's last). A run of
  them starts at the first 429 after any other answer and is broken by any answer that is
  not a 429 (a success or another failure); a failure without an answer (no connection,
  a timeout) is the provider saying nothing, which neither breaks nor extends it. A 429
  that comes ``throttled_after`` or more after the run's first raises
  ``provider.throttled`` once: the provider has answered nothing else for that long (a
  banned or overused key). The next answer that is not a 429 ends it with
  ``provider.unthrottled``. A 429 that a call waits out and then succeeds is a run that
  the success breaks at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta

from syncd.deadlines import THROTTLED_AFTER
from syncd.errors import AuthError, ProviderError, RateLimitedError, RefusedError, TransientError
from syncd.models import Event, Health
from syncd.plans import AlertIntent

DOWN_AFTER = 3  # failed calls in a row
# Actions about one order or refill, whose refusal ("not enough funds", "Order not
# eligible for refill.", "Refill not found") is the provider at work, not failing.
_ABOUT_ONE = frozenset({"add", "refill", "cancel", "refill_status"})


CLEAN = Health("up", 0, None, False)


def plan_health(
    provider: str,
    state: Health,
    error: ProviderError | None,
    now: datetime,
    *,
    throttled_after: timedelta = THROTTLED_AFTER,
) -> tuple[Health, list[AlertIntent]]:
    """The provider's health after one outcome at ``now``, and the alerts its transitions
    raise. ``error`` is None for a success, a ``RateLimitedError`` for one 429 answer,
    else the error a call ended with."""
    if isinstance(error, RateLimitedError):
        return _throttle(provider, state, error, now, throttled_after)
    new, alerts = _count_call(provider, state, error)
    if not isinstance(error, TransientError) or error.answered:
        new, ended = _answered(provider, new, now)
        alerts = ended + alerts
    return new, alerts


def _count_call(
    provider: str, state: Health, error: ProviderError | None
) -> tuple[Health, list[AlertIntent]]:
    """Failed calls in a row: ``provider.down``, ``provider.up``, ``provider.auth_failed``."""
    if error is None:
        alerts = []
        if state.health == "down":
            alerts.append(
                AlertIntent(
                    Event.PROVIDER_UP,
                    provider,
                    f"{provider} answers again after {state.consecutive_failures} failed calls",
                    {"failed_calls": state.consecutive_failures},
                )
            )
        return replace(state, health="up", consecutive_failures=0, last_error=None,
                       auth_failed=False), alerts  # fmt: skip
    failures = state.consecutive_failures + 1
    new = replace(state, consecutive_failures=failures, last_error=error.detail)
    alerts = []
    if failures >= DOWN_AFTER and state.health == "up":
        new = replace(new, health="down")
        alerts.append(
            AlertIntent(
                Event.PROVIDER_DOWN,
                provider,
                f"{provider} is down: {failures} failed calls in a row, the last: {error.detail}",
                {"failed_calls": failures, "error": error.detail},
            )
        )
    if isinstance(error, AuthError) and not state.auth_failed:
        new = replace(new, auth_failed=True)
        alerts.append(
            AlertIntent(
                Event.PROVIDER_AUTH_FAILED,
                provider,
                f"{provider} rejected the API token ({error.detail}); "
                "update the token and reload syncd",
                {"error": error.detail},
            )
        )
    return new, alerts


def _throttle(
    provider: str,
    state: Health,
    error: RateLimitedError,
    now: datetime,
    throttled_after: timedelta,
) -> tuple[Health, list[AlertIntent]]:
    """One 429 answer: it starts a run, or extends one, which may now be long enough."""
    since = state.throttled_since
    if since is None:
        since = now
    new = replace(state, throttled_since=since)
    if state.throttled or now - since < throttled_after:
        return new, []
    lasted = now - since
    alert = AlertIntent(
        Event.PROVIDER_THROTTLED,
        provider,
        f"{provider} is throttled: it has answered only 429 (too many requests) for "
        f"{_span(lasted)}; a banned or overused API key is likely, check the provider's "
        f"panel (the last: {error.detail})",
        {"since": since.isoformat(), "seconds": int(lasted.total_seconds()),
         "error": error.detail},
    )  # fmt: skip
    return replace(new, throttled=True), [alert]


def _answered(provider: str, state: Health, now: datetime) -> tuple[Health, list[AlertIntent]]:
    """An answer that is not a 429: any run of 429s is over, and a throttle with it."""
    if state.throttled_since is None and not state.throttled:
        return state, []
    new = replace(state, throttled_since=None, throttled=False)
    if not state.throttled:
        return new, []
    since = state.throttled_since
    lasted = f" after {_span(now - since)} of only 429s" if since is not None else ""
    alert = AlertIntent(
        Event.PROVIDER_UNTHROTTLED,
        provider,
        f"{provider} answers again{lasted}",
        {
            "since": since.isoformat() if since is not None else None,
            "seconds": int((now - since).total_seconds()) if since is not None else None,
        },
    )
    return new, [alert]


def _span(span: timedelta) -> str:
    """``"17 min"``, ``"2 h 5 min"``: a run's length for people, to the minute."""
    minutes = max(0, int(span.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


Record = Callable[[str, ProviderError | None, datetime], Awaitable[None]]


# How long a run of successes skips the database. Another process (a one-shot command)
# may record a failure or a 429 meanwhile; the next success after this long clears what
# it left, so that an old 429 cannot make a new run look long.
RECHECK = timedelta(minutes=1)


class HealthTracker:
    """Called by the provider client after each call (retries included) with its outcome,
    and with each 429 answer as it comes."""

    def __init__(self, provider: str, record: Record, clock: Callable[[], datetime]) -> None:
        self._provider = provider
        self._record = record
        self._clock = clock
        self._clean_until: datetime | None = None  # skip the database on a run of successes

    async def __call__(self, action: str, error: ProviderError | None) -> None:
        if isinstance(error, RefusedError) and action in _ABOUT_ONE:
            error = None  # refusing one order ("not enough funds") is a provider at work
        now = self._clock()
        if error is None and self._clean_until is not None and now < self._clean_until:
            return
        await self._record(self._provider, error, now)
        self._clean_until = now + RECHECK if error is None else None
