"""Limits as providers publish them: reading them, and the decider that holds them across
processes (``syncd.limits.reserve``), told the time by each process in turn."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.limits import (
    CAREFUL_FOR,
    EVERY_ACTION,
    HORIZON,
    CallLimit,
    Shared,
    parse_limit,
    paused,
    reserve,
)


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("60/minute", CallLimit(60, 60)),
        ("10/hour", CallLimit(10, 3600)),
        ("1/day", CallLimit(1, 86400)),
        ("5/second", CallLimit(5, 1)),
        ("20/10s", CallLimit(20, 10)),
        (" 100 / 2m ", CallLimit(100, 120)),
    ],
)
def test_a_limit_reads_as_calls_per_window(text: str, limit: CallLimit) -> None:
    assert parse_limit(text) == limit


@pytest.mark.parametrize("text", ["60", "60/minutes", "0/minute", "-1/minute", "x/hour", "6/2d"])
def test_a_limit_that_is_not_one_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=r"limit|duration"):
        parse_limit(text)


def most_in_a_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        most = max(most, end - start + 1)
    return most


# One step of one process: it reads the clock (which moved on by ``gap``, or was set back
# by ``back``) and reserves ``count`` turns within ``budget``.
steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=90),  # gap
        st.sampled_from([0.0, 0.0, 0.0, 5.0, 3600.0]),  # back
        st.integers(min_value=1, max_value=8),  # count
        st.sampled_from([0.0, 1.0, 10.0, 60.0, 600.0]),  # budget
        st.sampled_from(["add", "status"]),
    ),
    min_size=1,
    max_size=60,
)


@given(
    count=st.integers(min_value=1, max_value=120),
    window=st.sampled_from([1.0, 10.0, 60.0, 3600.0]),
    per_minute=st.one_of(st.none(), st.integers(min_value=1, max_value=600)),
    steps=steps,
)
def test_no_interleaving_of_reservations_lets_a_window_hold_more_than_the_limit(
    count: int,
    window: float,
    per_minute: int | None,
    steps: list[tuple[float, float, int, float, str]],
) -> None:
    """Processes reserve in any order, each reading a clock that may have been set back;
    every call leaves at its turn, in real time. No window of the limit's length holds
    more than its count of ``add`` calls, nor more than ``per_minute`` calls in a minute,
    and a clock set back never brings a turn sooner than a spacing after the last one."""
    add = CallLimit(count, window)
    every = 0.0 if per_minute is None else CallLimit(per_minute, 60).spacing
    shared, real, offset = Shared({}), 1000.0, 0.0  # the clock reads real - offset
    sent: dict[str, list[float]] = {"add": [], "status": []}
    for gap, back, n, budget, action in steps:
        real += gap
        offset += back
        now = real - offset
        spacings = {EVERY_ACTION: every, **({"add": add.spacing} if action == "add" else {})}
        made = reserve(shared, spacings, now=now, count=n, budget=budget)
        shared = made.after
        assert len(made.slots) <= n
        assert all(now <= slot <= now + min(budget, HORIZON) for slot in made.slots)
        sent[action] += [real + (slot - now) for slot in made.slots]  # when it really leaves
    assert most_in_a_window(sent["add"], window) <= count
    if per_minute is not None:
        assert most_in_a_window(sent["add"] + sent["status"], 60) <= per_minute
    ordered = sorted(sent["add"])
    assert all(b - a >= add.spacing * 0.999 for a, b in itertools.pairwise(ordered))


def test_a_limit_without_its_own_row_does_not_hold_other_actions() -> None:
    """Without ``requests_per_minute``, an add waiting for its turn keeps no status call
    waiting."""
    shared = reserve(Shared({}), {"add": 30.0}, now=0, count=2, budget=60).after
    status = reserve(shared, {}, now=1, count=3, budget=60)
    assert status.slots == (1, 1, 1)


def test_a_turn_further_than_the_budget_is_not_reserved() -> None:
    shared = reserve(Shared({}), {"add": 30.0}, now=0, count=1, budget=60).after
    none = reserve(shared, {"add": 30.0}, now=1, count=1, budget=10)
    assert none.slots == () and none.after == shared


def test_after_a_pause_calls_leave_a_second_apart_for_a_minute() -> None:
    shared, pause = paused(Shared({}), now=0, retry_after=5, spacing=0)
    assert pause == 5
    made = reserve(shared, {}, now=0, count=3, budget=60)
    assert made.slots == (5, 6, 7)
    later = reserve(made.after, {}, now=5 + CAREFUL_FOR + 10, count=3, budget=60)
    assert later.slots == (75, 75, 75)


def test_a_later_429_never_shortens_a_pause_and_a_guess_doubles() -> None:
    shared, _ = paused(Shared({}), now=0, retry_after=30, spacing=0)
    shared, _ = paused(shared, now=1, retry_after=5, spacing=0)
    assert shared.paused_until == 30
    pauses = []
    for _ in range(4):
        shared, pause = paused(shared, now=0, retry_after=None, spacing=0)
        pauses.append(pause)
    assert pauses == [1, 2, 4, 8]
