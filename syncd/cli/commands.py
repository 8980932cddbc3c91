"""One-shot commands: ``sync``, ``check``, ``status``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from syncd import logs
from syncd.cli.exits import EXIT_JOB_FAILED, EXIT_OK
from syncd.cli.render import overview_json, overview_text
from syncd.config import Config, ProviderConfig, find_config, load_config
from syncd.display import printable
from syncd.errors import JobError
from syncd.jobs import SYNC_ORDER
from syncd.jobs.balance import RUNWAY_WINDOW, runway_hours
from syncd.jobs.context import utcnow
from syncd.models import Balance
from syncd.storage import Storage, open_storage
from syncd.units import amount_text

if TYPE_CHECKING:
    from syncd.jobs.runner import JobResult


def load(args: argparse.Namespace, *, daemon: bool = False) -> Config:
    """Find and validate the config, then set up logging. Touches nothing else."""
    config = load_config(find_config(args.config, os.environ))
    logs.configure(
        fmt=config.logging.format,
        # One-shot commands print their own results; the log stream is opt-in.
        level=config.logging.level if args.verbose or daemon else "critical",
        secrets=config.secrets(),
    )
    return config


def run(args: argparse.Namespace) -> int:
    config = load(args, daemon=True)
    from syncd.daemon import service  # noqa: PLC0415 - the scheduler, for `run` only

    return service.run(Path(config.source), config)


@contextmanager
def opened(config: Config, *, register: bool = True) -> Iterator[Storage]:
    """The configured database for one command (migrated; providers registered)."""
    storage = open_storage(config.database.url)
    storage.set_webhooks((w.name, w.events) for w in config.webhooks)
    try:
        if register:
            storage.register_providers((p.name, p.url) for p in config.providers)
        yield storage
    finally:
        storage.close()


def sync(args: argparse.Namespace) -> int:
    config = load(args)
    config.select(args.provider)  # an unknown --provider is a usage error, before any I/O
    from syncd.jobs.runner import run_pass  # noqa: PLC0415 - the jobs and their client

    jobs = SYNC_ORDER if args.job == "all" else (args.job,)
    with opened(config) as storage:
        results = asyncio.run(
            run_pass(
                config,
                storage,
                jobs,
                provider=args.provider,
                force=args.force,
                progress=_terminal_progress if sys.stderr.isatty() else None,
                wait=args.wait.total_seconds(),
            )
        )
    report(results)
    return EXIT_OK if all(r.ok for r in results) else EXIT_JOB_FAILED


def report(results: list[JobResult]) -> None:
    # A message may quote the provider (an error text, a currency): shown escaped.
    for r in results:
        where = f" for {r.provider}" if r.provider else ""
        if r.ok:
            print(printable(f"{r.job}{f' {r.provider}' if r.provider else ''}: {r.message}"))
        else:
            print(printable(f"syncd: {r.job} job{where} failed: {r.message}"), file=sys.stderr)


def check(args: argparse.Namespace) -> int:
    config = load(args)
    print(
        f"config {config.source}: ok ({len(config.providers)} providers, "
        f"{len(config.webhooks)} webhooks)"
    )
    failed = False
    for name, outcome in asyncio.run(_probe_balances(config)):
        if isinstance(outcome, JobError):
            failed = True
            print(printable(f"syncd: check failed: {outcome}"), file=sys.stderr)
        else:
            balance = amount_text(outcome.amount, outcome.currency)
            print(printable(f"provider {name}: ok, balance {balance}"))
    return EXIT_JOB_FAILED if failed else EXIT_OK


async def _probe_balances(config: Config) -> list[tuple[str, Balance | JobError]]:
    from syncd.jobs.runner import make_client  # noqa: PLC0415 - the client, for `check`

    async def one(provider: ProviderConfig) -> tuple[str, Balance | JobError]:
        async with make_client(provider) as client:
            try:
                return provider.name, await client.balance()
            except JobError as exc:
                return provider.name, exc

    return list(await asyncio.gather(*(one(p) for p in config.providers)))


def status(args: argparse.Namespace) -> int:
    config = load(args)
    now = utcnow()
    with opened(config) as storage:
        holders = storage.lease_holders()
        overview = [
            replace(
                p,
                runway_hours=runway_hours(
                    storage.balance_history(p.name, now - RUNWAY_WINDOW), now
                ),
                lease=holders.get(p.name),
            )
            for p in storage.overview()
        ]
        backlog = storage.webhook_backlog()
        instances = storage.live_instances(config.cluster.lease_ttl.total_seconds())
    if args.json:
        print(json.dumps(overview_json(overview, backlog, instances), indent=2))
    else:
        print(overview_text(overview, backlog, instances=instances))
    return EXIT_OK


def _terminal_progress(provider: str) -> Callable[[int, int], None]:
    """Draws "orders P: checked N of M due" on one terminal line during long sweeps."""
    shown = 0.0

    def draw(checked: int, due: int) -> None:
        nonlocal shown
        if due < 1000:
            return
        now = time.monotonic()
        if now - shown < 0.2 and checked < due:
            return
        shown = now
        end = "\n" if checked >= due else ""
        print(
            f"\r  orders {provider}: checked {checked:,} of {due:,} due",
            end=end,
            file=sys.stderr,
            flush=True,
        )

    return draw
