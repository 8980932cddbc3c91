"""What the benchmark scripts share: child processes measured as an installed syncd
runs, a throw-away database, orders loaded into it, and what several daemons on it are
measured by (leases held, a consumer's pickup latency, a reader following the change
feed). Imported by the scripts beside it (run from the repository root:
``python tests/benchmarks/NAME.py``)."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from syncd.storage import open_storage
from syncd.storage import tables as t


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


def load_orders(url: str, provider: str, provider_ids: Sequence[int]) -> None:
    """Active tracked orders of ``provider``, due now, inserted in chunks as a consumer
    would: through sqlite3 into a SQLite file (seconds faster for a million rows), through
    syncd's own engine (its connection set-up, its column types) into a server's database."""
    now = datetime.now(UTC)
    chunks = [provider_ids[s : s + 10_000] for s in range(0, len(provider_ids), 10_000)]
    if url.startswith("sqlite"):
        at = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for chunk in chunks:
                conn.executemany(
                    "INSERT INTO orders (provider, provider_order_id, state, created_at, "
                    "next_check_at) VALUES (?, ?, ?, ?, ?)",
                    [(provider, i, "active", at, at) for i in chunk],
                )
        return
    storage = open_storage(url)
    try:
        for chunk in chunks:
            rows = [
                {"provider": provider, "provider_order_id": i, "state": "active",
                 "created_at": now, "next_check_at": now}
                for i in chunk
            ]  # fmt: skip
            with storage.engine.begin() as conn:
                conn.execute(sa.insert(t.orders), rows)
    finally:
        storage.close()


def holders(engine: sa.Engine) -> dict[str, str]:
    """Each lease not yet expired (a provider's name) and who holds it ("host:pid:start")."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.leases.c.name, t.leases.c.holder, t.leases.c.expires_at))
        now = datetime.now(UTC)
        return {r.name: r.holder for r in rows if _aware(r.expires_at) >= now}


def holder_pid(holder: str) -> int:
    return int(holder.split(":")[1])


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def count(engine: sa.Engine, query: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(query)).scalar_one())


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Until ``condition()``; the script stops after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


class Consumer(threading.Thread):
    """A consumer INSERTing queued orders, ``rate`` a second, each for a random one of
    ``providers`` (``https://b.example/N`` links), until ``limit`` orders or ``stop()``;
    a watcher notes when syncd recorded each one taken by its provider (no longer queued
    or submitting). ``latencies()``: seconds from each INSERT's commit until then."""

    def __init__(
        self, engine: sa.Engine, providers: Sequence[str], rate: float, limit: int | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.providers = list(providers)
        self.rate = rate
        self.limit = limit
        self.inserted: dict[int, float] = {}
        self.taken: dict[int, float] = {}
        self.queries = 0  # the consumer's own statements, apart from syncd's
        self._done = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def run(self) -> None:
        rng = random.Random(1)
        with self.engine.connect() as conn:
            service = conn.execute(sa.text("SELECT min(service_id) FROM packages")).scalar_one()
        self._watcher.start()
        start = time.monotonic()
        n = 0
        while not self._done.is_set() and (self.limit is None or n < self.limit):
            if self._done.wait(max(0.0, start + n / self.rate - time.monotonic())):
                break
            with self.engine.begin() as conn:
                order_id = conn.execute(
                    sa.insert(t.orders)
                    .values(provider=rng.choice(self.providers), service_id=service,
                            link=f"https://b.example/{n}", quantity=100, state="queued")
                    .returning(t.orders.c.id)
                ).scalar_one()  # fmt: skip
            self.queries += 1
            self.inserted[order_id] = time.monotonic()
            n += 1

    def _watch(self) -> None:
        while not (self._done.is_set() and not self.is_alive()) or self.pending():
            if pending := self.pending():
                with self.engine.connect() as conn:
                    rows = conn.execute(
                        sa.text("SELECT id FROM orders WHERE id IN :ids AND state NOT IN "
                                "('queued', 'submitting')").bindparams(
                            sa.bindparam("ids", expanding=True)),
                        {"ids": pending},
                    )  # fmt: skip
                    now = time.monotonic()
                    for (order_id,) in rows:
                        self.taken[order_id] = now
                self.queries += 1
            time.sleep(0.01)

    def pending(self) -> list[int]:
        return [i for i in list(self.inserted) if i not in self.taken]

    def stop(self, timeout: float = 60) -> None:
        """No more inserts; waits up to ``timeout`` seconds for the last to be taken."""
        self._done.set()
        self.join()
        self._watcher.join(timeout=timeout)

    def latencies(self) -> list[tuple[float, float]]:
        """(its INSERT's moment (monotonic), pickup seconds) of each order taken."""
        return sorted((self.inserted[i], self.taken[i] - self.inserted[i]) for i in self.taken)


class FeedReader(threading.Thread):
    """Follows order_changes as a consumer would (``id > cursor``), pausing ``pause``
    seconds between two reads; ``missed()``: committed rows it never saw."""

    def __init__(self, engine: sa.Engine, pause: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.engine = engine
        self.pause = pause
        self.seen: set[int] = set()
        self.queries = 0  # the reader's own statements, apart from syncd's
        self._done = threading.Event()
        self._all: list[int] = []

    def run(self) -> None:
        cursor = 0
        with self.engine.connect() as conn:
            while True:
                # Once more after stop(): rows committed during the last look are read.
                finished = self._done.is_set()
                ids = list(
                    conn.execute(
                        sa.text("SELECT id FROM order_changes WHERE id > :c ORDER BY id"),
                        {"c": cursor},
                    ).scalars()
                )
                conn.commit()
                self.queries += 1
                if ids:
                    self.seen.update(ids)
                    cursor = ids[-1]
                if finished:
                    return
                self._done.wait(self.pause)

    def stop(self) -> None:
        self._done.set()
        self.join()
        with self.engine.connect() as conn:
            self._all = list(conn.execute(sa.text("SELECT id FROM order_changes")).scalars())

    def missed(self) -> list[int]:
        return sorted(set(self._all) - self.seen)

    def total(self) -> int:
        return len(self._all)
