"""``syncd packages``: the catalog as syncd holds it, for people and for scripts."""

from __future__ import annotations

import argparse
import json
from typing import Any

from syncd.cli.commands import load, opened
from syncd.cli.exits import EXIT_OK
from syncd.display import printable
from syncd.models import StoredPackage
from syncd.order_types import needs, takes_dripfeed
from syncd.units import shown_money

NAME_WIDTH = 48  # characters of a package name shown in the text table


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    packages = commands.add_parser(
        "packages",
        help=(
            "the catalog: id, name, type, rate, min, max, refill, cancel, what an order "
            "needs (--json: all fields)"
        ),
    )
    packages.add_argument("--provider", metavar="P", help="only this provider")
    packages.add_argument(
        "--all", action="store_true", help="also packages the provider no longer offers"
    )
    packages.add_argument("--json", action="store_true", help="one JSON array")


def packages(args: argparse.Namespace) -> int:
    config = load(args)
    selected = config.select(args.provider)
    with opened(config, register=False, migrate=False) as storage:
        listed = [
            (provider.name, stored)
            for provider in selected
            for _, stored in sorted(storage.catalog(provider.name).items())
            if stored.active or args.all
        ]
    if args.json:
        print(json.dumps([package_json(name, p) for name, p in listed], indent=2))
        return EXIT_OK
    if not listed:
        hint = " --provider " + args.provider if args.provider else ""
        print(f"no packages yet: run syncd sync catalog{hint}")
        return EXIT_OK
    print(
        f"{'provider':<12} {'id':>7}  {'name':<{NAME_WIDTH}} {'type':<16} {'rate':>10} "
        f"{'min':>7} {'max':>9}  refill cancel  needs"
    )
    for name, stored in listed:
        p = stored.package
        shown = p.name if len(p.name) <= NAME_WIDTH else p.name[: NAME_WIDTH - 1] + "…"
        gone = "" if stored.active else "  (removed)"
        print(
            printable(
                f"{name:<12} {p.service_id:>7}  {shown:<{NAME_WIDTH}} {p.type[:16]:<16} "
                f"{shown_money(p.rate):>10} {p.min:>7} {p.max:>9}  "
                f"{_flag(p.refill):<6} {_flag(p.cancel):<6}  {needs(p)}{gone}"
            )
        )
    return EXIT_OK


def package_json(provider: str, stored: StoredPackage) -> dict[str, object]:
    p = stored.package
    return {
        "provider": provider,
        "service_id": p.service_id,
        "name": p.name,
        "type": p.type,
        "category": p.category,
        "rate": shown_money(p.rate),
        "min": p.min,
        "max": p.max,
        "refill": p.refill,
        "cancel": p.cancel,
        "dripfeed": takes_dripfeed(p),
        "needs": needs(p),
        "active": stored.active,
        "removed_at": stored.removed_at.isoformat() if stored.removed_at else None,
    }


def _flag(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"
