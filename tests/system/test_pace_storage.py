"""The pace kept in the database (``call_pace``) on every backend: reservations made by
separate storages (as separate processes) take their turns from one line, a 429's pause
outlives the storage that wrote it, and writers racing for turns never share one."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor

from syncd.jobs.runner import StoredLedger
from syncd.limits import EVERY_ACTION, FIRST_PAUSE, LONGEST_PAUSE, Shared, paused, reserve
from syncd.provider.pace import Pace
from syncd.storage import Storage, open_storage

SPACING = 61 / 60  # add = "60/minute"


def take(storage: Storage, count: int) -> list[float]:
    def decide(shared: Shared, now: float) -> tuple[Shared, list[float]]:
        made = reserve(shared, {"add": SPACING}, now=now, count=count, budget=600)
        return made.after, list(made.slots)

    return storage.apply_pace("sim", ["add"], decide)


def test_turns_taken_by_several_writers_at_once_are_a_spacing_apart(
    any_storage: Storage, any_db_url: str
) -> None:
    others = [open_storage(any_db_url, busy_timeout=5) for _ in range(3)]
    try:
        with ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(take, [any_storage, *others] * 3, [1, 3, 2, 1] * 3))
    finally:
        for other in others:
            other.close()
    slots = sorted(slot for batch in batches for slot in batch)
    assert len(slots) == 21
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) >= SPACING - 0.002  # the database keeps times to the microsecond or ms


def test_a_pause_written_by_one_process_holds_another_opened_later(
    any_storage: Storage, any_db_url: str
) -> None:
    def pause(shared: Shared, now: float) -> tuple[Shared, float]:
        after, _ = paused(shared, now=now, retry_after=30, spacing=0)
        return after, now

    written_at = any_storage.apply_pace("sim", [EVERY_ACTION], pause)
    any_storage.close()
    restarted = open_storage(any_db_url)
    try:
        shared, now = restarted.look_pace("sim")
        assert 29 < shared.paused_until - now <= 30
        assert shared.paused_until - written_at == 30
        assert restarted.look_pace("other")[0] == Shared({})
        left = asyncio.run(Pace("sim", ledger=StoredLedger(restarted)).pause_left())
        assert 28 < left <= 30
    finally:
        restarted.close()


def test_a_pace_row_garbled_by_hand_reads_as_none_and_a_far_pause_as_the_longest(
    any_storage: Storage, db_url: str, any_db_url: str
) -> None:
    take(any_storage, 1)  # the rows exist
    with any_storage.engine.begin() as conn:
        if any_db_url == db_url:  # SQLite keeps what it is given: text where times belong
            conn.exec_driver_sql(
                "UPDATE call_pace SET next_at = 'garbage', careful_until = 'x', guess = 'abc'"
            )
        conn.exec_driver_sql(
            "UPDATE call_pace SET paused_until = '2100-01-01 00:00:00' WHERE action = '*'"
        )
    shared, now = any_storage.look_pace("sim")
    assert shared.guess == FIRST_PAUSE
    assert shared.paused_until > now + LONGEST_PAUSE  # kept as written: it is the row's
    left = asyncio.run(Pace("sim", ledger=StoredLedger(any_storage)).pause_left())
    assert LONGEST_PAUSE - 5 < left <= LONGEST_PAUSE  # a stop of 74 years reads as 10 minutes
    assert len(take(any_storage, 1)) == 1  # turns are still taken
