"""The world a simulated provider keeps: its catalog, orders that progress over time,
refills, a balance and the books of its every move; and what each action answers about it.

``World.answer(action, form)`` gives the JSON value one action answers, by the simulator's
own action names (``packages`` whatever the dialect calls it); the action's form fields are
read by the dialect's names. It knows nothing of HTTP, tokens, faults or limits: those are
``SimulatedProvider``'s, which serves a world over the wire.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_UP, Context, Decimal, localcontext
from typing import Any, Literal

from syncd.provider.dialects import Dialect
from syncd.simulator import rules


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
    dripfeed: bool = False  # Default orders may come in runs (`runs`, `interval`)

    def __post_init__(self) -> None:
        if self.refill is None:
            self.refill = self.service % 2 == 0
        if self.cancel is None:
            self.cancel = self.service % 3 == 0


# What moved the balance: an order's charge at `add`, the refund of what an order ending
# Partial or Canceled did not deliver, a subscription's post's order charged as it is placed,
# a top-up, and someone else spending on the same key.
Kind = Literal["charge", "refund", "surcharge", "topup", "spend"]


@dataclass(frozen=True)
class BookEntry:
    """One move of the balance: ``amount`` signed as the balance moves (a debit is
    negative), ``order`` None for a top-up or a spend."""

    at: float  # the world's clock when the move was booked
    kind: Kind
    order: int | None
    amount: Decimal
    balance_after: Decimal


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
    # The form fields its `add` carried, the key left out: what a client really sent.
    fields: dict[str, str] = field(default_factory=dict)
    parent: int | None = None  # the drip-feed or subscription this order is a part of
    children: list[int] = field(default_factory=list)
    drip: SimDripFeed | None = None
    subscription: SimSubscription | None = None
    billed: bool = False  # placed by `add`: the books carry its charge, and its refund
    settled: bool = False  # its end is booked (a refund, if it ended short): only once
    wake: float | None = None  # when the books look at it next unasked (its heap entry)


@dataclass
class SimDripFeed:
    """An order delivered in ``runs`` parts of its quantity, one every ``interval``
    minutes; each run is a child order of its own, placed when its time comes."""

    runs: int
    interval: int


@dataclass
class SimSubscription:
    """Orders for the posts an account publishes: each new post (and each of
    ``old_posts`` at once) gets a child order of ``low``..``high`` units, ``delay``
    minutes after it appears. Active until ``posts`` new posts, its expiry date or a cancel.
    """

    username: str
    low: int
    high: int
    posts: int | None  # new posts to pick up; None: no end but the expiry
    delay: int
    expiry: date | None
    expiry_text: str | None  # as the order gave it
    picked: int = 0  # new posts picked up so far
    next_post: float | None = None  # when the account publishes its next post
    due: list[float] = field(default_factory=list)  # when each post's order is placed
    paused: bool = False
    ended: str | None = None  # Completed or Expired


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
_FINAL = frozenset({"Completed", "Partial", "Canceled", "Expired"})
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
    for benchmarks, the same eight kinds in five tiers over and over), ids from 100; then
    one service of every other order type (``typed_catalog``), ids right after."""
    return plain_catalog(count) + typed_catalog(100 + count)


def typed_catalog(first: int) -> list[SimPackage]:
    """One service of each order type besides Default and Custom Comments, and a Default
    one with drip-feed, ids from ``first`` on in the order of ``TYPED``."""
    return [
        SimPackage(first + index, name, ptype, category, rate, low, high, dripfeed=drip,
                   refill=False, cancel=ptype in ("Default", "Subscriptions"))
        for index, (name, ptype, category, rate, low, high, drip) in enumerate(TYPED)
    ]  # fmt: skip


