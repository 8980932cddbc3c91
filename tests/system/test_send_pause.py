"""The send pause end to end: real HTTP to the simulator, a real database, a fake clock.

A provider that leaves an order's fate unknown stops getting orders until a harmless
call answers and one order goes alone; what the log, the job's summary and `syncd
status` say is what the database holds."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.cli import main
from syncd.config import Config
from syncd.jobs.order_requests import send_requests
from syncd.jobs.pickup import Pickup, SubmitRun
from syncd.jobs.runner import JobResult, ProviderRunner, run_pass
from syncd.lifecycle import plan_claims
from syncd.models import Order, RequestKind
from syncd.plans import ClaimPlan, QueuedOrders, Submission, Verdict
from syncd.process import owner
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.storage import Storage, open_storage
from syncd.storage.watch import WriteWatch
from tests.conftest import TOKEN, make_config, provider_config, write_config
from tests.fakes import FakeClock
from tests.helpers import sql

DOWN = "http://127.0.0.1:9/api/v2"  # nothing listens there: "cannot connect"


def insert_queued(url: str, n: int = 0) -> int:
    insert = (
        "INSERT INTO orders (provider, service_id, link, quantity, state) "
        "VALUES ('sim', 100, :link, 100, 'queued')"
    )
    sql(url, insert, link=f"https://x.example/{n}")
    ((order_id,),) = sql(url, "SELECT max(id) FROM orders")
    return int(order_id)


def states(url: str) -> list[str]:
    return [str(state) for (state,) in sql(url, "SELECT state FROM orders ORDER BY id")]


@pytest.fixture
def opened(db_url: str, server: SimulatorServer) -> Iterator[tuple[Storage, Config]]:
    storage = open_storage(db_url)
    config = make_config(db_url, provider_config(server.url))
    assert all(r.ok for r in asyncio.run(run_pass(config, storage, ["catalog"])))
    yield storage, config
    storage.close()


def submit_runs(storage: Storage, config: Config, clock: FakeClock, passes: Any) -> Any:
    async def scenario() -> Any:
        async with ProviderRunner(config.providers[0], storage, clock=clock) as runner:
            return await passes(runner)

    return asyncio.run(scenario())


def test_an_add_spell_leaves_one_ambiguous_order_and_the_rest_go_out_after_the_wait(
    db_url: str, server: SimulatorServer, opened: tuple[Storage, Config]
) -> None:
    storage, config = opened
    clock = FakeClock()
    # 18 s in which `add` gets a maintenance page (the order is made all the same) while
    # `balance` answers; an order arrives every second and the submit job runs for each.
    server.provider.inject(Fault.HTML_200, actions=["add"], times=None, after_processing=True)

    async def spell(runner: ProviderRunner) -> list[JobResult]:
        results = []
        for n in range(21):
            insert_queued(db_url, n)
            results.append(await runner.run("submit"))
            clock.advance(seconds=18 / 21)
        return results

    during = submit_runs(storage, config, clock, spell)
    assert states(db_url) == ["ambiguous"] + ["queued"] * 20
    assert server.provider.count("add") == 1
    assert not any(r.ok for r in during)
    assert "sending to sim paused" in during[-1].message
    (error,) = sql(db_url, "SELECT error FROM orders WHERE id = 2")[0]
    assert str(error).startswith("waiting: sending to sim paused until")
    assert "after order 1's outcome was unknown" in str(error)
    shown = storage.overview()[0].send_pause
    assert shown.paused and shown.pauses == 1 and shown.reason is not None

    server.provider.clear_faults()
    clock.advance(seconds=61 - 18)  # the minute's wait is over

    async def after(runner: ProviderRunner) -> JobResult:
        return await runner.run("submit")

    resumed = submit_runs(storage, config, clock, after)
    assert resumed.ok and resumed.message.startswith("20 submitted"), resumed.message
    assert states(db_url) == ["ambiguous"] + ["active"] * 20
    assert server.provider.count("add") == 21 and server.provider.count("balance") == 1
    assert sql(db_url, "SELECT send_paused_at, send_pauses FROM providers") == [(None, 0)]


def test_a_trial_that_meets_the_fault_again_pauses_twice_as_long(
    db_url: str, server: SimulatorServer, opened: tuple[Storage, Config]
) -> None:
    storage, config = opened
    clock = FakeClock()
    server.provider.inject(Fault.HTML_502, actions=["add"], times=None, after_processing=True)
    for n in range(3):
        insert_queued(db_url, n)

    async def passes(runner: ProviderRunner) -> None:
        await runner.run("submit")
        clock.advance(seconds=61)
        await runner.run("submit")  # the trial: ambiguous again

    submit_runs(storage, config, clock, passes)
    assert states(db_url) == ["ambiguous", "ambiguous", "queued"]
    ((pauses, resume_at),) = sql(db_url, "SELECT send_pauses, send_resume_at FROM providers")
    assert pauses == 2
    assert abs(datetime.fromisoformat(str(resume_at)).replace(tzinfo=UTC) - clock.now) == (
        timedelta(minutes=2)
    )


def test_an_order_id_another_order_holds_is_ambiguous_in_the_log_the_summary_and_the_job(
    tmp_path: Path, db_url: str, logged: list[MutableMapping[str, Any]]
) -> None:
    storage = open_storage(db_url)
    clock = FakeClock()
    with SimulatorServer(SimulatedProvider(token=TOKEN)) as first:
        config = make_config(db_url, provider_config(first.url))
        asyncio.run(run_pass(config, storage, ["catalog"]))
        insert_queued(db_url, 0)
        insert_queued(db_url, 1)
        assert submit_runs(storage, config, clock, lambda r: r.run("submit")).ok
    # A simulator started afresh on another port hands out the same order ids again.
    with SimulatorServer(SimulatedProvider(token=TOKEN)) as second:
        config = make_config(db_url, provider_config(second.url))
        asyncio.run(run_pass(config, storage, ["catalog"]))
        for n in range(2, 5):
            insert_queued(db_url, n)
        logged.clear()
        result = submit_runs(storage, config, clock, lambda r: r.run("submit"))
        assert second.provider.count("add") == 1  # sending stopped at the first
    storage.close()
    assert states(db_url) == ["active", "active", "ambiguous", "queued", "queued"]
    assert not result.ok
    assert "order 3 is ambiguous" in result.message and "local order 1" in result.message
    submitted = [e for e in logged if e["event"] == "order.submitted"]
    assert submitted == []  # nothing claims it went through
    (ambiguous,) = [e for e in logged if e["event"] == "order.ambiguous"]
    assert ambiguous["log_level"] == "warning" and ambiguous["order_id"] == 3
    assert "which local order 1 already holds" in ambiguous["reason"]
    finished = [e for e in logged if e["event"] == "job.finished"]
    assert [e["status"] for e in finished] == ["error"]
    assert sql(db_url, "SELECT count(*) FROM alerts WHERE event = 'order.ambiguous'") == [(1,)]
    out = write_config(tmp_path / "syncd.toml", db_url, DOWN)
    assert main(["--config", str(out), "status"]) == 0


def test_the_submit_job_fails_while_the_provider_is_down_and_not_only_once(
    db_url: str, server: SimulatorServer, opened: tuple[Storage, Config]
) -> None:
    storage, config = opened
    down = make_config(db_url, provider_config(DOWN))
    clock = FakeClock()
    insert_queued(db_url)
    runs = [submit_runs(storage, down, clock, lambda r: r.run("submit")) for _ in range(2)]
    assert [r.ok for r in runs] == [False, False]  # the second run tries it again
    (error,) = sql(db_url, "SELECT error FROM orders")[0]
    assert str(error).startswith("not sent: cannot connect")
    assert sql(db_url, "SELECT failing_since IS NOT NULL FROM jobs WHERE job = 'submit'") == [(1,)]
    assert submit_runs(storage, config, clock, lambda r: r.run("submit")).ok
    assert states(db_url) == ["active"]


def test_the_daemon_s_pickup_reruns_a_failing_submit_job_until_it_is_ok_with_no_new_order(
    db_url: str, server: SimulatorServer, opened: tuple[Storage, Config]
) -> None:
    storage, config = opened
    up = threading.Event()
    outcomes: list[bool] = []
    ran = asyncio.Event()

    async def submit(name: str) -> SubmitRun:
        provider = config.providers[0] if up.is_set() else provider_config(DOWN)
        async with ProviderRunner(provider, storage) as runner:
            result = await runner.run("submit")
        outcomes.append(result.ok)
        ran.set()
        return SubmitRun(result.ok, interval=0.01)

    async def scenario() -> None:
        pickup = Pickup(storage, WriteWatch(db_url), held=lambda: ["sim"], submit=submit)
        running = asyncio.create_task(pickup.run())
        insert_queued(db_url)
        pickup.wake()
        async with asyncio.timeout(30):
            while len(outcomes) < 2:  # failed, then failed again with no new order
                await ran.wait()
                ran.clear()
            up.set()
            while not outcomes[-1]:
                await ran.wait()
                ran.clear()
        running.cancel()

    asyncio.run(scenario())
    assert outcomes[:2] == [False, False] and outcomes[-1] is True
    assert states(db_url) == ["active"]
    assert sql(db_url, "SELECT failing_since FROM jobs WHERE job = 'submit'") == [(None,)]


def test_a_cancel_spell_leaves_one_ambiguous_request_and_the_rest_go_after_the_wait(
    tmp_path: Path, db_url: str
) -> None:
    clock = FakeClock()
    simulated = SimulatedProvider(
        dialect="key", token=TOKEN, clock=clock.monotonic, order_duration=10_000
    )
    with SimulatorServer(simulated) as panel:
        storage = open_storage(db_url)
        config = make_config(db_url, provider_config(panel.url, dialect="key"))
        asyncio.run(run_pass(config, storage, ["catalog"]))
        ids = simulated.create_orders(4, service=102)
        tracked = storage.track_orders("sim", ids, clock.now)
        local = [tracked[i] for i in ids]
        panel.provider.inject(Fault.RESET, actions=["cancel"], times=None, after_processing=True)

        async def spell(runner: ProviderRunner) -> list[str]:
            for order_id in local:
                storage.queue_requests(RequestKind.CANCEL, [order_id])
                counts = await send_requests(runner.context)
                assert counts.failure is not None
                clock.advance(seconds=5)
            panel.provider.clear_faults()
            clock.advance(seconds=60)
            after = await send_requests(runner.context)
            return [after.summary(), str(after.failure)]

        summary, failure = submit_runs(storage, config, clock, spell)
        # The lost call; after the wait the trial alone, then one call for each other.
        assert panel.provider.count("cancel") == 4
        storage.close()
    found = sql(db_url, "SELECT state FROM order_requests ORDER BY id")
    assert [s for (s,) in found] == ["ambiguous", "done", "done", "done"], (summary, failure)


def claim_together(storage: Storage, *, probed: bool) -> list[Order]:
    """Two threads claim the provider's queued orders at once, the second starting while
    the first is inside its claim: the orders the two claims would send."""
    first_inside, second_inside = threading.Event(), threading.Event()
    now = datetime.now(UTC)

    def send(*_: object) -> Submission:
        return Submission(Verdict.SEND, None)

    def planner(inside: threading.Event, other: threading.Event) -> Any:
        def plan(queued: QueuedOrders, at: datetime) -> ClaimPlan:
            inside.set()
            other.wait(1.0)  # the other claimer gets in meanwhile, unless it is locked out
            return plan_claims(queued, at, decide=send, owner="x", deadline=at, probed=probed)

        return plan

    judged: list[list[tuple[Order, Submission]]] = []

    def claim(inside: threading.Event, other: threading.Event) -> None:
        judged.append(
            storage.claim_queued(
                "sim", after=0, only=None, now=now, plan=planner(inside, other), limit=10
            )
        )

    first = threading.Thread(target=claim, args=(first_inside, second_inside))
    first.start()
    assert first_inside.wait(10)
    second = threading.Thread(target=claim, args=(second_inside, first_inside))
    second.start()
    first.join(10)
    second.join(10)
    assert len(judged) == 2
    return [o for batch in judged for o, d in batch if d.verdict is Verdict.SEND]


def test_two_claimers_cannot_both_take_the_trial(server_db_url: str) -> None:
    storage = open_storage(server_db_url)
    storage.register_providers([("sim", "https://panel.example/v2")])
    for n in range(2):
        insert_queued(server_db_url, n)
    now = datetime.now(UTC)  # this host's clock is the database server's
    paused, resume = now - timedelta(minutes=2), now - timedelta(minutes=1)
    sql(server_db_url, "UPDATE providers SET send_paused_at = :paused, send_resume_at = :resume,"
        " send_pauses = 1", paused=paused, resume=resume)  # fmt: skip
    try:
        sent = claim_together(storage, probed=True)
    finally:
        storage.close()
    assert len(sent) == 1
    assert [s for (s,) in sql(server_db_url, "SELECT state FROM orders ORDER BY id")] == [
        "submitting",
        "queued",
    ]


def test_two_senders_never_have_two_calls_in_flight_to_one_provider(server_db_url: str) -> None:
    """Not paused: a second process claiming while the first one's claim is being made
    (and its call then in flight) sends nothing; its order stays queued, untouched."""
    storage = open_storage(server_db_url)
    storage.register_providers([("sim", "https://panel.example/v2")])
    for n in range(2):
        insert_queued(server_db_url, n)
    try:
        sent = claim_together(storage, probed=False)
    finally:
        storage.close()
    assert len(sent) == 1
    rows = sql(server_db_url, "SELECT state, error FROM orders ORDER BY id")
    assert rows == [("submitting", None), ("queued", None)]


def test_a_submit_job_sends_nothing_while_another_process_s_call_is_in_flight(
    db_url: str, server: SimulatorServer, opened: tuple[Storage, Config]
) -> None:
    storage, config = opened
    clock = FakeClock()
    in_flight = insert_queued(db_url, 0)
    # Another process claimed it and waits for the provider's answer (a live owner).
    sql(db_url, "UPDATE orders SET state = 'submitting', submit_owner = :owner, "
                "submit_deadline = :at WHERE id = :id",
        owner=owner(), at=clock.now + timedelta(hours=1), id=in_flight)  # fmt: skip
    waiting = insert_queued(db_url, 1)
    result = submit_runs(storage, config, clock, lambda r: r.run("submit"))
    assert result.ok and result.resume_at is not None, result.message
    assert "in flight" in result.message
    assert server.provider.count("add") == 0
    assert sql(db_url, "SELECT state, error FROM orders WHERE id = :id", id=waiting) == [
        ("queued", None)
    ]
    # Its answer recorded, the next run sends the order that waited.
    sql(db_url, "UPDATE orders SET state = 'active', provider_order_id = 9 WHERE id = :id",
        id=in_flight)  # fmt: skip
    assert submit_runs(storage, config, clock, lambda r: r.run("submit")).ok
    assert states(db_url) == ["active", "active"]


def test_orders_waiting_on_a_failed_probe_say_why(
    db_url: str, server: SimulatorServer, opened: tuple[Storage, Config]
) -> None:
    storage, _ = opened
    clock = FakeClock()
    waiting = insert_queued(db_url)
    sql(db_url, "UPDATE providers SET send_paused_at = :since, send_resume_at = :due, "
                "send_pauses = 1, send_pause_reason = 'order 9''s outcome was unknown'",
        since=clock.now - timedelta(minutes=2), due=clock.now - timedelta(minutes=1))  # fmt: skip
    down = make_config(db_url, provider_config(DOWN))
    result = submit_runs(storage, down, clock, lambda r: r.run("submit"))
    assert not result.ok and "the balance call before a trial failed" in result.message
    ((state, error),) = sql(db_url, "SELECT state, error FROM orders WHERE id = :id", id=waiting)
    assert state == "queued"
    assert str(error).startswith("waiting: sending to sim paused since"), error
    assert "after order 9's outcome was unknown" in str(error)
    assert "before the trial failed: cannot connect" in str(error)


def test_a_one_shot_send_settles_a_dead_sender_s_row_before_it_claims(
    db_url: str, server: SimulatorServer, opened: tuple[Storage, Config]
) -> None:
    """`syncd order add` (and `order refill`/`cancel`) with no daemon running: a row a
    killed sender left `submitting` is no call in flight. It is settled first, as every
    pass settles it, and the new order goes out at once instead of waiting for a
    daemon that may not exist."""
    storage, config = opened
    clock = FakeClock()
    killed = insert_queued(db_url, 0)
    dead = f"{socket.gethostname()}:{2**22 + 17}:1"  # a pid no process has
    sql(db_url, "UPDATE orders SET state = 'submitting', submit_owner = :owner, "
                "submit_deadline = :at WHERE id = :id",
        owner=dead, at=clock.now + timedelta(minutes=5), id=killed)  # fmt: skip
    new = insert_queued(db_url, 1)
    counts = submit_runs(storage, config, clock, lambda r: r.submit(new))
    assert counts.accepted == [new]
    assert states(db_url) == ["ambiguous", "active"]
    assert server.provider.count("add") == 1
