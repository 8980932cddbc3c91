"""Instant pickup: under `syncd run` a queued order a consumer inserts is sent at once,
whatever the orders interval; on PostgreSQL by NOTIFY (and by the poll without it), on
SQLite by a poll that costs one PRAGMA while nobody writes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest

from syncd.jobs.pickup import Pickup, SubmitRun
from syncd.jobs.runner import ProviderRunner, run_pass
from syncd.jobs.submit import submit_orders, submit_queued
from syncd.lifecycle import WAITING_FOR_FUNDS
from syncd.plans import Submission, Verdict
from syncd.simulator import SimulatorServer
from syncd.storage import Storage, open_storage
from syncd.storage.watch import WriteWatch, conninfo, listen
from tests.conftest import (
    OwnMariaDB,
    OwnPostgres,
    make_config,
    mariadb_database,
    provider_config,
    write_config,
)
from tests.helpers import Daemon, claim_one, sql, wait_until


def insert_queued(url: str, link: str = "https://x.example/p") -> int:
    sql(
        url,
        "INSERT INTO orders (provider, service_id, link, quantity, state) "
        "VALUES ('sim', 100, :link, 100, 'queued')",  # costs 0.09
        link=link,
    )
    ((order_id,),) = sql(url, "SELECT max(id) FROM orders")
    return int(order_id)


def state_of(url: str, order_id: int) -> str:
    ((state,),) = sql(url, "SELECT state FROM orders WHERE id = :id", id=order_id)
    return str(state)


# -- the daemon ---------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-poll", "mariadb"])
def daemon_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, bool]]:
    """A database URL for a daemon, and whether it LISTENs (MariaDB cannot: it polls)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'syncd.db'}", False
        return
    if request.param == "mariadb":
        with mariadb_database() as url:
            yield url, False
        return
    url = request.getfixturevalue("pg_url")
    yield url, request.param == "postgresql"


def test_a_queued_order_is_sent_at_once_whatever_the_orders_interval(
    tmp_path: Path,
    daemon_db: tuple[str, bool],
    server: SimulatorServer,
    daemons: list[Daemon],
) -> None:
    url, notify = daemon_db
    config = write_config(tmp_path / "syncd.toml", url, server.url, extra='orders_interval = "1h"')
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[logging]", f"notify = {str(notify).lower()}\n\n[logging]"),
        encoding="utf-8",
    )
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    # The start-up orders pass is over (it would send the order too): from now on only
    # the pickup can, within the hour.
    orders_passes = "SELECT count(*) FROM jobs WHERE job = 'orders' AND last_success_at IS NOT NULL"
    wait_until(lambda: sql(url, orders_passes) == [(1,)])
    wait_until(lambda: sql(url, "SELECT count(*) FROM packages") != [(0,)])
    for n in range(3):
        order_id = insert_queued(url, f"https://x.example/{n}")
        wait_until(lambda: state_of(url, order_id) == "active", timeout=10)  # noqa: B023
    ((calls,),) = sql(url, "SELECT count(*) FROM orders WHERE state = 'active'")
    assert calls == 3 and len(server.provider.orders) == 3  # each sent once
    ((submit_runs,),) = sql(
        url, "SELECT count(*) FROM jobs WHERE job = 'submit' AND last_success_at IS NOT NULL"
    )
    assert submit_runs == 1
    code, _, _, err = daemon.stop()
    assert code == 0
    assert "notify.lost" not in err


# -- the pickup on its own ----------------------------------------------------------------


def test_the_pickup_starts_a_submit_run_once_per_change_of_a_queue(
    storage: Storage, db_url: str
) -> None:
    storage.register_providers(
        [("sim", "https://panel.example/v2"), ("other", "https://o.example")]
    )
    started: list[str] = []

    async def submit(name: str) -> None:
        started.append(name)

    async def scenario() -> list[list[str]]:
        pickup = Pickup(storage, WriteWatch(db_url), held=lambda: ["sim"], submit=submit)
        looks = [await pickup.look()]
        insert_queued(db_url)
        looks.append(await pickup.look())
        await asyncio.sleep(0.01)  # the submit run ends without sending (funds, say)
        looks.append(await pickup.look())  # the same queue: no run every second
        insert_queued(db_url, "https://x.example/second")
        looks.append(await pickup.look())
        await asyncio.sleep(0.01)
        sql(db_url, "INSERT INTO orders (provider, service_id, link, quantity, state) "
                    "VALUES ('other', 100, 'https://x.example/o', 100, 'queued')")  # fmt: skip
        looks.append(await pickup.look())  # not a provider this instance holds
        sql(db_url, "UPDATE orders SET state = 'active', provider_order_id = id "
                    "WHERE provider = 'sim'")  # fmt: skip
        looks.append(await pickup.look())
        insert_queued(db_url, "https://x.example/third")
        looks.append(await pickup.look())  # the queue emptied and filled: a new run
        await asyncio.sleep(0.01)
        return looks

    looks = asyncio.run(scenario())
    assert looks == [[], ["sim"], [], ["sim"], [], [], ["sim"]]
    assert started == ["sim", "sim", "sim"]


