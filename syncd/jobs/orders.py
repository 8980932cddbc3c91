"""The orders job: recover crashed submissions, set aside unusable rows, submit queued
orders, sync statuses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from syncd.jobs.context import JobContext
from syncd.jobs.status import sync_statuses
from syncd.jobs.strays import plan_stray
from syncd.jobs.submit import recover_submissions, submit_queued
from syncd.models import OrderState


async def sync_orders(ctx: JobContext) -> str:
    name = ctx.provider.name
    recovered = await recover_submissions(ctx)
    # Rows no job would take as they are (a consumer's typo in `state`, a provider nobody
    # configured, a queued row that already has a provider order id) are settled with
    # their reason, before anything is sent.
    strays = await ctx.db(ctx.storage.set_aside_strays, ctx.now(), plan_stray)
    for order_id, reason in strays:
        ctx.log.warning("order.set_aside", order_id=order_id, reason=reason)
    submitted = await submit_queued(ctx)
    # Statuses are worth syncing even when a submission went wrong; the submission's
    # failure still fails the job afterwards.
    swept = await sync_statuses(ctx, ctx.progress)
    if submitted.failure is not None:
        raise submitted.failure
    await ctx.db(ctx.storage.mark_orders_synced, name, ctx.now())
    ctx.log.info(
        "orders.synced",
        submitted=len(submitted.accepted),
        recovered=len(recovered),
        due=swept.due,
        checked=swept.checked,
        changed=swept.changed,
        calls=swept.calls,
    )
    recovered_text = f", {len(recovered)} ambiguous after a crash" if recovered else ""
    strays_text = f", {len(strays)} unusable rows set aside" if strays else ""
    return f"{submitted.summary()}{recovered_text}{strays_text}; {swept.summary()}"


def resolution(action: str, provider_order_id: int | None, now: datetime) -> dict[str, Any]:
    """The columns ``syncd order resolve`` writes to settle an ambiguous order."""
    settled: dict[str, Any] = {"error": None, "submit_owner": None, "submit_deadline": None}
    if action == "provider-order":
        return settled | {
            "state": OrderState.ACTIVE,
            "provider_order_id": provider_order_id,
            "next_check_at": now,
        }
    if action == "resend":
        return settled | {"state": OrderState.QUEUED, "submitted_at": None,
                          "provider_order_id": None}  # fmt: skip
    if action == "abandon":
        return settled | {"state": OrderState.ABANDONED, "finished_at": now}
    raise ValueError(action)
