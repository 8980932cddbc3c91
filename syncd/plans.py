"""Intents: what a job decided to write, computed by pure planning functions.

A job fetches, then hands its planner ``plan_*(stored, fetched, now)`` to one storage
call, which reads the stored rows, asks the planner for one of these and writes it, all
in one transaction (the contract is on ``syncd.storage.Storage``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal, NamedTuple

from syncd.models import (
    Balance,
    ChangeKind,
    Event,
    Order,
    OrderState,
    Package,
    SendPause,
    Status,
    StoredPackage,
)


@dataclass(frozen=True, slots=True)
class PackageChange:
    service_id: int
    change: ChangeKind
    field: str | None = None
    old_value: str | None = None
    new_value: str | None = None


# How loud each alert is in the log (every alert is logged once its transaction has
# committed): a warning for bad news, something a person may have to act on; info for
# good news and for what only reports a change.
ALERT_LOG_LEVELS: Final[Mapping[Event, Literal["info", "warning"]]] = {
    Event.BALANCE_LOW: "warning",
    Event.BALANCE_RECOVERED: "info",
    Event.BALANCE_DRIFT: "warning",
    Event.PROVIDER_DOWN: "warning",
    Event.PROVIDER_UP: "info",
    Event.PROVIDER_AUTH_FAILED: "warning",
    Event.PROVIDER_THROTTLED: "warning",
    Event.PROVIDER_UNTHROTTLED: "info",
    Event.CATALOG_SUSPICIOUS: "warning",
    Event.PACKAGE_ADDED: "info",
    Event.PACKAGE_REMOVED: "info",
    Event.PACKAGE_RATE_CHANGED: "info",
    Event.ORDER_AMBIGUOUS: "warning",
    Event.ORDER_MISSING: "warning",
    Event.ORDER_ABANDONED: "warning",
    Event.ORDER_HELD: "warning",
    Event.REQUEST_AMBIGUOUS: "warning",
    Event.INSTANCE_LOST: "warning",
}


@dataclass(frozen=True, slots=True)
class AlertIntent:
    """An alert to write in the same transaction as the change that causes it."""

    event: Event
    provider: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def events(self) -> frozenset[str]:
        """Every event type this alert reports: a catalog summary can cover several."""
        return frozenset({self.event.value, *self.data.get("events", ())})

    @property
    def log_level(self) -> Literal["info", "warning"]:
        """How loud its log line is (``ALERT_LOG_LEVELS``); an event missing there is
        bad news until someone says otherwise."""
        return ALERT_LOG_LEVELS.get(self.event, "warning")


@dataclass(frozen=True)
class CatalogPlan:
    provider: str
    now: datetime
    insert: list[Package] = field(default_factory=list)
    update: list[Package] = field(default_factory=list)  # written whole, active again
    deactivate: list[int] = field(default_factory=list)
    changes: list[PackageChange] = field(default_factory=list)
    unchanged: int = 0
    alerts: list[AlertIntent] = field(default_factory=list)
    # Packages the reply left out that stay active all the same: an entry whose id could
    # not be read may be any of them (see ``plan_catalog``).
    held: list[int] = field(default_factory=list)

    def count(self, kind: ChangeKind) -> int:
        """Packages with a change of ``kind`` (an updated package counts once)."""
        return len({c.service_id for c in self.changes if c.change is kind})


@dataclass(frozen=True)
class BalancePlan:
    provider: str
    now: datetime
    balance: Balance
    snapshot: bool  # the balance differs from the last snapshot: record a new one
    low: bool = False  # below low_balance: kept so that a restart does not alert again
    alerts: list[AlertIntent] = field(default_factory=list)
    # What the ledger made of the poll (a syncd.ledger.Reconciliation), once written.
    ledger: Any = None


# The order columns whose changes become `order_changes` rows, in column order; each is
# `<name>_old` / `<name>_new` there, but `status_extra`, which is `extra_old` / `extra_new`.
ORDER_TRACKED = ("state", "status", "charge", "remains", "start_counter", "status_extra")
CHANGE_COLUMNS = tuple("extra" if name == "status_extra" else name for name in ORDER_TRACKED)


@dataclass(frozen=True, slots=True)
class OrderChange:
    order_id: int
    old: tuple[Any, ...]  # values of ORDER_TRACKED before
    new: tuple[Any, ...]  # and after

    def columns(self) -> dict[str, Any]:
        row: dict[str, Any] = {"order_id": self.order_id}
        for name, old, new in zip(CHANGE_COLUMNS, self.old, self.new, strict=True):
            row[f"{name}_old"] = old
            row[f"{name}_new"] = new
        return row


def tracked_values(order: Order) -> dict[str, Any]:
    """An order's ORDER_TRACKED columns: the "old" side of a diff."""
    return {name: getattr(order, name) for name in ORDER_TRACKED}