def test_a_failed_submit_run_goes_again_as_soon_as_its_queue_emptied(
    storage: Storage, db_url: str
) -> None:
    """Not at its scheduled retry: a FAILING submit job must not outlive the queue it
    failed on (the orders pass sent what waited)."""
    storage.register_providers([("sim", "https://panel.example/v2")])
    runs: list[str] = []

    async def submit(name: str) -> SubmitRun:
        runs.append(name)
        return SubmitRun(ok=len(runs) > 1, interval=3600.0)  # first run fails

    async def scenario() -> list[list[str]]:
        pickup = Pickup(storage, WriteWatch(db_url), held=lambda: ["sim"], submit=submit)
        insert_queued(db_url)
        looks = [await pickup.look()]
        await asyncio.sleep(0.01)  # the run fails; its retry is half an hour away
        looks.append(await pickup.look())  # the same queue: nothing
        sql(db_url, "UPDATE orders SET state = 'active', provider_order_id = id")
        looks.append(await pickup.look())  # emptied: run now, not in half an hour
        await asyncio.sleep(0.01)
        looks.append(await pickup.look())  # ok now: nothing more
        return looks

    assert asyncio.run(scenario()) == [["sim"], [], ["sim"], []]
    assert runs == ["sim", "sim"]


def test_a_failing_look_is_logged_once_and_tried_again(
    storage: Storage, db_url: str, logged: list[MutableMapping[str, Any]]
) -> None:
    async def submit(name: str) -> None:
        pass

    async def scenario() -> None:
        pickup = Pickup(storage, WriteWatch(db_url), held=lambda: ["sim"], submit=submit)
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute("ALTER TABLE orders RENAME TO orders_gone")
        assert await pickup.look() == []
        assert await pickup.look() == []
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute("ALTER TABLE orders_gone RENAME TO orders")
        assert await pickup.look() == []
        events = [entry["event"] for entry in logged]
        assert events == ["pickup.look_failed", "pickup.looking_again"]

    asyncio.run(scenario())


def test_the_write_watch_sees_other_connections_commit_and_nothing_else(
    storage: Storage, db_url: str
) -> None:
    watch = WriteWatch(db_url)
    assert watch.changed()  # the first look knows nothing
    assert not watch.changed()
    assert not watch.changed()
    sql(db_url, "INSERT INTO providers (name, url) VALUES ('x', 'https://x.example')")
    assert watch.changed()
    assert not watch.changed()
    watch.close()
    assert watch.changed()  # reopened: a fresh first look
    assert WriteWatch("postgresql+psycopg://db.example/syncd").changed()  # always: ask


# -- PostgreSQL notifications ------------------------------------------------------------


def test_a_consumer_insert_notifies_even_with_an_absurd_provider_name(
    pg_url: str, pg_storage: Storage
) -> None:
    with psycopg.connect(conninfo(pg_url), autocommit=True) as listener:
        listener.execute("LISTEN syncd_orders")
        name = "p" * 10_000  # far beyond a notification's 8000 bytes
        sql(pg_url, "INSERT INTO providers (name, url) VALUES (:n, 'https://x')",
            n=name)  # fmt: skip
        sql(pg_url, "INSERT INTO orders (provider, service_id, link, quantity) "
            "VALUES (:n, 100, 'https://x.example/p', 100)", n=name)  # fmt: skip
        sql(pg_url, "UPDATE orders SET error = 'no notification for this'")
        # Notifications arrive in the order their transactions committed: everything the
        # statements above sent has arrived once this one has, however slow the machine.
        sql(pg_url, "NOTIFY syncd_orders, 'that is all'")
        heard = []
        for notification in listener.notifies(timeout=60):
            if notification.payload == "that is all":
                break
            heard.append(notification.payload)
    assert heard == ["p" * 100]


