"""The storage layer on a real SQLite file: schema, exact money, locks, consumer inserts."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel.sql.sqltypes import AutoString

from syncd.errors import DatabaseGoneError, RateLimitedError, StorageError, TransientError
from syncd.jobs.catalog import plan_catalog
from syncd.jobs.health import plan_health
from syncd.lifecycle import check_order, finish, plan_status_batch, ran_ahead, resolution
from syncd.models import Balance, ChangeKind, Event, Order, OrderState, OrderStatus, Package, Status
from syncd.plans import (
    AlertIntent,
    BalancePlan,
    StatusPlan,
    Submission,
    SubmitOutcome,
    Verdict,
)
from syncd.storage import Storage, open_storage, plain_orders
from syncd.storage import tables as t
from syncd.storage.backends import backend_for
from syncd.storage.backends.mariadb import text_form
from syncd.storage.engine import current_revision, make_engine
from syncd.storage.migrations import HEAD
from syncd.storage.tables import metadata
from syncd.storage.types import UTCDateTime
from tests.helpers import claim_one, when_logged

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PUBLIC_TABLES = {
    "providers": {
        "name", "url", "currency", "balance", "balance_checked_at", "health",
        "consecutive_failures", "last_error", "catalog_synced_at", "orders_synced_at",
    },
    "packages": {
        "provider", "service_id", "name", "type", "category", "rate", "min", "max", "active",
        "first_seen_at", "updated_at", "removed_at", "extra", "refill", "cancel",
    },
    "package_changes": {
        "id", "provider", "service_id", "change", "field", "old_value", "new_value", "changed_at",
    },
    "orders": {
        "id", "provider", "provider_order_id", "service_id", "link", "quantity", "custom_data",
        "state", "status", "status_raw", "charge", "start_counter", "remains", "currency",
        "error", "created_at", "submitted_at", "checked_at", "next_check_at", "finished_at",
    },
    "order_changes": {
        "id", "order_id", "changed_at", "state_old", "state_new", "status_old", "status_new",
        "charge_old", "charge_new", "remains_old", "remains_new", "start_counter_old",
        "start_counter_new",
    },
    "balance_snapshots": {"id", "provider", "balance", "currency", "observed_at"},
    "alerts": {"id", "event", "provider", "payload", "created_at"},
    "alert_deliveries": {
        "alert_id", "webhook", "attempts", "next_attempt_at", "delivered_at", "failed_at",
        "last_error",
    },
}  # fmt: skip


@pytest.fixture
def db_path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///"))


@pytest.fixture
def registered(storage: Storage) -> Storage:
    storage.register_providers([("p", "https://panel.example/api/v2")])
    return storage


@pytest.fixture
def any_registered(any_storage: Storage) -> Storage:
    any_storage.register_providers([("p", "https://panel.example/api/v2")])
    return any_storage


def execute(storage: Storage, sql: str) -> None:
    """Plain SQL as a consumer would send it, outside the storage layer."""
    with storage.engine.connect() as conn:
        conn.exec_driver_sql(sql)
        conn.commit()


def write_balance(storage: Storage, plan: BalancePlan) -> None:
    """Write ``plan`` the way the balance job does, whatever is stored."""
    storage.apply_balance(plan.provider, lambda last, was_low: plan)


def balance_seen(storage: Storage) -> tuple[Balance | None, bool]:
    """The last snapshot of provider p and its low flag, as the balance job's planner is
    handed them (nothing is written)."""
    seen: list[tuple[Balance | None, bool]] = []

    def look(last: Balance | None, was_low: bool) -> BalancePlan:
        seen.append((last, was_low))
        raise LookedOnly

    with pytest.raises(LookedOnly):
        storage.apply_balance("p", look)
    return seen[0]


class LookedOnly(Exception):
    """Ends a transaction that was only there to look."""


def apply_catalog(storage: Storage, fetched: list[Package]) -> None:
    """Sync provider p's catalog to ``fetched``, the way the catalog job does."""
    storage.apply_catalog_reply("p", lambda stored: plan_catalog("p", stored, fetched, NOW))


def raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)


# -- schema (every backend) --------------------------------------------------------------


def test_migration_creates_every_public_table_and_column(any_storage: Storage) -> None:
    inspector = sa.inspect(any_storage.engine)
    for table, columns in PUBLIC_TABLES.items():
        assert {c["name"] for c in inspector.get_columns(table)} >= columns, table


def _string_differs(
    context: MigrationContext,
    inspected_column: Any,
    metadata_column: sa.Column[Any],
    inspected_type: sa.types.TypeEngine[Any],
    metadata_type: sa.types.TypeEngine[Any],
) -> bool | None:
    """Whether a string column's type differs where MariaDB gives a string without a length
    the type ``text_form`` names (a key's VARCHAR(255), else MEDIUMTEXT), while the table
    declarations say VARCHAR(255) for every one; None: Alembic's own comparison."""
    if backend_for(context.dialect).name != "mariadb" or type(metadata_type) is not AutoString:
        return None
    wanted = text_form(metadata_column.table.name, metadata_column.name)
    found = type(inspected_type).__name__
    if isinstance(inspected_type, sa.String) and inspected_type.length is not None:
        found = f"{found}({inspected_type.length})"
    return found != wanted