# name, type, category, rate, min, max, dripfeed
TYPED: list[tuple[str, str, str, Decimal, int, int, bool]] = [
    ("Instagram Likes [Drip-feed]", "Default", "Instagram Likes", Decimal("0.15"), 10, 50000, True),
    ("Instagram Starter Package", "Package", "Instagram Packages", Decimal("4.90"), 1, 1, False),
    ("Instagram Comments [Package of 5]", "Custom Comments Package", "Instagram Comments",
     Decimal("3.00"), 1, 5, False),
    ("Instagram Mentions [Usernames]", "Mentions", "Instagram Mentions", Decimal("2.40"), 5, 5000,
     False),
    ("Instagram Mentions [Usernames + Hashtags]", "Mentions with Hashtags", "Instagram Mentions",
     Decimal("2.80"), 5, 5000, False),
    ("Instagram Mentions [Custom List]", "Mentions Custom List", "Instagram Mentions",
     Decimal("2.60"), 5, 5000, False),
    ("Instagram Mentions [Hashtag]", "Mentions Hashtag", "Instagram Mentions", Decimal("1.90"), 100,
     10000, False),
    ("Instagram Mentions [User Followers]", "Mentions User Followers", "Instagram Mentions",
     Decimal("1.70"), 100, 10000, False),
    ("Instagram Mentions [Media Likers]", "Mentions Media Likers", "Instagram Mentions",
     Decimal("1.80"), 100, 10000, False),
    ("Instagram Comment Likes", "Comment Likes", "Instagram Comments", Decimal("0.95"), 20, 5000,
     False),
    ("Instagram Comment Replies", "Comment Replies", "Instagram Comments", Decimal("5.00"), 1, 100,
     False),
    ("Twitter Poll Votes", "Poll", "Twitter Polls", Decimal("0.80"), 50, 20000, False),
    ("Telegram Members [Invites from Groups]", "Invites from Groups", "Telegram Members",
     Decimal("2.10"), 100, 10000, False),
    ("Google Keyword Traffic", "SEO", "Website Traffic", Decimal("0.60"), 100, 100000, False),
    ("Instagram Auto Likes [Subscription]", "Subscriptions", "Instagram Auto Likes",
     Decimal("0.20"), 50, 5000, False),
]  # fmt: skip


