"""Turn provider overviews into text for people and JSON for scripts."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from syncd.display import printable
from syncd.models import Instance, ProviderOverview, WebhookBacklog
from syncd.units import shown_amount, shown_money


def when(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "never"
    now = now or datetime.now(UTC)
    seconds = int((now - moment).total_seconds())
    if seconds < 90:
        ago = f"{seconds}s ago"
    elif seconds < 5400:
        ago = f"{seconds // 60}m ago"
    elif seconds < 172800:
        ago = f"{seconds // 3600}h ago"
    else:
        ago = f"{seconds // 86400}d ago"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC ({ago})"


PICTURE_DAYS = timedelta(days=7)
_BARS = "▁▂▃▄▅▆▇█"


def daily(history: Sequence[tuple[datetime, Decimal]], now: datetime, days: int = 7) -> list[
    tuple[Decimal | None, Decimal]
]:  # fmt: skip
    """Per day of the last ``days`` (oldest first, today last): the balance at the day's
    end (None before the first snapshot) and what was spent that day (the drops between
    snapshots; a top-up is no spend)."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    ends: list[Decimal | None] = []
    spent = [Decimal(0)] * days
    for (_, before), (at, after) in itertools.pairwise(history):
        index = (at.astimezone(UTC).date() - first).days
        if 0 <= index < days and after < before:
            spent[index] += before - after
    for n in range(days):
        end = datetime.combine(first + timedelta(days=n + 1), datetime.min.time(), UTC)
        known = [amount for at, amount in history if at < end]
        ends.append(known[-1] if known else None)
    return list(zip(ends, spent, strict=True))


def sparkline(values: Sequence[Decimal | None]) -> str:
    """One bar per value, scaled between the smallest and the largest; a blank where the
    value is not known."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low, high = min(known), max(known)
    span = high - low
    bars = []
    for v in values:
        if v is None:
            bars.append(" ")
        else:
            level = 0 if span == 0 else int((v - low) / span * (len(_BARS) - 1))
            bars.append(_BARS[level])
    return "".join(bars)


def _pictures(p: ProviderOverview, now: datetime) -> list[str]:
    if not p.history:
        return []
    days = daily(p.history, now)
    spent = [s for _, s in days]
    if p.ledger_24h is not None and p.ledger_24h.by_day:
        # By the ledger: a top-up is no spend, nor a switch of currency.
        spent = [s for _, s in p.ledger_24h.by_day]
    spend = " ".join(map(shown_money, spent))  # exact: normalize() rounded past 28 digits
    return [
        f"  balance 7d  {sparkline([end for end, _ in days])}  (oldest first)",
        f"  spent/day   {spend}",
    ]


def overview_text(
    providers: list[ProviderOverview],
    backlog: Sequence[WebhookBacklog] = (),
    now: datetime | None = None,
    instances: Sequence[Instance] = (),
    *,
    pictures: bool = False,
) -> str:
    if not providers:
        return "no providers yet"
    blocks = [_provider_text(p, now, instances, pictures=pictures) for p in providers]
    if instances:
        lines = ["instances"]
        for i in instances:
            lines.append(f"  {i.id}  syncd {i.version}, heartbeat {when(i.heartbeat_at, now)}")
        blocks.append(_lines(lines))
    if backlog:
        lines = ["alerts"]
        for w in backlog:
            error = f" (last error: {w.last_error})" if w.last_error and w.undelivered else ""
            lines.append(
                f"  webhook {w.webhook}: {w.undelivered} undelivered, {w.failed} failed{error}"
            )
        blocks.append(_lines(lines))
    return "\n\n".join(blocks)


def _provider_text(
    p: ProviderOverview,
    now: datetime | None,
    instances: Sequence[Instance],
    *,
    pictures: bool,
) -> str:
    """One provider's block of ``syncd status``."""
    balance = shown_amount(p.balance, p.currency) if p.balance is not None else "unknown"
    throttled = (
        f", THROTTLED: only 429s since {when(p.throttled_since, now)}" if p.throttled else ""
    )
    lines = [
        f"{p.name}  {p.url}  health {p.health}{throttled}",
        f"  balance  {balance}{' LOW' if p.balance_low else ''}"
        f" (checked {when(p.balance_checked_at, now)})",
        f"  runway   {_runway(p.runway_hours)}",
        *_ledger(p),
        *(_pictures(p, now or datetime.now(UTC)) if pictures else []),
        f"  catalog  {p.active_packages} active packages (synced {when(p.catalog_synced_at, now)})",
        f"  orders   {_orders(p.orders, p.held)}",
    ]
    if p.send_pause.paused:
        lines.append(f"  sending  PAUSED: {_paused(p, now or datetime.now(UTC))}")
    if p.ambiguous_requests:
        lines.append(
            f"  requests {p.ambiguous_requests} ambiguous (refills or cancellations that"
            " may or may not have reached the provider: check them in its panel)"
        )
    if instances or p.lease is not None:
        holder = p.lease.holder if p.lease is not None else "no instance (nobody holds it)"
        lines.append(f"  worked by  {holder}")
    for job in p.jobs:
        if job.failing:
            state = f"FAILING since {when(job.failing_since, now)}: {job.last_error}"
        else:
            state = f"ok, last success {when(job.last_success_at, now)}"
        lines.append(f"  job {job.job:<8} {state}")
    if p.last_error:
        lines.append(f"  last error  {p.last_error}")
    return _lines(lines)


