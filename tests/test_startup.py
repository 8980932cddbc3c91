"""One-shot commands import only what they use: no HTTP client, scheduler or migration
tool for a command that needs none of them (each costs start-up time on every call)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config

PROBE = """
import sys
from syncd.cli import main
code = main(sys.argv[1:])
heavy = sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'apscheduler', 'alembic'})
print('IMPORTED', ','.join(heavy), file=sys.stderr)
"""


def imported(config: Path, *args: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, "--config", str(config), *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    line = next(line for line in run.stderr.splitlines() if line.startswith("IMPORTED"))
    return line.removeprefix("IMPORTED").strip()


@pytest.mark.parametrize(
    "args", [("status",), ("packages",), ("order", "list"), ("changes",), ("status", "--json")]
)
def test_reading_commands_import_no_client_scheduler_or_migrations(
    tmp_path: Path, db_url: str, args: tuple[str, ...]
) -> None:
    config = write_config(tmp_path / "syncd.toml", db_url, "https://panel.example/v2")
    assert imported(config, "status") == "alembic"  # the first run creates the database
    assert imported(config, *args) == ""
