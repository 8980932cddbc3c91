"""syncd's own typed models: what the provider client returns and what jobs plan with.

Nothing here imports httpx or SQLAlchemy; the client and the storage layer translate at
their boundaries so the rest of the code speaks only these types.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Final


class Status(enum.StrEnum):
    """Canonical order status. The provider's own text is kept beside it."""

    PENDING = "Pending"
    PROCESSING = "Processing"
    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    PARTIAL = "Partial"
    CANCELED = "Canceled"
    REFUNDED = "Refunded"
    FAILED = "Failed"
    PAUSED = "Paused"  # a subscription on hold: it goes on later
    EXPIRED = "Expired"  # a subscription past its expiry: over
    UNKNOWN = "Unknown"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        Status.COMPLETED, Status.PARTIAL, Status.CANCELED, Status.REFUNDED, Status.FAILED,
        Status.EXPIRED,
    }
)  # fmt: skip

# Keys are spellings folded by _fold(): lower case, no spaces, underscores or hyphens.
_STATUS_SPELLINGS = {
    "pending": Status.PENDING,
    "processing": Status.PROCESSING,
    "inprogress": Status.IN_PROGRESS,
    "inprogess": Status.IN_PROGRESS,  # a provider's typo, sent for every order it runs
    "active": Status.IN_PROGRESS,  # a subscription's word for it, and some panels'
    "paused": Status.PAUSED,
    "expired": Status.EXPIRED,
    "completed": Status.COMPLETED,
    "complete": Status.COMPLETED,
    "partial": Status.PARTIAL,
    "partiallycompleted": Status.PARTIAL,
    "canceled": Status.CANCELED,
    "cancelled": Status.CANCELED,
    "refunded": Status.REFUNDED,
    "fail": Status.FAILED,
    "failed": Status.FAILED,
    "error": Status.FAILED,
}


_SEPARATORS = re.compile(r"[\s_\-]+")
# Status texts already mapped. A provider sends the same handful of texts for every order
# of every sweep, so a text is folded once; but a hostile one could send a new text each
# time, so the memory is bounded: when full, it starts over. Only short texts are kept
# (every real status is a word or two), so the bound holds in bytes too.
_SEEN_STATUSES: dict[str, Status] = {}
_SEEN_STATUSES_LIMIT: Final = 256
_SEEN_STATUS_LENGTH: Final = 40


def _fold(text: str) -> str:
    return _SEPARATORS.sub("", text).lower()


def canonical_status(raw: str) -> Status:
    """Map a provider's status text to the canonical status; unknown text is ``Unknown``."""
    status = _SEEN_STATUSES.get(raw)
    if status is not None:
        return status
    status = _STATUS_SPELLINGS.get(_fold(raw), Status.UNKNOWN)
    if len(raw) <= _SEEN_STATUS_LENGTH:
        if len(_SEEN_STATUSES) >= _SEEN_STATUSES_LIMIT:
            _SEEN_STATUSES.clear()
        _SEEN_STATUSES[raw] = status
    return status


class OrderState(enum.StrEnum):
    """Where an order is in syncd's life cycle (docs/schema.md)."""

    QUEUED = "queued"
    SUBMITTING = "submitting"
    ACTIVE = "active"
    DONE = "done"
    REJECTED = "rejected"
    AMBIGUOUS = "ambiguous"
    MISSING = "missing"
    ABANDONED = "abandoned"


