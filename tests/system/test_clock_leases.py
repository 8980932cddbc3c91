"""A lease written by a clock that ran ahead must not strand the provider.

docs/operations.md, "A clock that jumps": times written while the clock was wrong must
not strand anything, and leases "are judged by the database's clock ... so neither moves
with a host's wall clock". On SQLite the database's clock is the host's: a one-shot
`syncd sync` (or a daemon stopped with SIGTERM) run while the clock was a day ahead
leaves its released lease ending a day from now, and every later process on the right
clock waits for that lease of a process that is gone.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _syncd(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def simulator() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.simulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_lease_left_by_a_clock_a_day_ahead_does_not_strand_the_provider(
    tmp_path: Path, simulator: str
) -> None:
    (tmp_path / "syncd.toml").write_text(
        '[database]\nurl = "sqlite:///syncd.db"\n\n'
        f'[[providers]]\nname = "sim"\nurl = "{simulator}"\ntoken = "sim-token"\n'
        'dialect = "api_token"\n'
    )
    assert _syncd(tmp_path, "sync", "balance").returncode == 0
    # What the same one-shot command leaves when the host's clock is a day ahead: its
    # released lease ends where it was last renewed, a day from now by the right clock.
    db = sqlite3.connect(tmp_path / "syncd.db")
    with db:
        db.execute(
            "UPDATE leases SET renewed_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 day'),"
            " expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 day')"
        )
    db.close()
    result = _syncd(tmp_path, "sync", "balance", "--wait", "3s")
    assert result.returncode == 0, result.stderr
