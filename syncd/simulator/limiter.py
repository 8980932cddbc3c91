"""A panel's per-minute limit on calls, as its rate limiter applies it: in front of the
API, answering 429 with ``Retry-After`` before a call reaches anything else."""

from __future__ import annotations

import email.utils
import math
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from syncd.simulator.wire import Reply, json_reply

WINDOW = 60.0  # seconds of the sliding window ``requests_per_minute`` counts in


class Limiter:
    """At most ``requests_per_minute`` calls accepted in any 60 seconds (None: no limit).

    ``rate_limited`` counts the calls it answered 429 (injected 429s are not its own);
    ``busiest_minute`` is the most calls it accepted in any 60 seconds."""

    def __init__(
        self,
        requests_per_minute: int | None,
        *,
        clock: Callable[[], float],
        retry_after_date: bool = False,
    ) -> None:
        if requests_per_minute is not None and requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1 (None: no limit)")
        self.requests_per_minute = requests_per_minute
        self.retry_after_date = retry_after_date  # Retry-After as an HTTP date, not seconds
        self.rate_limited = 0
        self.busiest_minute = 0
        self._clock = clock
        self._arrivals: deque[float] = deque()  # accepted calls of the last 60 seconds
        self._lock = threading.Lock()

    def admit(self) -> Reply | None:
        """Counts one arriving call; the 429 to send instead of serving it when it is past
        the limit. Only accepted calls take a slot."""
        with self._lock:
            now = self._clock()
            while self._arrivals and self._arrivals[0] <= now - WINDOW:
                self._arrivals.popleft()
            limit = self.requests_per_minute
            if limit is not None and len(self._arrivals) >= limit:
                self.rate_limited += 1
                frees = self._arrivals[0] + WINDOW - now if self._arrivals else WINDOW
                wait = max(1, math.ceil(frees))
                return json_reply(
                    {"error": "Too many requests"}, 429, {"retry-after": self._retry_at(wait)}
                )
            self._arrivals.append(now)
            self.busiest_minute = max(self.busiest_minute, len(self._arrivals))
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
