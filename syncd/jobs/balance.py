"""The balance job: store the provider's balance and a snapshot each time it changes."""

from __future__ import annotations

from datetime import datetime

from syncd.jobs.context import JobContext
from syncd.models import Balance
from syncd.plans import BalancePlan
from syncd.units import money_text


def plan_balance(
    provider: str, last: Balance | None, fetched: Balance, now: datetime
) -> BalancePlan:
    """A snapshot is due when the amount (or a currency the provider names) changed."""
    changed = (
        last is None
        or last.amount != fetched.amount
        or (fetched.currency is not None and fetched.currency != last.currency)
    )
    return BalancePlan(provider, now, fetched, snapshot=changed)


async def sync_balance(ctx: JobContext) -> str:
    last = await ctx.db(ctx.storage.last_balance, ctx.provider.name)
    fetched = await ctx.client.balance()
    plan = plan_balance(ctx.provider.name, last, fetched, ctx.now())
    await ctx.db(ctx.storage.apply_balance, plan)
    amount = f"{money_text(fetched.amount)} {fetched.currency or ''}".strip()
    ctx.log.info("balance.synced", balance=money_text(fetched.amount), changed=plan.snapshot)
    return amount + ("" if plan.snapshot else " (unchanged)")