def plain_catalog(count: int) -> list[SimPackage]:
    """``count`` services of the eight kinds the catalog always had, ids from 100."""
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
    """A provider's state, thread-safe: every public method may be called while serving.

    The balance moves only as the books say: ``books`` holds every move, so that
    ``opening`` plus the sum of their amounts is the balance at any time. An order placed
    by `add` is charged then, and refunded what it did not deliver when it ends Partial or
    Canceled; that end is booked on the first call after it comes, whatever the call asks
    about, so a ``balance`` answer never waits for someone to ask the order's status.
    """

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
        minute: float = 60.0,
        post_interval: float | None = 30.0,
        today: Callable[[], date] | None = None,
    ) -> None:
        self.dialect = dialect
        self.packages = {p.service: p for p in (packages or default_catalog())}
        self.opening = balance  # the balance the books start from
        self._funds = balance
        self._books: list[BookEntry] = []
        # (when, order id): billed orders the books must look at then without being asked,
        # an order ending Partial or Canceled or a subscription's next post; an entry whose
        # time is no longer the order's ``wake`` was moved and is passed over.
        self._wakes: list[tuple[float, int]] = []
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
        # Seconds of ``clock`` per minute of an order's own fields (drip-feed intervals,
        # subscription delays): 60 for real time, 1 in the demo.
        self.minute = minute
        # Seconds between two posts of an account a subscription follows; None: posts
        # appear only by ``publish``.
        self.post_interval = post_interval
        # The date subscriptions' expiry dates are judged by.
        self.today = today or (lambda: datetime.now(UTC).date())
        # Every `add` refused: its fields (the key left out) and the error it answered.
        self.refused: list[tuple[dict[str, str], str]] = []
        self._next_order = 23500
        self._moved = 0  # calls of move_on so far
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

    # -- the books -----------------------------------------------------------------------

    @property
    def balance(self) -> Decimal:
        with self._lock:
            self._catch_up()
            return self._funds

    @balance.setter
    def balance(self, amount: Decimal) -> None:
        """A test setting the balance: booked as a top-up or a spend of the difference,
        the balance then as the test wrote it ("50" stays "50", an absurd 1e999 stays)."""
        if amount < 0:
            raise ValueError(f"a balance does not go below zero: {amount}")
        with self._lock:
            self._catch_up()
            with localcontext(_WIDE):
                move = amount - self._funds
            if move:
                self._book("topup" if move > 0 else "spend", move, None, to=amount)

    @property
    def books(self) -> list[BookEntry]:
        """Every move of the balance so far, oldest first (a copy)."""
        with self._lock:
            self._catch_up()
            return list(self._books)

    def top_up(self, amount: Decimal) -> None:
        """The reseller adds funds."""
        if amount <= 0:
            raise ValueError(f"a top-up adds funds, {amount} does not")
        with self._lock:
            self._catch_up()
            self._book("topup", amount, None)

    def spend(self, amount: Decimal) -> None:
        """Someone else spends ``amount`` on the same key, behind syncd's back; a provider
        refuses to spend what the balance does not hold."""
        if amount <= 0:
            raise ValueError(f"a spend takes funds, {amount} does not")
        with self._lock:
            self._catch_up()
            if amount > self._funds:
                raise ValueError(f"cannot spend {amount}: the balance is {self._funds}")
            self._book("spend", -amount, None)

    def order_cost(self, order_id: int) -> Decimal:
        """What the books charged order ``order_id`` net of its refunds, as a positive
        amount (0 for an order they never charged)."""
        with self._lock:
            self._catch_up()
            return Decimal(0) - sum(
                (e.amount for e in self._books if e.order == order_id), Decimal(0)
            )

    def booked(self, kind: Kind) -> Decimal:
        """The sum of the books' amounts of ``kind``, signed as the balance moved."""
        with self._lock:
            self._catch_up()
            return sum((e.amount for e in self._books if e.kind == kind), Decimal(0))

    def _book(
        self, kind: Kind, amount: Decimal, order: int | None, *, to: Decimal | None = None
    ) -> None:
        """The one way the balance moves: each move is an entry of the books (``to``: the
        balance it leads to, as written, when a test sets it)."""
        if not amount:
            return
        self._funds = self._funds + amount if to is None else to
        self._books.append(BookEntry(self.clock(), kind, order, amount, self._funds))

    def _catch_up(self) -> None:
        """Book what came due since the last call, whichever order the call is about: the
        refunds of orders that ended short, the charges of subscriptions' posts' orders.
        Only the orders due are looked at (the heap), never every order."""
        now = self.clock()
        while self._wakes and self._wakes[0][0] <= now:
            at, order_id = heapq.heappop(self._wakes)
            order = self.orders[order_id]
            if order.wake != at:
                continue  # moved since; its entry of now is further on
            order.wake = None
            if order.pinned is None:
                self._advance(order)
            self._keep_books(order)

    def _keep_books(self, order: SimOrder) -> None:
        """Book ``order``'s end if it has come, and wake the books when its next is due."""
        self._settle(order)
        at = self._due_at(order)
        if at is None:
            return
        now = self.clock()
        if at <= now:  # due, but not yet ended by a hair of float arithmetic: look again
            at = math.nextafter(now, math.inf)
        if at != order.wake:
            order.wake = at
            heapq.heappush(self._wakes, (at, order.id))

    def _settle(self, order: SimOrder, progress: tuple[str, int, Decimal] | None = None) -> None:
        """Once ``order`` has ended, refund what it was charged beyond what its status says
        it cost (the undelivered part of a Partial, all of a Canceled), once. A
        subscription is charged post by post and never owes a refund; an order the books
        never charged (placed elsewhere, or a run) or one a test pinned is not theirs."""
        if not order.billed or order.settled or order.pinned is not None:
            return
        if order.subscription is not None:
            return
        status, _, charge = progress or self._progress(order)
        if status in _FINAL:
            order.settled = True
            self._book("refund", order.charge - charge, order.id)

    def _due_at(self, order: SimOrder) -> float | None:
        """When the books must look at ``order`` next: when it ends Partial or Canceled,
        or a subscription's next post or post's order; None when nothing of it is left
        to book (most orders: they end Completed, at the cost they were charged)."""
        if not order.billed or order.settled or order.pinned is not None:
            return None
        if (sub := order.subscription) is not None:
            if order.canceled:
                return None
            times = sub.due[:1]
            if sub.next_post is not None and not sub.paused and sub.ended is None:
                times.append(sub.next_post)
            return min(times, default=None)
        if order.drip is not None:  # every run completes; canceled, once the runs placed do
            if not order.canceled:
                return None
            ends = (self.orders[c] for c in order.children)
            return max(
                (c.created + (0 if c.canceled else self.order_duration) for c in ends),
                default=order.created,
            )
        if order.canceled or self._fate(order) != "Completed":
            return order.created + self.order_duration
        return None

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

    def move_on(self, every: int = 10) -> int:
        """Move one in ``every`` plain order a tenth of its way on, a different share at
        each call (ids ending in 0 first, then 1, ...): what a benchmark's steady sweep
        finds changed. An order's status moves when that tenth crosses a step (Pending,
        Processing, In progress), its remains when it is in progress. Returns how many
        orders moved."""
        with self._lock:
            share = self._moved % every
            self._moved += 1
            step = self.order_duration / 10
            moved = 0
            for order in self.orders.values():
                if order.id % every == share and order.pinned is None and not order.canceled:
                    order.created -= step
                    moved += 1
            return moved

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

    @property
    def refused_adds(self) -> int:
        """How many `add` calls were refused (an error answered, no order made)."""
        with self._lock:
            return len(self.refused)

    def sent_fields(self, order_id: int) -> dict[str, str]:
        """The form fields order ``order_id``'s `add` carried, the key left out."""
        with self._lock:
            return dict(self.orders[order_id].fields)

    def run_now(self, order_id: int) -> None:
        """Drip-feed order ``order_id`` places its next run now, not at its interval: the
        later runs move up with it."""
        with self._lock:
            order = self.orders[order_id]
            assert order.drip is not None, f"order {order_id} is not a drip-feed"
            self._advance(order)
            if len(order.children) < order.drip.runs and not order.canceled:
                order.created -= self._next_run(order) - self.clock()
                self._advance(order)

    def publish(self, order_id: int, posts: int = 1) -> None:
        """The account subscription ``order_id`` follows publishes ``posts`` posts now."""
        with self._lock:
            order = self.orders[order_id]
            sub = order.subscription
            assert sub is not None, f"order {order_id} is not a subscription"
            self._advance(order)
            for _ in range(posts):
                self._pick_up(order, sub, self.clock())
            self._advance(order)
            self._keep_books(order)

    def expire(self, order_id: int) -> None:
        """Subscription ``order_id`` reaches its expiry date now."""
        with self._lock:
            order = self.orders[order_id]
            assert order.subscription is not None, f"order {order_id} is not a subscription"
            self._advance(order)
            if order.subscription.ended is None and not order.canceled:
                order.subscription.ended = "Expired"

    def pause(self, order_id: int, *, paused: bool = True) -> None:
        """Subscription ``order_id`` is paused (on the panel's site): it picks up no posts
        until resumed with ``paused=False``."""
        with self._lock:
            order = self.orders[order_id]
            sub = order.subscription
            assert sub is not None, f"order {order_id} is not a subscription"
            self._advance(order)
            sub.paused = paused
            if not paused and self.post_interval is not None:
                sub.next_post = self.clock() + self.post_interval
            self._keep_books(order)

    # -- the actions ---------------------------------------------------------------------

    def answer(self, action: str, form: Mapping[str, str]) -> object:
        """The JSON value ``action`` answers to ``form``; an action it does not know is
        answered as panels answer one."""
        handler = self._handlers.get(action)
        if handler is None:
            return {"error": "Incorrect request"}
        with self._lock:
            self._catch_up()
            return handler(form)

    def catalog_as_object(self) -> dict[str, str]:
        """The catalog as an object of service names, the shape some panels send."""
        with self._lock:
            return {str(p.service): p.name for p in self.packages.values()}

    def _catalog(self, form: Mapping[str, str]) -> object:
        return [self._package(p) for p in self.packages.values() if p.active]

    def _balance(self, form: Mapping[str, str]) -> object:
        answer: dict[str, Any] = {"balance": self._num(self._funds)}
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
        fields = {k: v for k, v in form.items() if k != self.dialect.key_field}
        outcome = self._place(fields)
        if isinstance(outcome, str):
            self.refused.append((fields, outcome))
            return {"error": outcome}
        return {"order": outcome.id}

    def _place(self, fields: dict[str, str]) -> SimOrder | str:
        """The order these `add` fields make, or the error a panel answers instead."""
        d = self.dialect
        raw_service = fields.get(d.package_field, "")
        package = self.packages.get(int(raw_service)) if raw_service.isdigit() else None
        if package is None or not package.active:
            return "Incorrect service ID"
        rule = rules.RULES.get(rules.type_key(package.type))
        if rule is None:
            return "Incorrect service type"
        form = {k: v for k, v in fields.items() if k != d.package_field}
        if error := rules.check(rule, form, dripfeed=package.dripfeed,
                                comments_field=d.comments_field,
                                documented=rules.DOCUMENTED.get(d.name)):  # fmt: skip
            return error
        units = rules.size(rule, form, d.comments_field)
        if error := self._bounds(package, rule, form, units):
            return error
        charge = (
            _charge(package.rate, units) if units is not None
            else Decimal("0") if not rule.link  # charged by the posts it picks up
            else package.rate  # a package's rate is its price
        )  # fmt: skip
        if charge > self._funds:
            return "Not enough funds on balance"
        order = self._new_order(package, form.get("link", ""), units or 0,
                                form.get(d.comments_field))  # fmt: skip
        order.charge = charge
        order.billed = True
        self._book("charge", -charge, order.id)
        order.fields = fields
        if "runs" in form:
            order.quantity = int(form["quantity"])  # a run's; the whole is quantity x runs
            order.drip = SimDripFeed(int(form["runs"]), int(form["interval"]))
        elif not rule.link:
            order.subscription = SimSubscription(
                username=form["username"], low=int(form["min"]), high=int(form["max"]),
                posts=int(form["posts"]) if "posts" in form else None,
                delay=int(form.get("delay", "0")),
                expiry=rules.expiry_date(form["expiry"]) if "expiry" in form else None,
                expiry_text=form.get("expiry"),
                next_post=None if self.post_interval is None
                else order.created + self.post_interval,
                due=[order.created] * int(form.get("old_posts", "0")),
            )  # fmt: skip
        self._advance(order)  # a first run, the orders of old posts: placed at once
        self._keep_books(order)
        return order

    def _bounds(
        self, package: SimPackage, rule: rules.TypeRule, form: Mapping[str, str], units: int | None
    ) -> str | None:
        """Why the order's size (or a subscription's min and max, or expiry) is refused."""
        if units is not None and units < package.min:
            return f"Quantity less than minimal {package.min}"
        if units is not None and units > package.max:
            return f"Quantity more than maximum {package.max}"
        if not rule.link:  # a subscription: each post's order is of min..max units
            if int(form["min"]) < package.min:
                return f"Min less than minimal {package.min}"
            if int(form["max"]) > package.max:
                return f"Max more than maximum {package.max}"
        expiry = rules.expiry_date(form["expiry"]) if "expiry" in form else None
        if expiry is not None and expiry < self.today():
            return "Expiry date is in the past"
        return None

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

    # -- drip-feeds and subscriptions ------------------------------------------------------

    def _advance(self, order: SimOrder) -> None:
        """Place the child orders whose time has come: drip-feed runs, the orders of posts
        a subscription picked up. Done whenever an order is looked at, so that what it
        answers follows the clock without a thread of its own."""
        now = self.clock()
        if order.drip is not None:
            while (
                len(order.children) < order.drip.runs
                and not order.canceled
                and self._next_run(order) <= now
            ):
                self._child(order, order.quantity, self._next_run(order))
        sub = order.subscription
        if sub is None:
            return
        while (
            sub.next_post is not None
            and sub.next_post <= now
            and not sub.paused
            and sub.ended is None
            and not order.canceled
        ):
            at = sub.next_post
            sub.next_post = at + self.post_interval if self.post_interval else None
            self._pick_up(order, sub, at)
        if sub.ended is None and sub.expiry is not None and self.today() > sub.expiry:
            sub.ended = "Expired"
        while sub.due and sub.due[0] <= now and not order.canceled:
            at = sub.due.pop(0)
            units = sub.low + (len(order.children) * 37) % (sub.high - sub.low + 1)
            self._child(order, units, at)

    def _next_run(self, order: SimOrder) -> float:
        assert order.drip is not None
        return order.created + len(order.children) * order.drip.interval * self.minute

    def _pick_up(self, order: SimOrder, sub: SimSubscription, at: float) -> None:
        """A new post, seen at ``at``: its order follows ``delay`` minutes later."""
        if sub.ended is not None or order.canceled or sub.paused:
            return
        sub.picked += 1
        sub.due.append(at + sub.delay * self.minute)
        if sub.posts is not None and sub.picked >= sub.posts:
            sub.ended = "Completed"

    def _child(self, parent: SimOrder, quantity: int, at: float) -> None:
        sub = parent.subscription
        # A post's order is for the post: the account's, numbered as they come.
        link = (
            f"https://instagram.com/{sub.username}/p/{len(parent.children) + 1}"
            if sub
            else parent.link
        )
        child = self._new_order(self.packages[parent.service], link, quantity, None)
        child.created = at
        child.parent = parent.id
        parent.children.append(child.id)
        if sub is not None:  # a subscription is charged as each post's order is placed
            parent.charge += child.charge
            self._book("surcharge", -child.charge, parent.id)

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
        # Nothing was delivered that counts: charge 0 and all of it remains (see _progress),
        # its charge refunded at once; a drip-feed's refund waits for the runs placed.
        order.canceled = True
        self._keep_books(order)
        if order.parent is not None:  # a run canceled: a canceled drip-feed may end sooner
            self._keep_books(self.orders[order.parent])
        return self._num(1)

    def _state(self, order: SimOrder) -> str:
        """The order's status by name, whatever spelling a pin gives it."""
        if order.canceled:
            return "Canceled"
        if order.pinned is not None and "status" in order.pinned:
            spelled = str(order.pinned["status"])
            return _CANONICAL.get(spelled.lower(), spelled)
        self._advance(order)
        progress = self._progress(order)
        self._settle(order, progress)
        return progress[0]

    def _id(self, raw: str) -> object:
        """An id of a batch answer as asked, a number when it is one."""
        return self._num(int(raw)) if raw.isdigit() else raw

    # -- rendering -----------------------------------------------------------------------

    def _order(self, order: SimOrder) -> dict[str, object]:
        if order.pinned is not None:
            return dict(order.pinned)
        self._advance(order)
        status, remains, charge = progress = self._progress(order)
        self._settle(order, progress)  # the books agree with what the reply says it cost
        spelled = (
            _SPELLINGS[status][order.id % len(_SPELLINGS[status])]
            if self.spellings and status in _SPELLINGS
            else status
        )
        answer: dict[str, object] = {"charge": self._num(charge)}
        if order.subscription is None:
            answer["start_counter"] = self._num(order.start_counter) if status != "Pending" else ""
        answer["status"] = spelled
        if order.subscription is None:
            answer["remains"] = self._num(remains)
        if order.drip is not None:
            done = sum(1 for c in order.children if self._state(self.orders[c]) in _FINAL)
            answer["runs"] = self._num(done)
            answer["orders"] = [self._num(c) for c in order.children]
        if (sub := order.subscription) is not None:
            answer["posts"] = self._num(sub.picked)
            if sub.expiry_text is not None:
                answer["expiry"] = sub.expiry_text
            answer["orders"] = [self._num(c) for c in order.children]
        if self.currency:
            answer["currency"] = self.currency
        return answer

    def _progress(self, order: SimOrder) -> tuple[str, int, Decimal]:
        """Pending, then Processing, then In progress, then a final status by order id
        (an order that is a run or a post's order of another always completes)."""
        if order.drip is not None:
            return self._drip_progress(order, order.drip)
        if order.subscription is not None:
            return self._subscription_status(order, order.subscription), 0, order.charge
        if order.canceled:
            return "Canceled", order.quantity, Decimal("0")
        share = (self.clock() - order.created) / self.order_duration if self.order_duration else 1
        if share < 0.1:
            return "Pending", order.quantity, order.charge
        if share < 0.2:
            return "Processing", order.quantity, order.charge
        if share < 1:
            return "In progress", int(order.quantity * (1 - share)), order.charge
        fate = self._fate(order)
        if fate == "Partial":  # the undelivered part is not charged
            remains = order.quantity // 3
            delivered = Decimal(order.quantity - remains) / Decimal(order.quantity)
            return "Partial", remains, (order.charge * delivered).quantize(Decimal("0.00001"))
        if fate == "Canceled":
            return "Canceled", order.quantity, Decimal("0")
        return "Completed", 0, order.charge

    @staticmethod
    def _fate(order: SimOrder) -> str:
        """The status an ordinary order ends in, by its id: most Completed, some Partial or
        Canceled. A run or a post's order of another always completes, and so does a
        Package, which has no units to deliver in part (its quantity is 0)."""
        if order.parent is not None:
            return "Completed"
        if order.id % 10 in (2, 7):
            return "Partial" if order.quantity else "Completed"
        return "Canceled" if order.id % 20 == 13 else "Completed"

    def _drip_progress(self, order: SimOrder, drip: SimDripFeed) -> tuple[str, int, Decimal]:
        """As its runs go: the first run's early statuses, In progress until every run is
        done, then Completed. Canceled, it places no more runs and ends Partial (Canceled
        when no run delivered anything) once the runs placed are done."""
        runs = [self._progress(self.orders[c]) for c in order.children]
        total = order.quantity * drip.runs
        delivered = sum(order.quantity - remains for _, remains, _ in runs)
        finished = sum(1 for status, _, _ in runs if status in _FINAL)
        if finished == drip.runs:
            return "Completed", 0, order.charge
        if order.canceled and finished == len(runs):
            share = Decimal(delivered) / Decimal(total)
            charge = (order.charge * share).quantize(Decimal("0.00001"))
            return ("Partial" if delivered else "Canceled"), total - delivered, charge
        if len(runs) == 1 and runs[0][0] in ("Pending", "Processing"):
            return runs[0][0], total, order.charge
        return "In progress", total - delivered, order.charge

    @staticmethod
    def _subscription_status(order: SimOrder, sub: SimSubscription) -> str:
        if order.canceled:
            return "Canceled"
        if sub.ended is not None:
            return sub.ended
        return "Paused" if sub.paused else "Active"

    def _package(self, p: SimPackage) -> dict[str, object]:
        return {
            "service": p.service if self.numbers_as_json else str(p.service),
            "name": p.name,
            "type": p.type,
            "category": p.category,
            "rate": self._num(p.rate),
            "min": self._num(p.min),
            "max": self._num(p.max),
            "dripfeed": p.dripfeed,
            "refill": bool(p.refill),
            "cancel": bool(p.cancel),
        }

    def _num(self, value: Decimal | int) -> object:
        if not self.numbers_as_json:
            return str(value)
        return value  # Decimals are written as JSON numbers by ()


# Wide enough that a test's absurd balance (1e999999999999999999) is subtracted without
# overflowing, and exactly for any balance a provider could hold.
_WIDE = Context(prec=100, Emax=MAX_EMAX, Emin=MIN_EMIN)


def _split(ids: str) -> list[str]:
    return [i.strip() for i in ids.split(",") if i.strip()]


def _charge(rate: Decimal, quantity: int) -> Decimal:
    return (rate * quantity / 1000).quantize(Decimal("0.00001"), ROUND_HALF_UP)
