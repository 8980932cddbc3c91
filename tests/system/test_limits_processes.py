"""A published limit held by three processes together: two daemons and a loop of
`syncd order add`, against the simulator's own limiter (the full three minutes of the
provider's minute is ``tests/benchmarks/limits.py``; here the window is 20 s)."""

from __future__ import annotations

from pathlib import Path

from syncd.limits import CallLimit
from tests.limits_scenario import three_processes

LIMIT = CallLimit(20, 20)
SECONDS = 45.0


def test_two_daemons_and_one_shot_adds_never_exceed_the_add_limit_together(
    tmp_path: Path,
) -> None:
    figures = three_processes(tmp_path, LIMIT, SECONDS)
    assert figures.rate_limited == 0, figures.lines()
    assert figures.busiest <= LIMIT.count
    # The limit was used, not merely kept by sending nothing: more was queued than it
    # lets through, and both the daemons and the commands sent some of it.
    assert figures.adds >= LIMIT.count * (SECONDS / LIMIT.seconds) * 0.7, figures.lines()
    assert figures.by_daemons > 0 and figures.by_command > 0, figures.lines()
