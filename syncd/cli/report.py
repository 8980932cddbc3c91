"""``syncd report [--days N] [--provider P] [--json | --csv]``: the figures a reseller
reconciles against the provider's invoice, exact decimals.

Per provider, over the last N days (UTC):

- the money ledger per currency and UTC day, today and the N - 1 days before it
  (``syncd.cli.daybook``): opening balance, charges, refunds, top-ups, drift, closing
  balance; ``--csv`` prints these alone, for accounting;

- spend per day and per package: the ``charge`` the provider reported for each order
  sent in the window, by the day it was sent (an order whose charge is not known yet is
  counted apart, not guessed);
- orders by final status: the orders that finished in the window;
- the average time from sending to completion of the orders that completed in it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from syncd.cli.commands import load, opened
from syncd.cli.daybook import COLUMNS, Day, days
from syncd.cli.exits import EXIT_OK
from syncd.clock import utcnow
from syncd.display import printable
from syncd.errors import UserError
from syncd.models import Order, OrderState, Status
from syncd.units import money_text

LONGEST = 3660  # days: ten years of a shop's history at most


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    report = commands.add_parser(
        "report",
        help="the ledger per day, spend per day and package, final statuses, time to completion",
    )
    report.add_argument("--days", type=int, default=30, metavar="N", help="default 30")
    report.add_argument("--provider", metavar="P", help="only this provider")
    shape = report.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="one JSON object")
    shape.add_argument(
        "--csv", action="store_true", help="the ledger per day alone, as CSV for accounting"
    )


@dataclass
class Figures:
    provider: str
    spend_per_day: dict[str, Decimal] = field(default_factory=dict)
    spend_per_package: dict[int | None, tuple[int, Decimal]] = field(default_factory=dict)
    charge_unknown: int = 0  # orders sent in the window whose charge is not known yet
    currencies: set[str] = field(default_factory=set)
    final_statuses: Counter[str] = field(default_factory=Counter)
    completion_seconds: list[float] = field(default_factory=list)

    @property
    def average_completion(self) -> float | None:
        times = self.completion_seconds
        return sum(times) / len(times) if times else None


def figures(provider: str, orders: list[Order], since: datetime, now: datetime) -> list[Figures]:
    """The report of one provider's orders, one per currency: amounts in different
    currencies are never added together (a pure function: tested on a fixture).

    An order counts towards spend by the day it was sent (or, tracked from elsewhere,
    the day syncd first saw it), within ``since``..``now``. A charge that is not known
    yet, cannot be read or is negative is counted apart, never as money."""
    by_currency: dict[str, Figures] = {}
    per_day: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    per_package: dict[str, dict[int | None, list[Any]]] = defaultdict(
        lambda: defaultdict(lambda: [0, Decimal(0)])
    )

    def of(currency: str | None) -> Figures:
        key = (currency or "").upper() or "currency unknown"
        if key not in by_currency:
            by_currency[key] = Figures(provider, currencies={key})
        return by_currency[key]

    for o in orders:
        sent = o.submitted_at or o.created_at
        if sent is not None and since <= sent <= now and o.provider_order_id:
            f = of(o.currency)
            if o.charge is None or o.charge < 0:
                f.charge_unknown += 1
            else:
                key = next(iter(f.currencies))
                per_day[key][sent.date().isoformat()] += o.charge
                per_package[key][o.service_id][0] += 1
                per_package[key][o.service_id][1] += o.charge
        finished = o.finished_at
        if o.state is OrderState.DONE and finished is not None and since <= finished <= now:
            f = of(o.currency)
            f.final_statuses[o.status.value if o.status else "Unknown"] += 1
            if o.status is Status.COMPLETED and sent is not None and sent <= finished:
                f.completion_seconds.append((finished - sent).total_seconds())
    for key, f in by_currency.items():
        f.spend_per_day = dict(sorted(per_day[key].items()))
        f.spend_per_package = {
            k: (n, s) for k, (n, s) in sorted(per_package[key].items(), key=_key)
        }
    return [by_currency[k] for k in sorted(by_currency)] or [Figures(provider)]


def _span(seconds: float) -> str:
    """``2 h 13 min``, ``4 min 10 s``, ``3 d 2 h``: the two largest units."""
    left = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size} {unit}")
            left %= size
    return " ".join(parts[:2])


def _key(item: tuple[int | None, Any]) -> int:
    return -1 if item[0] is None else item[0]


def report(args: argparse.Namespace) -> int:
    if not 0 < args.days <= LONGEST:
        raise UserError(f"--days must be between 1 and {LONGEST}")
    config = load(args)
    selected = config.select(args.provider)
    now = utcnow()
    since = now - timedelta(days=args.days)
    today = now.date()
    first = today - timedelta(days=args.days - 1)
    start = datetime.combine(first, time(), UTC)
    with opened(config, register=False, migrate=False) as storage:
        ledger = [d for p in selected for d in days(storage.ledger_window(p.name, start), today)]
        if args.csv:
            _csv(ledger)
            return EXIT_OK
        reports = [
            f
            for p in selected
            for f in figures(p.name, storage.orders_since(p.name, since), since, now)
        ]
    if args.json:
        print(json.dumps(_json(reports, args.days, since) | {
            "ledger_since": first.isoformat(), "ledger": [_day_json(d) for d in ledger],
        }, indent=2))  # fmt: skip
        return EXIT_OK
    print(f"report for the last {args.days} days, since {since:%Y-%m-%d %H:%M} UTC")
    _ledger_text(ledger, first)
    for f in reports:
        currency = "/".join(sorted(f.currencies)) or "currency unknown"
        print()
        print(printable(f"{f.provider} ({currency})"))
        total = sum(f.spend_per_day.values(), Decimal(0))
        count = sum(n for n, _ in f.spend_per_package.values())
        unknown = (
            f" ({f.charge_unknown} more whose charge is not known yet or cannot be read)"
            if f.charge_unknown
            else ""
        )
        print(f"  spend  {money_text(total)} in {count} orders{unknown}")
        for day, spent in f.spend_per_day.items():
            print(f"    {day}  {money_text(spent)}")
        print("  per package")
        for service, (count, spent) in f.spend_per_package.items():
            name = "tracked" if service is None else str(service)
            print(f"    {name:>8}  {count:>6} orders  {money_text(spent)}")
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(f.final_statuses.items()))
        print(f"  finished  {statuses or 'none'}")
        average = f.average_completion
        shown = "-" if average is None else _span(average)
        print(f"  average time to completion  {shown} ({len(f.completion_seconds)} completed)")
    return EXIT_OK


def _csv(ledger: list[Day]) -> None:
    """One CSV table, a header and a line per day, amounts as exact decimal text."""
    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(COLUMNS)
    for d in ledger:
        out.writerow(_day_json(d).values())


def _day_json(d: Day) -> dict[str, str]:
    return {
        "provider": d.provider,
        "currency": d.currency or "",
        "day": d.day.isoformat(),
        "opening": money_text(d.opening),
        "charges": money_text(d.charges),
        "refunds": money_text(d.refunds),
        "topups": money_text(d.topups),
        "drift": money_text(d.drift),
        "closing": money_text(d.closing),
    }


def _ledger_text(ledger: list[Day], first: date) -> None:
    """Per provider and currency, a table of its days."""
    heading = None
    for d in ledger:
        if (d.provider, d.currency) != heading:
            heading = (d.provider, d.currency)
            print()
            print(printable(f"{d.provider} ({d.currency or 'currency unknown'}) ledger per UTC"
                            f" day since {first.isoformat()}"))  # fmt: skip
            print(f"  {'day':<10}  " + "  ".join(f"{c:>12}" for c in COLUMNS[3:]))
        amounts = (d.opening, d.charges, d.refunds, d.topups, d.drift, d.closing)
        print(f"  {d.day.isoformat()}  " + "  ".join(f"{money_text(a):>12}" for a in amounts))
    if not ledger:
        print()
        print("ledger  none yet (it opens at a provider's first balance poll)")


def _json(reports: list[Figures], days: int, since: datetime) -> dict[str, Any]:
    return {
        "days": days,
        "since": since.isoformat(),
        "providers": [
            {
                "name": f.provider,
                "currencies": sorted(f.currencies),
                "spend": money_text(sum(f.spend_per_day.values(), Decimal(0))),
                "spend_per_day": {d: money_text(s) for d, s in f.spend_per_day.items()},
                "spend_per_package": [
                    {"service_id": k, "orders": n, "spend": money_text(s)}
                    for k, (n, s) in f.spend_per_package.items()
                ],
                "charge_unknown": f.charge_unknown,
                "final_statuses": dict(sorted(f.final_statuses.items())),
                "completed": len(f.completion_seconds),
                "average_completion_seconds": f.average_completion,
            }
            for f in reports
        ],
    }
