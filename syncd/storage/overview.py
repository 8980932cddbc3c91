"""What ``syncd status`` shows, as plain SQL on a driver's connection.

One copy of these queries serves two callers. The ``Storage`` methods of the same names
(``overview``, ``balance_history``, ``lease_holders``, ``webhook_backlog``,
``live_instances``) run them through SQLAlchemy's ``exec_driver_sql`` (``driver.Driver``),
each in its own transaction. ``syncd status`` runs them on a connection of the driver's
own (``read_plainly``: the backend's ``read_plainly``, such as ``sqlite3`` opened
read-only or ``psycopg``), all in one transaction, and so never imports SQLAlchemy, which
alone costs more start-up time than the whole command may take.

Values are fetched as the database holds them and read one at a time (``values``): a
value someone garbled by hand shows as unknown, never as a failure. Statements are
written with ``?`` placeholders, as for ``driver.Driver``; what differs between
databases (the clock, how a true reads) comes from the driver's backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from syncd.lifecycle import HELD
from syncd.models import (
    Instance,
    JobState,
    Lease,
    LedgerSpend,
    OrderState,
    ProviderOverview,
    SendPause,
    WebhookBacklog,
)
from syncd.order_requests import RequestState
from syncd.storage.backends import UnknownBackend, backend_for_url
from syncd.storage.driver import Driver
from syncd.storage.literals import quoted
from syncd.storage.migrations import HEAD
from syncd.storage.values import read_int, read_money, read_text, read_time, readable

T = TypeVar("T")

OPEN_STATES = (OrderState.QUEUED, OrderState.SUBMITTING, OrderState.ACTIVE, OrderState.AMBIGUOUS)

# Only the open orders (OPEN_STATES) of the providers shown are counted: ix_orders_due
# (provider, state, ...) finds them by seeking each (provider, state) pair, so the cost
# follows the open orders, not the years of finished ones a busy shop keeps. Each pair
# is counted on its own, from the index alone: half the time of one count grouped by
# provider and state, which hashes or sorts every open order (a hundred thousand at a
# million orders) on each backend.
_OPEN_STATES = " UNION ALL ".join(
    f"SELECT {quoted(s)}" + (" AS state" if n == 0 else "") for n, s in enumerate(OPEN_STATES)
)
_OPEN_ORDERS = (
    "SELECT p.name, s.state, (SELECT count(*) FROM orders"  # noqa: S608
    " WHERE orders.provider = p.name AND orders.state = s.state)"
    f" FROM providers p CROSS JOIN ({_OPEN_STATES}) s"
)
# Queued orders the price guard holds: their error starts with lifecycle.HELD ({held}:
# the backend's starts_with_sql). Found by ix_orders_held among the held orders alone,
# never by reading the error of every queued order (a second at a million orders on
# MariaDB, whose rows are read one at a time from all over the table).
_HELD_ORDERS_OF = (
    "SELECT provider, count(*) FROM orders WHERE provider IN ({names})"  # noqa: S608
    f" AND state = {quoted(OrderState.QUEUED)} AND {{held}} GROUP BY provider"
)
# Refills and cancellations whose outcome nobody knows: found by ix_order_requests_state
# (state, ...) among the ambiguous ones alone, however many requests were ever made.
_AMBIGUOUS_REQUESTS = (
    "SELECT provider, count(*) FROM order_requests"  # noqa: S608
    f" WHERE state = {quoted(RequestState.AMBIGUOUS)} GROUP BY provider"
)
# ``active IS true`` as SQLAlchemy writes it for each database (on SQLite, ``IS TRUE``
# would also count a 2 or a 'yes' a consumer wrote).
_ACTIVE_PACKAGES = (
    "SELECT provider, count(*) FROM packages WHERE active IS {true} GROUP BY provider"
)
# The database's own time (``base.db_clock`` asks the same backend for SQLAlchemy
# statements): leases are judged by one clock.
_LIVE_LEASES = "SELECT name, holder, epoch, expires_at FROM leases WHERE expires_at >= {now}"
_SNAPSHOTS = "SELECT observed_at, balance FROM balance_snapshots WHERE provider = ?"
_SNAPSHOT_BEFORE = f"{_SNAPSHOTS} AND observed_at < ? ORDER BY id DESC LIMIT 1"
_SNAPSHOTS_SINCE = f"{_SNAPSHOTS} AND observed_at >= ? ORDER BY id"
# The current ledger's rows of a recent window, found by ix_ledger_provider_at (provider,
# at): a day's rows, however long the ledger. Counted per kind and amount by the database
# and multiplied out here, not summed by SUM(), which SQLite would do in binary floating
# point on the text it keeps money in. A row whose time is not in the form syncd writes
# it (a hand-written one, in SQLite) comes with its time ({odd}: NULL for the others), to
# be read here, as it always was: one pass over the window's rows sorts both, and the
# test of the form (costly in SQLite) runs once per row.
_LEDGER = "FROM ledger WHERE provider = ? AND at >= ? AND id > ?"
_LEDGER_COUNTED = (
    "SELECT {kind}, {amount}, {odd}, count(*) {ledger}{upto} GROUP BY {kind}, {amount}{by_odd}"
)
_ODD = "CASE WHEN {plain} THEN NULL ELSE at END"
_SPENDING = ("charge", "surcharge", "refund")
_INSTANCES = "SELECT id, host, pid, version, started_at, heartbeat_at FROM instances"
_SILENT_INSTANCES = "SELECT count(*) FROM instances WHERE heartbeat_at < {since}"
_LIVE_INSTANCES = _INSTANCES + " WHERE heartbeat_at >= {since} ORDER BY id"


def providers(db: Driver) -> list[ProviderOverview]:
    """Every stored provider by name, with its open orders, active packages and jobs."""
    active = dict(db.run(_ACTIVE_PACKAGES.format(true=db.backend.true_sql)))
    open_orders: dict[Any, dict[Any, int]] = {}
    held: dict[Any, int] = {}
    names = [name for (name,) in db.run("SELECT name FROM providers")]
    if names:
        marks = ", ".join("?" * len(names))
        for provider, state, count in db.run(_OPEN_ORDERS):
            open_orders.setdefault(provider, {})[state] = count
        held_sql = db.backend.starts_with_sql("error", HELD)
        held = dict(db.run(_HELD_ORDERS_OF.format(names=marks, held=held_sql), names))
    requests = dict(db.run(_AMBIGUOUS_REQUESTS))
    jobs: dict[Any, list[JobState]] = {}
    for provider, job, error, *times in db.run(
        "SELECT provider, job, last_error, last_started_at, last_success_at,"
        " last_failure_at, failing_since FROM jobs ORDER BY provider, job"
    ):
        started, succeeded, failed, failing = (readable(read_time, at) for at in times)
        jobs.setdefault(provider, []).append(
            JobState(str(job), started, succeeded, failed, readable(read_text, error), failing)
        )
    rows = db.run(
        "SELECT name, url, health, balance_low, currency, balance, balance_checked_at,"
        " catalog_synced_at, last_error, throttled, throttled_since,"
        " answered_at, ledger_opened_at, ledger_since_id, drifting,"
        " send_paused_at, send_resume_at, send_pauses, send_pause_reason"
        " FROM providers ORDER BY name"
    )
    return [
        ProviderOverview(
            name=name,
            url=url,
            currency=readable(read_text, currency),
            balance=readable(read_money, balance),
            balance_checked_at=readable(read_time, checked_at),
            health=health,
            last_error=readable(read_text, error),
            catalog_synced_at=readable(read_time, synced_at),
            active_packages=active.get(name, 0),
            open_orders=sum(open_orders.get(name, {}).values()),
            orders={s.value: open_orders.get(name, {}).get(s.value, 0) for s in OPEN_STATES},
            jobs=tuple(jobs.get(name, [])),
            balance_low=bool(low),
            held=held.get(name, 0),
            ambiguous_requests=requests.get(name, 0),
            throttled=bool(throttled),
            throttled_since=readable(read_time, since) if throttled else None,
            send_pause=stored_pause(*pause),
            answered_at=readable(read_time, answered),
            ledger_opened_at=readable(read_time, opened),
            ledger_since_id=readable(read_int, since_id) or 0,
            drifting=bool(drifting),
        )
        for (name, url, health, low, currency, balance, checked_at, synced_at, error, throttled,
             since, answered, opened, since_id, drifting, *pause) in rows
    ]  # fmt: skip


def stored_pause(paused_at: object, resume_at: object, pauses: object, reason: object) -> SendPause:
    """A provider's send pause from its four ``providers`` columns as stored (read here,
    without SQLAlchemy, for ``syncd status``, and by the claims). A value garbled by
    hand reads as unknown; a start that cannot be read is still a pause, never silently
    lifted."""
    started, resume = readable(read_time, paused_at), readable(read_time, resume_at)
    if paused_at is not None and started is None:
        started = resume
    return SendPause(started, resume, readable(read_int, pauses) or 0, readable(read_text, reason))


def balance_history(db: Driver, provider: str, since: datetime) -> list[tuple[datetime, Decimal]]:
    """Snapshots observed since ``since``, and the last one before it, oldest first."""
    params = (provider, db.time(since))  # as the database stores times, so they compare
    before = db.run(_SNAPSHOT_BEFORE, params)
    window = db.run(_SNAPSHOTS_SINCE, params)
    # A snapshot someone garbled by hand is left out, not a reason to fail.
    read = [(readable(read_time, at), readable(read_money, amount)) for at, amount in before]
    read += [(readable(read_time, at), readable(read_money, amount)) for at, amount in window]
    return [(at, amount) for at, amount in read if at is not None and amount is not None]


def ledger_spend(
    db: Driver, p: ProviderOverview, since: datetime, now: datetime, days: int = 0
) -> LedgerSpend | None:
    """What ``p``'s current ledger holds since ``since`` (or since it opened, if later):
    charges, surcharges and refunds netted as money spent, top-ups, drift (a fall,
    positive); with ``days``, the money spent on each of the last ``days`` UTC days too.
    None when its ledger has not opened. Rows of an earlier ledger (another currency) are
    not counted: a currency switch is no spend."""
    if p.ledger_opened_at is None:
        return None
    start = max(since, p.ledger_opened_at)
    first = now.astimezone(UTC).date() - timedelta(days=days - 1) if days else None
    earliest = min(start, datetime.combine(first, time.min, UTC)) if first else start
    sums = {kind: Decimal(0) for kind in ("charge", "surcharge", "refund", "topup", "drift")}
    daily = (
        dict.fromkeys((first + timedelta(days=n) for n in range(days)), Decimal(0)) if first else {}
    )
    bound = max(earliest, p.ledger_opened_at)
    plain = db.backend.well_formed_time_sql.format(column="at")
    # Rows in the form syncd writes them, counted by the database per kind and amount (a
    # sum of equal amounts is their product with the count, exactly); any other row
    # (SQLite keeps what someone wrote by hand) with its own time. The rows before
    # ``start`` that the days reach back to count for the days alone, and only those of
    # another form are read from them here: the days count the rest below.
    odd: list[tuple[Any, Any, Any, Any]] = []
    for kind, value, at_value, count in _counted(db, p, start, plain, odd=True):
        if at_value is not None:
            odd.append((kind, value, at_value, count))
            continue
        amount = readable(read_money, value)
        if amount is not None and kind in sums:
            sums[kind] += amount * count
    if bound < start:
        odd += db.run(
            f"SELECT kind, amount, at, 1 {_LEDGER} AND at < ? AND {_ODD.format(plain=plain)}"
            " IS NOT NULL",
            (p.name, db.time(bound), p.ledger_since_id, db.time(start)),
        )
    for day in daily:
        midnight = datetime.combine(day, time.min, UTC)
        upto = f" AND at < ? AND kind IN ({quoted(*_SPENDING)}) AND {plain}"
        for kind, value, _, count in _counted(
            db, p, max(midnight, bound), plain, upto, db.time(midnight + timedelta(days=1))
        ):
            amount = readable(read_money, value)
            if amount is not None and kind in sums:
                daily[day] -= amount * count
    for kind, value, at_value, count in odd:
        amount, at = readable(read_money, value), readable(read_time, at_value)
        if amount is None or at is None or kind not in sums:
            continue  # a row garbled by hand counts as nothing
        if at >= start:
            sums[kind] += amount * count
        if kind in _SPENDING and (day := at.astimezone(UTC).date()) in daily:
            daily[day] -= amount * count
    hours = Decimal(max(0, int((now - start).total_seconds()))) / 3600
    return LedgerSpend(
        spent=-(sums["charge"] + sums["surcharge"] + sums["refund"]),
        topups=sums["topup"],
        drift=-sums["drift"],
        hours=hours,
        by_day=tuple(daily.items()),
    )


def _counted(
    db: Driver,
    p: ProviderOverview,
    start: datetime,
    plain: str,
    upto: str = "",
    *more: object,
    odd: bool = False,
) -> list[Any]:
    """(kind, amount, time, rows) of ``p``'s current ledger from ``start`` on: the time
    None for rows whose time is well formed (counted together), with ``odd`` the time of
    each other row; without it, ``upto`` must keep those out."""
    amount = db.backend.money_group_sql.format(column="amount")
    return db.run(
        _LEDGER_COUNTED.format(
            ledger=_LEDGER,
            upto=upto,
            amount=amount,
            kind=db.backend.text_group_sql.format(column="kind"),
            odd=_ODD.format(plain=plain) if odd else "NULL",
            by_odd=", " + _ODD.format(plain=plain) if odd else "",  # PostgreSQL: no NULL
        ),
        (p.name, db.time(start), p.ledger_since_id, *more),
    )


def lease_holders(db: Driver) -> dict[str, Lease]:
    """Every lease that still runs, by name (the database's clock decides)."""
    held = {}
    for name, holder_value, epoch_value, until_value in db.run(
        _LIVE_LEASES.format(now=db.backend.now_sql)
    ):
        holder, epoch = readable(read_text, holder_value), readable(read_int, epoch_value)
        until = readable(read_time, until_value)
        # A row garbled by hand is no lease anyone holds: acquiring it fails on its own
        # (the database cannot judge it expired), for that provider alone.
        if holder is not None and epoch is not None and until is not None:
            held[name] = Lease(name, holder, epoch, until)
    return held


def live_instances(db: Driver, within: float) -> list[Instance]:
    """Instances whose last heartbeat is at most ``within`` seconds old, by id."""
    backend = db.backend
    rows = db.run(
        _LIVE_INSTANCES.format(since=backend.now_plus_sql), (backend.now_plus_param(-within),)
    )
    found = []
    for instance_id, host, pid_value, version, started_value, beat_value in rows:
        started, beat = readable(read_time, started_value), readable(read_time, beat_value)
        pid = readable(read_int, pid_value)
        if started is not None and beat is not None and pid is not None:
            found.append(Instance(str(instance_id), str(host), pid, str(version), started, beat))
    return found


def silent_instances(db: Driver, within: float) -> int:
    """Instances whose last heartbeat is more than ``within`` seconds old: stopped
    without a clean exit (one that stops cleanly removes its row)."""
    backend = db.backend
    rows = db.run(
        _SILENT_INSTANCES.format(since=backend.now_plus_sql), (backend.now_plus_param(-within),)
    )
    return int(rows[0][0]) if rows else 0


@dataclass(frozen=True)
class Monitored:
    """What the metrics export from the database, read in one transaction."""

    providers: list[ProviderOverview]
    backlog: list[WebhookBacklog]
    leases: dict[str, Lease]
    live_instances: int
    silent_instances: int


def monitored(db: Driver, within: float) -> Monitored:
    """The providers, webhooks, leases and instances (live: a heartbeat within
    ``within`` seconds), for one scrape of the metrics."""
    return Monitored(
        providers(db),
        webhook_backlog(db),
        lease_holders(db),
        len(live_instances(db, within)),
        silent_instances(db, within),
    )


def unstored(name: str, url: str) -> ProviderOverview:
    """A configured provider the database holds no row for yet (no syncd process that
    writes has run since it was added): shown as the row it will get, never synced.
    Status reads, and registers nothing: it runs for a role that may only SELECT."""
    return ProviderOverview(
        name=name, url=url, currency=None, balance=None, balance_checked_at=None,
        health="up", last_error=None, catalog_synced_at=None, active_packages=0,
        open_orders=0, orders={s.value: 0 for s in OPEN_STATES}, jobs=(),
    )  # fmt: skip


def webhook_backlog(db: Driver) -> list[WebhookBacklog]:
    """Per webhook: alerts neither delivered nor given up, alerts given up, and the last
    error of an undelivered one."""
    rows = db.run(
        "SELECT d.webhook,"
        # CASE, not FILTER: MariaDB has no FILTER clause.
        " sum(CASE WHEN d.delivered_at IS NULL AND d.failed_at IS NULL THEN 1 ELSE 0 END),"
        " sum(CASE WHEN d.failed_at IS NOT NULL THEN 1 ELSE 0 END),"
        " max(CASE WHEN d.delivered_at IS NULL THEN d.last_error END),"
        " min(CASE WHEN d.delivered_at IS NULL AND d.failed_at IS NULL THEN a.created_at END)"
        " FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id"
        " GROUP BY d.webhook ORDER BY d.webhook"
    )
    return [
        WebhookBacklog(w, int(u), int(f), e, readable(read_time, oldest))
        for w, u, f, e, oldest in rows
    ]


class Snapshot:
    """The status queries on one connection, under the names ``Storage`` gives them."""

    def __init__(self, db: Driver) -> None:
        self.db = db

    def overview(self) -> list[ProviderOverview]:
        return providers(self.db)

    def balance_history(self, provider: str, since: datetime) -> list[tuple[datetime, Decimal]]:
        return balance_history(self.db, provider, since)

    def lease_holders(self) -> dict[str, Lease]:
        return lease_holders(self.db)

    def ledger_spend(
        self, p: ProviderOverview, since: datetime, now: datetime, days: int = 0
    ) -> LedgerSpend | None:
        return ledger_spend(self.db, p, since, now, days)

    def webhook_backlog(self) -> list[WebhookBacklog]:
        return webhook_backlog(self.db)

    def live_instances(self, within: float) -> list[Instance]:
        return live_instances(self.db, within)


def read_plainly(
    url: str, work: Callable[[Snapshot], T | None], *, busy_timeout: float = 5.0
) -> T | None:
    """``work`` on a read-only snapshot of the database at ``url``, through the driver
    alone; None when this way cannot answer as ``Storage`` would, and the caller opens
    the database the full way instead.

    That is: a URL of a form the database's backend does not read plainly (for SQLite
    ``sqlite:///PATH``, for PostgreSQL ``postgresql+psycopg://``); a database file that
    does not exist (opening creates it); a database that is not at the newest revision
    (opening migrates it); ``work`` returning None; or any error of the driver's (missing
    tables, a lock held past the busy timeout, a server out of reach), which the full way
    meets again and reports as it always has.
    """
    try:
        backend = backend_for_url(url)
    except UnknownBackend:
        return None  # the full way says what is wrong with it
    return backend.read_plainly(url, busy_timeout, lambda db: _at_head(db, work))


def _at_head(db: Driver, work: Callable[[Snapshot], T | None]) -> T | None:
    versions = db.run("SELECT version_num FROM alembic_version")
    return work(Snapshot(db)) if versions and versions[0][0] == HEAD else None
