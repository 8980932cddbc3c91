"""Process and database helpers shared by several test modules (the fakes are in
tests/fakes.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from syncd import logs
from syncd.lifecycle import plan_claims
from syncd.models import Order
from syncd.plans import Submission
from syncd.storage import Storage, tables
from syncd.storage.backends import backend_for


class Daemon:
    """`syncd run` in a subprocess with NOTIFY_SOCKET pointing at a socket we read.

    Its log (stderr) is read when it stops, unless ``log_to`` names a file to send it
    to: ``logged()`` then reads the events it logged so far, while it runs.
    """

    def __init__(
        self,
        config: Path,
        tmp_path: Path,
        *,
        watchdog_usec: int = 400_000,
        stderr: Any = None,
        log_to: Path | None = None,
    ) -> None:
        self.log_path = log_to
        self.socket_path = tmp_path / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.socket_path))
        self.notify.settimeout(0.1)
        self.messages: list[str] = []
        env = dict(
            os.environ, NOTIFY_SOCKET=str(self.socket_path), WATCHDOG_USEC=str(watchdog_usec)
        )
        env.pop("WATCHDOG_PID", None)
        with contextlib.ExitStack() as files:
            if log_to is not None:
                stderr = files.enter_context(log_to.open("w"))
            self.process = subprocess.Popen(
                [sys.executable, "-m", "syncd", "--config", str(config), "run"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if stderr is None else stderr,
                text=True,
            )

    def logged(self) -> list[str]:
        """The events of the JSON log lines written so far to ``log_to``."""
        assert self.log_path is not None, "started without log_to"
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line)["event"] for line in lines if line.endswith("}")]

    def wait_for(self, wanted: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not any(wanted in m for m in self.messages):
            assert time.monotonic() < deadline, f"no {wanted!r} in {self.messages}"
            assert self.process.poll() is None, self.process.communicate()
            self.read()

    def read(self) -> None:
        with contextlib.suppress(TimeoutError):
            self.messages.append(self.notify.recv(4096).decode())

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, float, str, str]:
        started = time.monotonic()
        self.process.send_signal(signum)
        out, err = self.process.communicate(timeout=15)
        took = time.monotonic() - started
        while True:  # what was sent before exiting
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                break
        return self.process.returncode, took, out, err

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.notify.close()


def syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "syncd", "--config", str(config), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def sql(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one statement on any backend in its own transaction: the rows it returns."""
    engine = sa.create_engine(url)
    # Times in the form the backend stores them (MariaDB: UTC without an offset).
    stored = backend_for(engine).time_value
    params = {k: stored(v) if isinstance(v, datetime) else v for k, v in params.items()}
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def query(db_url: str, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql).fetchall()


def wait_until(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def let_time_pass(storage: Storage, seconds: float) -> None:
    """What ``seconds`` on the database's clock do to leases and instances: every time
    in their rows moves that far into the past (a lease runs out, a heartbeat gets
    old), at once, however slow the machine. Leases are judged by the database's clock,
    which a test cannot move; their rows it can."""
    delta = timedelta(seconds=seconds)
    with storage.engine.begin() as conn:
        for table, key, times in (
            (tables.leases, "name", ("acquired_at", "renewed_at", "expires_at")),
            (tables.instances, "id", ("started_at", "heartbeat_at")),
        ):
            for row in conn.execute(sa.select(table)).mappings().all():
                earlier = {c: row[c] - delta for c in times}
                conn.execute(sa.update(table).where(table.c[key] == row[key]).values(earlier))


@contextlib.contextmanager
def when_logged(event: str, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action`` the moment syncd logs ``event``, in the thread that logs it: a test
    acts at the point the code reached, not after a guess at how long it takes to get
    there."""

    def hook(_logger: object, _method: str, entry: Any) -> Any:
        if entry.get("event") == event:
            action()
        return entry

    # Every level, whatever an earlier command in this process left configured.
    logs.configure(level="debug", stream=io.StringIO())
    before = structlog.get_config()["processors"]
    structlog.configure(processors=[hook, *before])
    try:
        yield
    finally:
        structlog.configure(processors=before)


def claim_one(storage: Storage, provider: str, **arguments: Any) -> tuple[Order, Submission] | None:
    """What the submit job claims, one queued order at a time: the judged order and its
    verdict, or None when nothing is queued."""
    planned = {name: arguments.pop(name) for name in ("decide", "owner", "deadline")}
    judged = storage.claim_queued(
        provider, limit=1, plan=partial(plan_claims, **planned), **arguments
    )
    return judged[0] if judged else None
