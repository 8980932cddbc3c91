"""What a job needs to run: its provider, a client, the storage, a clock and a logger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import structlog

from syncd.clock import utcnow
from syncd.config import ProviderConfig

if TYPE_CHECKING:  # the client (httpx) and storage are imported by the commands that use them
    from syncd.provider import ProviderClient
    from syncd.storage import Storage

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class JobContext:
    provider: ProviderConfig
    client: ProviderClient
    storage: Storage
    force: bool = False
    clock: Callable[[], datetime] = utcnow
    log: Any = field(default_factory=lambda: structlog.get_logger("syncd.jobs"))
    # Told (checked, due) during long order sweeps; the CLI draws it on a terminal.
    progress: Callable[[int, int], None] | None = None
    # Set when the daemon shuts down: long jobs stop taking new work at the next batch.
    stopping: asyncio.Event | None = None
    # One submitter at a time per provider in a process: the daemon's submit job and the
    # submission phase of its orders job share it.
    submit_lock: asyncio.Lock | None = None

    @property
    def stop_requested(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    def now(self) -> datetime:
        return self.clock()

    async def db(self, method: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a storage method in a worker thread: a waiting SQLite lock never stalls
        the event loop (other providers' calls, the watchdog)."""
        return await asyncio.to_thread(method, *args, **kwargs)
