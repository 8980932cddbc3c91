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
    the PostgreSQL or MariaDB ``server`` (a URL) and dropped afterwards."""
    if server is None:
        yield f"sqlite:///{sqlite_path}"
        return
    name = f"syncd_bench_{uuid.uuid4().hex[:12]}"
    if server.startswith(("mysql", "mariadb")):
        with _mariadb_database(server, name) as url:
            yield url
        return
    import psycopg  # noqa: PLC0415 - only with --database

    from syncd.storage.urls import conninfo  # noqa: PLC0415

    with psycopg.connect(conninfo(server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = server.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(conninfo(server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def _mariadb_database(server: str, name: str) -> Iterator[str]:
    """A database ``name`` on the MariaDB ``server``, in the character set and collation
    syncd's tables use, dropped afterwards (connections still in it are killed first)."""
    import sqlalchemy as sa  # noqa: PLC0415 - only with --database

    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
        try:
            yield (
                sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as conn:
                stale = conn.exec_driver_sql(
                    "SELECT id FROM information_schema.processlist WHERE db = %s "
                    "AND id <> CONNECTION_ID()",
                    (name,),
                ).scalars()
                for connection_id in list(stale):
                    with contextlib.suppress(sa.exc.DBAPIError):
                        conn.exec_driver_sql(f"KILL {int(connection_id)}")
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        admin.dispose()
