"""One-shot commands: ``migrate``, ``sync``, ``check`` (``status`` has a module of its own).

This module is imported to parse any command line, ``syncd status`` included: what only
one command uses (asyncio, the storage layer, the log set-up) is imported by that command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.cli.exits import EXIT_JOB_FAILED, EXIT_OK
from syncd.config import Config, ProviderConfig, find_config, load_config
from syncd.display import printable
from syncd.errors import JobError
from syncd.models import Balance
from syncd.units import shown_amount

if TYPE_CHECKING:
    from syncd.jobs.runner import JobResult
    from syncd.storage import Storage


def load(args: argparse.Namespace, *, daemon: bool = False) -> Config:
    """Find and validate the config, then set up logging. Touches nothing else."""
    config = read_config(args)
    start_logging(config, args, daemon=daemon)
    return config


def read_config(args: argparse.Namespace) -> Config:
    """Find and validate the config; no logging yet."""
    return load_config(find_config(args.config, os.environ))


def start_logging(config: Config, args: argparse.Namespace, *, daemon: bool = False) -> None:
    from syncd import logs  # noqa: PLC0415 - structlog, for the commands that may log

    logs.configure(
        fmt=config.logging.format,
        # One-shot commands print their own results; the log stream is opt-in.
        level=config.logging.level if args.verbose or daemon else "critical",
        secrets=config.secrets(),
    )


def run(args: argparse.Namespace) -> int:
    config = load(args, daemon=True)
    from syncd.daemon import service  # noqa: PLC0415 - the scheduler, for `run` only

    return service.run(Path(config.source), config)


@contextmanager
def opened(config: Config, *, register: bool = True, migrate: bool = True) -> Iterator[Storage]:
    """The configured database for one command: migrated (if the role may) and the
    providers registered; a command that only reads asks for neither, so that it creates
    and changes nothing and works for a role that may only SELECT."""
    from syncd.storage import open_storage  # noqa: PLC0415 - SQLAlchemy

    storage = open_storage(config.database.connect_url, migrate=migrate)
    storage.set_webhooks((w.name, w.events) for w in config.webhooks)
    try:
        if register:
            storage.register_providers((p.name, p.url) for p in config.providers)
        yield storage
    finally:
        storage.close()


def migrate(args: argparse.Namespace) -> int:
    """Create or migrate the schema, and say which of the two it did, in one line."""
    config = load(args)
    from syncd.storage.store import migrate_database  # noqa: PLC0415 - SQLAlchemy, Alembic

    found, head = migrate_database(config.database.connect_url)
    if found is None:
        print(f"created the schema at revision {head}")
    elif found == head:
        print(f"already at revision {head}: nothing to migrate")
    else:
        print(f"migrated from revision {found} to {head}")
    return EXIT_OK


def sync(args: argparse.Namespace) -> int:
    config = load(args)
    config.select(args.provider)  # an unknown --provider is a usage error, before any I/O
    import asyncio  # noqa: PLC0415

    from syncd.jobs.runner import SYNC_ORDER, run_pass  # noqa: PLC0415 - the jobs, their client

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
    import asyncio  # noqa: PLC0415

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
            balance = shown_amount(outcome.amount, outcome.currency)
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

    import asyncio  # noqa: PLC0415

    return list(await asyncio.gather(*(one(p) for p in config.providers)))


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
