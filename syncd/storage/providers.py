"""Provider storage: ``providers``, ``balance_snapshots`` and the ``jobs`` bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from syncd.models import Balance, Health, LedgerSpend, ProviderOverview
from syncd.plans import AlertIntent, BalancePlan
from syncd.storage import ledger as ledger_rows
from syncd.storage import overview
from syncd.storage import tables as t
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import lock_provider
from syncd.storage.driver import Driver
from syncd.storage.overview import Monitored
from syncd.storage.rows import raw, read_money, read_text, read_time, readable


class ProviderStorage(AlertStorage):
    def register_providers(self, providers: Iterable[tuple[str, str]]) -> None:
        """Make sure a ``providers`` row exists for each configured (name, url)."""
        wanted = dict(providers)

        def work(conn: sa.Connection) -> None:
            known = {
                n: u for n, u in conn.execute(sa.select(t.providers.c.name, t.providers.c.url))
            }
            # Instances started together register the same providers at once: a row
            # another one inserted since the read above is updated, not a duplicate.
            for name, url in wanted.items():
                if name not in known:
                    conn.execute(
                        self.backend.upsert(
                            t.providers,
                            {"name": name, "url": url},
                            key=[t.providers.c.name],
                            update={"url": url},
                        )
                    )
            for name, url in wanted.items():
                if name in known and known[name] != url:
                    conn.execute(
                        sa.update(t.providers).where(t.providers.c.name == name).values(url=url)
                    )

        self._write(work)

    def balance_history(self, provider: str, since: datetime) -> list[tuple[datetime, Decimal]]:
        """Snapshots observed since ``since``, and the last one before it, oldest first."""
        return self._read(lambda conn: overview.balance_history(Driver(conn), provider, since))

    def ledger_spend(
        self, p: ProviderOverview, since: datetime, now: datetime, days: int = 0
    ) -> LedgerSpend | None:
        """What ``p``'s current ledger holds since ``since`` (``overview.ledger_spend``)."""
        return self._read(lambda conn: overview.ledger_spend(Driver(conn), p, since, now, days))

    def apply_health(
        self,
        provider: str,
        now: datetime,
        decide: Callable[[Health], tuple[Health, list[AlertIntent]]],
        *,
        answered: bool = False,
    ) -> None:
        """Apply one outcome (a call's, or one 429 answer) to the provider's health and
        throttle state, with the alerts it raises, in one transaction: a restart or a
        second process never raises one twice. ``answered``: the call succeeded, and
        ``answered_at`` says so."""
        p = t.providers.c

        def work(conn: sa.Connection) -> None:
            row = conn.execute(
                sa.select(
                    p.health,
                    p.consecutive_failures,
                    p.last_error,
                    p.auth_failed,
                    raw(p.throttled_since),
                    p.throttled,
                )
                .where(p.name == provider)
                # Concurrent calls of one provider end at once (a status sweep's, all
                # meeting 429s): each reads the state the one before it wrote, so no
                # transition is decided, and alerted, twice. (NO KEY: base.lock_provider.)
                .with_for_update(key_share=True)
            ).first()
            if row is None:
                return
            old = Health(
                row.health,
                row.consecutive_failures,
                row.last_error,
                bool(row.auth_failed),
                # A time garbled by hand starts a new run rather than failing every call.
                readable(read_time, row.throttled_since),
                bool(row.throttled),
            )
            new, alerts = decide(old)
            values: dict[str, object] = {"answered_at": now} if answered else {}
            if new != old:
                values.update(
                    health=new.health,
                    consecutive_failures=new.consecutive_failures,
                    last_error=new.last_error,
                    auth_failed=new.auth_failed,
                    throttled_since=new.throttled_since,
                    throttled=new.throttled,
                )
            if not values:
                return  # nothing changed
            conn.execute(sa.update(t.providers).where(p.name == provider).values(values))
            self._insert_alerts(conn, alerts, now)

        self._write(work)

    def apply_balance(
        self,
        provider: str,
        decide: Callable[[Balance | None, bool], BalancePlan],
        ledger: tuple[timedelta, ledger_rows.Planner] | None = None,
    ) -> BalancePlan:
        """Read the last snapshot and the low flag, let ``decide`` plan, write the plan: one
        transaction, so two processes reading the balance at once never alert twice. With
        ``ledger`` (its look-back and planner), the ledger is reconciled with the balance
        in the same transaction (``storage/ledger.py``)."""

        def work(conn: sa.Connection) -> BalancePlan:
            lock_provider(conn, provider)
            plan = decide(_last_snapshot(conn, provider), _is_low(conn, provider))
            self._write_balance(conn, plan)
            if ledger is None:
                return plan
            lookback, planner = ledger
            result = ledger_rows.reconcile_in(Driver(conn), provider, plan.now, lookback, planner)
            self._insert_alerts(conn, result.alerts, plan.now)
            return replace(plan, ledger=result)

        return self._write(work)

    def _write_balance(self, conn: sa.Connection, plan: BalancePlan) -> None:
        values: dict[str, object] = {
            "balance": plan.balance.amount,
            "balance_checked_at": plan.now,
            "balance_low": plan.low,
        }
        if plan.balance.currency is not None:  # a reply without currency keeps the known one
            values["currency"] = plan.balance.currency
        conn.execute(
            sa.update(t.providers).where(t.providers.c.name == plan.provider).values(values)
        )
        if plan.snapshot:
            conn.execute(
                sa.insert(t.balance_snapshots).values(
                    provider=plan.provider,
                    balance=plan.balance.amount,
                    currency=plan.balance.currency,
                    observed_at=plan.now,
                )
            )
        self._insert_alerts(conn, plan.alerts, plan.now)

    # -- job bookkeeping -----------------------------------------------------------------

    def last_successes(self, provider: str) -> dict[str, datetime]:
        """When each job of ``provider`` last succeeded, in whichever instance ran it (a
        value that cannot be read as a time is left out)."""
        j = t.jobs.c

        def work(conn: sa.Connection) -> dict[str, datetime]:
            rows = conn.execute(
                sa.select(j.job, raw(j.last_success_at)).where(j.provider == provider)
            )
            found = {str(job): readable(read_time, at) for job, at in rows}
            return {job: at for job, at in found.items() if at is not None}

        return self._read(work)

    def ping(self) -> None:
        """One trivial read: raises ``StorageError`` when the database does not answer."""
        self._read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar())

    def record_job_start(self, provider: str, job: str, now: datetime) -> None:
        self._write(lambda conn: _put_job(conn, provider, job, {"last_started_at": now}))

    def record_job_success(self, provider: str, job: str, now: datetime) -> bool:
        """Record a success; whether the job was failing until now (it recovered)."""
        values = {"last_success_at": now, "failing_since": None, "last_error": None}

        def work(conn: sa.Connection) -> bool:
            was_failing, _ = _failing_since(conn, provider, job)
            _put_job(conn, provider, job, values)
            return was_failing

        return self._write(work)

    def record_job_failure(self, provider: str, job: str, now: datetime, error: str) -> bool:
        """Record a failure; whether the job was failing already (a repeat, not news)."""

        def work(conn: sa.Connection) -> bool:
            was_failing, since = _failing_since(conn, provider, job)
            values = {"last_failure_at": now, "last_error": error, "failing_since": since or now}
            _put_job(conn, provider, job, values)
            return was_failing

        return self._write(work)

    # -- overview ------------------------------------------------------------------------

    def overview(self) -> list[ProviderOverview]:
        """Every provider, with its open orders by state, active packages and jobs."""
        return self._read(lambda conn: overview.providers(Driver(conn)))

    def monitored(self, within: float) -> Monitored:
        """What the metrics export from the database, in one transaction (instances
        live with a heartbeat within ``within`` seconds)."""
        return self._read(lambda conn: overview.monitored(Driver(conn), within))


