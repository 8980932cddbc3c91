"""Leases and instances in the database, on SQLite and PostgreSQL: one holder at a time,
judged by the database's clock, and fencing that keeps a holder who lost its lease from
writing anything more."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import sqlalchemy as sa

from syncd import order_requests as requests
from syncd.errors import LeaseLostError, StorageError
from syncd.jobs.leases import LeaseKeeper, keep_renewed
from syncd.jobs.runner import JobResult, ProviderRunner, make_client
from syncd.lifecycle import finish, plan_stray
from syncd.models import Balance, Lease, OrderState, RequestTaken
from syncd.plans import Submission, SubmitOutcome, Verdict
from syncd.simulator import SimulatorServer
from syncd.storage import Storage, fenced, open_storage
from syncd.storage import tables as t
from syncd.storage.values import read_time
from tests.conftest import provider_config
from tests.fakes import FakeClock
from tests.helpers import claim_one, let_time_pass

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TTL = 30.0


LATER = TTL + 1  # seconds: any lease taken now has run out by then


def test_one_holder_at_a_time_and_a_new_epoch_for_each_acquisition(
    any_storage: Storage,
) -> None:
    first = any_storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert first is not None and first.epoch == 1 and first.holder == "host-a:1:1"
    assert any_storage.acquire_lease("sim", "host-b:2:2", TTL) is None  # still held
    assert any_storage.lease_holders() == {"sim": first}
    any_storage.release_lease(first)
    let_time_pass(any_storage, 1)
    second = any_storage.acquire_lease("sim", "host-b:2:2", TTL)
    assert second is not None and second.epoch == 2
    assert any_storage.renew_lease(first, TTL) is None  # the old holder lost it
    renewed = any_storage.renew_lease(second, TTL)
    assert renewed is not None and renewed.expires_at >= second.expires_at


def test_a_lease_that_ran_out_is_taken_over(any_storage: Storage) -> None:
    held = any_storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert held is not None
    let_time_pass(any_storage, LATER)
    assert any_storage.renew_lease(held, TTL) is None  # too late: it ran out
    taken = any_storage.acquire_lease("sim", "host-b:2:2", TTL)
    assert taken is not None and taken.epoch == held.epoch + 1
    assert any_storage.lease_holders()["sim"].holder == "host-b:2:2"


def test_a_holder_that_lost_its_lease_writes_nothing(any_storage: Storage) -> None:
    any_storage.register_providers([("sim", "https://panel.example/api/v2")])
    old = any_storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert old is not None
    with fenced(old):
        any_storage.record_job_start("sim", "catalog", NOW)  # still its: written
    let_time_pass(any_storage, LATER)
    new = any_storage.acquire_lease("sim", "host-b:2:2", TTL)
    assert new is not None
    taken = r"epoch 1\) passed to another instance \(host-b:2:2, epoch 2\); this transaction wrote"
    with fenced(old), pytest.raises(LeaseLostError, match=taken):
        any_storage.record_job_failure("sim", "catalog", NOW, "paused, then woke up")
    assert any_storage.overview()[0].jobs[0].last_error is None
    with fenced(new):
        any_storage.record_job_failure("sim", "catalog", NOW, "the new holder's")
    assert any_storage.overview()[0].jobs[0].last_error == "the new holder's"


def test_two_instances_racing_for_a_lease_get_one_winner(any_db_url: str) -> None:
    storages = [open_storage(any_db_url) for _ in range(4)]
    won: list[int] = []
    start = threading.Barrier(len(storages))

    def race(n: int) -> None:
        start.wait()
        if storages[n].acquire_lease("sim", f"host-{n}:{n}:1", TTL) is not None:
            won.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(len(storages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for storage in storages:
        storage.close()
    assert len(won) == 1


def test_instances_are_live_while_they_beat(any_storage: Storage) -> None:
    any_storage.heartbeat("host-a:1:1", "host-a", 1, "0.1.0")
    any_storage.heartbeat("host-b:2:2", "host-b", 2, "0.1.0")
    live = any_storage.live_instances(TTL)
    assert [i.id for i in live] == ["host-a:1:1", "host-b:2:2"]
    let_time_pass(any_storage, 1)
    aged = any_storage.live_instances(TTL)[0]
    any_storage.heartbeat("host-a:1:1", "host-a", 1, "0.1.0")
    again = any_storage.live_instances(TTL)[0]
    assert again.started_at == aged.started_at and again.heartbeat_at > aged.heartbeat_at
    any_storage.forget_instance("host-b:2:2")
    assert [i.id for i in any_storage.live_instances(TTL)] == ["host-a:1:1"]
    let_time_pass(any_storage, 1)
    assert any_storage.live_instances(0.5) == []  # nobody beat within the last half second


def test_lease_times_come_from_the_database_clock(any_storage: Storage) -> None:
    held = any_storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert held is not None
    with any_storage.engine.connect() as conn:
        database_now = read_time(conn.execute(sa.select(any_storage.backend.clock())).scalar())
    assert database_now is not None
    remaining = (held.expires_at - database_now).total_seconds()
    assert TTL - 2 < remaining <= TTL


def test_taking_over_from_a_holder_that_stopped_renewing_raises_instance_lost(
    any_storage: Storage,
) -> None:
    first = any_storage.acquire_lease("sim", "host-a:1:1", TTL)  # never held before: quiet
    assert first is not None
    any_storage.release_lease(first)
    let_time_pass(any_storage, 1)
    second = any_storage.acquire_lease("sim", "host-b:2:2", TTL)  # released: quiet
    assert second is not None
    assert _alerts(any_storage) == []
    let_time_pass(any_storage, LATER)  # host-b stops renewing
    third = any_storage.acquire_lease("sim", "host-c:3:3", TTL)
    assert third is not None and third.epoch == 3
    any_storage.release_lease(third)
    again = any_storage.acquire_lease("sim", "host-c:3:3", TTL)
    assert again is not None and again.epoch == 4
    let_time_pass(any_storage, LATER)  # host-c could not renew in time, and takes it back
    assert any_storage.acquire_lease("sim", "host-c:3:3", TTL) is not None  # its own: quiet
    ((event, provider, payload),) = _alerts(any_storage)
    assert (event, provider) == ("instance.lost", "sim")
    assert payload["data"] == {"instance": "host-b:2:2", "taken_by": "host-c:3:3"}
    assert "host-b:2:2 stopped renewing its lease of sim" in payload["text"]


def _alerts(storage: Storage) -> list[tuple[str, str, dict[str, Any]]]:
    with storage.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT event, provider, payload FROM alerts ORDER BY id"))
        return [(e, p, json.loads(body) if isinstance(body, str) else body) for e, p, body in rows]


def test_a_holder_that_lost_its_lease_still_records_what_the_provider_said(
    any_storage: Storage,
) -> None:
    """Fencing stops a stale holder's work, never the truth about an order it sent: the
    provider's answer for the row it claimed is recorded."""
    any_storage.register_providers([("sim", "https://panel.example/v2")])
    with any_storage.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (provider, service_id, link, quantity) "
                "VALUES ('sim', 100, 'https://x.example/p', 10)"
            )
        )
    old = any_storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert old is not None

    def anything(*_: object) -> Submission:
        return Submission(Verdict.SEND)

    with fenced(old):
        claimed = claim_one(
            any_storage,
            "sim",
            after=0,
            only=None,
            owner="host-a:1:1",
            deadline=NOW,
            now=NOW,
            decide=anything,
        )
    assert claimed is not None
    let_time_pass(any_storage, LATER)  # paused while the provider answered; another takes over
    assert any_storage.acquire_lease("sim", "host-b:2:2", TTL) is not None
    with fenced(old):
        recorded = any_storage.finish_submission(
            claimed[0].id, "host-a:1:1", SubmitOutcome(OrderState.ACTIVE, provider_order_id=77),
            now=NOW, alert=None, plan=finish,
        )  # fmt: skip
        assert recorded
        with pytest.raises(LeaseLostError):  # but it claims nothing more
            claim_one(
                any_storage, "sim", after=0, only=None, owner="host-a:1:1", deadline=NOW, now=NOW,
                decide=anything,
            )  # fmt: skip
    order = any_storage.order(claimed[0].id)
    assert order is not None and order.state is OrderState.ACTIVE
    assert order.provider_order_id == 77


