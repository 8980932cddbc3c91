"""The provider's side of API v2: catalog, orders that progress over time, a balance.

``SimulatedProvider.handle(form)`` turns one decoded request into a ``Reply``; the HTTP
server in ``server.py`` only moves bytes.  Faults are injected per request, optionally
limited to some actions and to a number of requests, and may strike *after* the request
was processed (an order created, then a 502) to reproduce ambiguous submissions.

It serves the actions its dialect offers and no others: refills and cancels in the ``key``
dialect, as Perfect Panel sites do, and not in the ``api_token`` one.  An optional
per-minute limit answers 429 the way a panel's rate limiter does, before the call reaches
the API.
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from syncd.provider.dialects import DIALECTS, Dialect

_WINDOW = 60.0  # seconds of the sliding window ``requests_per_minute`` counts in


class Fault(enum.StrEnum):
    HTML_502 = "html_502"  # a proxy's 502 page
    HTML_200 = "html_200"  # a maintenance page sent with 200
    TIMEOUT = "timeout"  # no reply until the client gives up
    DRIP = "drip"  # the reply is sent one byte at a time, slowly
    RESET = "reset"  # connection closed without a reply
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After
    TRUNCATED_JSON = "truncated_json"
    ERROR_STRING = "error_string"  # {"error": "..."} with HTTP 200
    ERROR_LIST = "error_list"  # {"error": ["..."]}
    ERRORS_LIST = "errors_list"  # {"errors": ["..."]}
    ERRORS_OBJECT = "errors_object"  # {"errors": {"field": ["..."]}}
    NOT_A_LIST = "not_a_list"  # a catalog reply that is an object of services
    EMPTY_LIST = "empty_list"  # a catalog reply that is []
    REPLY = "reply"  # a JSON value the test chose (``inject(..., reply=value)``)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # send nothing until the server stops (client timeout)
    drip: bool = False  # status line and headers at once, then the body byte by byte
    reset: bool = False  # close the connection without a reply


@dataclass
class _Injection:
    fault: Fault
    remaining: int | None  # None: until cleared
    actions: frozenset[str] | None
    after_processing: bool
    reply: object = None  # for Fault.REPLY


@dataclass
class SimPackage:
    service: int
    name: str
    type: str
    category: str
    rate: Decimal
    min: int
    max: int
    active: bool = True
    # What the catalog shows and what refill / cancel allow. None: by the service id, as
    # the catalog always did (refill for even ids, cancel for multiples of 3).
    refill: bool | None = None
    cancel: bool | None = None

    def __post_init__(self) -> None:
        if self.refill is None:
            self.refill = self.service % 2 == 0
        if self.cancel is None:
            self.cancel = self.service % 3 == 0


@dataclass
class SimOrder:
    id: int
    service: int
    link: str
    quantity: int
    charge: Decimal
    created: float
    start_counter: int
    custom_data: str | None = None
    # Set by tests to pin an order's answer instead of letting it progress.
    pinned: dict[str, Any] | None = None
    canceled: bool = False  # by the cancel action: Canceled at once, whatever its age


@dataclass
class SimRefill:
    """A refill of one order: Pending, In progress, then Completed (or Rejected)."""

    id: int
    order: int
    created: float
    # Set by tests to pin the refill's status instead of letting it progress.
    pinned: str | None = None


@dataclass(frozen=True)
class Call:
    """One request the provider received, without its token."""

    action: str
    fields: dict[str, str]

    @property
    def ids(self) -> list[str]:
        return [i for i in self.fields.get("orders", "").split(",") if i]


_SPELLINGS = {
    "Pending": ["Pending", "pending"],
    "Processing": ["Processing", "processing"],
    "In progress": ["In progress", "In Progress", "inprogress", "in_progress", "Active"],
    "Completed": ["Completed", "Complete"],
    "Partial": ["Partial", "Partially Completed"],
    "Canceled": ["Canceled", "Cancelled"],
}
# Any spelling back to its status, to judge pinned orders by the rules of refill and cancel.
_CANONICAL = {s.lower(): status for status, spelled in _SPELLINGS.items() for s in spelled}
_FINAL = frozenset({"Completed", "Partial", "Canceled"})
_DELIVERED = frozenset({"Completed", "Partial"})  # a refill restores what was delivered
_OPEN_REFILL = frozenset({"Pending", "In progress"})
# What a fault that strikes before processing has in hand instead of a real answer.
_DRY_ANSWERS: dict[str, object] = {"add": {"order": 0}, "refill": {"refill": 0}, "cancel": []}
_NOT_FOUND_SHAPES: list[object] = [
    {"error": "Order Not found"},
    {"error": ["Incorrect order ID"]},
    "Incorrect order ID",
    {"errors": ["Order not found"]},
]
_UNAVAILABLE = "Service temporarily unavailable"
_ERROR_SHAPES: dict[Fault, object] = {
    Fault.ERROR_STRING: {"error": _UNAVAILABLE},
    Fault.ERROR_LIST: {"error": [_UNAVAILABLE]},
    Fault.ERRORS_LIST: {"errors": [_UNAVAILABLE]},
    Fault.ERRORS_OBJECT: {"errors": {"action": [_UNAVAILABLE]}},
}
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_HTML_MAINTENANCE = (
    b"<!DOCTYPE html><html><head><title>Site Maintenance</title></head>"
    b"<body><h1>We&rsquo;ll be back soon!</h1></body></html>"
)


def default_catalog(count: int = 40) -> list[SimPackage]:
    """A realistic catalog: ``count`` services over a few networks (40 by default; more
    for benchmarks, the same eight kinds in five tiers over and over)."""
    kinds = [
        ("Instagram Followers", "Default", Decimal("0.90"), 50, 100000),
        ("Instagram Likes", "Default", Decimal("0.12"), 10, 50000),
        ("Instagram Comments", "Custom Comments", Decimal("4.50"), 5, 1000),
        ("YouTube Views", "Default", Decimal("1.75"), 100, 1000000),
        ("TikTok Followers", "Default", Decimal("1.10"), 100, 50000),
        ("Telegram Members", "Default", Decimal("0.65"), 100, 20000),
        ("Twitter Likes", "Default", Decimal("0.35"), 20, 10000),
        ("Facebook Page Likes", "Default", Decimal("2.20"), 100, 30000),
    ]
    speeds = ["Instant", "Fast", "Real", "HQ", "Premium"]
    packages = []
    for index in range(count):
        tier = index // len(kinds) % len(speeds)
        category, ptype, rate, low, high = kinds[index % len(kinds)]
        service = 100 + index
        packages.append(
            SimPackage(
                service=service,
                name=f"{category} [{speeds[tier]}] #{service}",
                type=ptype,
                category=category,
                rate=(rate * (1 + Decimal(tier) / 4)).quantize(Decimal("0.0001")),
                min=low,
                max=high,
            )
        )
    return packages


class SimulatedProvider:
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
    ) -> None:
        if requests_per_minute is not None and requests_per_minute < 1:
            raise ValueError("requests_per_minute must be at least 1 (None: no limit)")
        self.dialect: Dialect = DIALECTS[dialect]
        self.token = token
        self.packages = {p.service: p for p in (packages or default_catalog())}
        self.balance = balance
        self.currency = currency
        self.order_duration = order_duration
        self.max_ids = max_ids
        self.spellings = spellings  # vary status spellings between orders
        self.numbers_as_json = numbers_as_json  # JSON numbers instead of strings
        self.latency = latency  # seconds added to every request
        self.action_latency = dict(action_latency or {})  # and to some actions ("add": 5)
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests served at once
        # Ids that make a whole multi-status call fail, as some panels do for one bad id.
        self.poison_ids: set[int] = set()
        self.retry_after = retry_after
        # Seconds between two bytes of a dripped reply: shorter than any client's read
        # timeout, so only a deadline on the whole request ends the wait.
        self.drip_interval = drip_interval
        self.clock = clock
        self.orders: dict[int, SimOrder] = {}
        self.calls: list[Call] = []
        self.refill_duration = refill_duration
        # A single refill answers {"success": "...", "refill": id}, as some panels do.
        self.refill_success_shape = refill_success_shape
        self.refills: dict[int, SimRefill] = {}
        self.requests_per_minute = requests_per_minute  # None: no limit
        self.retry_after_date = retry_after_date  # Retry-After as an HTTP date, not seconds
        self.rate_limited = 0  # requests answered 429 by the limit (not by injected faults)
        self.busiest_minute = 0  # the most requests accepted in any 60 seconds
        self._arrivals: deque[float] = deque()  # accepted requests of the last 60 seconds
        self._next_order = 23500
        self._next_refill = 4100  # far from order ids, so mixing the two up shows
        self._faults: list[_Injection] = []
        self._lock = threading.RLock()
        # The wire's action names to the simulator's: what the dialect offers and no more
        # (an action of another dialect is unknown here, as it is to a real panel).
        self._actions = self.dialect.actions

    @property
    def actions(self) -> tuple[str, ...]:
        """The actions this dialect serves, by their names in ``count()`` and ``inject()``."""
        return tuple(self._actions.values())

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
        """Answer the next ``times`` matching requests (``None``: all) with ``fault``
        (``Fault.REPLY``: with the JSON value ``reply``)."""
        with self._lock:
            self._faults.append(
                _Injection(
                    Fault(fault),
                    times,
                    frozenset(actions) if actions is not None else None,
                    after_processing,
                    reply,
                )
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_rate(self, service: int, rate: Decimal) -> None:
        with self._lock:
            self.packages[service].rate = rate

    def remove_package(self, service: int) -> None:
        with self._lock:
            self.packages[service].active = False

    def restore_package(self, service: int) -> None:
        with self._lock:
            self.packages[service].active = True

    def add_package(self, package: SimPackage) -> None:
        with self._lock:
            self.packages[package.service] = package

    def create_orders(self, count: int, *, service: int | None = None) -> list[int]:
        """Orders placed elsewhere (for tracking tests and benchmarks); charges nothing."""
        with self._lock:
            package = self.packages[service] if service else next(iter(self.packages.values()))
            return [
                self._new_order(package, f"https://example.com/p/{i}", package.min, None).id
                for i in range(count)
            ]

    def pin_order(self, order_id: int, **answer: Any) -> None:
        """Make an order answer exactly ``answer`` (e.g. status="Partially Completed")."""
        with self._lock:
            self.orders[order_id].pinned = answer

    def create_refill(self, order_id: int, *, status: str | None = None) -> int:
        """A refill of an existing order that skips the rules (as if made on the panel's
        site); ``status`` pins its status instead of letting it progress."""
        with self._lock:
            return self._new_refill(self.orders[order_id], status).id

    def refill_status(self, refill_id: int) -> str:
        with self._lock:
            return self._refill_progress(self.refills[refill_id])

    def status_calls(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.action == "status"]

    def count(self, action: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.action == action)

    # -- requests ------------------------------------------------------------------------

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

    def admit(self) -> Reply | None:
        """Counts one arriving request; the 429 to send instead of serving it when it is
        past ``requests_per_minute``.  The server asks before any latency, as a panel's
        rate limiter answers before its API does; only accepted requests take a slot."""
        with self._lock:
            now = self.clock()
            while self._arrivals and self._arrivals[0] <= now - _WINDOW:
                self._arrivals.popleft()
            limit = self.requests_per_minute
            if limit is not None and len(self._arrivals) >= limit:
                self.rate_limited += 1
                frees = self._arrivals[0] + _WINDOW - now if self._arrivals else _WINDOW
                wait = max(1, math.ceil(frees))
                return _json(
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

    def handle(self, form: Mapping[str, str]) -> Reply:
        sent = form.get("action", "")
        action = self._actions.get(sent, f"unknown:{sent}")  # the other dialect's words too
        with self._lock:
            self.calls.append(
                Call(action, {k: v for k, v in form.items() if k != self.dialect.key_field})
            )
            injection = self._take_fault(action)
        if injection is not None and not injection.after_processing:
            return self._fault_reply(injection, self._answer(action, form, dry=True))
        reply = self._answer(action, form)
        if injection is not None:
            return self._fault_reply(injection, reply)
        return reply

    def _take_fault(self, action: str) -> _Injection | None:
        for injection in self._faults:
            if injection.actions is None or action in injection.actions:
                if injection.remaining is not None:
                    injection.remaining -= 1
                    if injection.remaining <= 0:
                        self._faults.remove(injection)
                return injection
        return None

    def _fault_reply(self, injection: _Injection, normal: Reply) -> Reply:
        if (broken := _broken_delivery(injection.fault, normal)) is not None:
            return broken
        match injection.fault:
            case Fault.HTML_502:
                return Reply(502, _HTML_502, {"content-type": "text/html"})
            case Fault.HTML_200:
                return Reply(200, _HTML_MAINTENANCE, {"content-type": "text/html"})
            case Fault.RATE_LIMIT:
                return _json(
                    {"error": "Too many requests"}, 429, {"retry-after": str(self.retry_after)}
                )
            case Fault.TRUNCATED_JSON:
                body = normal.body if len(normal.body) > 2 else b'{"balance": "1'
                return Reply(
                    200, body[: max(1, len(body) // 2)], {"content-type": "application/json"}
                )
            case Fault.ERROR_STRING | Fault.ERROR_LIST | Fault.ERRORS_LIST | Fault.ERRORS_OBJECT:
                return _json(_ERROR_SHAPES[injection.fault])
            case Fault.NOT_A_LIST:
                return _json({str(p.service): p.name for p in self.packages.values()})
            case Fault.EMPTY_LIST:
                return _json([])
            case Fault.REPLY:
                return _json(injection.reply)
        raise AssertionError(injection.fault)

    def _answer(self, action: str, form: Mapping[str, str], *, dry: bool = False) -> Reply:
        if form.get(self.dialect.key_field) != self.token:
            return _json({"error": "Invalid API key"})
        if dry and action in _DRY_ANSWERS:
            return _json(_DRY_ANSWERS[action])  # the fault strikes before anything changes
        with self._lock:
            match action:
                case "packages":
                    return _json([self._package(p) for p in self.packages.values() if p.active])
                case "balance":
                    answer: dict[str, Any] = {"balance": self._num(self.balance)}
                    if self.currency:
                        answer["currency"] = self.currency
                    return _json(answer)
                case "status":
                    return self._status(form)
                case "add":
                    return self._add(form)
                case "refill":
                    return self._refill(form)
                case "refill_status":
                    return self._refill_statuses(form)
                case "cancel":
                    return self._cancel(form)
        return _json({"error": "Incorrect request"})

    def _status(self, form: Mapping[str, str]) -> Reply:
        if "orders" in form:
            ids = [i.strip() for i in form["orders"].split(",") if i.strip()]
            if len(ids) > self.max_ids:
                return _json({"error": f"Maximum {self.max_ids} orders per request"})
            if any(i.isdigit() and int(i) in self.poison_ids for i in ids):
                return _json({"error": "Incorrect order ID"})
            answer: dict[str, object] = {}
            for raw in ids:
                order = self.orders.get(int(raw)) if raw.isdigit() else None
                answer[raw] = (
                    self._order(order)
                    if order is not None
                    else _NOT_FOUND_SHAPES[
                        int(raw) % len(_NOT_FOUND_SHAPES) if raw.isdigit() else 0
                    ]
                )
            return _json(answer)
        raw = form.get("order", "")
        order = self.orders.get(int(raw)) if raw.isdigit() else None
        return _json(self._order(order) if order else {"error": "Incorrect order ID"})

    def _add(self, form: Mapping[str, str]) -> Reply:
        d = self.dialect
        raw_service = form.get(d.package_field, "")
        package = self.packages.get(int(raw_service)) if raw_service.isdigit() else None
        if package is None or not package.active:
            return _json({"error": "Incorrect service ID"})
        link = form.get("link", "").strip()
        if not link:
            return _json({"error": "Incorrect link"})
        quantity_text = form.get("quantity", "")
        if not quantity_text.isdigit():
            return _json({"error": "Incorrect quantity"})
        quantity = int(quantity_text)
        if quantity < package.min:
            return _json({"error": f"Quantity less than minimal {package.min}"})
        if quantity > package.max:
            return _json({"error": f"Quantity more than maximum {package.max}"})
        comments = form.get(d.comments_field)
        if "comment" in package.type.lower():
            lines = [c for c in (comments or "").splitlines() if c.strip()]
            if len(lines) != quantity:
                return _json({"error": "Comments count must equal quantity"})
        charge = _charge(package.rate, quantity)
        if charge > self.balance:
            return _json({"error": "Not enough funds on balance"})
        self.balance -= charge
        order = self._new_order(package, link, quantity, comments)
        order.charge = charge
        return _json({"order": order.id})

    def _new_order(
        self, package: SimPackage, link: str, quantity: int, comments: str | None
    ) -> SimOrder:
        self._next_order += 1
        order = SimOrder(
            id=self._next_order,
            service=package.service,
            link=link,
            quantity=quantity,
            charge=_charge(package.rate, quantity),
            created=self.clock(),
            start_counter=1000 + (self._next_order * 37) % 9000,
            custom_data=comments,
        )
        self.orders[order.id] = order
        return order

    # -- refills and cancels (the key dialect) ---------------------------------------------

    def _refill(self, form: Mapping[str, str]) -> Reply:
        if "orders" in form:
            ids = _split(form["orders"])
            if len(ids) > self.max_ids:
                return _json({"error": f"Maximum {self.max_ids} orders per request"})
            return _json(
                [{"order": self._id(raw), "refill": self._refill_entry(raw)} for raw in ids]
            )
        outcome = self._start_refill(form.get("order", ""))
        if isinstance(outcome, str):
            return _json({"error": outcome})
        if self.refill_success_shape:
            return _json(
                {"success": "Refill request has been received", "refill": self._num(outcome.id)}
            )
        return _json({"refill": self._num(outcome.id)})

    def _refill_entry(self, raw: str) -> object:
        outcome = self._start_refill(raw)
        return {"error": outcome} if isinstance(outcome, str) else self._num(outcome.id)

    def _start_refill(self, raw: str) -> SimRefill | str:
        """The new refill of order ``raw``, or why there is none."""
        order = self.orders.get(int(raw)) if raw.isdigit() else None
        if order is None:
            return "Incorrect order ID"
        package = self.packages.get(order.service)
        if package is None or not package.refill or self._state(order) not in _DELIVERED:
            return "Order not eligible for refill."
        if any(
            r.order == order.id and self._refill_progress(r) in _OPEN_REFILL
            for r in self.refills.values()
        ):
            return "A refill for this order is already pending."
        return self._new_refill(order, None)

    def _new_refill(self, order: SimOrder, pinned: str | None) -> SimRefill:
        self._next_refill += 1
        refill = SimRefill(self._next_refill, order.id, self.clock(), pinned)
        self.refills[refill.id] = refill
        return refill

    def _refill_statuses(self, form: Mapping[str, str]) -> Reply:
        if "refills" in form:
            ids = _split(form["refills"])
            if len(ids) > self.max_ids:
                return _json({"error": f"Maximum {self.max_ids} refills per request"})
            return _json(
                [{"refill": self._id(raw), "status": self._refill_answer(raw)} for raw in ids]
            )
        answer = self._refill_answer(form.get("refill", ""))
        return _json({"status": answer} if isinstance(answer, str) else answer)

    def _refill_answer(self, raw: str) -> str | dict[str, str]:
        refill = self.refills.get(int(raw)) if raw.isdigit() else None
        if refill is None:
            return {"error": "Refill not found"}
        return self._refill_progress(refill)

    def _refill_progress(self, refill: SimRefill) -> str:
        """Pending, then In progress, then Completed; Rejected instead for some orders."""
        if refill.pinned is not None:
            return refill.pinned
        elapsed = self.clock() - refill.created
        share = elapsed / self.refill_duration if self.refill_duration else 1
        if share < 0.1:
            return "Pending"
        if share < 1:
            return "In progress"
        return "Rejected" if refill.order % 7 == 3 else "Completed"

    def _cancel(self, form: Mapping[str, str]) -> Reply:
        ids = _split(form.get("orders", ""))
        if not ids:
            return _json({"error": "Incorrect order ID"})
        if len(ids) > self.max_ids:
            return _json({"error": f"Maximum {self.max_ids} orders per request"})
        return _json([{"order": self._id(raw), "cancel": self._cancel_entry(raw)} for raw in ids])

    def _cancel_entry(self, raw: str) -> object:
        order = self.orders.get(int(raw)) if raw.isdigit() else None
        if order is None:
            return {"error": "Incorrect order ID"}
        package = self.packages.get(order.service)
        if package is None or not package.cancel or self._state(order) in _FINAL:
            return {"error": "Order cannot be canceled."}
        # Nothing was delivered that counts: charge 0 and all of it remains (see _progress).
        # The balance is left alone, as for partials and the orders that end Canceled.
        order.canceled = True
        return self._num(1)

    def _state(self, order: SimOrder) -> str:
        """The order's status by name, whatever spelling a pin gives it."""
        if order.canceled:
            return "Canceled"
        if order.pinned is not None and "status" in order.pinned:
            spelled = str(order.pinned["status"])
            return _CANONICAL.get(spelled.lower(), spelled)
        return self._progress(order)[0]

    def _id(self, raw: str) -> object:
        """An id of a batch answer as asked, a number when it is one."""
        return self._num(int(raw)) if raw.isdigit() else raw

    # -- rendering -----------------------------------------------------------------------

    def _order(self, order: SimOrder) -> dict[str, object]:
        if order.pinned is not None:
            return dict(order.pinned)
        status, remains, charge = self._progress(order)
        spelled = (
            _SPELLINGS[status][order.id % len(_SPELLINGS[status])] if self.spellings else status
        )
        answer: dict[str, object] = {
            "charge": self._num(charge),
            "start_counter": self._num(order.start_counter) if status != "Pending" else "",
            "status": spelled,
            "remains": self._num(remains),
        }
        if self.currency:
            answer["currency"] = self.currency
        return answer

    def _progress(self, order: SimOrder) -> tuple[str, int, Decimal]:
        """Pending, then Processing, then In progress, then a final status by order id."""
        if order.canceled:
            return "Canceled", order.quantity, Decimal("0")
        share = (self.clock() - order.created) / self.order_duration if self.order_duration else 1
        if share < 0.1:
            return "Pending", order.quantity, order.charge
        if share < 0.2:
            return "Processing", order.quantity, order.charge
        if share < 1:
            return "In progress", int(order.quantity * (1 - share)), order.charge
        if order.id % 10 in (2, 7):  # a partial refunds the undelivered part
            remains = order.quantity // 3
            delivered = Decimal(order.quantity - remains) / Decimal(order.quantity)
            return "Partial", remains, (order.charge * delivered).quantize(Decimal("0.00001"))
        if order.id % 20 == 13:
            return "Canceled", order.quantity, Decimal("0")
        return "Completed", 0, order.charge

    def _package(self, p: SimPackage) -> dict[str, object]:
        return {
            "service": p.service if self.numbers_as_json else str(p.service),
            "name": p.name,
            "type": p.type,
            "category": p.category,
            "rate": self._num(p.rate),
            "min": self._num(p.min),
            "max": self._num(p.max),
            "refill": bool(p.refill),
            "cancel": bool(p.cancel),
        }

    def _num(self, value: Decimal | int) -> object:
        if not self.numbers_as_json:
            return str(value)
        return value  # Decimals are written as JSON numbers by _json()