def _failing_since(conn: sa.Connection, provider: str, job: str) -> tuple[bool, datetime | None]:
    """Whether the job is failing, and since when (None if that cannot be read)."""
    j = t.jobs.c
    since = conn.execute(
        sa.select(raw(j.failing_since)).where(j.provider == provider, j.job == job)
    ).scalar()
    return since is not None, readable(read_time, since)


def _put_job(conn: sa.Connection, provider: str, job: str, values: Mapping[str, object]) -> None:
    j = t.jobs.c
    updated = conn.execute(
        sa.update(t.jobs).where(j.provider == provider, j.job == job).values(values)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(t.jobs).values(provider=provider, job=job, **values))


def _last_snapshot(conn: sa.Connection, provider: str) -> Balance | None:
    s = t.balance_snapshots.c
    row = conn.execute(
        sa.select(raw(s.balance), raw(s.currency))
        .where(s.provider == provider)
        .order_by(s.id.desc())
        .limit(1)
    ).first()
    amount = readable(read_money, row.balance) if row is not None else None
    # A snapshot garbled by hand counts as none: the next reading writes a good one.
    return (
        None
        if row is None or amount is None
        else Balance(amount, readable(read_text, row.currency))
    )


def _is_low(conn: sa.Connection, provider: str) -> bool:
    p = t.providers.c
    return bool(conn.execute(sa.select(p.balance_low).where(p.name == provider)).scalar())
