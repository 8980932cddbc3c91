"""The balance job: store the balance, a snapshot on each change, and alert on crossings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import TYPE_CHECKING

from syncd.config import ProviderConfig
from syncd.ledger import LedgerState, Recent, Reconciliation, reconcile
from syncd.lifecycle import MAX_BACKOFF
from syncd.models import Balance, Event, LedgerSpend
from syncd.plans import AlertIntent, BalancePlan
from syncd.units import amount_text, money_text, shown_amount

if TYPE_CHECKING:  # syncd status reads runway_hours; the job's context is the storage's
    from syncd.jobs.context import JobContext

RUNWAY_WINDOW = timedelta(hours=24)


def lookback(provider: ProviderConfig) -> timedelta:
    """How far back a top-up (or drift) the ledger wrote may still turn out to have been a
    refund (or a charge) syncd had not seen yet: the longest an active order waits for its
    next check, and a poll of each job on top."""
    return MAX_BACKOFF + provider.orders_interval + provider.balance_interval


def _log_ledger(ctx: JobContext, result: Reconciliation | None) -> None:
    if result is None:
        return
    state = result.state
    if result.opened:
        ctx.log.info("ledger.opened", balance=money_text(state.balance), currency=state.currency)
    for entry in result.entries:
        ctx.log.info("ledger.explained", kind=entry.kind.value, amount=money_text(entry.amount))
    if state.gap:
        ctx.log.info("ledger.unexplained", amount=money_text(state.gap))
    if result.cleared:
        ctx.log.info("ledger.balanced", balance=money_text(state.balance))


def runway_hours(history: Sequence[tuple[datetime, Decimal]], now: datetime) -> Decimal | None:
    """Hours until the balance reaches zero at the spend rate of the last 24 hours.

    ``history`` is (observed_at, balance) oldest first: the snapshots of the window plus
    the last one before it. Spend is the sum of the drops between snapshots (top-ups are
    not spend). None when nothing was spent, or nothing is known.
    """
    if len(history) < 2:
        return None
    if history[-1][1] <= 0:
        return Decimal("0.0")  # nothing left to spend: no runway at all
    start = now - RUNWAY_WINDOW
    spent = sum(
        (max(Decimal(0), before - after) for (_, before), (_, after) in pairwise(history)),
        Decimal(0),
    )
    observed_since = max(start, history[0][0])
    hours = Decimal((now - observed_since).total_seconds()) / 3600
    if spent <= 0 or hours <= 0:
        return None
    return (history[-1][1] / (spent / hours)).quantize(Decimal("0.1"))


def ledger_runway(balance: Decimal | None, spend: LedgerSpend | None) -> Decimal | None:
    """Hours until ``balance`` reaches zero at the rate the ledger saw it fall over its
    window (``syncd status``): what was spent and what drifted away, top-ups left out.
    Unlike the balance drops ``runway_hours`` reads, a currency switch is no spend. None
    when nothing was spent or nothing is known."""
    if balance is None or spend is None:
        return None
    if balance <= 0:
        return Decimal("0.0")
    fell = spend.spent + spend.drift
    if fell <= 0 or spend.hours <= 0:
        return None
    return (balance / (fell / spend.hours)).quantize(Decimal("0.1"))


def plan_balance(
    provider: str,
    last: Balance | None,
    fetched: Balance,
    now: datetime,
    *,
    low_balance: Decimal | None = None,
    was_low: bool = False,
    runway: Decimal | None = None,
) -> BalancePlan:
    """A snapshot when the amount (or a named currency) changed; an alert when the balance
    crosses ``low_balance`` downwards (``balance.low``) or back up (``balance.recovered``)."""
    changed = (
        last is None
        or last.amount != fetched.amount
        or (fetched.currency is not None and fetched.currency != last.currency)
    )
    if low_balance is None:  # no threshold (any more): nothing to cross, nothing to report
        return BalancePlan(provider, now, fetched, snapshot=changed, low=False)
    low = fetched.amount < low_balance
    alerts = []
    amount = amount_text(fetched.amount, fetched.currency)
    data = {
        "balance": money_text(fetched.amount),
        "currency": fetched.currency,
        "threshold": money_text(low_balance) if low_balance is not None else None,
    }
    if low and not was_low:
        estimate = f"; about {runway} h left at the last 24 h spend" if runway is not None else ""
        alerts.append(
            AlertIntent(
                Event.BALANCE_LOW,
                provider,
                f"{provider} balance {amount} is below {data['threshold']}{estimate}",
                data | {"runway_hours": str(runway) if runway is not None else None},
            )
        )
    elif was_low and not low:
        alerts.append(
            AlertIntent(
                Event.BALANCE_RECOVERED,
                provider,
                f"{provider} balance {amount} is back at or above {data['threshold']}",
                data,
            )
        )
    return BalancePlan(provider, now, fetched, snapshot=changed, low=low, alerts=alerts)


async def sync_balance(ctx: JobContext) -> str:
    name = ctx.provider.name
    fetched = await ctx.client.balance()
    now = ctx.now()
    history = await ctx.db(ctx.storage.balance_history, name, now - RUNWAY_WINDOW)
    runway = runway_hours([*history, (now, fetched.amount)], now)

    def decide(last: Balance | None, was_low: bool) -> BalancePlan:
        return plan_balance(
            name, last, fetched, now,
            low_balance=ctx.provider.low_balance, was_low=was_low, runway=runway,
        )  # fmt: skip

    def explain(state: LedgerState, recent: Callable[[], list[Recent]]) -> Reconciliation:
        return reconcile(
            name, state, fetched, now=now, recent=recent, tolerance=ctx.provider.drift_tolerance
        )

    plan = await ctx.db(ctx.storage.apply_balance, name, decide, (lookback(ctx.provider), explain))
    amount = shown_amount(fetched.amount, fetched.currency)  # the command's line
    ctx.log.info(
        "balance.synced", balance=money_text(fetched.amount), changed=plan.snapshot, low=plan.low
    )
    _log_ledger(ctx, plan.ledger)
    unknown = ""
    if fetched.currency_problem is not None:
        # Taken as no currency at all: the stored one is kept, and nothing has switched.
        ctx.log.warning("balance.currency_unreadable", problem=fetched.currency_problem)
        unknown = f"; currency unknown ({fetched.currency_problem})"
    return (
        amount + ("" if plan.snapshot else " (unchanged)") + (" LOW" if plan.low else "") + unknown
    )
