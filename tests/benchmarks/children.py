"""What the benchmark scripts share: child processes measured as an installed syncd
runs, and a throw-away database. Imported by the scripts beside it (run from the
repository root: ``python tests/benchmarks/NAME.py``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path


def child_env(tmp: str | Path) -> dict[str, str]:
    """The environment for measured children: they keep their compiled bytecode under
    ``tmp``, as an installed syncd has it (pip compiles it). With PYTHONDONTWRITEBYTECODE
    set, each run would compile syncd's modules again and count that as start-up."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
    return env


def measure(
    command: list[str], env: dict[str, str] | None = None, *, keep_output: bool = True
) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds (user and system) and peak RSS (MB) of one child process,
    and what it printed; the script stops if the child fails. SYNCD_BENCH_SPLIT=1 prints
    user and system time apart."""
    started = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, text=True, stdout=subprocess.PIPE if keep_output else subprocess.DEVNULL
    )
    output = child.stdout.read() if child.stdout is not None else ""
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command[1:4])} failed: {output}")
    if os.environ.get("SYNCD_BENCH_SPLIT"):
        print(f"  user {usage.ru_utime:.2f} s  system {usage.ru_stime:.2f} s  "
              f"voluntary switches {usage.ru_nvcsw}  involuntary {usage.ru_nivcsw}")  # fmt: skip
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, output


@contextlib.contextmanager
def database(server: str | None, sqlite_path: Path) -> Iterator[str]:
    """A fresh empty database: the SQLite file ``sqlite_path``, or a database created on
    the PostgreSQL ``server`` (a URL) and dropped afterwards."""
    if server is None:
        yield f"sqlite:///{sqlite_path}"
        return
    import psycopg  # noqa: PLC0415 - only with --database

    from syncd.storage.urls import conninfo  # noqa: PLC0415

    name = f"syncd_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(conninfo(server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(conninfo(server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
