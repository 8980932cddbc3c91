"""Provider health: failed calls in a row, across every job of a provider.

``plan_health`` is the decider; ``HealthTracker`` is handed to the provider client and
records each call's outcome, touching the database only when something is to be written
(a failure, or the first success after failures).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime

from syncd.errors import AuthError, ProviderError, RefusedError
from syncd.models import Event, Health
from syncd.plans import AlertIntent

DOWN_AFTER = 3  # failed calls in a row
# Actions about one order or refill, whose refusal ("not enough funds", "Order not
# eligible for refill.", "Refill not found") is the provider at work, not failing.
_ABOUT_ONE = frozenset({"add", "refill", "cancel", "refill_status"})


CLEAN = Health("up", 0, None, False)


def plan_health(
    provider: str, state: Health, error: ProviderError | None
) -> tuple[Health, list[AlertIntent]]:
    """The provider's health after one call, and the alerts its transitions raise."""
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
        return CLEAN, alerts
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


Record = Callable[[str, ProviderError | None, datetime], Awaitable[None]]


class HealthTracker:
    """Called by the provider client after each call (retries included) with its outcome."""

    def __init__(self, provider: str, record: Record, clock: Callable[[], datetime]) -> None:
        self._provider = provider
        self._record = record
        self._clock = clock
        self._known_clean = False  # skip the database on a run of successes

    async def __call__(self, action: str, error: ProviderError | None) -> None:
        if isinstance(error, RefusedError) and action in _ABOUT_ONE:
            error = None  # refusing one order ("not enough funds") is a provider at work
        if error is None and self._known_clean:
            return
        await self._record(self._provider, error, self._clock())
        self._known_clean = error is None
