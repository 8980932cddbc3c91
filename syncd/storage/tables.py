"""The tables consumers read and write (docs/schema.md), declared once with SQLModel.

These classes are the schema (Alembic's migrations are checked against them by a test);
the storage layer queries them through SQLAlchemy Core statements, so bulk work never
builds one ORM object per row.  ``jobs`` is syncd's own bookkeeping for ``syncd status``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import JSON, Field, SQLModel

from syncd.lifecycle import HELD
from syncd.models import OrderState
from syncd.order_requests import RequestState
from syncd.storage.backends.sqlite import SQLite
from syncd.storage.literals import quoted, starts_with
from syncd.storage.types import Money, UTCDateTime

_NOW = sa.text("CURRENT_TIMESTAMP")

# Conditions of the partial indexes below, written once: SQLite uses a partial index only
# for a query whose WHERE repeats the index's condition literally (not as bound values).
UNSENT = f"state IN ({quoted(OrderState.QUEUED, OrderState.SUBMITTING)})"
NOT_A_STATE = f"state NOT IN ({quoted(*OrderState)})"
# Queued orders the price guard holds: their error begins with lifecycle.HELD (the form
# Backend.starts_with_sql gives where partial indexes exist).
HELD_ORDERS = f"state = {quoted(OrderState.QUEUED)} AND {starts_with('error', HELD)}"


def _partial(name: str, *columns: str, where: str, **options: Any) -> sa.Index:
    return sa.Index(
        name, *columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where), **options
    )


def _money() -> Any:
    return Field(default=None, sa_type=Money)


def _time(*, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, index=index)


class ProviderRow(SQLModel, table=True):
    __tablename__ = "providers"

    name: str = Field(primary_key=True)
    url: str
    currency: str | None = None
    balance: Decimal | None = _money()
    balance_checked_at: datetime | None = _time()
    health: str = Field(default="up", sa_column_kwargs={"server_default": "up"})
    consecutive_failures: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    last_error: str | None = None
    catalog_synced_at: datetime | None = _time()
    orders_synced_at: datetime | None = _time()
    # syncd's own alert state (not in the public schema): an alert is raised when one of these turns
    # true (or back), and kept here so that a restart never raises it again.
    balance_low: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    auth_failed: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    catalog_suspicious: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # A digest of the last catalog reply applied: the same reply again is not read again.
    catalog_digest: str | None = None
    # Sending paused after a call whose outcome is unknown (migration 0008 says how).
    send_paused_at: datetime | None = _time()
    send_resume_at: datetime | None = _time()
    send_pauses: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    send_pause_reason: str | None = None
    # An unbroken run of 429 answers since then, and whether provider.throttled is raised.
    throttled_since: datetime | None = _time()
    throttled: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # The latest time syncd's clock wrote into this provider's orders or requests
    # (storage/clock_marks.py): one in the future says a clock ran ahead.
    clock_mark: datetime | None = _time()
    # When a call to it last succeeded, to within a minute (migration 0009 says why).
    answered_at: datetime | None = _time()
    # The money ledger's state between balance polls (syncd/ledger.py, migration 0012):
    # when the current ledger opened, in which currency, at which balance, after which
    # ledger id; the unexplained amount held since the last poll, and the last ledger id
    # that poll saw; the last poll that
    # balanced; unexplained falls written since; whether balance.drift is raised.
    ledger_opened_at: datetime | None = _time()
    ledger_currency: str | None = None
    ledger_opening: Decimal | None = _money()
    ledger_since_id: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    ledger_gap: Decimal | None = _money()
    ledger_polled_id: int = Field(
        default=0, sa_type=sa.BigInteger, sa_column_kwargs={"server_default": "0"}
    )
    ledger_balanced_at: datetime | None = _time()
    ledger_drift: Decimal | None = _money()
    drifting: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})


class PackageRow(SQLModel, table=True):
    __tablename__ = "packages"

    provider: str = Field(primary_key=True, foreign_key="providers.name")
    service_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    name: str
    type: str
    category: str
    rate: Decimal = Field(sa_type=Money)
    min: int = Field(sa_type=sa.BigInteger)
    max: int = Field(sa_type=sa.BigInteger)
    active: bool = True
    first_seen_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    removed_at: datetime | None = _time()
    extra: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # Whether the provider offers refills / cancellations of this service (NULL: it does
    # not say).
    refill: bool | None = None
    cancel: bool | None = None


class PackageChangeRow(SQLModel, table=True):
    __tablename__ = "package_changes"
    __table_args__ = (
        sa.Index("ix_package_changes_provider_service", "provider", "service_id"),
        {"sqlite_autoincrement": True},  # ids only ever grow: consumers keep a cursor
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(foreign_key="providers.name")
    service_id: int = Field(sa_type=sa.BigInteger)
    change: str
    field: str | None = None
    old_value: str | None = None
    new_value: str | None = None
    changed_at: datetime = Field(sa_type=UTCDateTime)


class OrderRow(SQLModel, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        sa.UniqueConstraint("provider", "provider_order_id", name="uq_orders_provider_order"),
        sa.Index("ix_orders_due", "provider", "state", "next_check_at"),
        # Rows not sent yet are few among many: finding those of a provider nobody
        # configured never scans the table. Rows in a state that is no state (a
        # consumer's typo) are found the same way.
        _partial("ix_orders_unsent", "provider", "id", where=UNSENT),
        _partial("ix_orders_not_a_state", "id", where=NOT_A_STATE),
        # `syncd report`: the orders sent (or, never sent, created) in its window, and
        # those finished in it, found by range; the cost follows the window, not the
        # shop's years (migration 0013).
        sa.Index("ix_orders_provider_sent", "provider", "submitted_at", "created_at"),
        sa.Index("ix_orders_provider_finished", "provider", "finished_at"),
        # `syncd status`: the orders the price guard holds, counted without reading the
        # error of every queued order (migration 0014). Where partial indexes exist, only
        # those rows are in it; MariaDB indexes every order by the first characters of
        # its error, enough to tell a held one.
        _partial(
            "ix_orders_held",
            "provider",
            "state",
            "error",
            where=HELD_ORDERS,
            mysql_length={"error": len(HELD)},
        ),
        # `syncd report` on SQLite, where a consumer may write a time in any form: the
        # rows whose times it cannot leave to the database, found without judging every
        # row (migration 0015). Typed columns hold no such row: SQLite's alone.
        *(
            sa.Index(name, "provider", "id", sqlite_where=sa.text(odd)).ddl_if(dialect="sqlite")
            for name, odd in SQLite.odd_times_sql.items()
        ),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(foreign_key="providers.name")
    provider_order_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    # NULL only for orders placed elsewhere and tracked with `syncd order track`.
    service_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    link: str | None = None
    quantity: int | None = Field(default=None, sa_type=sa.BigInteger)
    custom_data: str | None = None
    # Defaults live in the database too, so a consumer's INSERT of a queued row is complete.
    state: str = Field(
        default=OrderState.QUEUED.value,
        sa_column_kwargs={"server_default": OrderState.QUEUED.value},
    )
    status: str | None = None
    status_raw: str | None = None
    charge: Decimal | None = _money()
    start_counter: int | None = Field(default=None, sa_type=sa.BigInteger)
    remains: int | None = Field(default=None, sa_type=sa.BigInteger)
    currency: str | None = None
    error: str | None = None
    created_at: datetime = Field(sa_type=UTCDateTime, sa_column_kwargs={"server_default": _NOW})
    submitted_at: datetime | None = _time()
    checked_at: datetime | None = _time()
    next_check_at: datetime | None = _time()
    finished_at: datetime | None = _time()
    # syncd's own bookkeeping, not part of the public schema:
    # who holds a `submitting` row ("host:pid:start") and until when, so that the next run
    # can tell a submission in flight from one whose process died.
    submit_owner: str | None = None
    submit_deadline: datetime | None = _time()
    # "not found" answers in a row; the third makes the order `missing`.
    missing_checks: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # checks in a row that found the order past give_up_after; the third abandons it, so
    # that a clock jumping ahead for a pass or two abandons nothing.
    overdue_checks: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # The price guard: the most the consumer pays per 1000 (written with the order), and
    # the package's rate when syncd first judged the order (or the consumer's own quote).
    max_rate: Decimal | None = _money()
    quoted_rate: Decimal | None = _money()
    # What the order's type needs besides link and quantity, in the provider's own field
    # names, and what its status says beyond the common fields (migration 0010).
    params: Any | None = Field(default=None, sa_type=JSON)
    status_extra: Any | None = Field(default=None, sa_type=JSON)


class OrderChangeRow(SQLModel, table=True):
    __tablename__ = "order_changes"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="orders.id", index=True)
    changed_at: datetime = Field(sa_type=UTCDateTime)
    state_old: str | None = None
    state_new: str | None = None
    status_old: str | None = None
    status_new: str | None = None
    charge_old: Decimal | None = _money()
    charge_new: Decimal | None = _money()
    remains_old: int | None = Field(default=None, sa_type=sa.BigInteger)
    remains_new: int | None = Field(default=None, sa_type=sa.BigInteger)
    start_counter_old: int | None = Field(default=None, sa_type=sa.BigInteger)
    start_counter_new: int | None = Field(default=None, sa_type=sa.BigInteger)
    extra_old: Any | None = Field(default=None, sa_type=JSON)
    extra_new: Any | None = Field(default=None, sa_type=JSON)


class OrderRequestRow(SQLModel, table=True):
    """A refill or a cancellation of an order, asked by a consumer's INSERT (``order_id``,
    ``kind``, ``state = 'queued'``) or by ``syncd order refill`` / ``cancel``."""

    __tablename__ = "order_requests"
    __table_args__ = (
        sa.Index("ix_order_requests_state", "state", "next_check_at"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    # No foreign key: a consumer's row naming no order is rejected with a reason, not
    # refused by the database at its INSERT (SQLite would not check it on every
    # connection anyway).
    order_id: int = Field(sa_type=sa.BigInteger, index=True)
    kind: str  # refill | cancel
    state: str = Field(
        default=RequestState.QUEUED.value,
        sa_column_kwargs={"server_default": RequestState.QUEUED.value},
    )
    provider_request_id: int | None = Field(default=None, sa_type=sa.BigInteger)
    status: str | None = None  # a refill's: Pending, In progress, Completed, Rejected, Unknown
    status_raw: str | None = None
    error: str | None = None
    created_at: datetime = Field(sa_type=UTCDateTime, sa_column_kwargs={"server_default": _NOW})
    sent_at: datetime | None = _time()
    checked_at: datetime | None = _time()
    next_check_at: datetime | None = _time()
    finished_at: datetime | None = _time()
    # syncd's own, as for orders: the provider it was judged for, and who is sending it.
    provider: str | None = None
    submit_owner: str | None = None
    submit_deadline: datetime | None = _time()


class RequestChangeRow(SQLModel, table=True):
    __tablename__ = "request_changes"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(sa_type=sa.BigInteger, index=True)
    order_id: int = Field(sa_type=sa.BigInteger)
    changed_at: datetime = Field(sa_type=UTCDateTime)
    state_old: str | None = None
    state_new: str | None = None
    status_old: str | None = None
    status_new: str | None = None


class BalanceSnapshotRow(SQLModel, table=True):
    __tablename__ = "balance_snapshots"
    __table_args__ = (
        sa.Index("ix_balance_snapshots_provider", "provider", "id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(foreign_key="providers.name")
    balance: Decimal = Field(sa_type=Money)
    currency: str | None = None
    observed_at: datetime = Field(sa_type=UTCDateTime)


class LedgerRow(SQLModel, table=True):
    """Every move of a provider's balance, explained (syncd/ledger.py): a feed, ids in
    commit order like ``order_changes``."""

    __tablename__ = "ledger"
    __table_args__ = (
        sa.Index("ix_ledger_provider", "provider", "id"),
        sa.Index("ix_ledger_provider_at", "provider", "at"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    provider: str = Field(foreign_key="providers.name")
    at: datetime = Field(sa_type=UTCDateTime)
    kind: str  # charge | refund | surcharge | topup | drift
    # No foreign key, as for order_requests: the row stays what it was if an order is
    # ever deleted by hand.
    order_id: int | None = Field(default=None, sa_type=sa.BigInteger, index=True)
    amount: Decimal = Field(sa_type=Money)
    currency: str | None = None
    balance_after: Decimal = Field(sa_type=Money)


class LedgerDayRow(SQLModel, table=True):
    """The ledger by day, syncd's own (``syncd.storage.ledger_days``): one row per stretch
    of a provider's ledger rows written on one UTC day, each continuing the one before,
    with their sums per kind; written in the transaction that writes the rows."""

    __tablename__ = "ledger_days"
    __table_args__ = (sa.Index("ix_ledger_days_provider_at", "provider", "first_at"),)

    provider: str = Field(primary_key=True)
    first_id: int = Field(
        primary_key=True, sa_type=sa.BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    last_id: int = Field(sa_type=sa.BigInteger)
    first_at: datetime = Field(sa_type=UTCDateTime)
    currency: str | None = None
    opening: Decimal = Field(sa_type=Money)  # the balance before its first row
    closing: Decimal = Field(sa_type=Money)  # after its last
    # Summed as `syncd report` shows them (charges and drift positive); NULL: no such row.
    charges: Decimal | None = _money()
    refunds: Decimal | None = _money()
    topups: Decimal | None = _money()
    drift: Decimal | None = _money()
    row_count: int = Field(sa_type=sa.BigInteger)


class AlertRow(SQLModel, table=True):
    __tablename__ = "alerts"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, primary_key=True)
    event: str
    provider: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(sa_type=UTCDateTime)


class AlertDeliveryRow(SQLModel, table=True):
    __tablename__ = "alert_deliveries"

    alert_id: int = Field(
        primary_key=True, foreign_key="alerts.id", sa_column_kwargs={"autoincrement": False}
    )
    webhook: str = Field(primary_key=True)
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_attempt_at: datetime | None = _time(index=True)
    delivered_at: datetime | None = _time()
    failed_at: datetime | None = _time()
    last_error: str | None = None
    # Who is posting this alert right now ("host:pid:start") and until when: a second
    # deliverer (another process) leaves it alone, so one alert is not posted twice.
    claimed_by: str | None = None
    claimed_until: datetime | None = _time()


class JobRow(SQLModel, table=True):
    """Last outcome of each job per provider (not in the public schema; ``syncd status``
    reads it)."""

    __tablename__ = "jobs"

    provider: str = Field(primary_key=True, foreign_key="providers.name")
    job: str = Field(primary_key=True)
    last_started_at: datetime | None = _time()
    last_success_at: datetime | None = _time()
    last_failure_at: datetime | None = _time()
    last_error: str | None = None
    failing_since: datetime | None = _time()


class LeaseRow(SQLModel, table=True):
    """Which instance works for a provider (``name``), until when. Times come from the
    database's clock, never from a host's: hosts' clocks disagree, the database's is one.
    ``epoch`` grows at every new acquisition; writes of a leased job check it (fencing)."""

    __tablename__ = "leases"

    name: str = Field(primary_key=True)
    holder: str  # "host:pid:start", like instances.id
    epoch: int = Field(sa_type=sa.BigInteger)
    acquired_at: datetime = Field(sa_type=UTCDateTime)
    renewed_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class InstanceRow(SQLModel, table=True):
    """A running ``syncd run``: instances that see each other spread the leases."""

    __tablename__ = "instances"

    id: str = Field(primary_key=True)  # "host:pid:start"
    host: str
    pid: int
    version: str
    started_at: datetime = Field(sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime)


class CallPaceRow(SQLModel, table=True):
    """A provider's pace, shared by every process calling it: per ``action`` (``*``: every
    call together, ``requests_per_minute``), ``next_at``, the earliest the next call may
    leave. The ``*`` row also keeps the pause the last 429 asked for, the careful spell
    after it and the next guessed pause. Times come from the database's clock."""

    __tablename__ = "call_pace"

    provider: str = Field(primary_key=True)
    action: str = Field(primary_key=True)
    next_at: datetime | None = _time()
    paused_until: datetime | None = _time()
    careful_until: datetime | None = _time()
    guess: float = Field(default=1.0, sa_type=sa.Float)


def table(model: type[SQLModel]) -> sa.Table:
    return cast(sa.Table, model.__table__)  # type: ignore[attr-defined]


providers = table(ProviderRow)
packages = table(PackageRow)
package_changes = table(PackageChangeRow)
orders = table(OrderRow)
order_changes = table(OrderChangeRow)
order_requests = table(OrderRequestRow)
request_changes = table(RequestChangeRow)
balance_snapshots = table(BalanceSnapshotRow)
ledger = table(LedgerRow)
ledger_days = table(LedgerDayRow)
alerts = table(AlertRow)
alert_deliveries = table(AlertDeliveryRow)
jobs = table(JobRow)
leases = table(LeaseRow)
instances = table(InstanceRow)
call_pace = table(CallPaceRow)
metadata = SQLModel.metadata
