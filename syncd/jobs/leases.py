"""Which instance works for which provider.

Several ``syncd run`` may share one database. A provider is the unit of work: all of its
jobs run in the one instance that holds its lease (``leases`` table, judged by the
database's clock). Each instance keeps its share: with P providers and I live instances
(a heartbeat within one lease time), at most ``ceil(P / I)``; an instance holding more
hands the extra ones over between passes, one that holds fewer takes free ones. A lease
not renewed within its time is free for anyone: that is how a dead instance's providers
are taken over. ``plan_leases`` decides (pure); ``LeaseKeeper`` talks to the database.

APScheduler 3 cannot share its job store between processes, so every instance keeps its
own scheduler for every provider and the lease decides whether a scheduled run works.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import structlog

from syncd import __version__
from syncd.errors import PrivilegeError, StorageError
from syncd.models import Lease
from syncd.process import owner
from syncd.storage import Storage

log = structlog.get_logger("syncd.leases")
SETTLE = 1.0  # seconds, at most, an instance waits at start before taking its share


@dataclass(frozen=True)
class LeasePlan:
    release: list[str]  # held and not busy, beyond this instance's share
    take: list[str]  # free ones to try, in order, up to the share


def plan_leases(
    providers: Sequence[str],
    held: Collection[str],
    taken_elsewhere: Collection[str],
    live_instances: int,
    busy: Callable[[str], bool],
) -> LeasePlan:
    """What to give up and what to take, so that this instance holds its share."""
    share = math.ceil(len(providers) / max(1, live_instances))
    extra = len(held) - share
    release = [name for name in sorted(held, reverse=True) if not busy(name)][: max(0, extra)]
    room = share - (len(held) - len(release))
    free = [p for p in providers if p not in held and p not in taken_elsewhere]
    return LeasePlan(release, free[: max(0, room)])


class LeaseKeeper:
    """Holds this instance's share of the provider leases; ``tick`` every third of the
    lease time renews, hands over and takes."""

    def __init__(
        self,
        storage: Storage,
        *,
        ttl: float,
        busy: Callable[[str], bool] = lambda _: False,
        on_lost: Callable[[str], None] = lambda _: None,
        on_taken: Callable[[str], None] = lambda _: None,
        me: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.storage = storage
        self.ttl = ttl
        self._sleep = sleep
        self.me = me or owner()
        # Every line about a lease names the instance (``host:pid:start``) it is about:
        # with several instances on one database, a line without it cannot be placed.
        self._log = log.bind(instance=self.me)
        self.held: dict[str, Lease] = {}
        self._valid_until: dict[str, float] = {}  # monotonic: when to stop trusting it
        self._busy, self._on_lost, self._on_taken = busy, on_lost, on_taken
        self._monotonic = monotonic
        self._out_of_reach = False
        # Why a lease not renewed in time was not: when the last renewal began (monotonic),
        # and the database error that ended the last one, if it failed.
        self._tried_at: float | None = None
        self._failure: str | None = None

    @property
    def out_of_reach(self) -> bool:
        """The last look at the database failed."""
        return self._out_of_reach

    def holds(self, name: str) -> Lease | None:
        lease = self.held.get(name)
        now = self._monotonic()
        if lease is not None and now >= self._valid_until[name]:
            self._lose(name, f"not renewed in time: {self._why_late(name, now)}")
            return None
        return lease

    def _why_late(self, name: str, now: float) -> str:
        """The true reason a lease ran out here: the renewals failed on the database, or
        they never ran because this process did not (stopped by SIGSTOP or a debugger,
        a suspended VM, an event loop blocked), or one is still waiting."""
        asked = self._valid_until[name] - self.ttl  # when its last renewal began
        if self._tried_at is None or self._tried_at <= asked:
            idle = now - (asked if self._tried_at is None else self._tried_at)
            return (
                f"no renewal was even tried for {idle:.0f}s (the lease lasts {self.ttl:g}s): "
                "this process did not run (stopped, suspended, or its event loop blocked)"
            )
        if self._failure is not None:
            return f"the database is out of reach ({self._failure})"
        return "the renewal is still waiting for the database"

    async def tick(self, providers: Sequence[str], *, starting: bool = False) -> None:
        """Beat, renew what is held, then hand over or take to keep this instance's share.
        A database out of reach is logged once; leases it could not renew are dropped once
        their time is up, so an instance cut off from the database holds none. The
        ``starting`` tick raises a ``PrivilegeError`` instead: a daemon whose role may not
        write its instance row would only wait for a person to grant it."""
        for name in list(self.held):
            self.holds(name)  # one that ran out before this renewal is lost, saying why
        self._tried_at = self._monotonic()
        try:
            if starting:
                await self._settle()
            await self._tick(providers)
        except StorageError as exc:
            if starting and isinstance(exc, PrivilegeError):
                raise
            self._failure = exc.detail
            if not self._out_of_reach:
                self._log.warning("leases.database_unreachable", error=str(exc))
            self._out_of_reach = True
            for name in list(self.held):
                self.holds(name)  # drops the ones whose time is up
            return
        if self._out_of_reach:
            self._log.info("leases.database_back")
        self._out_of_reach = False
        self._failure = None

    async def _settle(self) -> None:
        """Before the first share is taken: beat, then wait a moment (a tenth of the
        lease time, a second at most), so that instances started together (a host's
        units at boot) count each other. Otherwise the first to look sees itself alone,
        takes every provider, and keeps them busy through a whole first sweep while the
        others wait."""
        await self._beat()
        await self._sleep(min(SETTLE, self.ttl / 10))

    async def _beat(self) -> None:
        """This instance's row in ``instances``: alive now."""
        await asyncio.to_thread(
            self.storage.heartbeat, self.me, socket.gethostname(), os.getpid(), __version__
        )

    async def _tick(self, providers: Sequence[str]) -> None:
        db = asyncio.to_thread
        await self._beat()
        for name, lease in list(self.held.items()):
            started = self._monotonic()
            renewed = await db(self.storage.renew_lease, lease, self.ttl)
            if renewed is None:
                self._lose(name, "renewal refused: it ran out or another instance took it over")
            else:
                self._keep(renewed, started)
        for name in [n for n in self.held if n not in providers]:  # removed by a reload
            await self.release(name)
        live = await db(self.storage.live_instances, self.ttl)
        holders = await db(self.storage.lease_holders)
        elsewhere = [name for name, held in holders.items() if held.holder != self.me]
        plan = plan_leases(providers, list(self.held), elsewhere, len(live), self._busy)
        for name in plan.release:
            await self.release(name)
            self._log.info("lease.handed_over", provider=name, instances=len(live))
        for name in plan.take:
            started = self._monotonic()
            taken = await db(self.storage.acquire_lease, name, self.me, self.ttl)
            if taken is not None:
                self._keep(taken, started)
                self._log.info("lease.taken", provider=name, epoch=taken.epoch)
                self._on_taken(name)

    async def release(self, name: str) -> None:
        lease = self.held.pop(name, None)
        self._valid_until.pop(name, None)
        if lease is not None:
            await asyncio.to_thread(self.storage.release_lease, lease)

    def release_all(self) -> None:
        """On SIGTERM: every lease goes at once, and the instance says goodbye. Blocking:
        the daemon runs it in a thread it can stop waiting for."""
        for name in list(self.held):
            lease = self.held.pop(name)
            self._valid_until.pop(name, None)
            self.storage.release_lease(lease)
        self.storage.forget_instance(self.me)

    def _keep(self, lease: Lease, asked_at: float) -> None:
        self.held[lease.name] = lease
        # Trusted until its time is up, counted from before the request left: the
        # database's clock started the lease no earlier than that.
        self._valid_until[lease.name] = asked_at + self.ttl

    def _lose(self, name: str, why: str) -> None:
        self.held.pop(name, None)
        self._valid_until.pop(name, None)
        self._log.warning("lease.lost", provider=name, reason=why)
        self._on_lost(name)


