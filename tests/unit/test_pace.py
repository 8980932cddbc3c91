"""A provider's pace: ``requests_per_minute`` spread out, and the pauses its 429s ask for.

Time is a ``FakeClock``: the property runs its jobs on the clock's event loop, where the
limiter's waits and the jobs' gaps take no real time and the moment a request's turn
came is read from the same clock the limiter judged it by. Whatever the bursts, no
window of one minute holds more requests than the limit, on any machine however loaded.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.errors import RateLimitedError
from syncd.provider import pace
from syncd.provider.pace import CAREFUL_FOR, LONGEST_PAUSE, MINUTE, Pace, RateLimitRun, RunNote
from tests.fakes import FakeClock


def most_in_a_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


async def send_all(limit: Pace, gaps: list[float], jobs: int) -> list[float]:
    """Requests from ``jobs`` tasks at once, each starting after its gaps; the moment each
    one's turn came."""
    loop = asyncio.get_running_loop()
    sent: list[float] = []

    async def job(mine: list[float]) -> None:
        for gap in mine:
            await asyncio.sleep(gap)
            await limit.turn(budget=3600)
            sent.append(loop.time())

    await asyncio.gather(*(job(gaps[i::jobs]) for i in range(jobs)))
    return sent


@settings(max_examples=max(10, settings().max_examples // 2))  # half the profile: each runs a loop
@given(
    per_minute=st.integers(min_value=1, max_value=120),
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.1, 1.0, 15.0, 60.0]), min_size=2, max_size=30),
    jobs=st.integers(min_value=1, max_value=4),
)
def test_no_minute_holds_more_requests_than_the_limit(
    per_minute: int, gaps: list[float], jobs: int
) -> None:
    clock = FakeClock()
    limit = Pace("panel", per_minute, timer=clock)
    sent = clock.run(send_all(limit, gaps, jobs))

    assert len(sent) == len(gaps)
    assert most_in_a_window(sent, MINUTE) <= per_minute
    # Spread, not bursts: two requests are never closer than a minute's share.
    ordered = sorted(sent)
    assert all(b - a >= limit.spacing * 0.999 for a, b in itertools.pairwise(ordered))


def test_without_a_limit_requests_go_at_once() -> None:
    clock = FakeClock()

    async def main() -> float:
        limit = Pace("panel", timer=clock)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(200):
            await limit.turn(budget=60)
        return loop.time() - started

    assert clock.run(main()) == 0
    assert clock.slept == []
    assert Pace("panel").spacing == 0


def test_a_pause_holds_every_request_until_it_has_passed(instant_pauses: FakeClock) -> None:
    limit = Pace("panel")

    async def main() -> None:
        assert await limit.slow_down(12.5) == 12.5
        await limit.turn(budget=60)
        await limit.turn(budget=60)  # the pause is over; a second after the first

    asyncio.run(main())
    assert instant_pauses.slept == [12.5, 1.0]


def test_after_a_pause_the_requests_that_waited_leave_a_second_apart(
    instant_pauses: FakeClock,
) -> None:
    """Without it, every request held by a pause would leave in the same instant and
    meet the provider's limit again; once the careful minute is over, they go at once."""
    limit = Pace("panel")

    async def main() -> None:
        await limit.slow_down(5)
        for _ in range(3):
            await limit.turn(budget=120)
        instant_pauses.advance(seconds=CAREFUL_FOR)
        for _ in range(3):
            await limit.turn(budget=120)

    asyncio.run(main())
    # The pause, then one second between each of the three; after the minute, nothing.
    assert instant_pauses.slept == [5.0, 1.0, 1.0]


def test_a_later_429_never_shortens_a_pause(instant_pauses: FakeClock) -> None:
    limit = Pace("panel")

    async def main() -> float:
        await limit.slow_down(30)
        await limit.slow_down(5)
        return await limit.pause_left()

    assert asyncio.run(main()) == 30


def test_a_pause_longer_than_the_budget_sends_nothing(instant_pauses: FakeClock) -> None:
    limit = Pace("panel")
    asyncio.run(limit.slow_down(90))
    with pytest.raises(RateLimitedError, match="asked to wait 90s more") as caught:
        asyncio.run(limit.turn(budget=60))
    assert not caught.value.maybe_processed
    assert instant_pauses.slept == []


@given(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)))
def test_any_retry_after_gives_a_bounded_positive_pause(retry_after: float | None) -> None:
    """A provider's Retry-After is outside input: negative, zero, huge, absent or not a
    number at all, the pause
    is positive and never longer than LONGEST_PAUSE (a clock a day off must not silence a
    provider for a day)."""
    limit = Pace("panel", timer=pace.TIMER)
    pause = asyncio.run(limit.slow_down(retry_after))
    assert 0 < pause <= LONGEST_PAUSE
    assert asyncio.run(limit.pause_left()) <= LONGEST_PAUSE


def test_pauses_without_retry_after_double_until_an_answer() -> None:
    limit = Pace("panel", timer=FakeClock())
    assert [asyncio.run(limit.slow_down(None)) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    asyncio.run(limit.answered())
    assert asyncio.run(limit.slow_down(None)) == 1


def test_a_pause_is_never_shorter_than_the_limits_spacing() -> None:
    limit = Pace("panel", 2, timer=FakeClock())  # one request every 30.5 s
    assert asyncio.run(limit.slow_down(None)) == pytest.approx(30.5)


def test_the_spacing_leaves_a_second_a_minute_for_the_network() -> None:
    for per_minute in (1, 60, 120, 600):
        assert Pace("panel", per_minute).spacing * per_minute == pytest.approx(61)


def test_a_run_of_429s_is_said_at_its_start_once_a_minute_and_at_its_end() -> None:
    run = RateLimitRun(every=60)
    assert run.answered(0.0) is None  # no run, nothing to end
    notes = [run.limited(float(t)) for t in range(0, 150)]  # one 429 a second
    assert notes[0] == RunNote("started", 1, 0.0, loud=True)
    loud = [n for n in notes[1:] if n.loud]
    assert loud == [RunNote("continues", 61, 60.0, True), RunNote("continues", 121, 120.0, True)]
    assert all(n.kind == "continues" for n in notes[1:])
    assert run.answered(200.0) == RunNote("ended", 150, 200.0, loud=True)
    assert run.count == 0 and run.answered(201.0) is None  # ended once
    assert run.limited(300.0) == RunNote("started", 1, 0.0, loud=True)  # a new run


@given(st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=300))
def test_a_run_of_429s_makes_at_most_one_info_line_a_minute_between_its_ends(
    gaps: list[float],
) -> None:
    run, now = RateLimitRun(every=60), 0.0
    notes = []
    for gap in gaps:
        now += gap
        notes.append(run.limited(now))
    ended = run.answered(now)
    assert ended is not None and ended.count == len(gaps) and ended.seconds == now - gaps[0]
    assert sum(n.loud for n in notes) <= 1 + (now - gaps[0]) // 60