def _paused(p: ProviderOverview, now: datetime) -> str:
    """``since ... (5m ago), until ... (in 4m), after order 12's outcome was unknown``."""
    pause = p.send_pause
    parts = [f"since {when(pause.paused_at, now)}"]
    if pause.resume_at is not None and now < pause.resume_at:
        parts.append(f"until {pause.resume_at:%Y-%m-%d %H:%M:%S} UTC")
    else:
        parts.append("one goes alone once a harmless call (balance) answers")
    if pause.reason:
        parts.append(f"after {pause.reason}")
    return ", ".join(parts)


def _lines(lines: list[str]) -> str:
    """One field per line, whatever a provider or a receiver put in it (errors, currency):
    each line escaped whole, so no field can add a line or drive the terminal."""
    return "\n".join(printable(line) for line in lines)


def _orders(by_state: dict[str, int], held: int = 0) -> str:
    """``12 open: 3 queued (2 held by the price guard), 8 active, 1 ambiguous (settle:
    syncd order list --state ambiguous)``; states with no order are left out."""
    total = sum(by_state.values())
    parts = [
        f"{n} {state}"
        + (f" ({held} held by the price guard)" if state == "queued" and held else "")
        for state, n in by_state.items()
        if n
    ]
    text = f"{total} open" + (": " + ", ".join(parts) if parts else "")
    if by_state.get("ambiguous"):
        text += " (settle them: syncd order list --state ambiguous, then syncd order resolve)"
    return text


def _ledger(p: ProviderOverview) -> list[str]:
    """``spent    1.23 USD in 24 h, top-ups 50.00 USD, drift 0.40 USD; drift: raised``:
    the last 24 h by the ledger, top-ups and drift only when there were some."""
    spend = p.ledger_24h
    if spend is None:
        return ["  drift: raised"] if p.drifting else []
    parts = [f"{shown_amount(spend.spent, p.currency)} in 24 h"]
    if spend.topups:
        parts.append(f"top-ups {shown_amount(spend.topups, p.currency)}")
    if spend.drift:
        parts.append(f"drift {shown_amount(spend.drift, p.currency)}")
    raised = "; drift: raised" if p.drifting else ""
    return [f"  spent    {', '.join(parts)}{raised}"]


def _runway(hours: Decimal | None) -> str:
    if hours is None:
        return "unknown (no spend in the last 24 h)"
    return f"{hours} h at the last 24 h spend rate"


def overview_json(
    providers: list[ProviderOverview],
    backlog: Sequence[WebhookBacklog] = (),
    instances: Sequence[Instance] = (),
) -> dict[str, Any]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "providers": [
            {
                "name": p.name,
                "url": p.url,
                "health": p.health,
                "throttled": p.throttled,
                "throttled_since": iso(p.throttled_since),
                "currency": p.currency,
                "balance": shown_money(p.balance) if p.balance is not None else None,
                "balance_checked_at": iso(p.balance_checked_at),
                "balance_low": p.balance_low,
                "runway_hours": str(p.runway_hours) if p.runway_hours is not None else None,
                "ledger_24h": {
                    "spent": shown_money(p.ledger_24h.spent),
                    "topups": shown_money(p.ledger_24h.topups),
                    "drift": shown_money(p.ledger_24h.drift),
                    "hours": str(p.ledger_24h.hours.quantize(Decimal("0.01"))),
                }
                if p.ledger_24h is not None
                else None,
                "drifting": p.drifting,
                "catalog_synced_at": iso(p.catalog_synced_at),
                "active_packages": p.active_packages,
                "open_orders": p.open_orders,
                "orders": p.orders,
                "held": p.held,
                "send_pause": {
                    "paused_at": iso(p.send_pause.paused_at),
                    "resume_at": iso(p.send_pause.resume_at),
                    "pauses": p.send_pause.pauses,
                    "reason": p.send_pause.reason,
                }
                if p.send_pause.paused
                else None,
                "ambiguous_requests": p.ambiguous_requests,
                "lease": {
                    "holder": p.lease.holder,
                    "epoch": p.lease.epoch,
                    "expires_at": iso(p.lease.expires_at),
                }
                if p.lease is not None
                else None,
                "last_error": p.last_error,
                "jobs": {
                    j.job: {
                        "ok": not j.failing,
                        "last_started_at": iso(j.last_started_at),
                        "last_success_at": iso(j.last_success_at),
                        "last_failure_at": iso(j.last_failure_at),
                        "failing_since": iso(j.failing_since),
                        "last_error": j.last_error,
                    }
                    for j in p.jobs
                },
            }
            for p in providers
        ],
        "instances": [
            {
                "id": i.id,
                "host": i.host,
                "pid": i.pid,
                "version": i.version,
                "started_at": iso(i.started_at),
                "heartbeat_at": iso(i.heartbeat_at),
            }
            for i in instances
        ],
        "webhooks": [
            {
                "name": w.webhook,
                "undelivered": w.undelivered,
                "failed": w.failed,
                "last_error": w.last_error,
            }
            for w in backlog
        ],
    }