async def wait_for_lease(
    storage: Storage, name: str, ttl: float, wait: float, *, me: str | None = None
) -> Lease | str:
    """The lease of ``name`` for a one-shot command, waiting up to ``wait`` seconds for
    its holder to let go; the holder's id when it does not."""
    me = me or owner()
    deadline = time.monotonic() + wait
    while True:
        lease = await asyncio.to_thread(storage.acquire_lease, name, me, ttl)
        if lease is not None:
            return lease
        holders: Mapping[str, Lease] = await asyncio.to_thread(storage.lease_holders)
        holder = holders[name].holder if name in holders else "another instance"
        if holder == me or time.monotonic() >= deadline:
            return holder
        await asyncio.sleep(min(1.0, max(0.05, deadline - time.monotonic())))


async def keep_renewed(storage: Storage, lease: Lease, ttl: float) -> None:
    """Renew a one-shot command's lease every third of its time until cancelled.

    A pass longer than the lease (a sweep of a few hundred thousand orders, a slow
    provider) would otherwise find its lease run out half-way, and every write after
    that refused. A renewal refused means another instance took the provider over: the
    pass's next write stops it (fencing), so this only says so and ends. A database out
    of reach is tried again at the next third.
    """
    while True:
        await asyncio.sleep(ttl / 3)
        try:
            renewed = await asyncio.to_thread(storage.renew_lease, lease, ttl)
        except StorageError as exc:
            log.warning(
                "lease.renewal_failed", provider=lease.name, instance=lease.holder, error=exc.detail
            )
            continue
        if renewed is None:
            log.warning(
                "lease.lost", provider=lease.name, instance=lease.holder, reason="renewal refused"
            )
            return