class ChangeKind(enum.StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    RESTORED = "restored"
    UPDATED = "updated"


@dataclass(frozen=True, slots=True)
class Package:
    """One service of a provider's catalog, as the provider describes it."""

    service_id: int
    name: str
    type: str
    category: str
    rate: Decimal  # per 1000
    min: int
    max: int
    extra: dict[str, Any] = field(default_factory=dict)
    refill: bool | None = None  # offers refills; None: the provider does not say
    cancel: bool | None = None  # accepts cancellations; None: the provider does not say


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """A catalog entry that could not be read; ``service_id`` when at least that was."""

    index: int
    service_id: int | None
    reason: str

    def __str__(self) -> str:
        where = f"#{self.service_id}" if self.service_id is not None else f"entry {self.index}"
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class CatalogReply:
    """A catalog reply as decoded JSON, not read yet, and a digest of its bytes."""

    value: object
    digest: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """A catalog reply: the packages read, and the entries that could not be."""

    packages: list[Package]
    skipped: list[SkippedEntry]


@dataclass(frozen=True, slots=True)
class StoredPackage:
    """A catalog row as the database holds it."""

    package: Package
    active: bool
    removed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Balance:
    amount: Decimal
    currency: str | None  # some providers leave it out; unknown also when it is unreadable
    # Why a currency the reply did hold was taken as unknown (``currency: not a currency
    # code: 840``), for the logs; None when it was read or absent.
    currency_problem: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class OrderStatus:
    """A provider's answer about one order."""

    status: Status
    status_raw: str
    charge: Decimal | None
    start_counter: int | None
    remains: int | None  # may be negative or larger than the quantity: kept as sent
    currency: str | None
    # Drip-feed runs and child orders, a subscription's posts and expiry, read by
    # ``syncd.status_extra``; None when the answer carries none of them.
    extra: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class OrderLookupError:
    """A per-order error inside a multi-status reply (e.g. "Order Not found")."""

    message: str


@dataclass(frozen=True, slots=True)
class UnreadableAnswer:
    """A multi-status entry that is neither a status nor an error (no status, a charge of
    "NaN"...): the provider answered about the order, but what it said cannot be read."""

    message: str


# What a multi-status reply says about one order.
Answer = OrderStatus | OrderLookupError | UnreadableAnswer


class RequestKind(enum.StrEnum):
    """What a consumer may ask the provider to do with an order it placed."""

    REFILL = "refill"
    CANCEL = "cancel"


class RefillStatus(enum.StrEnum):
    """A refill's canonical status; the provider's own text is kept beside it."""

    PENDING = "Pending"
    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    REJECTED = "Rejected"
    UNKNOWN = "Unknown"

    @property
    def is_final(self) -> bool:
        return self in (RefillStatus.COMPLETED, RefillStatus.REJECTED)


_REFILL_SPELLINGS = {
    "pending": RefillStatus.PENDING,
    "inprogress": RefillStatus.IN_PROGRESS,
    "processing": RefillStatus.IN_PROGRESS,
    "active": RefillStatus.IN_PROGRESS,
    "completed": RefillStatus.COMPLETED,
    "complete": RefillStatus.COMPLETED,
    "success": RefillStatus.COMPLETED,
    "rejected": RefillStatus.REJECTED,
    "canceled": RefillStatus.REJECTED,
    "cancelled": RefillStatus.REJECTED,
    "failed": RefillStatus.REJECTED,
    "error": RefillStatus.REJECTED,
}


def canonical_refill_status(raw: str) -> RefillStatus:
    """A provider's refill status text as a canonical status; unknown text is ``Unknown``
    (never silently Pending)."""
    return _REFILL_SPELLINGS.get(_fold(raw), RefillStatus.UNKNOWN)


@dataclass(frozen=True, slots=True)
class RequestTaken:
    """The provider took a refill or a cancellation; a refill comes with its id."""

    request_id: int | None


@dataclass(frozen=True, slots=True)
class RequestRefused:
    """The provider refused this one request ("Order not eligible for refill.")."""

    message: str


# What a refill or cancel reply says about one order. An order the reply leaves out is
# absent: the provider may or may not have acted on it.
RequestAnswer = RequestTaken | RequestRefused | UnreadableAnswer


@dataclass(frozen=True, slots=True)
class RefillState:
    status: RefillStatus
    status_raw: str


# What a refill_status reply says about one refill.
RefillAnswer = RefillState | OrderLookupError | UnreadableAnswer


class Event(enum.StrEnum):
    """Alert event types; webhooks subscribe to these names."""

    BALANCE_LOW = "balance.low"
    BALANCE_RECOVERED = "balance.recovered"
    BALANCE_DRIFT = "balance.drift"  # the balance fell more than the ledger explains
    PROVIDER_DOWN = "provider.down"
    PROVIDER_UP = "provider.up"
    PROVIDER_AUTH_FAILED = "provider.auth_failed"
    PROVIDER_THROTTLED = "provider.throttled"  # it has answered only 429 for throttled_after
    PROVIDER_UNTHROTTLED = "provider.unthrottled"  # it answers again after provider.throttled
    CATALOG_SUSPICIOUS = "catalog.suspicious"
    PACKAGE_ADDED = "package.added"
    PACKAGE_REMOVED = "package.removed"
    PACKAGE_RATE_CHANGED = "package.rate_changed"
    ORDER_AMBIGUOUS = "order.ambiguous"
    ORDER_MISSING = "order.missing"
    ORDER_ABANDONED = "order.abandoned"
    ORDER_HELD = "order.held"  # the price guard keeps a queued order from being sent
    REQUEST_AMBIGUOUS = "request.ambiguous"  # a refill or cancel may or may not have arrived
    INSTANCE_LOST = "instance.lost"  # a lease taken over from a holder that stopped renewing


@dataclass(frozen=True, slots=True)
class JobState:
    """The last outcome of one job of one provider."""

    job: str
    last_started_at: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    failing_since: datetime | None

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


@dataclass(frozen=True, slots=True)
class Lease:
    """An instance's right to work for one provider, until ``expires_at`` (the database's
    clock). ``epoch`` grows at every new acquisition: writes check it (fencing)."""

    name: str
    holder: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Instance:
    """A running ``syncd run``, as the ``instances`` table knows it."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True, slots=True)
class SendPause:
    """Whether sending to a provider is paused after a call whose outcome was unknown
    (``syncd.send_pause`` has the rules): since when, until when, how many unknown
    outcomes in a row, and why."""

    paused_at: datetime | None = None
    resume_at: datetime | None = None
    pauses: int = 0
    reason: str | None = None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """A row of ``ledger`` as ``syncd report`` reads it (docs/ledger.md): ``amount``
    signed as the balance moves, ``balance_after`` the running balance after it."""

    id: int
    at: datetime
    kind: str
    amount: Decimal
    currency: str | None
    balance_after: Decimal


@dataclass(frozen=True, slots=True)
class LedgerStretch:
    """Consecutive rows of one provider's ledger written on one UTC day, each continuing
    the one before (same currency, its balance before it the previous one's after), as
    ``ledger_days`` keeps them: what a line of ``syncd report``'s ledger takes of them is
    their sums, so it reads one of these instead of the rows. ``charges`` (charge and
    surcharge rows), ``refunds``, ``topups``, ``drift`` are summed as the report shows
    them (charges and drift positive); None where no row of that kind is in it."""

    id: int  # its first row's
    last_id: int
    at: datetime  # its first row's
    currency: str | None
    opening: Decimal  # the balance before its first row: balance_after - amount
    balance_after: Decimal  # after its last row
    charges: Decimal | None = None
    refunds: Decimal | None = None
    topups: Decimal | None = None
    drift: Decimal | None = None
    rows: int = 1


@dataclass(frozen=True, slots=True)
class LedgerWindow:
    """One provider's ledger rows written since a moment, oldest first, with the row just
    before them (None: there is none) and the current ledger's currency and running
    balance (``opened`` false: its ledger has not opened, no balance poll yet)."""

    provider: str
    # The rows one by one, or stretches of them (``LedgerStretch``), by id.
    rows: tuple[LedgerRecord | LedgerStretch, ...]
    before: LedgerRecord | LedgerStretch | None
    opened: bool = False
    currency: str | None = None
    balance: Decimal | None = None
    since_id: int = 0  # the current ledger's rows have a higher id


@dataclass(frozen=True, slots=True)
class LedgerSpend:
    """What the current ledger of a provider holds of a recent window (``syncd status``):
    ``spent`` the charges, surcharges and refunds netted (positive: money spent),
    ``topups`` the top-ups, ``drift`` the unexplained falls (positive: money gone)."""

    spent: Decimal
    topups: Decimal
    drift: Decimal
    hours: Decimal  # the window's length, shorter when the ledger opened within it
    # Money spent per UTC day over the picture's days, oldest first, when it was asked.
    by_day: tuple[tuple[date, Decimal], ...] = ()


@dataclass(frozen=True, slots=True)
class ProviderOverview:
    """What ``syncd status`` shows for one provider."""

    name: str
    url: str
    currency: str | None
    balance: Decimal | None
    balance_checked_at: datetime | None
    health: str
    last_error: str | None
    catalog_synced_at: datetime | None
    active_packages: int
    open_orders: int
    orders: dict[str, int]  # open orders by state: queued, submitting, active, ambiguous
    jobs: tuple[JobState, ...]
    balance_low: bool = False
    runway_hours: Decimal | None = None  # at the last 24 h spend rate; None: no spend seen
    lease: Lease | None = None  # the instance working for it now, if any
    held: int = 0  # queued orders the price guard holds (counted among the queued)
    # Refills and cancellations sent whose outcome is unknown, for a person to check.
    ambiguous_requests: int = 0
    # provider.throttled is raised: nothing but 429s since ``throttled_since``.
    throttled: bool = False
    throttled_since: datetime | None = None
    # Balance snapshots of the last days (and the one before), oldest first: the pictures
    # `syncd status` draws on a terminal.
    history: tuple[tuple[datetime, Decimal], ...] = ()
    # Sending paused after a call whose outcome was unknown (not paused: all empty).
    send_pause: SendPause = field(default_factory=SendPause)
    # When a call to it last succeeded (to within a minute); None: never, or unreadable.
    answered_at: datetime | None = None
    # The money ledger (docs/ledger.md): when the current one opened (None: not yet),
    # the id its rows follow, whether balance.drift is raised, and the last 24 h by it.
    ledger_opened_at: datetime | None = None
    ledger_since_id: int = 0
    drifting: bool = False
    ledger_24h: LedgerSpend | None = None


@dataclass(frozen=True, slots=True)
class PackageChangeRecord:
    """A row of ``package_changes`` as consumers read it."""

    id: int
    provider: str
    service_id: int
    change: ChangeKind
    field: str | None
    old_value: str | None
    new_value: str | None
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class Order:
    """An ``orders`` row as the order jobs and commands see it.

    A row a consumer wrote may hold values syncd cannot read: those fields are None and
    ``problem`` says why; a ``state`` that is no state is kept as its text.
    """

    id: int
    provider: str
    provider_order_id: int | None
    service_id: int | None
    link: str | None
    quantity: int | None
    custom_data: str | None
    state: OrderState | str
    status: Status | None
    status_raw: str | None
    charge: Decimal | None
    start_counter: int | None
    remains: int | None
    currency: str | None
    error: str | None
    created_at: datetime | None
    submitted_at: datetime | None = None
    checked_at: datetime | None = None
    next_check_at: datetime | None = None
    finished_at: datetime | None = None
    missing_checks: int = 0  # "not found" answers in a row
    overdue_checks: int = 0  # checks in a row that found it past give_up_after
    max_rate: Decimal | None = None  # the price guard: the most it may cost per 1000
    quoted_rate: Decimal | None = None  # the package's rate when syncd first judged it
    # What the provider's status says beyond the common fields (``syncd.status_extra``).
    status_extra: dict[str, Any] | None = None
    problem: str | None = None  # what of the row cannot be read
    # ``params`` as the row holds it (JSON text, bytes, a decoded object, or garbage):
    # read only where queued orders are judged (``order_types`` reads it), None elsewhere.
    params: object = None


@dataclass(frozen=True, slots=True)
class Health:
    """A provider's health as ``providers`` keeps it."""

    health: str  # "up" | "down"
    consecutive_failures: int
    last_error: str | None
    auth_failed: bool
    throttled_since: datetime | None = None  # the first 429 of an unbroken run of them
    throttled: bool = False  # provider.throttled raised (and provider.unthrottled not yet)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert on its way to one webhook."""

    alert_id: int
    webhook: str
    attempts: int
    event: str
    provider: str | None
    text: str
    data: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """What ``syncd status`` shows per webhook."""

    webhook: str
    undelivered: int
    failed: int
    last_error: str | None
    oldest: datetime | None = None  # when the oldest undelivered alert was raised