def test_the_listener_listens_again_after_losing_its_connection(
    pg_url: str, pg_storage: Storage, logged: list[MutableMapping[str, Any]]
) -> None:
    url = pg_url

    async def scenario() -> list[str]:
        heard: list[str] = []
        task = asyncio.create_task(listen(url, "syncd_orders", heard.append))

        async def hear(payload: str) -> None:
            for _ in range(200):
                await asyncio.to_thread(sql, url, f"NOTIFY syncd_orders, '{payload}'")
                if payload in heard:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"{payload!r} never heard: {heard}")

        await hear("before")
        # What a database restart does to it: the server ends the connection. (Only in
        # this test's database: the server is shared with the tests running beside it.)
        await asyncio.to_thread(
            sql, url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%' "
            "AND pid <> pg_backend_pid()",
        )  # fmt: skip
        await hear("after")
        task.cancel()
        return heard

    heard = asyncio.run(scenario())
    # Each connection starts with a look of the caller's own ("").
    assert heard.count("") == 2 and "before" in heard and "after" in heard
    events = [e["event"] for e in logged]
    assert events.count("notify.lost") == 1 and events.count("notify.listening_again") == 1


def hourly_daemon_sending_one_order(
    tmp_path: Path, url: str, server: SimulatorServer, daemons: list[Daemon], extra: str = ""
) -> Daemon:
    """`syncd run` with an hourly orders pass, ready, with its catalog, having sent one
    order through the pickup."""
    hourly = f'orders_interval = "1h"\n{extra}'
    daemon = Daemon(write_config(tmp_path / "syncd.toml", url, server.url, extra=hourly), tmp_path)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    wait_until(lambda: sql(url, "SELECT count(*) FROM packages") != [(0,)])
    first = insert_queued(url, "https://x.example/first")
    wait_until(lambda: state_of(url, first) == "active", timeout=10)
    return daemon


def test_a_daemon_goes_on_after_the_database_dropped_every_connection(
    tmp_path: Path, pg_url: str, pg_storage: Storage, server: SimulatorServer,
    daemons: list[Daemon],
) -> None:  # fmt: skip
    daemon = hourly_daemon_sending_one_order(tmp_path, pg_url, server, daemons)
    # What a restart of PostgreSQL does to its clients: every connection is cut.
    sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")  # fmt: skip
    second = insert_queued(pg_url, "https://x.example/after")
    wait_until(lambda: state_of(pg_url, second) == "active", timeout=15)  # by the poll, maybe
    listening = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    wait_until(lambda: sql(pg_url, listening) == [(1,)], timeout=10)  # and LISTENing again
    holders = sql(pg_url, "SELECT holder FROM leases WHERE expires_at > now()")
    assert [int(str(h).split(":")[1]) for (h,) in holders] == [daemon.process.pid]
    code, _, _, err = daemon.stop()
    assert code == 0 and "Traceback" not in err
    events = [json.loads(line).get("event") for line in err.splitlines() if line.startswith("{")]
    assert events.count("notify.lost") == 1 and events.count("notify.listening_again") == 1
    assert len(server.provider.orders) == 2


def test_instances_ride_out_a_server_restart_and_an_outage_longer_than_a_lease(
    tmp_path: Path, own_server: OwnPostgres | OwnMariaDB, server: SimulatorServer,
    daemons: list[Daemon],
) -> None:  # fmt: skip
    url, own_postgres = own_server.url, own_server
    lease = '\n[cluster]\nlease_ttl = "6s"'
    daemon = hourly_daemon_sending_one_order(tmp_path, url, server, daemons, extra=lease)

    own_postgres.stop()  # a restart: down for a moment
    own_postgres.start()
    order = insert_queued(url, "https://x.example/1")
    wait_until(lambda: state_of(url, order) == "active", timeout=15)

    own_postgres.stop()  # an outage longer than the lease: the daemon must let go,
    # and tell systemd it holds nothing (waited for, not slept through: its time is up
    # when the daemon says so, however slow the machine)
    daemon.wait_for("0 leases held, database out of reach", timeout=60)
    own_postgres.start()
    order = insert_queued(url, "https://x.example/2")
    wait_until(lambda: state_of(url, order) == "active", timeout=20)
    holders = sql(url, "SELECT holder FROM leases WHERE expires_at > :now", now=datetime.now(UTC))
    assert [int(str(h).split(":")[1]) for (h,) in holders] == [daemon.process.pid]

    code, _, _, err = daemon.stop()
    assert code == 0 and "Traceback" not in err
    events = [json.loads(line).get("event") for line in err.splitlines() if line.startswith("{")]
    assert events.count("leases.database_unreachable") >= 1
    assert "lease.lost" in events  # not renewed within its time: dropped, then taken again
    assert events.count("lease.taken") == 2
    assert len(server.provider.orders) == 3  # each order sent once


