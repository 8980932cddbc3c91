"""The deadline a sender gives its submission, and the one another host waits for.

A submission's deadline must cover the longest its call can legitimately take, waits for
the provider's request limit and 429 pauses included; and another host, which cannot see
the sender's configuration, must wait for any deadline a configuration syncd accepts can
produce. Otherwise a slow but healthy provider has orders declared ambiguous while they
are still being sent.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypedDict, Unpack

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd import deadlines
from syncd.deadlines import CLOCK_SKEW, farthest_lease, submission_lease
from syncd.jobs.runner import make_client
from syncd.process import owner_is_gone
from tests.conftest import provider_config

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ELSEWHERE = "otherhost:123:1"  # a sender on another host: only its deadline can be judged


class Settings(TypedDict, total=False):
    """The provider settings a submission's deadline depends on."""

    timeout: timedelta
    requests_per_minute: int | None
    max_concurrency: int


def lease_of(**settings: Unpack[Settings]) -> timedelta:
    """The deadline a sender configured with ``settings`` gives each submission."""
    client = make_client(provider_config("https://panel.example/api/v2", **settings))
    return submission_lease(client.longest_call())


def test_the_slowest_provider_syncd_accepts_has_its_submissions_waited_for_elsewhere() -> None:
    lease = lease_of(timeout=timedelta(hours=1), requests_per_minute=1, max_concurrency=64)
    # Its call may wait an hour per attempt, and a minute per call queued ahead of it.
    assert lease > timedelta(hours=3, minutes=3 * 68)
    deadline = NOW + lease
    just_before = deadline - timedelta(seconds=1)
    assert not owner_is_gone(ELSEWHERE, deadline, just_before, longest=farthest_lease())
    assert owner_is_gone(ELSEWHERE, deadline, deadline, longest=farthest_lease())


def test_a_deadline_beyond_any_configuration_is_a_clock_that_ran_ahead() -> None:
    deadline = NOW + farthest_lease() + timedelta(seconds=1)
    assert owner_is_gone(ELSEWHERE, deadline, NOW, longest=farthest_lease())


# A quarter of the profile's examples: each one builds a client, with its TLS context.
@settings(max_examples=max(10, settings().max_examples // 4))
@given(
    timeout=st.integers(1, 3600).map(lambda s: timedelta(seconds=s)),
    per_minute=st.none() | st.integers(1, 60_000),
    concurrency=st.integers(1, deadlines.MOST_CONCURRENT),
)
def test_no_accepted_configuration_gives_a_lease_another_host_would_not_wait_for(
    timeout: timedelta, per_minute: int | None, concurrency: int
) -> None:
    lease = lease_of(timeout=timeout, requests_per_minute=per_minute, max_concurrency=concurrency)
    assert lease + CLOCK_SKEW <= farthest_lease()
    # And the lease covers every attempt's deadline at least.
    assert lease >= 3 * timeout


def test_a_limited_provider_gives_a_longer_lease_than_an_unlimited_one() -> None:
    unlimited = lease_of(timeout=timedelta(seconds=30))
    limited = lease_of(timeout=timedelta(seconds=30), requests_per_minute=1)
    # 61 s between calls, for each call that may stand ahead (5 for the sweep, 4 others).
    assert limited - unlimited >= timedelta(seconds=3 * 61 * 9)
