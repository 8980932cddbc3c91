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

The orders are counted by the database in groups (``syncd.storage.report_reads``: a
month of a busy provider is a hundred thousand orders, which took seconds to read one by
one), through the database's driver alone when it can answer (``read_plainly``, as
``syncd order list``: importing SQLAlchemy costs more than the reading). The figures are
those of reading every order, to the last digit: money groups by its exact stored text
and is multiplied out as ``Decimal``; should a sum need more than the 28 digits a
``Decimal`` keeps (a year of trillions to twelve places), which only the order of the
additions would decide, the orders are read one by one, in the order of their ids, as
they always were.

One rounding decision: the average time to completion is the exact mean of the times in
whole microseconds, divided once (``--json``'s ``average_completion_seconds`` is the
nearest float to it). It was the sum of each time as a float, added in the order of the
ids, which can differ from it in the last digits, more so the more orders; the text
rounds to whole seconds and prints the same, but for a mean within that difference of a
half second.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, Inexact, localcontext
from typing import TYPE_CHECKING, Any

from syncd.cli.commands import opened, read_config, start_logging
from syncd.cli.daybook import COLUMNS, Day, days
from syncd.cli.exits import EXIT_OK
from syncd.clock import utcnow
from syncd.display import printable
from syncd.errors import UserError
from syncd.models import LedgerWindow, Order, OrderState, Status
from syncd.storage import command_reads
from syncd.storage.driver import Driver
from syncd.storage.ledger_window import window as ledger_window
from syncd.storage.report_reads import OrderTally, order_tally

if TYPE_CHECKING:
    from syncd.storage import Storage
from syncd.units import shown_money

LONGEST = 3660  # days: ten years of a shop's history at most
_MICROSECOND = timedelta(microseconds=1)


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
    completed: int = 0  # orders completed in the window
    completion_micros: int = 0  # their times from sending to completion, added up

    @property
    def average_completion(self) -> float | None:
        """In seconds: the exact mean, rounded once."""
        return self.completion_micros / (self.completed * 10**6) if self.completed else None


class _Tally:
    """The figures of one provider, built up from orders read whole and from the groups
    the database counted (``OrderTally``); the same order gives the same figures either
    way."""

    def __init__(self, provider: str, since: datetime, now: datetime) -> None:
        self.provider, self.since, self.now = provider, since, now
        self.by_currency: dict[str, Figures] = {}
        self.per_day: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        self.per_package: dict[str, dict[int | None, list[Any]]] = defaultdict(
            lambda: defaultdict(lambda: [0, Decimal(0)])
        )

    def key(self, currency: str | None) -> str:
        """The currency ``currency`` is counted in, its figures made on first sight."""
        key = (currency or "").upper() or "currency unknown"
        if key not in self.by_currency:
            self.by_currency[key] = Figures(self.provider, currencies={key})
        return key

    def sent(self, o: Order) -> None:
        """An order counts towards spend by the day it was sent (or, tracked from
        elsewhere, the day syncd first saw it), within ``since``..``now``."""
        sent = o.submitted_at or o.created_at
        if sent is not None and self.since <= sent <= self.now and o.provider_order_id:
            self.day_spend(o.currency, sent.date().isoformat(), o.charge)
            self.package_spend(o.currency, o.service_id, o.charge)

    def day_spend(self, currency: str | None, day: str, charge: Decimal | None, n: int = 1) -> None:
        """``n`` orders sent on ``day`` at ``charge`` each."""
        key = self.key(currency)
        if charge is not None and charge >= 0:
            self.per_day[key][day] += charge * n

    def package_spend(
        self, currency: str | None, service: int | None, charge: Decimal | None, n: int = 1
    ) -> None:
        """``n`` orders of package ``service`` at ``charge`` each. A charge that is not
        known yet, cannot be read or is negative is counted apart, never as money."""
        key = self.key(currency)
        if charge is None or charge < 0:
            self.by_currency[key].charge_unknown += n
            return
        package = self.per_package[key][service]
        package[0] += n
        package[1] += charge * n

    def finished(self, o: Order) -> None:
        finished = o.finished_at
        if (
            o.state is OrderState.DONE
            and finished is not None
            and self.since <= finished <= self.now
        ):
            key = self.key(o.currency)
            self.by_currency[key].final_statuses[o.status.value if o.status else "Unknown"] += 1
            sent = o.submitted_at or o.created_at
            if o.status is Status.COMPLETED and sent is not None and sent <= finished:
                self.by_currency[key].completed += 1
                self.by_currency[key].completion_micros += (finished - sent) // _MICROSECOND

    def counted(self, tally: OrderTally) -> None:
        """The groups the database counted, and the rows it could not count, judged as
        any order is."""
        for currency, day, charge, n in tally.per_day:
            self.day_spend(currency, day, charge, n)
        for currency, service, charge, n in tally.per_package:
            self.package_spend(currency, service, charge, n)
        for currency, status, n, completed, micros in tally.finished:
            f = self.by_currency[self.key(currency)]
            f.final_statuses[status.value if status else "Unknown"] += n
            f.completed += completed
            f.completion_micros += micros
        for order in tally.odd:
            self.sent(order)
            self.finished(order)

    def figures(self) -> list[Figures]:
        for key, f in self.by_currency.items():
            f.spend_per_day = dict(sorted(self.per_day[key].items()))
            f.spend_per_package = {
                k: (n, s) for k, (n, s) in sorted(self.per_package[key].items(), key=_key)
            }
        return [self.by_currency[k] for k in sorted(self.by_currency)] or [Figures(self.provider)]


