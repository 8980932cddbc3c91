"""Lease storage: ``leases`` (who works for each provider) and ``instances`` (who runs).

Every statement is judged by the database's clock (``db_clock``), one statement each:
acquiring is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired`` (or the engine's
spelling of it), renewing one ``UPDATE ... WHERE holder and epoch match and not expired``,
each read back in its transaction. Two instances racing for a
lease cannot both win: the database decides which statement sees the row expired.

A lease is the right to work, not the guarantee that nobody else does: a paused holder
may wake up after its lease ran out. So every write of a leased job checks the lease's
epoch in its own transaction (``fenced`` and ``base.check_fence``): an instance whose
lease was taken over writes nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from syncd.deadlines import CLOCK_SKEW
from syncd.models import Event, Instance, Lease
from syncd.plans import AlertIntent
from syncd.storage import overview
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import FENCE, db_clock
from syncd.storage.driver import Driver
from syncd.storage.rows import raw, read_text, read_time, readable

_l, _i = t.leases.c, t.instances.c
# How long the row of an instance that stopped without a clean exit is kept (and counted
# silent by the metrics) before it is forgotten.
FORGET_SILENT = timedelta(hours=1)


@contextmanager
def fenced(lease: Lease) -> Iterator[None]:
    """Every storage write made inside (in this task, and in the worker threads it starts)
    first checks that ``lease`` still holds, and writes nothing if it does not."""
    token = FENCE.set(lease)
    try:
        yield
    finally:
        FENCE.reset(token)


class LeaseStorage(AlertStorage):
    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``ttl`` seconds if nobody holds it (it never existed,
        ran out, was released, or was last renewed under a clock that ran ahead); None
        when another holder's lease still runs. Each acquisition has a new epoch.

        Taking over a lease that ran out while its holder was to renew it (a released
        lease ends where it was last renewed) raises ``instance.lost``, in the same
        transaction: that holder died, hung, or lost the database."""

        def work(conn: sa.Connection) -> Lease | None:
            found = conn.execute(
                sa.select(
                    raw(_l.holder), raw(_l.renewed_at), raw(_l.expires_at), raw(_l.epoch)
                ).where(_l.name == name)
            ).first()
            before = _read_lease(found)
            now, until = db_clock(conn), db_clock(conn, ttl)
            # A renewal further ahead than any clock skew was written under a clock that
            # has since gone back (SQLite's clock is the host's): no holder renewing with
            # the database's clock writes one, and waiting for it would leave the
            # provider unworked for as long as that clock was ahead.
            ahead = db_clock(conn, CLOCK_SKEW.total_seconds())
            conn.execute(
                self.backend.upsert(
                    t.leases,
                    {"name": name, "holder": holder, "epoch": 1, "acquired_at": now,
                     "renewed_at": now, "expires_at": until},
                    key=[_l.name],
                    update={"holder": holder, "epoch": _l.epoch + 1, "acquired_at": now,
                            "renewed_at": now, "expires_at": until},
                    where=sa.or_(_l.expires_at < now, _l.renewed_at > ahead),
                )
            )  # fmt: skip
            # Read back, not RETURNING (MariaDB has no RETURNING on an update): the row is
            # ours until the commit, and it is a new acquisition of ours only if the
            # upsert inserted it or gave it a new epoch.
            mine = conn.execute(
                sa.select(raw(_l.holder), raw(_l.epoch)).where(_l.name == name)
            ).first()
            if mine is None or mine[0] != holder or (found is not None and mine[1] == found[3]):
                return None  # the row as another holder (or a consumer's hand) left it
            row = conn.execute(
                sa.select(_l.epoch, _l.expires_at, _l.acquired_at).where(_l.name == name)
            ).one()
            # Not when an instance takes back its own lease (it could not renew in time,
            # say the database was out of reach): nobody was lost.
            if before is not None:
                last_holder, renewed_at, expired_at = before
                if expired_at > renewed_at and last_holder != holder:
                    self._insert_alerts(conn, [_lost(name, last_holder, holder)], row.acquired_at)
            return Lease(name, holder, row.epoch, row.expires_at)

        return self._write(work)

    def renew_lease(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend a lease this holder still has (same epoch, not run out); None when it is
        lost: the caller must stop the provider's work at once."""

        def work(conn: sa.Connection) -> Lease | None:
            now = db_clock(conn)
            renewed = conn.execute(
                sa.update(t.leases)
                .where(
                    _l.name == lease.name,
                    _l.holder == lease.holder,
                    _l.epoch == lease.epoch,
                    _l.expires_at >= now,
                )
                .values(renewed_at=now, expires_at=db_clock(conn, ttl))
            )
            if renewed.rowcount != 1:
                return None
            until = conn.execute(
                sa.select(_l.expires_at).where(_l.name == lease.name)
            ).scalar_one()  # read back, as above
            return Lease(lease.name, lease.holder, lease.epoch, until)

        return self._write(work)

    def release_lease(self, lease: Lease) -> None:
        """Give a lease up now (shutting down): another instance may take it at once. A
        released lease ends where it was last renewed, which tells it from a lease whose
        holder stopped renewing it."""

        def work(conn: sa.Connection) -> None:
            ended = db_clock(conn, -0.001)  # one moment, twice: 'now' holds for a statement
            conn.execute(
                sa.update(t.leases)
                .where(_l.name == lease.name, _l.holder == lease.holder, _l.epoch == lease.epoch)
                .values(expires_at=ended, renewed_at=ended)
            )

        self._write(work)

    def lease_holders(self) -> dict[str, Lease]:
        """Every lease that still runs, by name (the database's clock decides)."""
        return self._read(lambda conn: overview.lease_holders(Driver(conn)))

    # -- instances -----------------------------------------------------------------------

    def heartbeat(self, instance_id: str, host: str, pid: int, version: str) -> None:
        """Say this instance is alive (registering it the first time)."""

        def work(conn: sa.Connection) -> None:
            now = db_clock(conn)
            conn.execute(
                self.backend.upsert(
                    t.instances,
                    {"id": instance_id, "host": host, "pid": pid, "version": version,
                     "started_at": now, "heartbeat_at": now},
                    key=[_i.id],
                    update={"heartbeat_at": now},
                )
            )  # fmt: skip
            # An instance that stopped without a clean exit is counted silent (an alert)
            # for a while, then forgotten: its id never comes back.
            # Found by a plain read first and deleted by id: a DELETE scanning the table
            # would lock the rows of the other instances, each in its own heartbeat.
            forget = db_clock(conn, -FORGET_SILENT.total_seconds())
            gone = conn.execute(sa.select(_i.id).where(_i.heartbeat_at < forget)).scalars().all()
            if gone:
                conn.execute(
                    sa.delete(t.instances).where(_i.id.in_(gone), _i.heartbeat_at < forget)
                )

        self._write(work)

    def live_instances(self, within: float) -> list[Instance]:
        """Instances whose last heartbeat is at most ``within`` seconds old, by id."""
        return self._read(lambda conn: overview.live_instances(Driver(conn), within))

    def forget_instance(self, instance_id: str) -> None:
        """Remove a stopping instance, so the others count it out at once."""
        self._write(lambda conn: conn.execute(sa.delete(t.instances).where(_i.id == instance_id)))


def _read_lease(row: Sequence[Any] | None) -> tuple[str, datetime, datetime] | None:
    """Holder, last renewal and end of a lease row, or None when it cannot be read."""
    if row is None:
        return None
    holder = readable(read_text, row[0])
    renewed, until = readable(read_time, row[1]), readable(read_time, row[2])
    if holder is None or renewed is None or until is None:
        return None
    return holder, renewed, until


def _lost(name: str, holder: str, taker: str) -> AlertIntent:
    return AlertIntent(
        Event.INSTANCE_LOST,
        name,
        f"{holder} stopped renewing its lease of {name} (it died, hung, or lost the "
        f"database); {taker} took the provider over",
        {"instance": holder, "taken_by": taker},
    )
