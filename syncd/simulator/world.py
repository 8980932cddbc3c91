"""The world a simulated provider keeps: its catalog, orders that progress over time,
refills, a balance; and what each action answers about it.

``World.answer(action, form)`` gives the JSON value one action answers, by the simulator's
own action names (``packages`` whatever the dialect calls it); the action's form fields are
read by the dialect's names. It knows nothing of HTTP, tokens, faults or limits: those are
``SimulatedProvider``'s, which serves a world over the wire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from syncd.provider.dialects import Dialect


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
_NOT_FOUND_SHAPES: list[object] = [
    {"error": "Order Not found"},
    {"error": ["Incorrect order ID"]},
    "Incorrect order ID",
    {"errors": ["Order not found"]},
]


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


class World:
    """A provider's state, thread-safe: every public method may be called while serving."""

    def __init__(
        self,
        *,
        dialect: Dialect,
        packages: Iterable[SimPackage] | None = None,
        balance: Decimal = Decimal("100.00"),
        currency: str | None = "USD",
        order_duration: float = 20.0,
        max_ids: int = 100,
        spellings: bool = False,
        numbers_as_json: bool = False,
        clock: Callable[[], float] = time.monotonic,
        refill_duration: float = 20.0,
        refill_success_shape: bool = False,
    ) -> None:
        self.dialect = dialect
        self.packages = {p.service: p for p in (packages or default_catalog())}
        self.balance = balance
        self.currency = currency
        self.order_duration = order_duration
        self.max_ids = max_ids
        self.spellings = spellings  # vary status spellings between orders
        self.numbers_as_json = numbers_as_json  # JSON numbers instead of strings
        # Ids that make a whole multi-status call fail, as some panels do for one bad id.
        self.poison_ids: set[int] = set()
        self.clock = clock
        self.orders: dict[int, SimOrder] = {}
        self.refill_duration = refill_duration
        # A single refill answers {"success": "...", "refill": id}, as some panels do.
        self.refill_success_shape = refill_success_shape
        self.refills: dict[int, SimRefill] = {}
        self._next_order = 23500
        self._next_refill = 4100  # far from order ids, so mixing the two up shows
        self._lock = threading.RLock()
        # Each action the simulator knows, by its name; a dialect offering one not here
        # could not be served, and is refused at once rather than at its first call.
        self._handlers: dict[str, Callable[[Mapping[str, str]], object]] = {
            "packages": self._catalog,
            "balance": self._balance,
            "status": self._status,
            "add": self._add,
            "refill": self._refill,
            "refill_status": self._refill_statuses,
            "cancel": self._cancel,
        }
        if missing := set(dialect.actions.values()) - self._handlers.keys():
            raise NotImplementedError(f"the simulator cannot serve {sorted(missing)}")

    # -- controls ------------------------------------------------------------------------

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

    # -- the actions ---------------------------------------------------------------------

    def answer(self, action: str, form: Mapping[str, str]) -> object:
        """The JSON value ``action`` answers to ``form``; an action it does not know is
        answered as panels answer one."""
        handler = self._handlers.get(action)
        if handler is None:
            return {"error": "Incorrect request"}
        with self._lock:
            return handler(form)

    def catalog_as_object(self) -> dict[str, str]:
        """The catalog as an object of service names, the shape some panels send."""
        with self._lock:
            return {str(p.service): p.name for p in self.packages.values()}

    def _catalog(self, form: Mapping[str, str]) -> object:
        return [self._package(p) for p in self.packages.values() if p.active]

    def _balance(self, form: Mapping[str, str]) -> object:
        answer: dict[str, Any] = {"balance": self._num(self.balance)}
        if self.currency:
            answer["currency"] = self.currency
        return answer

    def _status(self, form: Mapping[str, str]) -> object:
        if "orders" in form:
            ids = _split(form["orders"])
            if len(ids) > self.max_ids:
                return {"error": f"Maximum {self.max_ids} orders per request"}
            if any(i.isdigit() and int(i) in self.poison_ids for i in ids):
                return {"error": "Incorrect order ID"}
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
            return answer
        raw = form.get("order", "")
        order = self.orders.get(int(raw)) if raw.isdigit() else None
        return self._order(order) if order else {"error": "Incorrect order ID"}

    def _add(self, form: Mapping[str, str]) -> object:
        d = self.dialect
        raw_service = form.get(d.package_field, "")
        package = self.packages.get(int(raw_service)) if raw_service.isdigit() else None
        if package is None or not package.active:
            return {"error": "Incorrect service ID"}
        link = form.get("link", "").strip()
        if not link:
            return {"error": "Incorrect link"}
        quantity_text = form.get("quantity", "")
        if not quantity_text.isdigit():
            return {"error": "Incorrect quantity"}
        quantity = int(quantity_text)
        if quantity < package.min:
            return {"error": f"Quantity less than minimal {package.min}"}
        if quantity > package.max:
            return {"error": f"Quantity more than maximum {package.max}"}
        comments = form.get(d.comments_field)
        if "comment" in package.type.lower():
            lines = [c for c in (comments or "").splitlines() if c.strip()]
            if len(lines) != quantity:
                return {"error": "Comments count must equal quantity"}
        charge = _charge(package.rate, quantity)
        if charge > self.balance:
            return {"error": "Not enough funds on balance"}
        self.balance -= charge
        order = self._new_order(package, link, quantity, comments)
        order.charge = charge
        return {"order": order.id}

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

    def _refill(self, form: Mapping[str, str]) -> object:
        if "orders" in form:
            ids = _split(form["orders"])
            if len(ids) > self.max_ids:
                return {"error": f"Maximum {self.max_ids} orders per request"}
            return [{"order": self._id(raw), "refill": self._refill_entry(raw)} for raw in ids]
        outcome = self._start_refill(form.get("order", ""))
        if isinstance(outcome, str):
            return {"error": outcome}
        if self.refill_success_shape:
            return {"success": "Refill request has been received", "refill": self._num(outcome.id)}
        return {"refill": self._num(outcome.id)}

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

    def _refill_statuses(self, form: Mapping[str, str]) -> object:
        if "refills" in form:
            ids = _split(form["refills"])
            if len(ids) > self.max_ids:
                return {"error": f"Maximum {self.max_ids} refills per request"}
            return [{"refill": self._id(raw), "status": self._refill_answer(raw)} for raw in ids]
        answer = self._refill_answer(form.get("refill", ""))
        return {"status": answer} if isinstance(answer, str) else answer

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

    def _cancel(self, form: Mapping[str, str]) -> object:
        ids = _split(form.get("orders", ""))
        if not ids:
            return {"error": "Incorrect order ID"}
        if len(ids) > self.max_ids:
            return {"error": f"Maximum {self.max_ids} orders per request"}
        return [{"order": self._id(raw), "cancel": self._cancel_entry(raw)} for raw in ids]

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
        return value  # Decimals are written as JSON numbers by ()


def _split(ids: str) -> list[str]:
    return [i.strip() for i in ids.split(",") if i.strip()]


def _charge(rate: Decimal, quantity: int) -> Decimal:
    return (rate * quantity / 1000).quantize(Decimal("0.00001"), ROUND_HALF_UP)
