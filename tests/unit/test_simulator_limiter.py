"""The simulator's limiter: per-action limits as a provider publishes them, each counting
the 429s it answered."""

from __future__ import annotations

from syncd.simulator.limiter import Limiter
from tests.fakes import FakeClock


def test_each_action_is_held_to_its_own_limit_and_its_429s_are_counted() -> None:
    clock = FakeClock()
    limiter = Limiter(
        None,
        clock=clock.monotonic,
        limits={"add": "60/minute", "status": "120/minute", "packages": "10/hour"},
    )
    answers = {a: [limiter.admit(a) for _ in range(130)] for a in ("add", "status", "balance")}
    answers["packages"] = [limiter.admit("packages") for _ in range(12)]

    assert sum(r is None for r in answers["add"]) == 60
    assert sum(r is None for r in answers["status"]) == 120
    assert all(r is None for r in answers["balance"])  # no limit of its own
    assert sum(r is None for r in answers["packages"]) == 10
    assert limiter.rate_limited_by == {"add": 70, "status": 10, "packages": 2}
    assert limiter.rate_limited == 82
    refused = answers["add"][-1]
    assert refused is not None and refused.status == 429
    assert refused.headers["retry-after"] == "60"
    assert limiter.busiest == {"add": 60, "status": 120, "packages": 10}

    clock.advance(seconds=60)  # the minute has passed: adds again, the hour has not
    assert limiter.admit("add") is None
    assert limiter.admit("packages") is not None
