"""A panel's limits on calls, as its rate limiter applies them: in front of the API,
answering 429 with ``Retry-After`` before a call reaches anything else.

Two kinds, as providers publish them: a cap on every call of the key
(``requests_per_minute``, "about 100 requests a minute"), and per-action limits ("60
adds, 120 status calls per minute and 10 service-list calls per hour"), each a sliding
window: at most N calls accepted in any window of its length."""

from __future__ import annotations

import email.utils
import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from syncd.limits import CallLimit, parse_limit
from syncd.simulator.wire import Reply, json_reply

WINDOW = 60.0  # seconds of the sliding window ``requests_per_minute`` counts in
EVERY = "*"  # the window every call counts in (``requests_per_minute``)


class Limiter:
    """At most ``requests_per_minute`` calls accepted in any 60 seconds (None: no limit),
    and at most each action's own limit (``{"add": "60/minute"}``) in its window.

    ``rate_limited`` counts the calls it answered 429 (injected 429s are not its own),
    ``rate_limited_by`` the same per action; ``busiest_minute`` is the most calls it
    accepted in any 60 seconds, ``busiest`` per action the most in any window of its
    limit."""

    def __init__(
        self,
        requests_per_minute: int | None,
        *,
        clock: Callable[[], float],
        retry_after_date: bool = False,
        limits: Mapping[str, str | CallLimit] | None = None,
    ) -> None:
        if requests_per_minute is not None and requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1 (None: no limit)")
        self.requests_per_minute = requests_per_minute
        self.limits = {
            action: limit if isinstance(limit, CallLimit) else parse_limit(limit)
            for action, limit in (limits or {}).items()
        }
        self.retry_after_date = retry_after_date  # Retry-After as an HTTP date, not seconds
        self.rate_limited = 0
        self.rate_limited_by: Counter[str] = Counter()
        self.busiest_minute = 0
        self.busiest: Counter[str] = Counter()
        self._clock = clock
        # Accepted calls still inside their window: every call's, and each limited action's.
        self._arrivals: dict[str, deque[float]] = {EVERY: deque()}
        self._arrivals.update((action, deque()) for action in self.limits)
        self._lock = threading.Lock()

    def admit(self, action: str = "") -> Reply | None:
        """Counts one arriving call of ``action``; the 429 to send instead of serving it
        when it is past a limit. Only accepted calls take a slot."""
        with self._lock:
            now = self._clock()
            windows = [(EVERY, self.requests_per_minute, WINDOW)]
            if (own := self.limits.get(action)) is not None:
                windows.append((action, own.count, own.seconds))
            for key, _, window in windows:
                arrivals = self._arrivals[key]
                while arrivals and arrivals[0] <= now - window:
                    arrivals.popleft()
            for key, count, window in windows:
                arrivals = self._arrivals[key]
                if count is not None and len(arrivals) >= count:
                    self.rate_limited += 1
                    self.rate_limited_by[action] += 1
                    frees = arrivals[0] + window - now if arrivals else window
                    wait = max(1, math.ceil(frees))
                    return json_reply(
                        {"error": "Too many requests"}, 429, {"retry-after": self._retry_at(wait)}
                    )
            for key, _, _ in windows:
                self._arrivals[key].append(now)
            self.busiest_minute = max(self.busiest_minute, len(self._arrivals[EVERY]))
            if own is not None:
                self.busiest[action] = max(self.busiest[action], len(self._arrivals[action]))
        return None

    def _retry_at(self, wait: int) -> str:
        if not self.retry_after_date:
            return str(wait)
        # A date is absolute, so it comes from the wall clock; it has whole seconds, so it
        # is rounded up: a client that waits until then finds the slot free.
        when = datetime.now(UTC) + timedelta(seconds=wait)
        if when.microsecond:
            when = when.replace(microsecond=0) + timedelta(seconds=1)
        return email.utils.format_datetime(when, usegmt=True)