def test_a_holder_that_lost_its_lease_still_records_what_the_provider_said_of_a_refill(
    any_storage: Storage,
) -> None:
    """As for orders: a refill call answered after the lease was taken over (the process
    was stopped past its lease while the call was in flight) is recorded, not left
    `submitting` under a live owner that recovery never declares gone."""
    any_storage.register_providers([("sim", "https://panel.example/v2")])
    with any_storage.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO orders (provider, provider_order_id, service_id, link, quantity, "
                "state, status) VALUES ('sim', 55, 100, 'https://x.example/p', 10, 'done', "
                "'Completed')"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO order_requests (order_id, kind, state, provider, submit_owner, "
                "submit_deadline) VALUES (1, 'refill', 'submitting', 'sim', 'host-a:1:1', :at)"
            ),
            {"at": NOW},
        )
    old = any_storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert old is not None
    let_time_pass(any_storage, LATER)  # stopped while the provider answered; taken over
    assert any_storage.acquire_lease("sim", "host-b:2:2", TTL) is not None
    (request,) = any_storage.order_requests(1)
    step = requests.answered(request, RequestTaken(777), NOW, timedelta(minutes=1))
    answers = partial(requests.plan_answers, steps={request.id: step})
    with fenced(old):
        any_storage.finish_requests(
            [request.id], "host-a:1:1", NOW, answers, provider="sim",
            pause=requests.pause_after_call,
        )  # fmt: skip
    (recorded,) = any_storage.order_requests(1)
    assert recorded.state is requests.RequestState.SENT
    assert recorded.provider_request_id == 777