def diff_order(order_id: int, old: Mapping[str, Any], new: Mapping[str, Any]) -> OrderChange | None:
    """The change between two views of an order, or None when no tracked column moved.

    ``new`` may name only some columns; the others are taken as unchanged.
    """
    # States and statuses are StrEnums: they compare equal to, and store as, their text.
    before = tuple(old.get(name) for name in ORDER_TRACKED)
    after = tuple(new.get(name, old.get(name)) for name in ORDER_TRACKED)
    return None if before == after else OrderChange(order_id, before, after)


class Keep(enum.Enum):
    """A column an ``OrderUpdate`` leaves as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """The columns one step of an order's life writes; ``KEEP`` leaves a column alone."""

    state: OrderState | Keep = KEEP
    error: str | Keep | None = KEEP
    provider_order_id: int | Keep | None = KEEP
    submitted_at: datetime | Keep | None = KEEP
    submit_owner: str | Keep | None = KEEP
    submit_deadline: datetime | Keep | None = KEEP
    next_check_at: datetime | Keep | None = KEEP
    finished_at: datetime | Keep | None = KEEP
    quoted_rate: Decimal | Keep | None = KEEP

    def written(self) -> dict[str, Any]:
        """Column name → value, for the columns this update writes."""
        return {
            name: value for name in _UPDATE_FIELDS if (value := getattr(self, name)) is not KEEP
        }

    def change(self, order: Order) -> OrderChange | None:
        """The ``order_changes`` row this update makes of ``order``, if any."""
        return diff_order(order.id, tracked_values(order), self.written())


_UPDATE_FIELDS = tuple(OrderUpdate.__dataclass_fields__)


class StatusUpdate(NamedTuple):
    """What one status answer writes to one order (every column a check touches)."""

    order_id: int
    state: OrderState
    status: Status | None
    status_raw: str | None
    charge: Decimal | None
    start_counter: int | None
    remains: int | None
    currency: str | None
    error: str | None
    checked_at: datetime
    next_check_at: datetime | None
    finished_at: datetime | None
    missing_checks: int
    overdue_checks: int
    # Written only when it changed: nearly every answer leaves it as it is.
    status_extra: dict[str, Any] | Keep | None = KEEP


@dataclass(frozen=True)
class StatusPlan:
    """What one status batch changes: one update per order, changes, alerts."""

    now: datetime
    updates: list[StatusUpdate]
    changes: list[OrderChange]
    alerts: list[AlertIntent]
    # Orders checked besides ``updates`` whose answer repeated their row: only their
    # check times were written (``lifecycle.StatusJudge.repeated``).
    repeated: int = 0


@dataclass(frozen=True, slots=True)
class Funds:
    """What is known of a provider's money when an order is judged: the last balance
    read, and (rate, package type, quantity and params as stored) of each order sent
    since (``order_types.sent_cost``)."""

    balance: Decimal
    spent: list[tuple[Decimal, str, object, object]]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an order's life: what it writes, and the alert it raises, if any."""

    update: OrderUpdate
    alert: AlertIntent | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """Where a row no job would take ends up (what is written), why, and the alert that
    raises."""

    update: OrderUpdate
    error: str
    alert: AlertIntent | None = None


class Verdict(enum.Enum):
    SEND = "send"
    REJECT = "reject"  # refused by validation: never sent
    WAIT = "wait"  # valid, but the known balance does not cover it: stays queued
    HOLD = "hold"  # valid, but the package costs more than the order allows: stays queued


@dataclass(frozen=True, slots=True)
class Submission:
    verdict: Verdict
    reason: str | None = None
    cost: Decimal | None = None  # estimated (``order_types.Placement.cost``)
    rate: Decimal | None = None  # the package's rate (per 1000 units) when judged
    # What a verdict to send sends: the form fields of its `add` besides the token, the
    # action and the service, under the provider's dialect (``order_types.placement``).
    fields: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """Where a sent order ends up: active, rejected, back to queued, or ambiguous."""

    state: OrderState
    provider_order_id: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class QueuedOrders:
    """Queued orders as the submission reads them, oldest first, with what judging them
    needs: the catalog row each names (read when asked: judging stops at the first order
    to send) and the provider's funds as last known."""

    orders: list[Order]
    package: Callable[[Order], StoredPackage | None]
    funds: Funds | None
    # The provider's send pause, and whether any order or request of it is being sent
    # (a trial goes alone).
    pause: SendPause = field(default_factory=SendPause)
    busy: bool = False
    # The provider claimed for, as configured (None: the first order's). MariaDB
    # compares 'sim ' equal to 'sim' (its collations pad), so a row naming another
    # provider by a trailing space can be read with this one's orders.
    provider: str | None = None


@dataclass(frozen=True)
class ClaimPlan:
    """What judging queued orders writes: each order judged (in turn, up to the first to
    send) with its verdict, the updates that makes, and the alerts it raises."""

    now: datetime
    judged: list[tuple[Order, Submission]] = field(default_factory=list)
    updates: list[tuple[Order, OrderUpdate]] = field(default_factory=list)
    alerts: list[AlertIntent] = field(default_factory=list)