def _broken_delivery(fault: Fault, normal: Reply) -> Reply | None:
    """The faults in how a reply travels rather than in what it says."""
    match fault:
        case Fault.TIMEOUT:
            return Reply(hang=True)
        case Fault.RESET:
            return Reply(reset=True)
        case Fault.DRIP:
            return replace(normal, drip=True)
    return None


def _split(ids: str) -> list[str]:
    return [i.strip() for i in ids.split(",") if i.strip()]


def _charge(rate: Decimal, quantity: int) -> Decimal:
    return (rate * quantity / 1000).quantize(Decimal("0.00001"), ROUND_HALF_UP)


_NUMBER = re.compile(r'"\\u0000num:(-?[0-9.]+)"')
_MARK = "\\u0000num:"  # how json.dumps writes the start of a marked number


def _marked(value: object) -> str:
    """A Decimal marked so that it can be written as an exact JSON number (never via
    float); ``json.dumps`` asks for it only for the values it cannot write itself."""
    if isinstance(value, Decimal):
        return f"\x00num:{format(value, 'f')}"
    raise TypeError(f"{type(value).__name__} is not JSON")


def _json(value: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    # Real panels often label JSON as text/html; the client must not trust the header.
    # json.dumps walks the value in C and asks _marked only for Decimals; a reply with
    # none (a catalog, unless numbers go as JSON numbers) is not searched by the pattern.
    text = json.dumps(value, default=_marked)
    body = (_NUMBER.sub(r"\1", text) if _MARK in text else text).encode()
    return Reply(status, body, {"content-type": "text/html; charset=UTF-8", **(headers or {})})