def test_rows_set_aside_by_several_jobs_at_once_are_settled_once(any_db_url: str) -> None:
    storages = [open_storage(any_db_url) for _ in range(3)]
    storages[0].register_providers([("sim", "https://panel.example/v2")])
    with storages[0].engine.begin() as conn:
        for values in (
            "'sim', 'QUEUED', NULL",  # no state
            "'sim', 'new', NULL",  # no state either
            "'sim', 'queued', 888",  # queued, with a provider id: ambiguous, alerted
        ):
            conn.execute(sa.text("INSERT INTO orders (provider, state, provider_order_id, "
                                 f"service_id, link, quantity) VALUES ({values}, 100, "
                                 "'https://x.example/p', 10)"))  # fmt: skip
    start = threading.Barrier(len(storages))
    settled: list[list[tuple[int, str]]] = []

    def settle(storage: Storage) -> None:
        start.wait()
        settled.append(storage.apply_stray_orders(NOW, plan_stray))

    threads = [threading.Thread(target=settle, args=(s,)) for s in storages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(order for batch in settled for order, _ in batch) == [1, 2, 3]
    with storages[0].engine.connect() as conn:
        changes = conn.execute(sa.text("SELECT order_id FROM order_changes ORDER BY order_id"))
        assert list(changes.scalars()) == [1, 2, 3]
    assert [event for event, _, _ in _alerts(storages[0])] == ["order.ambiguous"]
    for storage in storages:
        storage.close()


def test_a_job_whose_lease_was_taken_stops_without_writing_or_raising(
    storage: Storage, logged: list[MutableMapping[str, Any]]
) -> None:
    storage.register_providers([("sim", "https://panel.example/v2")])
    old = storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert old is not None
    let_time_pass(storage, LATER)
    assert storage.acquire_lease("sim", "host-b:2:2", TTL) is not None

    async def run() -> JobResult:
        provider = provider_config("https://panel.example/v2")
        async with ProviderRunner(provider, storage, lease=old) as runner:
            return await runner.run("balance")

    result = asyncio.run(run())
    assert not result.ok and "passed to another instance" in result.message
    assert [e["event"] for e in logged if e["event"].startswith("job.")] == ["job.fenced"]
    assert storage.overview()[0].jobs == ()  # the jobs row is the new holder's to write


def test_lease_and_instance_rows_garbled_by_hand_stop_no_other_provider(
    storage: Storage, db_url: str
) -> None:
    storage.register_providers([("sim", "https://a.example/v2"), ("other", "https://b.example")])
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        conn.execute("INSERT INTO leases VALUES ('sim', 42, 'x', 'then', 'soon', 'later')")
        conn.execute("INSERT INTO instances VALUES ('ghost', 'h', 'pid', 'v', 'x', 'zzz')")
    keeper = LeaseKeeper(storage, ttl=TTL, me="host-b:2:2")
    asyncio.run(keeper.tick(["sim", "other"]))
    # The garbled lease's renewal, text that sorts after any time, reads as renewed under
    # a clock far ahead: it is taken over like one, and nothing else is held back.
    assert sorted(keeper.held) == ["other", "sim"]
    assert [i.id for i in storage.live_instances(TTL)] == ["host-b:2:2"]
    assert storage.lease_holders() == keeper.held
    assert keeper.held["sim"].holder == "host-b:2:2"


def test_a_one_shot_lease_is_renewed_through_an_outage_until_a_renewal_is_refused() -> None:
    """keep_renewed tries again after a database error, and ends when another instance
    has taken the lease (the pass's next write then stops it)."""
    lease = Lease("sim", "me", 1, datetime.now(UTC))
    answers: list[object] = [StorageError("database is locked by another program"), lease, None]

    class Renewing:
        def renew_lease(self, renewed: Lease, ttl: float) -> Lease | None:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[return-value]

    clock = FakeClock()
    clock.run(keep_renewed(Renewing(), lease, TTL))  # type: ignore[arg-type]
    assert answers == []  # it went on after the error, and stopped at the refusal
    assert clock.monotonic() == pytest.approx(TTL, abs=0.01)  # three renewals, TTL / 3 apart


def lost_reasons(logged: list[MutableMapping[str, Any]]) -> list[str]:
    return [e["reason"] for e in logged if e["event"] == "lease.lost"]


def test_a_lease_that_ran_out_while_the_process_was_stopped_says_so(
    storage: Storage, logged: list[MutableMapping[str, Any]]
) -> None:
    storage.register_providers([("sim", "https://a.example/v2")])
    clock = FakeClock()
    keeper = LeaseKeeper(storage, ttl=TTL, me="host-a:1:1", monotonic=clock.monotonic)
    asyncio.run(keeper.tick(["sim"]))
    assert "sim" in keeper.held
    clock.advance(seconds=TTL + 5)  # SIGSTOP: nothing of the process ran, the database is fine
    assert keeper.holds("sim") is None
    (reason,) = lost_reasons(logged)
    assert reason == (
        "not renewed in time: no renewal was even tried for 35s (the lease lasts 30s): "
        "this process did not run (stopped, suspended, or its event loop blocked)"
    )


def test_every_lease_line_names_the_instance_it_is_about(
    storage: Storage, logged: list[MutableMapping[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several instances share one database: a lease line without the instance's id
    cannot be placed. Taken, lost while stopped, taken again, database out of reach and
    back: each line says which instance."""
    storage.register_providers([("sim", "https://a.example/v2")])
    clock = FakeClock()
    keeper = LeaseKeeper(storage, ttl=TTL, me="host-a:1:1", monotonic=clock.monotonic)
    asyncio.run(keeper.tick(["sim"]))
    clock.advance(seconds=TTL + 5)  # SIGSTOP
    let_time_pass(storage, TTL + 5)
    asyncio.run(keeper.tick(["sim"]))  # lost, then taken again

    def unreachable(*_args: object) -> None:
        raise StorageError("database error: unable to open database file")

    with monkeypatch.context() as patched:
        patched.setattr(storage, "heartbeat", unreachable)
        clock.advance(seconds=TTL / 3)
        asyncio.run(keeper.tick(["sim"]))
    clock.advance(seconds=TTL / 3)
    asyncio.run(keeper.tick(["sim"]))
    lines = [e for e in logged if e["event"].startswith(("lease.", "leases."))]
    events = [e["event"] for e in lines]
    assert events == [
        "lease.taken",
        "lease.lost",
        "lease.taken",
        "leases.database_unreachable",
        "leases.database_back",
    ]
    assert [e.get("instance") for e in lines] == ["host-a:1:1"] * len(lines)


def test_a_one_shot_lease_lost_names_the_instance_that_held_it(
    logged: list[MutableMapping[str, Any]],
) -> None:
    lease = Lease("sim", "host-b:7:42", 1, datetime.now(UTC))
    answers: list[object] = [StorageError("database is locked by another program"), None]

    class Renewing:
        def renew_lease(self, renewed: Lease, ttl: float) -> Lease | None:
            answer = answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[return-value]

    FakeClock().run(keep_renewed(Renewing(), lease, TTL))  # type: ignore[arg-type]
    lines = [(e["event"], e.get("instance")) for e in logged if e["event"].startswith("lease.")]
    assert lines == [("lease.renewal_failed", "host-b:7:42"), ("lease.lost", "host-b:7:42")]


def test_a_lease_found_run_out_by_the_next_renewal_is_lost_for_the_true_reason_and_retaken(
    storage: Storage, logged: list[MutableMapping[str, Any]]
) -> None:
    storage.register_providers([("sim", "https://a.example/v2")])
    clock = FakeClock()
    keeper = LeaseKeeper(storage, ttl=TTL, me="host-a:1:1", monotonic=clock.monotonic)
    asyncio.run(keeper.tick(["sim"]))
    clock.advance(seconds=TTL + 5)  # stopped; on waking, the keeper's renewal runs first
    let_time_pass(storage, TTL + 5)
    asyncio.run(keeper.tick(["sim"]))
    (reason,) = lost_reasons(logged)
    assert "this process did not run" in reason and "another instance" not in reason
    assert keeper.held["sim"].epoch == 2  # nobody else wanted it: taken again


def test_a_lease_that_ran_out_while_the_database_failed_says_so(
    storage: Storage, logged: list[MutableMapping[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.register_providers([("sim", "https://a.example/v2")])
    clock = FakeClock()
    keeper = LeaseKeeper(storage, ttl=TTL, me="host-a:1:1", monotonic=clock.monotonic)
    asyncio.run(keeper.tick(["sim"]))

    def unreachable(*_args: object) -> None:
        raise StorageError("database error: unable to open database file")

    monkeypatch.setattr(storage, "heartbeat", unreachable)
    for _ in range(3):  # every third of the lease time, each renewal failing
        clock.advance(seconds=TTL / 3)
        asyncio.run(keeper.tick(["sim"]))
    assert "sim" not in keeper.held  # its time was up at the third
    (reason,) = lost_reasons(logged)
    assert reason == (
        "not renewed in time: the database is out of reach "
        "(database error: unable to open database file)"
    )


def test_a_reply_after_the_process_was_stopped_says_only_that_the_health_is_unrecorded(
    storage: Storage, server: SimulatorServer, logged: list[MutableMapping[str, Any]]
) -> None:
    """SIGSTOP right after a send: the reply comes, and the health write after it finds
    the lease run out (the database's clock went on). The reply is kept; the line says
    what was not written, the health, and why; not that nothing of the call was."""
    storage.register_providers([("sim", server.url)])
    lease = storage.acquire_lease("sim", "host-a:1:1", TTL)
    assert lease is not None
    let_time_pass(storage, LATER)  # what the stopped seconds did to the lease

    async def call() -> Balance:
        async with make_client(provider_config(server.url), storage) as client:
            return await client.balance()

    with fenced(lease):
        balance = asyncio.run(call())
    assert balance.amount == server.provider.balance  # the reply is the caller's all the same
    (line,) = [e for e in logged if e["event"].endswith("_unrecorded")]
    assert line["event"] == "provider.health_unrecorded"
    assert (line["provider"], line["action"], line["call"]) == ("sim", "balance", "answered")
    assert line["error"] == (
        "the lease of sim (epoch 1) ran out before this write: it was not renewed in time; "
        "this transaction wrote nothing"
    )


def test_instances_started_together_take_even_shares(any_db_url: str) -> None:
    """Three instances whose first looks come moments apart (units started at boot): each
    beats and waits before taking, so the first does not see itself alone and take all
    six providers, which it would then keep busy through a whole first sweep."""
    names = [f"p{i}" for i in range(6)]
    stores = [open_storage(any_db_url) for _ in range(3)]
    stores[0].register_providers((n, f"https://{n}.example/v2") for n in names)
    # Each starts once the one before has beaten (or, without the wait, is done): the
    # order instances started together look in, with no wall-clock timing in the test.
    # Their wait ends when all three have beaten, however slow the machine.
    turns = [asyncio.Event() for _ in range(3)]
    done = [asyncio.Event() for _ in range(3)]
    waiting: list[int] = []
    everyone: asyncio.Event | None = None

    def settle(i: int) -> Callable[[float], Awaitable[None]]:
        async def wait(_: float) -> None:
            assert everyone is not None
            waiting.append(i)
            turns[i].set()
            if len(waiting) == len(turns):
                everyone.set()
            await everyone.wait()
            if i:  # then they look in turn, as a moment apart they would
                await done[i - 1].wait()

        return wait

    keepers = [
        LeaseKeeper(s, ttl=20.0, me=f"host:{i}:{i}", sleep=settle(i)) for i, s in enumerate(stores)
    ]

    async def start(i: int) -> None:
        if i:
            await turns[i - 1].wait()
        await keepers[i].tick(names, starting=True)
        turns[i].set()
        done[i].set()

    async def together() -> None:
        nonlocal everyone
        everyone = asyncio.Event()
        await asyncio.gather(*(start(i) for i in range(len(keepers))))

    try:
        asyncio.run(together())
        assert sorted(len(k.held) for k in keepers) == [2, 2, 2]
    finally:
        for store in stores:
            store.close()


def test_a_lease_renewed_under_a_clock_that_ran_ahead_is_free_once_it_went_back(
    any_storage: Storage,
) -> None:
    """A holder renewing while the host's clock ran a day ahead (SQLite's clock is the
    host's), then stopped: its lease would run until tomorrow, and nobody would work for
    the provider. A renewal further ahead than any skew is a wrong clock's: it is free.
    One a moment ahead (within the skew) still holds."""
    any_storage.register_providers([("sim", "https://a.example/v2"), ("other", "https://b")])
    for name in ("sim", "other"):
        assert any_storage.acquire_lease(name, "host-a:1:1", TTL) is not None
    ahead = {"sim": timedelta(days=1), "other": timedelta(minutes=1)}
    with any_storage.engine.begin() as conn:
        for name, by in ahead.items():
            later = datetime.now(UTC) + by
            conn.execute(
                sa.update(t.leases)
                .where(t.leases.c.name == name)
                .values(renewed_at=later, expires_at=later + timedelta(seconds=TTL))
            )
    taken = any_storage.acquire_lease("sim", "host-b:2:2", TTL)
    assert taken is not None and taken.holder == "host-b:2:2"
    assert any_storage.acquire_lease("other", "host-b:2:2", TTL) is None


def test_instances_started_together_register_their_providers_without_a_clash(
    any_db_url: str,
) -> None:
    """Each instance writes the providers' rows it is configured with at start: several
    started at once must not fail on the same name written by another a moment before."""
    stores = [open_storage(any_db_url) for _ in range(4)]
    try:
        for round_ in range(5):
            names = [(f"r{round_}p{i}", f"https://r{round_}p{i}.example/v2") for i in range(30)]
            barrier = threading.Barrier(len(stores))
            failures: list[BaseException] = []

            def register(
                store: Storage,
                names: list[tuple[str, str]] = names,
                barrier: threading.Barrier = barrier,
                failures: list[BaseException] = failures,
            ) -> None:
                barrier.wait()
                try:
                    store.register_providers(names)
                except Exception as exc:
                    failures.append(exc)

            threads = [threading.Thread(target=register, args=(s,)) for s in stores]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []
        with stores[0].engine.connect() as conn:
            count = conn.execute(sa.select(sa.func.count()).select_from(t.providers)).scalar()
        assert count == 5 * 30
    finally:
        for store in stores:
            store.close()
