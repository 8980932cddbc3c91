"""``syncd status``: per provider, what the database holds now.

Status is read often, by people and by monitoring every minute, so it must start fast:
the whole process in well under a third of a second, when importing SQLAlchemy alone takes
more. So it reads the database through the driver alone (``overview.read_plainly``) when
that gives what opening the database the usual way would show:

the database exists and is at the newest revision. Otherwise (or on any error of the
driver's) it opens the database as every reading command does, which reports errors as
always, and reads through ``Storage``. Both ways run the same SQL
(``syncd.storage.overview``) and print the same bytes.

Status writes nothing, either way: it creates no database, migrates no schema and
registers no provider, so that a role that may only SELECT runs it. A configured
provider the database does not hold yet shows as never synced.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from syncd.cli.commands import opened, read_config, start_logging
from syncd.cli.exits import EXIT_OK
from syncd.cli.render import PICTURE_DAYS, overview_json, overview_text
from syncd.config import Config
from syncd.jobs.balance import RUNWAY_WINDOW, ledger_runway, runway_hours
from syncd.models import Instance, Lease, LedgerSpend, ProviderOverview, WebhookBacklog
from syncd.storage.overview import read_plainly, unstored


class Source(Protocol):
    """What status reads: ``Storage``, or ``overview.Snapshot`` on the driver's connection."""

    def overview(self) -> list[ProviderOverview]: ...

    def balance_history(self, provider: str, since: datetime) -> list[tuple[datetime, Decimal]]: ...

    def lease_holders(self) -> dict[str, Lease]: ...

    def ledger_spend(
        self, p: ProviderOverview, since: datetime, now: datetime, days: int = 0
    ) -> LedgerSpend | None: ...

    def webhook_backlog(self) -> list[WebhookBacklog]: ...

    def live_instances(self, within: float) -> list[Instance]: ...


@dataclass(frozen=True)
class Report:
    providers: list[ProviderOverview]
    backlog: Sequence[WebhookBacklog]
    instances: Sequence[Instance]


def status(args: argparse.Namespace) -> int:
    config = read_config(args)
    if args.verbose:
        start_logging(config, args)
    else:
        # The log set-up (structlog) waits for the full way, the one that logs. Until then
        # nothing may reach stderr through the standard library's last resort either
        # (psycopg warns through it, an unknown server time zone say): without -v, a
        # one-shot command shows no log line.
        logging.getLogger().addHandler(logging.NullHandler())
    now = datetime.now(UTC)
    # Pictures for a person at a terminal; a script reading the text gets none.
    pictures = sys.stdout.isatty() and not args.json
    report = read_directly(config, now, pictures=pictures)
    if report is None:
        if not args.verbose:
            start_logging(config, args)
        report = read_opened(config, now, pictures=pictures)
    if args.json:
        print(
            json.dumps(overview_json(report.providers, report.backlog, report.instances), indent=2)
        )
    else:
        print(
            overview_text(
                report.providers, report.backlog, instances=report.instances, pictures=pictures
            )
        )
    return EXIT_OK


def read_directly(config: Config, now: datetime, *, pictures: bool = False) -> Report | None:
    """The report, read through the driver alone; None when only opening the database the
    usual way gives what status must show."""

    return read_plainly(
        config.database.connect_url, lambda snapshot: gather(snapshot, now, config, pictures)
    )


def read_opened(config: Config, now: datetime, *, pictures: bool = False) -> Report:
    """The report, read through ``Storage`` (neither migrated nor registered)."""
    with opened(config, register=False, migrate=False) as storage:
        return gather(storage, now, config, pictures)


def gather(source: Source, now: datetime, config: Config, pictures: bool = False) -> Report:
    """What status shows; with ``pictures``, the money spent per day of the pictures' days
    too (read only for a terminal)."""
    holders = source.lease_holders()
    providers = [
        _with_spend(
            replace(
                p,
                lease=holders.get(p.name),
                history=tuple(source.balance_history(p.name, now - PICTURE_DAYS)),
            ),
            source,
            now,
            PICTURE_DAYS.days if pictures else 0,
        )
        for p in _with_configured(source.overview(), config)
    ]
    backlog = source.webhook_backlog()
    return Report(
        providers, backlog, source.live_instances(config.cluster.lease_ttl.total_seconds())
    )


def _with_spend(
    p: ProviderOverview, source: Source, now: datetime, days: int = 0
) -> ProviderOverview:
    """The last 24 h by the ledger, and the runway at that rate; a provider whose ledger
    has not opened yet (no balance poll of this version) falls back on the balance
    snapshots' drops."""
    spend = source.ledger_spend(p, now - RUNWAY_WINDOW, now, days)
    if spend is None:
        history = [(at, amount) for at, amount in p.history if at >= now - RUNWAY_WINDOW]
        before = [(at, amount) for at, amount in p.history if at < now - RUNWAY_WINDOW][-1:]
        return replace(p, runway_hours=runway_hours(before + history, now))
    return replace(p, ledger_24h=spend, runway_hours=ledger_runway(p.balance, spend))


def _with_configured(stored: list[ProviderOverview], config: Config) -> list[ProviderOverview]:
    """The stored providers, and the configured ones the database holds no row for yet."""
    names = {p.name for p in stored}
    new = [unstored(p.name, p.url) for p in config.providers if p.name not in names]
    return sorted(stored + new, key=lambda p: p.name) if new else stored
