"""A simulated provider: a ``World`` served as a panel's API v2, faults and limit included.

``SimulatedProvider.handle(form)`` turns one decoded call into a ``Reply``; the HTTP server
in ``server.py`` only moves bytes. Three parts, each in its own module:

- ``world.py``: the catalog (a service of every order type), orders that progress over
  time (drip-feed runs, subscriptions picking up posts), refills, a balance, and what each
  action answers about them (``SimulatedProvider`` is a ``World``, so tests read and set
  its state directly: ``sim.orders``, ``sim.books``, ``sim.balance = ...``, booked as a
  top-up or a spend); ``rules.py`` is what each
  order type's `add` takes;
- ``faults.py``: injected faults, which change how an answer looks or travels (HTML pages,
  truncated JSON, 429s, timeouts, a byte at a time), before or after the call is processed;
- ``limiter.py``: optional limits, per minute on every call and per action ("60 adds a
  minute"), answering 429 the way a panel's rate limiter does, before the call reaches
  the API, and counting the 429s it answered per action.

It serves the actions its dialect offers and no others: refills and cancels in the ``key``
dialect, as Perfect Panel sites do, and not in the ``api_token`` one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from syncd.provider.dialects import DIALECTS
from syncd.simulator.faults import DRY_ANSWERS, Fault, Faults, Injection, faulty
from syncd.simulator.limiter import Limiter
from syncd.simulator.wire import Reply, json_reply
from syncd.simulator.world import SimPackage, World


@dataclass(frozen=True)
class Call:
    """One call the provider received, without its token."""

    action: str
    fields: dict[str, str]

    @property
    def ids(self) -> list[str]:
        return [i for i in self.fields.get("orders", "").split(",") if i]


class SimulatedProvider(World):
    """Thread-safe provider state; every public method may be called while serving."""

    def __init__(
        self,
        *,
        dialect: str = "api_token",
        token: str = "sim-token",  # noqa: S107 (a simulator accepts a fixed test token)
        packages: Iterable[SimPackage] | None = None,
        balance: Decimal = Decimal("100.00"),
        currency: str | None = "USD",
        order_duration: float = 20.0,
        max_ids: int = 100,
        spellings: bool = False,
        numbers_as_json: bool = False,
        latency: float = 0.0,
        action_latency: Mapping[str, float] | None = None,
        retry_after: int = 1,
        drip_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        refill_duration: float = 20.0,
        refill_success_shape: bool = False,
        requests_per_minute: int | None = None,
        retry_after_date: bool = False,
        minute: float = 60.0,
        post_interval: float | None = 30.0,
        today: Callable[[], date] | None = None,
        limits: Mapping[str, str] | None = None,
    ) -> None:
        self.limiter = Limiter(
            requests_per_minute, clock=clock, retry_after_date=retry_after_date, limits=limits
        )
        super().__init__(
            dialect=DIALECTS[dialect], packages=packages, balance=balance, currency=currency,
            order_duration=order_duration, max_ids=max_ids, spellings=spellings,
            numbers_as_json=numbers_as_json, clock=clock, refill_duration=refill_duration,
            refill_success_shape=refill_success_shape, minute=minute,
            post_interval=post_interval, today=today,
        )  # fmt: skip
        self.token = token
        self.latency = latency  # seconds added to every call
        self.action_latency = dict(action_latency or {})  # and to some actions ("add": 5)
        self.in_flight = 0
        self.max_in_flight = 0  # the most calls served at once
        self.retry_after = retry_after  # the seconds an injected 429 asks for
        # Seconds between two bytes of a dripped reply: shorter than any client's read
        # timeout, so only a deadline on the whole call ends the wait.
        self.drip_interval = drip_interval
        self.calls: list[Call] = []
        self.faults = Faults()
        # The wire's action names to the simulator's: what the dialect offers and no more
        # (an action of another dialect is unknown here, as it is to a real panel).
        self._actions = self.dialect.actions

    @property
    def actions(self) -> tuple[str, ...]:
        """The actions this dialect serves, by their names in ``count()`` and ``inject()``."""
        return tuple(self._actions.values())

    @property
    def rate_limited(self) -> int:
        """Calls answered 429 by the limit (not by injected faults)."""
        return self.limiter.rate_limited

    @property
    def busiest_minute(self) -> int:
        """The most calls the limit accepted in any 60 seconds."""
        return self.limiter.busiest_minute

    # -- controls ------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault | str,
        *,
        times: int | None = 1,
        actions: Iterable[str] | None = None,
        after_processing: bool = False,
        reply: object = None,
    ) -> None:
        """Answer the next ``times`` matching calls (``None``: all) with ``fault``
        (``Fault.REPLY``: with the JSON value ``reply``)."""
        self.faults.add(
            Injection(
                Fault(fault),
                times,
                frozenset(actions) if actions is not None else None,
                after_processing,
                reply,
            )
        )

    def clear_faults(self) -> None:
        self.faults.clear()

    def status_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.action == "status"]

    def count(self, action: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.action == action)

    # -- calls ---------------------------------------------------------------------------

    def delay(self, form: Mapping[str, str]) -> float:
        action = self._actions.get(form.get("action", ""), "")
        return self.latency + self.action_latency.get(action, 0.0)

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def admit(self, form: Mapping[str, str] | None = None) -> Reply | None:
        """Counts one arriving call; the 429 to send instead of serving it when it is past
        ``requests_per_minute`` or its action's own limit. The server asks before any
        latency, as a panel's rate limiter answers before its API does."""
        sent = (form or {}).get("action", "")
        return self.limiter.admit(self._actions.get(sent, sent))

    def handle(self, form: Mapping[str, str]) -> Reply:
        sent = form.get("action", "")
        action = self._actions.get(sent, f"unknown:{sent}")  # the other dialect's words too
        with self._lock:
            self.calls.append(
                Call(action, {k: v for k, v in form.items() if k != self.dialect.key_field})
            )
        injection = self.faults.take(action)
        if injection is None:
            return self._answer(action, form)
        normal = self._answer(action, form, dry=not injection.after_processing)
        return faulty(
            injection, normal, retry_after=self.retry_after, services=self.catalog_as_object
        )

    def _answer(self, action: str, form: Mapping[str, str], *, dry: bool = False) -> Reply:
        if form.get(self.dialect.key_field) != self.token:
            return json_reply({"error": "Invalid API key"})
        if dry and action in DRY_ANSWERS:
            return json_reply(DRY_ANSWERS[action])  # the fault strikes before anything changes
        return json_reply(self.answer(action, form))