def figures(provider: str, orders: list[Order], since: datetime, now: datetime) -> list[Figures]:
    """The report of one provider's orders, one per currency: amounts in different
    currencies are never added together (a pure function: tested on a fixture)."""
    tally = _Tally(provider, since, now)
    for o in orders:
        tally.sent(o)
        tally.finished(o)
    return tally.figures()


def counted_figures(
    provider: str, counted: OrderTally, since: datetime, now: datetime
) -> list[Figures] | None:
    """``figures`` of the orders the database counted (``OrderTally``); None when a sum
    would be rounded (more than 28 digits: a year of trillions to twelve places), which
    only adding the orders one by one, in the order of their ids, reproduces."""
    tally = _Tally(provider, since, now)
    with localcontext() as context:
        context.traps[Inexact] = True
        try:
            tally.counted(counted)
        except Inexact:
            return None
    return tally.figures()


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
    config = read_config(args)
    selected = config.select(args.provider)
    if args.verbose:
        start_logging(config, args)
    else:
        # As for status: without -v nothing reaches stderr before the usual way's logging.
        logging.getLogger().addHandler(logging.NullHandler())
    now = utcnow()
    since = now - timedelta(days=args.days)
    today = now.date()
    first = today - timedelta(days=args.days - 1)
    start = datetime.combine(first, time(), UTC)
    names = [p.name for p in selected]

    def gather(
        window: Callable[[str], LedgerWindow], tally: Callable[[str], OrderTally]
    ) -> tuple[list[Day], list[OrderTally]]:
        ledger = [d for name in names for d in days(window(name), today)]
        return ledger, [] if args.csv else [tally(name) for name in names]

    def plainly(db: Driver) -> tuple[list[Day], list[OrderTally]]:
        return gather(lambda name: ledger_window(db, name, start),
                      lambda name: order_tally(db, name, since, now))  # fmt: skip

    found = command_reads.read_plainly(config.database.connect_url, plainly)
    if found is None:
        if not args.verbose:
            start_logging(config, args)
        with opened(config, register=False, migrate=False) as storage:
            found = gather(lambda name: storage.ledger_window(name, start),
                           lambda name: storage.order_tally(name, since, now))  # fmt: skip
    ledger, counted = found
    if args.csv:
        _csv(ledger)
        return EXIT_OK
    reports = []
    with contextlib.ExitStack() as later:
        fallback: Storage | None = None  # opened for the first whose sums would be rounded
        for name, tally in zip(names, counted, strict=True):
            figured = counted_figures(name, tally, since, now)
            if figured is None:
                if fallback is None:
                    fallback = later.enter_context(opened(config, register=False, migrate=False))
                figured = figures(name, fallback.orders_since(name, since), since, now)
            reports += figured
    if args.json:
        print(json.dumps(_json(reports, args.days, since) | {
            "ledger_since": first.isoformat(), "ledger": [_day_json(d) for d in ledger],
        }, indent=2))  # fmt: skip
        return EXIT_OK
    _text(reports, ledger, args.days, since, first)
    return EXIT_OK


def _text(
    reports: list[Figures], ledger: list[Day], days: int, since: datetime, first: date
) -> None:
    print(f"report for the last {days} days, since {since:%Y-%m-%d %H:%M} UTC")
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
        print(f"  spend  {shown_money(total)} in {count} orders{unknown}")
        for day, spent in f.spend_per_day.items():
            print(f"    {day}  {shown_money(spent)}")
        print("  per package")
        for service, (count, spent) in f.spend_per_package.items():
            name = "tracked" if service is None else str(service)
            print(f"    {name:>8}  {count:>6} orders  {shown_money(spent)}")
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(f.final_statuses.items()))
        print(f"  finished  {statuses or 'none'}")
        average = f.average_completion
        shown = "-" if average is None else _span(average)
        print(f"  average time to completion  {shown} ({f.completed} completed)")


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
        "opening": shown_money(d.opening),
        "charges": shown_money(d.charges),
        "refunds": shown_money(d.refunds),
        "topups": shown_money(d.topups),
        "drift": shown_money(d.drift),
        "closing": shown_money(d.closing),
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
        print(f"  {d.day.isoformat()}  " + "  ".join(f"{shown_money(a):>12}" for a in amounts))
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
                "spend": shown_money(sum(f.spend_per_day.values(), Decimal(0))),
                "spend_per_day": {d: shown_money(s) for d, s in f.spend_per_day.items()},
                "spend_per_package": [
                    {"service_id": k, "orders": n, "spend": shown_money(s)}
                    for k, (n, s) in f.spend_per_package.items()
                ],
                "charge_unknown": f.charge_unknown,
                "final_statuses": dict(sorted(f.final_statuses.items())),
                "completed": f.completed,
                "average_completion_seconds": f.average_completion,
            }
            for f in reports
        ],
    }
