"""The orders job: recover crashed submissions, set aside unusable rows, submit queued
orders, send queued refills and cancellations, sync statuses, track refills."""

from __future__ import annotations

from syncd.jobs.context import JobContext
from syncd.jobs.order_requests import send_requests, track_refills
from syncd.jobs.status import sync_statuses
from syncd.jobs.submit import recover_submissions, submit_queued
from syncd.lifecycle import plan_stray, ran_ahead


async def sync_orders(ctx: JobContext) -> str:
    name = ctx.provider.name
    recovered = await recover_submissions(ctx)
    # Rows no job would take as they are (a consumer's typo in `state`, a provider nobody
    # configured, a queued row that already has a provider order id) are settled with
    # their reason, before anything is sent.
    strays = await ctx.db(ctx.storage.apply_stray_orders, ctx.now(), plan_stray)
    for order_id, reason in strays:
        ctx.log.warning("order.set_aside", order_id=order_id, reason=reason)
    submitted = await submit_queued(ctx)
    requests = await send_requests(ctx)
    # A pass whose clock ran ahead (a wrong clock at boot, stepped back since) left its
    # check times in the future: they come back to now before anything is found due.
    now = ctx.now()
    orders, refills = await ctx.db(
        ctx.storage.recover_future_checks, name, now, lambda marks: ran_ahead(marks, now)
    )
    if orders or refills:
        ctx.log.warning("orders.clock_ran_ahead", orders=orders, refills=refills)
    # Statuses are worth syncing even when a submission went wrong; the submission's
    # failure still fails the job afterwards.
    swept = await sync_statuses(ctx, ctx.progress)
    await track_refills(ctx, requests)
    if submitted.failure is not None:
        raise submitted.failure
    if requests.failure is not None:
        raise requests.failure
    await ctx.db(ctx.storage.record_orders_synced, name, ctx.now())
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
    requests_text = f"; {text}" if (text := requests.summary()) else ""
    return f"{submitted.summary()}{recovered_text}{strays_text}; {swept.summary()}{requests_text}"
