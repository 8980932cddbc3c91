"""The provider health decider's runs of 429s: plain function calls on a made-up clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from syncd.deadlines import THROTTLED_AFTER
from syncd.errors import (
    AuthError,
    MalformedReplyError,
    ProviderError,
    RateLimitedError,
    RefusedError,
    TransientError,
)
from syncd.jobs.health import CLEAN, HealthTracker, plan_health
from syncd.models import Event, Health
from tests.fakes import FakeClock

START = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
AFTER = timedelta(minutes=15)
LIMITED = RateLimitedError("p", "HTTP 429 rate limited, Retry-After 30s", retry_after=30)
HTTP_502 = TransientError("p", "HTTP 502 (HTML page)", maybe_processed=True)
TIMEOUT = TransientError("p", "no reply within 30s", maybe_processed=True, answered=False)


def step(state: Health, error: ProviderError | None, minutes: float) -> tuple[Health, list[str]]:
    """One outcome ``minutes`` after START; the events it raises."""
    now = START + timedelta(minutes=minutes)
    new, alerts = plan_health("p", state, error, now, throttled_after=AFTER)
    return new, [a.event.value for a in alerts]


def test_the_default_is_a_quarter_of_an_hour() -> None:
    assert timedelta(minutes=15) == THROTTLED_AFTER


def test_only_429s_for_throttled_after_raise_provider_throttled_once() -> None:
    state, raised = CLEAN, []
    for minute in range(0, 30):
        state, events = step(state, LIMITED, minute)
        raised.append((minute, events))
    assert [m for m, events in raised if events] == [15]
    assert raised[15][1] == ["provider.throttled"]
    assert state.throttled and state.throttled_since == START
    # 429s are no failed calls: provider.down never comes of them.
    assert (state.health, state.consecutive_failures, state.last_error) == ("up", 0, None)


def test_the_throttled_alert_says_how_long_and_what_to_check() -> None:
    state, _ = step(CLEAN, LIMITED, 0)
    _, alerts = plan_health(
        "p", state, LIMITED, START + timedelta(minutes=17), throttled_after=AFTER
    )
    (alert,) = alerts
    assert alert.event is Event.PROVIDER_THROTTLED and alert.provider == "p"
    assert "only 429" in alert.text and "17 min" in alert.text and "key" in alert.text
    assert alert.data["since"] == START.isoformat() and alert.data["seconds"] == 17 * 60


def test_an_answer_ends_the_throttle_with_provider_unthrottled() -> None:
    state = Health("up", 0, None, False, START, True)
    state, events = step(state, None, 40)
    assert events == ["provider.unthrottled"]
    assert state == CLEAN
    state, events = step(state, LIMITED, 41)  # a new run starts; nothing raised yet
    assert events == [] and state.throttled_since == START + timedelta(minutes=41)


def test_another_failure_is_an_answer_too() -> None:
    state = Health("up", 0, None, False, START, True)
    state, events = step(state, HTTP_502, 40)
    assert events == ["provider.unthrottled"]
    assert (state.throttled, state.throttled_since, state.consecutive_failures) == (False, None, 1)


def test_a_success_inside_the_run_starts_it_again() -> None:
    state, _ = step(CLEAN, LIMITED, 0)
    state, _ = step(state, LIMITED, 10)
    state, events = step(state, None, 11)  # a 429 waited out, then the call succeeded
    assert events == [] and state == CLEAN
    state, _ = step(state, LIMITED, 12)
    state, events = step(state, LIMITED, 26)
    assert events == []  # 14 minutes since the run began again
    state, events = step(state, LIMITED, 27)
    assert events == ["provider.throttled"]


def test_no_answer_at_all_neither_breaks_nor_ends_a_run() -> None:
    state, _ = step(CLEAN, LIMITED, 0)
    state, events = step(state, TIMEOUT, 5)
    assert events == [] and state.throttled_since == START and state.consecutive_failures == 1
    state, events = step(state, LIMITED, 15)
    assert events == ["provider.throttled"]
    state, events = step(state, TIMEOUT, 20)
    assert events == [] and state.throttled


def test_a_provider_down_stays_down_through_429s() -> None:
    state = Health("down", 4, "HTTP 502", False)
    for minute in range(0, 20, 5):
        state, events = step(state, LIMITED, minute)
    assert (state.health, state.consecutive_failures, state.last_error) == ("down", 4, "HTTP 502")
    assert state.throttled
    state, events = step(state, None, 21)
    assert events == ["provider.unthrottled", "provider.up"]


# -- the property ------------------------------------------------------------------------

OUTCOMES: dict[str, ProviderError | None] = {
    "429": LIMITED,
    "ok": None,
    "502": HTTP_502,
    "timeout": TIMEOUT,
    "malformed": MalformedReplyError("p", "reply is not JSON: HTML page"),
    "refused": RefusedError("p", "Service temporarily unavailable"),
    "auth": AuthError("p", "token rejected: Invalid API key"),
}


@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(OUTCOMES)), st.floats(0, 600, allow_nan=False)),
        max_size=60,
    ),
    st.integers(1, 30),
)
def test_throttled_only_after_an_unbroken_run_and_once_per_run(
    outcomes: list[tuple[str, float]], after_minutes: int
) -> None:
    after = timedelta(minutes=after_minutes)
    state, now = CLEAN, START
    run_start: datetime | None = None  # the first 429 since the last other answer
    raised_in_run = False
    throttled = False
    for kind, seconds in outcomes:
        now += timedelta(seconds=seconds)
        error = OUTCOMES[kind]
        state, alerts = plan_health("p", state, error, now, throttled_after=after)
        events = [a.event for a in alerts]
        answered = kind != "timeout"
        if kind == "429":
            run_start = run_start or now
            expect_throttled = not raised_in_run and now - run_start >= after
            assert (Event.PROVIDER_THROTTLED in events) == expect_throttled
            assert Event.PROVIDER_UNTHROTTLED not in events
            if expect_throttled:
                raised_in_run = throttled = True
        elif answered:
            assert Event.PROVIDER_THROTTLED not in events
            assert (Event.PROVIDER_UNTHROTTLED in events) == throttled
            run_start, raised_in_run, throttled = None, False, False
        else:
            assert Event.PROVIDER_THROTTLED not in events
            assert Event.PROVIDER_UNTHROTTLED not in events
        assert state.throttled == throttled and state.throttled_since == run_start


# -- the tracker -------------------------------------------------------------------------


def test_the_tracker_skips_the_database_on_successes_for_a_minute_at_most() -> None:
    clock = FakeClock(START)
    recorded: list[tuple[ProviderError | None, datetime]] = []

    async def record(provider: str, error: ProviderError | None, now: datetime) -> None:
        recorded.append((error, now))

    tracker = HealthTracker("p", record, clock)

    async def outcomes() -> None:
        await tracker("balance", None)  # recorded: nothing is known yet
        clock.advance(seconds=30)
        await tracker("status", None)  # skipped
        clock.advance(seconds=31)
        await tracker("status", None)  # recorded: another process may have left a 429
        await tracker("status", LIMITED)  # every 429 is recorded
        await tracker("status", None)  # and the success after it
        await tracker("add", RefusedError("p", "not enough funds"))  # an answer: skipped

    asyncio.run(outcomes())
    assert recorded == [
        (None, START),
        (None, START + timedelta(seconds=61)),
        (LIMITED, START + timedelta(seconds=61)),
        (None, START + timedelta(seconds=61)),
    ]