def test_migrations_match_the_table_declarations(any_storage: Storage) -> None:
    engine = any_storage.engine.dialect.name

    def declared_here(
        item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any
    ) -> bool:
        """An index declared for one engine alone (``ddl_if``: the partial index of odd
        times, SQLite's) is compared there alone, as the migration makes it there alone."""
        only = getattr(item, "_ddl_if", None)
        return only is None or only.dialect in (None, engine)

    with any_storage.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": _string_differs, "include_object": declared_here}
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def _open_when_all_are_ready(url: str, ready: Any, errors: Any) -> None:
    """One process opening storage, at the same moment as the others (a new process:
    Alembic keeps its context in the module, one per process)."""
    ready.wait()
    try:
        open_storage(url).close()
    except StorageError as exc:
        errors.put(str(exc))


def test_processes_opening_a_new_database_at_once_migrate_it_once(any_db_url: str) -> None:
    """Several processes started together on an empty database (a daemon and commands,
    two daemons): each waits for the one migrating, then finds the newest revision."""
    spawn = multiprocessing.get_context("spawn")
    count = 4
    ready, errors = spawn.Barrier(count), spawn.Queue()
    processes = [
        spawn.Process(target=_open_when_all_are_ready, args=(any_db_url, ready, errors))
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [process.exitcode for process in processes] == [0] * count
    engine = make_engine(any_db_url)
    try:
        assert current_revision(engine) == HEAD
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        assert [tuple(row) for row in versions] == [(HEAD,)]
    finally:
        engine.dispose()


def test_the_refill_and_cancel_flags_move_out_of_extra_without_a_change_row(
    any_db_url: str,
) -> None:
    engine = make_engine(any_db_url)
    try:
        config = AlembicConfig()
        config.set_main_option("script_location", str(files("syncd.storage") / "migrations"))
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.execute(sa.text("INSERT INTO providers (name, url) VALUES ('p', 'u')"))
            conn.execute(
                sa.text(
                    "INSERT INTO packages (provider, service_id, name, type, category, rate, "
                    "min, max, active, first_seen_at, updated_at, extra) VALUES ('p', 1, 'n', "
                    "'Default', 'c', 1, 1, 2, true, '2026-01-01', '2026-01-01', :extra)"
                ),
                {"extra": '{"refill": "1", "cancel": false, "dripfeed": true}'},
            )
    finally:
        engine.dispose()
    storage = open_storage(any_db_url)
    try:
        (stored,) = storage.catalog("p").values()
        package = stored.package
        assert (package.refill, package.cancel, package.extra) == (True, False, {"dripfeed": True})
        plan = plan_catalog("p", {1: stored}, [package], NOW)
        assert plan.changes == [] and plan.update == []
    finally:
        storage.close()


def test_opening_twice_keeps_the_data_and_the_revision(
    any_db_url: str, any_registered: Storage
) -> None:
    revision = current_revision(any_registered.engine)
    assert revision is not None
    again = open_storage(any_db_url)
    try:
        assert current_revision(again.engine) == revision
        assert [p.name for p in again.overview()] == ["p"]
    finally:
        again.close()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(storage: Storage, db_path: Path) -> None:
    with storage.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 200
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_an_unopenable_database_is_one_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open database"):
        open_storage(f"sqlite:///{tmp_path / 'missing-dir' / 'syncd.db'}")


# -- money and times -------------------------------------------------------------------


def test_money_is_stored_as_exact_decimal_text(registered: Storage, db_path: Path) -> None:
    rate = Decimal("0.12345678")
    plan = plan_catalog("p", {}, [Package(1, "n", "Default", "c", rate, 1, 2)], NOW)
    registered.apply_catalog_reply("p", lambda stored: plan)
    row = raw(db_path).execute("SELECT rate, typeof(rate) FROM packages").fetchone()
    assert row == ("0.12345678", "text")
    assert registered.catalog("p")[1].package.rate == rate


def test_large_and_tiny_amounts_keep_every_digit(any_registered: Storage) -> None:
    for amount in (Decimal("123456789012.00000001"), Decimal("1E-8"), Decimal("-5.10")):
        write_balance(any_registered, BalancePlan("p", NOW, Balance(amount, "USD"), snapshot=True))
        stored, _ = balance_seen(any_registered)
        assert stored == Balance(amount, "USD")
        assert stored is not None and isinstance(stored.amount, Decimal)


def test_exact_text_in_sqlite(registered: Storage, db_path: Path) -> None:
    write_balance(registered, BalancePlan("p", NOW, Balance(Decimal("1E-8"), "USD"), snapshot=True))
    assert raw(db_path).execute("SELECT balance FROM balance_snapshots").fetchone() == (
        "0.00000001",
    )


def test_a_float_never_reaches_a_money_column(any_registered: Storage) -> None:
    plan = BalancePlan("p", NOW, Balance(0.1, "USD"), snapshot=True)  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        write_balance(any_registered, plan)
    assert balance_seen(any_registered) == (None, False)


def test_times_come_back_as_aware_utc(any_registered: Storage) -> None:
    write_balance(any_registered, BalancePlan("p", NOW, Balance(Decimal(1), None), snapshot=True))
    (overview,) = any_registered.overview()
    assert overview.balance_checked_at == NOW
    assert overview.balance_checked_at.tzinfo is not None


# -- the consumer contract ---------------------------------------------------------------


def test_a_consumer_places_an_order_by_inserting_five_columns(any_registered: Storage) -> None:
    execute(
        any_registered,
        "INSERT INTO orders (provider, service_id, link, quantity, custom_data) "
        "VALUES ('p', 102, 'https://instagram.com/p/abc', 2, 'one\ntwo')",
    )
    orders = sa.table("orders", sa.column("state"), sa.column("created_at", UTCDateTime()))
    with any_registered.engine.connect() as conn:
        state, created = conn.execute(sa.select(orders.c.state, orders.c.created_at)).one()
    assert state == "queued"
    assert abs((created - datetime.now(UTC)).total_seconds()) < 60
    assert any_registered.overview()[0].open_orders == 1


def test_change_ids_only_grow_even_after_deletes(any_registered: Storage) -> None:
    packages = [Package(i, "n", "Default", "c", Decimal(1), 1, 2) for i in (1, 2)]
    apply_catalog(any_registered, packages)
    execute(any_registered, "DELETE FROM package_changes")
    repriced = [Package(1, "n", "Default", "c", Decimal(2), 1, 2)]
    apply_catalog(any_registered, repriced)
    changes = any_registered.package_changes("p")
    assert min(r.id for r in changes) > 2
    assert [r.change for r in changes] == [ChangeKind.UPDATED, ChangeKind.REMOVED]


def test_catalog_round_trip_with_extra_removal_and_restore(any_registered: Storage) -> None:
    packages = [
        Package(
            i, f"n{i}", "Default", "c", Decimal("0.12345678"), 1, 10**12, {"refill": i % 2 == 0}
        )
        for i in range(1, 5)
    ]
    apply_catalog(any_registered, packages)
    apply_catalog(any_registered, packages[:3])
    stored = any_registered.catalog("p")
    assert [stored[i].package for i in range(1, 5)] == packages
    assert [stored[i].active for i in range(1, 5)] == [True, True, True, False]
    assert stored[4].removed_at == NOW
    apply_catalog(any_registered, packages)
    assert any_registered.catalog("p")[4].active
    assert any_registered.overview()[0].active_packages == 4


def test_package_changes_cursor_returns_only_newer_rows(any_registered: Storage) -> None:
    packages = [Package(i, "n", "Default", "c", Decimal(1), 1, 2) for i in range(1, 6)]
    apply_catalog(any_registered, packages)
    first = any_registered.package_changes("p", limit=2)
    rest = any_registered.package_changes("p", after=first[-1].id)
    assert [r.service_id for r in first + rest] == [1, 2, 3, 4, 5]


def test_a_failure_streak_keeps_its_start_until_a_success(any_registered: Storage) -> None:
    later = NOW.replace(hour=13)
    any_registered.record_job_failure("p", "catalog", NOW, "first")
    any_registered.record_job_failure("p", "catalog", later, "second")
    (job,) = any_registered.overview()[0].jobs
    assert (job.failing_since, job.last_failure_at, job.last_error) == (NOW, later, "second")
    any_registered.record_job_success("p", "catalog", later)
    (job,) = any_registered.overview()[0].jobs
    assert not job.failing and job.last_error is None and job.last_success_at == later


# -- a consumer holding the write lock ---------------------------------------------------


@pytest.fixture
def locked(db_path: Path, registered: Storage) -> Iterator[sqlite3.Connection]:
    holder = raw(db_path)
    holder.execute("BEGIN IMMEDIATE")
    yield holder
    if holder.in_transaction:
        holder.execute("ROLLBACK")
    holder.close()


WRITES: dict[str, Callable[[Storage], object]] = {
    "register_providers": lambda s: s.register_providers([("q", "https://q.example/api/v2")]),
    "apply_catalog_reply": lambda s: apply_catalog(
        s, [Package(1, "n", "Default", "c", Decimal(1), 1, 2)]
    ),
    "apply_balance": lambda s: write_balance(
        s, BalancePlan("p", NOW, Balance(Decimal(3), "USD"), snapshot=True)
    ),
    "record_job_start": lambda s: s.record_job_start("p", "catalog", NOW),
    "record_job_success": lambda s: s.record_job_success("p", "catalog", NOW),
    "record_job_failure": lambda s: s.record_job_failure("p", "catalog", NOW, "boom"),
}


@pytest.mark.parametrize("method", WRITES)
def test_every_write_gives_up_on_a_held_lock_with_one_storage_error(
    method: str, locked: sqlite3.Connection, registered: Storage, db_path: Path
) -> None:
    with pytest.raises(StorageError, match="locked"):
        WRITES[method](registered)
    locked.execute("ROLLBACK")
    counts = (
        raw(db_path)
        .execute(
            "SELECT (SELECT count(*) FROM packages), (SELECT count(*) FROM balance_snapshots),"
            " (SELECT count(*) FROM jobs), (SELECT count(*) FROM providers)"
        )
        .fetchone()
    )
    assert counts == (0, 0, 0, 1)


def test_reads_are_not_blocked_by_a_writer(locked: sqlite3.Connection, registered: Storage) -> None:
    assert registered.catalog("p") == {}
    assert registered.balance_history("p", NOW) == []
    assert [p.name for p in registered.overview()] == ["p"]
    assert registered.package_changes("p") == []


def test_a_lock_released_while_waiting_is_waited_for(
    locked: sqlite3.Connection, registered: Storage
) -> None:
    # Released once the write has waited a whole busy timeout and is about to try again.
    with when_logged("storage.locked", lambda: locked.execute("ROLLBACK")):
        WRITES["apply_balance"](registered)
    assert balance_seen(registered) == (Balance(Decimal(3), "USD"), False)


def test_a_lock_held_at_start_up_is_waited_for_like_any_write(tmp_path: Path) -> None:
    # A database still to be migrated: opening one at the newest revision writes nothing.
    fresh = tmp_path / "fresh.db"
    holder = raw(fresh)
    holder.execute("CREATE TABLE consumers_own (a)")
    holder.execute("BEGIN EXCLUSIVE")
    # Released once the migration has waited a whole busy timeout and tries again.
    with when_logged("storage.locked", lambda: holder.execute("ROLLBACK")):
        again = open_storage(f"sqlite:///{fresh}", busy_timeout=0.2)
    assert current_revision(again.engine) == HEAD
    again.close()
    holder.close()


def test_a_database_file_deleted_under_a_running_syncd_fails_every_transaction(
    db_path: Path, registered: Storage
) -> None:
    told: list[DatabaseGoneError] = []
    registered.when_gone = told.append
    db_path.unlink()
    gone = f"the database file {db_path} was deleted while syncd ran; stopping so that nothing"
    with pytest.raises(DatabaseGoneError, match=re.escape(gone)):
        registered.record_job_start("p", "catalog", NOW)
    with pytest.raises(DatabaseGoneError, match="was deleted while syncd ran"):
        registered.overview()
    with pytest.raises(DatabaseGoneError, match="was deleted while syncd ran"):
        registered.record_job_start("p", "catalog", NOW)
    assert not db_path.exists()  # nothing wrote a new file behind the operator's back
    assert len(told) == 1  # the owner (the daemon) is told once, however many notice it


def test_a_restore_moved_over_a_running_syncd_s_file_is_not_overwritten_by_its_wal(
    db_path: Path, registered: Storage, tmp_path: Path
) -> None:
    # The live file's WAL holds commits; the restore is an older copy, without a WAL.
    restored = tmp_path / "restored.db"
    with sqlite3.connect(restored) as conn:
        conn.execute("CREATE TABLE restored_marker (a)")
    conn.close()
    registered.record_job_start("p", "catalog", NOW)
    assert db_path.with_name(db_path.name + "-wal").exists()
    restored.replace(db_path)  # a restore moved over the live file
    with pytest.raises(DatabaseGoneError, match="was replaced by another file while syncd ran"):
        registered.record_job_start("p", "catalog", NOW)
    registered.close()
    # The old WAL is kept aside, and the path reads as the restore, not as the old file.
    assert db_path.with_name(db_path.name + "-wal.orphaned").exists()
    with sqlite3.connect(db_path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert names == {"restored_marker"}


def test_due_orders_pages_visit_every_due_order_once(any_registered: Storage) -> None:
    any_registered.track_orders("p", list(range(1000, 1025)), NOW)
    execute(any_registered, "UPDATE orders SET next_check_at = '2000-01-01 00:00:00'")
    seen: list[int] = []
    cursor = None
    while True:
        page, cursor = any_registered.due_orders("p", NOW, cursor, 7)
        if not page:
            break
        for _, provider_order_id in page:
            assert isinstance(provider_order_id, int)  # as read back from the database
            seen.append(provider_order_id)
    assert sorted(seen) == list(range(1000, 1025))


# -- orders, alerts and health on every backend ------------------------------------------


def test_an_order_goes_from_queued_to_active_through_claim_and_finish(
    any_registered: Storage,
) -> None:
    packages = [Package(7, "n", "Default", "c", Decimal("0.5"), 10, 1000)]
    apply_catalog(any_registered, packages)
    order_id = any_registered.queue_order(
        "p", service_id=7, link="https://x", quantity=100, custom_data=None, now=NOW
    )
    claimed = claim_one(
        any_registered,
        "p",
        after=0,
        only=None,
        owner="me",
        deadline=NOW,
        now=NOW,
        decide=check_order,
    )
    assert claimed is not None
    order, decision = claimed
    assert order.id == order_id and decision.verdict is Verdict.SEND
    assert (
        claim_one(
            any_registered,
            "p",
            after=0,
            only=None,
            owner="me",
            deadline=NOW,
            now=NOW,
            decide=check_order,
        )
        is None
    )  # submitting: nobody else takes it
    any_registered.finish_submission(
        order_id, "me", SubmitOutcome(OrderState.ACTIVE, 900), now=NOW, alert=None, plan=finish
    )
    stored = any_registered.order(order_id)
    assert stored is not None and (stored.state, stored.provider_order_id) == (
        OrderState.ACTIVE,
        900,
    )
    page, _ = any_registered.due_orders("p", NOW, None, 10)
    assert page == [(order_id, 900)]


def test_an_answer_that_comes_after_the_order_was_settled_by_hand_raises_an_alert(
    any_registered: Storage,
) -> None:
    any_registered.set_webhooks([("all", None)])
    order_id = any_registered.queue_order(
        "p", service_id=7, link="x", quantity=1, custom_data=None, now=NOW
    )
    assert claim_one(
        any_registered, "p", after=0, only=None, owner="me", deadline=NOW, now=NOW,
        decide=lambda *_: Submission(Verdict.SEND),
    )  # fmt: skip
    # Another host declared it ambiguous, and an operator abandoned it.
    execute(any_registered, f"UPDATE orders SET state = 'ambiguous' WHERE id = {order_id}")
    assert any_registered.settle_order(
        order_id, OrderState.AMBIGUOUS, resolution("abandon", None, NOW), NOW
    )
    recorded = any_registered.finish_submission(
        order_id, "me", SubmitOutcome(OrderState.ACTIVE, 900),
        now=NOW, alert=None, plan=finish,
    )  # fmt: skip
    assert not recorded
    stored = any_registered.order(order_id)
    assert stored is not None and stored.state is OrderState.ABANDONED
    (delivery,) = any_registered.pending_deliveries("all", 0, 10)
    assert delivery.event == "order.ambiguous"
    assert "took it as its order 900 after it had been settled here" in delivery.text


@pytest.mark.parametrize("any_db_url", ["postgresql"], indirect=True)
def test_a_lock_held_on_postgresql_is_waited_for_a_while_then_fails_the_write(
    any_db_url: str, any_registered: Storage
) -> None:
    holder = sa.create_engine(any_db_url)
    with holder.connect() as conn:
        conn.exec_driver_sql("LOCK TABLE jobs IN EXCLUSIVE MODE")
        with pytest.raises(StorageError, match="locked"):
            any_registered.record_job_start("p", "catalog", NOW)
        conn.rollback()
    holder.dispose()
    any_registered.record_job_start("p", "catalog", NOW)  # free again


def test_alerts_fan_out_to_matching_webhooks_and_track_delivery(any_registered: Storage) -> None:
    any_registered.set_webhooks([("all", None), ("down-only", frozenset({"provider.down"}))])
    alert = AlertIntent(Event.BALANCE_LOW, "p", "low", {"balance": "1"})
    write_balance(
        any_registered,
        BalancePlan("p", NOW, Balance(Decimal(1), "USD"), snapshot=True, low=True, alerts=[alert]),
    )
    assert any_registered.pending_webhooks() == ["all"]
    (delivery,) = any_registered.pending_deliveries("all", 0, 10)
    assert (delivery.event, delivery.text, delivery.data) == (
        "balance.low",
        "low",
        {"balance": "1"},
    )
    any_registered.record_delivery(delivery.alert_id, "all", NOW, error="HTTP 500", retry_at=NOW)
    (backlog,) = any_registered.webhook_backlog()
    assert (backlog.undelivered, backlog.failed, backlog.last_error) == (1, 0, "HTTP 500")
    any_registered.record_delivery(delivery.alert_id, "all", NOW, error=None, retry_at=None)
    assert any_registered.pending_webhooks() == []
    assert balance_seen(any_registered) == (Balance(Decimal(1), "USD"), True)


def test_a_claimed_delivery_is_left_to_its_holder_until_the_claim_runs_out(
    any_registered: Storage,
) -> None:
    any_registered.set_webhooks([("all", None)])
    alert = AlertIntent(Event.BALANCE_LOW, "p", "low")
    write_balance(
        any_registered,
        BalancePlan("p", NOW, Balance(Decimal(1), "USD"), snapshot=True, alerts=[alert]),
    )
    (delivery,) = any_registered.pending_deliveries("all", 0, 10)
    claim = partial(any_registered.claim_delivery, delivery.alert_id, "all")
    later = NOW + timedelta(seconds=30)
    assert claim(owner="a", until=later, now=NOW)
    assert not claim(owner="b", until=later, now=NOW + timedelta(seconds=1))
    assert claim(owner="b", until=later + timedelta(seconds=30), now=later)  # a's ran out
    # a comes back late: its outcome no longer counts, b's claim stands
    assert not any_registered.record_delivery(
        delivery.alert_id, "all", later, error=None, retry_at=None, owner="a"
    )
    assert any_registered.record_delivery(
        delivery.alert_id, "all", later, error=None, retry_at=None, owner="b"
    )
    assert any_registered.pending_webhooks() == []
    assert not claim(owner="c", until=later, now=NOW)  # delivered: nothing to claim


def test_a_claim_set_by_a_clock_far_ahead_counts_as_run_out(any_registered: Storage) -> None:
    any_registered.set_webhooks([("all", None)])
    alert = AlertIntent(Event.BALANCE_LOW, "p", "low")
    write_balance(
        any_registered,
        BalancePlan("p", NOW, Balance(Decimal(1), "USD"), snapshot=True, alerts=[alert]),
    )
    (delivery,) = any_registered.pending_deliveries("all", 0, 10)
    claim = partial(any_registered.claim_delivery, delivery.alert_id, "all")
    ahead = NOW + timedelta(days=1)
    assert claim(owner="a", until=ahead + timedelta(seconds=30), now=ahead)
    assert claim(owner="b", until=NOW + timedelta(seconds=30), now=NOW)


def test_the_throttle_state_survives_a_restart_and_alerts_once(
    any_db_url: str, any_registered: Storage
) -> None:
    limited = RateLimitedError("p", "HTTP 429 rate limited", retry_after=30)

    def outcome(storage: Storage, error: TransientError | None, minutes: int) -> None:
        now = NOW + timedelta(minutes=minutes)
        storage.apply_health("p", now, lambda state: plan_health("p", state, error, now))

    def raised(storage: Storage) -> list[str]:
        with storage.engine.connect() as conn:
            return [e for (e,) in conn.execute(sa.text("SELECT event FROM alerts ORDER BY id"))]

    outcome(any_registered, limited, 0)
    outcome(any_registered, limited, 16)
    assert raised(any_registered) == ["provider.throttled"]
    again = open_storage(any_db_url)  # a restart reads the state it left
    try:
        outcome(again, limited, 20)
        assert raised(again) == ["provider.throttled"]
        with again.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT throttled, throttled_since FROM providers")).one()
        assert bool(row[0]) and row[1] is not None
        outcome(again, None, 21)
        assert raised(again) == ["provider.throttled", "provider.unthrottled"]
    finally:
        again.close()


def test_concurrent_429s_raise_provider_throttled_once(any_db_url: str) -> None:
    """A status sweep's calls meet their 429s at once, each in its own transaction."""
    limited = RateLimitedError("p", "HTTP 429 rate limited", retry_after=30)
    storages = [open_storage(any_db_url) for _ in range(8)]
    try:
        storages[0].register_providers([("p", "https://panel.example/api/v2")])
        storages[0].apply_health("p", NOW, lambda state: plan_health("p", state, limited, NOW))
        later = NOW + timedelta(minutes=20)
        start = threading.Barrier(len(storages))

        def one(storage: Storage) -> None:
            start.wait()
            storage.apply_health("p", later, lambda s: plan_health("p", s, limited, later))

        threads = [threading.Thread(target=one, args=(s,)) for s in storages]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with storages[0].engine.connect() as conn:
            raised = conn.execute(sa.text("SELECT event FROM alerts")).all()
        assert [e for (e,) in raised] == ["provider.throttled"]
    finally:
        for storage in storages:
            storage.close()


def test_health_is_read_and_written_in_one_transaction(any_registered: Storage) -> None:
    error = TransientError("p", "HTTP 502", maybe_processed=True)
    for _ in range(3):
        any_registered.apply_health("p", NOW, lambda state: plan_health("p", state, error, NOW))
    (overview,) = any_registered.overview()
    assert (overview.health, overview.last_error) == ("down", "HTTP 502")


def test_status_answers_are_planned_against_the_rows_as_they_are_now(
    any_registered: Storage,
) -> None:
    ids = any_registered.track_orders("p", [501, 502], NOW)
    answer = OrderStatus(Status.IN_PROGRESS, "In progress", Decimal("0.1"), 5, 10, "USD")
    later = NOW + timedelta(minutes=5)

    def plan(rows: list[Order]) -> StatusPlan:
        return plan_status_batch(
            rows,
            {501: answer, 502: answer},
            later,
            base=timedelta(minutes=2),
            give_up_after=timedelta(days=30),
        )

    written = any_registered.apply_status_answers(sorted(ids.values()), later, plan)
    assert len(written.updates) == 2 and len(written.changes) == 2
    # An answer asked before those rows were last checked is older: it writes nothing.
    stale = any_registered.apply_status_answers(sorted(ids.values()), NOW, plan)
    assert stale.updates == [] and stale.changes == []


def test_a_write_failing_part_way_leaves_neither_the_change_nor_its_alert(
    any_registered: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    any_registered.set_webhooks([("ops", None)])

    def broken(*args: object) -> None:
        raise sa.exc.OperationalError("INSERT INTO alerts", {}, Exception("disk I/O error"))

    monkeypatch.setattr(any_registered, "_insert_alerts", broken)
    alert = AlertIntent(Event.BALANCE_LOW, "p", "low", {})
    plan = BalancePlan(
        "p", NOW, Balance(Decimal(1), "USD"), snapshot=True, low=True, alerts=[alert]
    )
    with pytest.raises(StorageError, match="disk I/O error"):
        write_balance(any_registered, plan)
    assert balance_seen(any_registered) == (None, False)
    assert any_registered.pending_webhooks() == []


def test_a_stopping_process_waits_a_second_for_a_lock_not_a_whole_busy_timeout(
    db_url: str,
) -> None:
    storage = open_storage(db_url, busy_timeout=5.0)
    holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        storage.stop_retrying()
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked"):
            storage.register_providers([("sim", "https://panel.example/v2")])
        assert time.monotonic() - started < 3  # one wait of a second, not 5 s (nor 3 x 5 s)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        storage.close()


def test_a_postgresql_session_idle_in_a_transaction_lets_go_of_its_locks(
    pg_storage: Storage,
) -> None:
    with pg_storage.engine.connect() as conn:
        setting = conn.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar_one()
    assert setting == "10s"  # a paused syncd cannot hold the lease rows against the others


def test_the_head_syncd_knows_is_the_head_of_its_migration_scripts() -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(files("syncd.storage") / "migrations"))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]


def test_tracking_the_ids_another_command_is_tracking_meanwhile(server_storage: Storage) -> None:
    """Two `syncd order track` runs with overlapping ids at once (a server database,
    where the other's rows are unseen until it commits): neither fails, each id is tracked once, and
    each tracked order has one change row, written by whoever inserted it."""
    server_storage.register_providers([("p", "https://panel.example/v2")])
    other = open_storage(str(server_storage.engine.url.render_as_string(hide_password=False)))
    real = plain_orders.tracked
    raced: list[dict[int, int]] = []

    def racing(d: Any, provider: str, ids: Any) -> dict[int, int]:
        found = real(d, provider, ids)
        if not raced:  # the other command commits 502..503 right after this one looked
            raced.append({})
            raced[0] = other.track_orders("p", [502, 503], NOW)
        return found

    with patch.object(plain_orders, "tracked", racing):
        ids = server_storage.track_orders("p", [501, 502, 503, 504], NOW)
    other.close()
    assert sorted(ids) == [501, 502, 503, 504]
    assert ids[502] == raced[0][502] and ids[503] == raced[0][503]
    with server_storage.engine.connect() as conn:
        tracked = conn.exec_driver_sql(
            "SELECT order_id, count(*) FROM order_changes GROUP BY order_id ORDER BY order_id"
        ).all()
    assert [(order_id, count) for order_id, count in tracked] == sorted(
        (local, 1) for local in ids.values()
    )


def test_check_times_a_clock_ahead_wrote_come_back_to_now(any_registered: Storage) -> None:
    storage, now = any_registered, datetime(2026, 3, 1, 12, tzinfo=UTC)
    ahead = now + timedelta(minutes=50)
    storage.track_orders("p", [1, 2, 3], now)
    o = t.orders.c
    with storage.engine.begin() as conn:
        conn.execute(
            sa.update(t.orders)
            .where(o.provider_order_id == 1)
            .values(checked_at=ahead, next_check_at=ahead + timedelta(minutes=4))
        )
        conn.execute(
            sa.update(t.orders)
            .where(o.provider_order_id == 2)
            .values(checked_at=now, next_check_at=now + timedelta(minutes=30))
        )
        conn.execute(
            sa.update(t.orders).where(o.provider_order_id == 3).values(next_check_at=ahead)
        )

    def recover() -> tuple[int, int]:
        return storage.recover_future_checks("p", now, lambda marks: ran_ahead(marks, now))

    def times() -> dict[int, tuple[datetime, datetime]]:
        with storage.engine.connect() as conn:
            found = conn.execute(sa.select(o.provider_order_id, o.checked_at, o.next_check_at))
            return {poid: (checked, due) for poid, checked, due in found}

    assert recover() == (0, 0)  # nothing says a clock ran ahead: no order row is read
    storage.record_job_start("p", "orders", ahead)
    storage.record_orders_synced("p", ahead)
    assert recover() == (2, 0)
    assert times() == {
        1: (now, now),
        2: (now, now + timedelta(minutes=30)),  # checked with the right clock: as it was
        3: (None, now),
    }
    assert storage.last_successes("p") == {}
    with storage.engine.connect() as conn:
        started = conn.execute(sa.select(t.jobs.c.last_started_at)).scalar_one()
        synced = conn.execute(sa.select(t.providers.c.orders_synced_at)).scalar_one()
    assert started == synced == now
    assert recover() == (0, 0)  # the marks are back too: the next pass reads them alone


def test_a_single_write_with_a_clock_ahead_leaves_a_mark_the_repair_reads(
    any_registered: Storage,
) -> None:
    """`syncd order add`, `resolve` and `track` run once with a clock ahead: no pass ran,
    so only the provider's clock mark says so; the repair brings the times and the mark
    back to now. The mark is raised a step at a time, and never lowered but by it."""
    storage, now = any_registered, datetime(2026, 3, 1, 12, tzinfo=UTC)
    ahead = now + timedelta(minutes=50)

    def mark() -> datetime | None:
        with storage.engine.connect() as conn:
            marked: datetime | None = conn.execute(sa.select(t.providers.c.clock_mark)).scalar()
            return marked

    def recover() -> tuple[int, int]:
        return storage.recover_future_checks("p", now, lambda marks: ran_ahead(marks, now))

    apply_catalog(storage, [Package(7, "n", "Default", "c", Decimal("0.5"), 10, 1000)])
    order_id = storage.queue_order(
        "p", service_id=7, link="https://x", quantity=100, custom_data=None, now=now
    )
    claimed = claim_one(
        storage, "p", after=0, only=None, owner="me", deadline=now, now=now, decide=check_order
    )
    assert claimed is not None and mark() == now  # the claim wrote submitted_at
    storage.finish_submission(
        order_id, "me", SubmitOutcome(OrderState.ACTIVE, 900), now=ahead, alert=None, plan=finish
    )
    assert mark() == ahead  # accepted, due "now" by the clock ahead
    assert recover() == (1, 0)
    assert mark() == now
    assert recover() == (0, 0)

    execute(storage, "UPDATE orders SET state = 'ambiguous', provider_order_id = NULL")
    resolved = resolution("provider-order", 901, ahead)
    assert storage.settle_order(order_id, OrderState.AMBIGUOUS, resolved, ahead)
    assert mark() == ahead
    assert recover() == (1, 0)

    storage.track_orders("p", [1], now - timedelta(minutes=10))
    assert mark() == now  # never lowered
    storage.track_orders("p", [2], now + timedelta(seconds=30))
    assert mark() == now  # fresh enough: the statement wrote no row
    storage.track_orders("p", [3], ahead)
    assert mark() == ahead
    assert recover() == (1, 0)


def test_a_consumers_open_insert_blocks_no_claim_answer_or_balance(pg_storage: Storage) -> None:
    """A consumer that inserted an order and has not committed yet (a long transaction of
    its shop) holds the key share lock its foreign key check takes on the provider's row.
    syncd's own writers serialise on that row with a lock that must not wait for it: with
    FOR UPDATE every claim, answer and balance write waited for the consumer's commit
    (a daemon under such a consumer sent a few orders a minute, its jobs failing as
    locked)."""
    pg_storage.register_providers([("sim", "https://panel.example/v2")])
    pg_storage.queue_order(
        "sim", service_id=100, link="https://x.example/p", quantity=100, custom_data=None,
        now=NOW,
    )  # fmt: skip
    consumer = sa.create_engine(pg_storage.engine.url)
    try:
        with consumer.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO orders (provider, service_id, link, quantity)"
                " VALUES ('sim', 100, 'https://x.example/open', 100)"
            )  # left open while syncd works
            send = Submission(Verdict.SEND)
            claimed = claim_one(pg_storage, "sim", after=0, only=None, owner="me", deadline=NOW,
                                now=NOW, decide=lambda *_: send)  # fmt: skip
            assert claimed is not None and claimed[1].verdict is Verdict.SEND
            recorded = pg_storage.finish_submission(
                claimed[0].id, "me", SubmitOutcome(OrderState.ACTIVE, 900), now=NOW,
                alert=None, plan=finish,
            )  # fmt: skip
            assert recorded is OrderState.ACTIVE
            pg_storage.apply_health("sim", NOW, lambda state: plan_health("sim", state, None, NOW))
            balance = BalancePlan("sim", NOW, Balance(Decimal("50"), "USD"), snapshot=True)
            pg_storage.apply_balance("sim", lambda *_: balance)
    finally:
        consumer.dispose()
    # The consumer's order arrived once it committed, queued for the next claim.
    assert [o.link for o in pg_storage.orders(state=OrderState.QUEUED)] == [
        "https://x.example/open"
    ]