def test_orders_waiting_for_funds_are_left_to_the_orders_pass(
    storage: Storage, db_url: str
) -> None:
    """Thousands of orders waiting for funds must not be judged again, nor their rows
    rewritten, each time a new order arrives."""
    storage.register_providers([("sim", "https://panel.example/v2")])
    waiting = insert_queued(db_url, "https://x.example/poor")
    now = datetime.now(UTC)

    def short_of_funds(*_: object) -> Submission:
        return Submission(Verdict.WAIT, f"{WAITING_FOR_FUNDS}estimated cost 1750 is more")

    def claim(fresh_only: bool) -> tuple[object, Submission] | None:
        return claim_one(
            storage, "sim", after=0, only=None, owner="me", deadline=now, now=now,
            decide=short_of_funds, fresh_only=fresh_only,
        )  # fmt: skip

    assert claim(fresh_only=True) is not None  # judged once: it waits, with its reason
    watch = WriteWatch(db_url)
    watch.changed()
    assert claim(fresh_only=True) is None  # the submit job leaves it alone from now on
    assert claim(fresh_only=False) is not None  # the orders pass looks again...
    assert not watch.changed()  # ...and writes nothing while the reason stays the same
    fresh = insert_queued(db_url, "https://x.example/new")
    claimed = claim(fresh_only=True)
    assert claimed is not None and getattr(claimed[0], "id", None) == fresh != waiting


def test_a_provider_taken_over_runs_its_submit_job_once_at_once(
    storage: Storage, db_url: str
) -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def submit(name: str) -> None:
        started.append(name)
        await release.wait()

    async def scenario() -> None:
        pickup = Pickup(storage, WriteWatch(db_url), held=lambda: ["sim"], submit=submit)
        pickup.run_now("sim")  # nothing queued: it runs all the same (dead senders' rows)
        pickup.run_now("sim")  # already running: not a second time
        insert_queued(db_url)
        assert await pickup.look() == []  # running: the look leaves it alone
        release.set()
        await asyncio.sleep(0.01)

    storage.register_providers([("sim", "https://panel.example/v2")])
    asyncio.run(scenario())
    assert started == ["sim"]


BACKLOG = 6000


class TurnsWatched(asyncio.Lock):
    """The submit lock, watched by task name: ``taken`` is set once a task has had a
    turn, ``asked`` once it has asked for one.

    The orders pass asks for its second turn only after the new order has asked for its
    first: whatever the machine's load, the new order is then waiting when the pass lets
    go between two batches. (A pass that kept the lock for all its batches would never
    let go, and the new order would be sent last.)"""

    def __init__(self) -> None:
        super().__init__()
        self.asked: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.taken: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def acquire(self) -> Literal[True]:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        if name == "orders pass" and self.taken[name].is_set():
            await self.asked["new order"].wait()
        self.asked[name].set()
        await super().acquire()
        self.taken[name].set()
        return True


def test_a_new_order_is_sent_while_the_orders_pass_judges_a_backlog_waiting_for_funds(
    db_url: str, server: SimulatorServer
) -> None:
    storage = open_storage(db_url)
    config = make_config(db_url, provider_config(server.url))
    server.provider.balance = Decimal("10.00")
    asyncio.run(run_pass(config, storage, ["catalog", "balance"]))
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.executemany(  # each would cost 90 (0.90 per 1000)
            "INSERT INTO orders (provider, service_id, link, quantity) "
            "VALUES ('sim', 100, ?, 100000)",
            # Enough that judging them takes many transactions (they are judged in
            # batches) and is still going on when the new order arrives.
            [(f"https://x.example/poor/{n}",) for n in range(BACKLOG)],
        )
    finished: list[str] = []

    async def judge_once() -> None:  # they wait for funds from now on, each with its reason
        async with ProviderRunner(config.providers[0], storage) as runner:
            assert (await submit_queued(runner.context)).waiting == BACKLOG

    async def scenario() -> None:
        lock = TurnsWatched()
        async with (
            ProviderRunner(config.providers[0], storage, submit_lock=lock) as orders,
            ProviderRunner(config.providers[0], storage, submit_lock=lock) as pickup,
        ):

            async def backlog() -> None:
                counts = await submit_queued(orders.context)
                assert counts.waiting == BACKLOG
                finished.append("orders pass")

            async def new_order() -> None:
                await lock.taken["orders pass"].wait()  # the orders pass is judging the backlog
                insert_queued(db_url, "https://x.example/affordable")
                await submit_orders(pickup.context)
                finished.append("new order")

            await asyncio.gather(
                asyncio.create_task(backlog(), name="orders pass"),
                asyncio.create_task(new_order(), name="new order"),
            )

    asyncio.run(judge_once())
    asyncio.run(scenario())
    storage.close()
    assert finished == ["new order", "orders pass"]  # it did not wait for the whole pass
    assert [o.link for o in server.provider.orders.values()] == ["https://x.example/affordable"]
