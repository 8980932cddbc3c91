"""Run the provider simulator on its own: ``python -m syncd.simulator --port 8080``.

For trying ``syncd run`` by hand and for the benchmarks: it prints its URL (and the ids of
any orders created up front) on stdout, then a config for syncd that points at it, ready to
save as ``syncd.toml``, and serves until interrupted. SIGUSR1 moves a tenth of its orders a
step on and prints ``moved N``: what a benchmark's steady sweep finds changed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from decimal import Decimal
from pathlib import Path

from syncd.simulator import SimulatedProvider, SimulatorServer
from syncd.simulator.world import default_catalog


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m syncd.simulator",
        description="An API v2 provider on loopback, for trying syncd and for benchmarks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--dialect", choices=("api_token", "key"), default="api_token", help="API dialect"
    )
    parser.add_argument("--token", default="sim-token", help="the API token it accepts")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    parser.add_argument(
        "--packages",
        type=int,
        default=40,
        help="services of the common kinds; one of every other order type follows them",
    )
    parser.add_argument("--orders", type=int, default=0, help="orders to create up front")
    parser.add_argument(
        "--links",
        type=Path,
        default=None,
        metavar="FILE",
        help="at exit, write the id and link of each order taken through `add`, one a "
        "line: what a benchmark counts duplicates by",
    )
    parser.add_argument("--order-duration", type=float, default=20.0, help="seconds to finish")
    parser.add_argument(
        "--max-ids",
        type=int,
        default=100,
        metavar="N",
        help="the most order ids one status call may name; more fail the whole call, "
        "as a panel refuses them",
    )
    parser.add_argument(
        "--balance", type=Decimal, default=Decimal("100.00"), help="starting balance (USD)"
    )
    parser.add_argument("--spellings", action="store_true", help="vary status spellings")
    parser.add_argument(
        "--minute",
        type=float,
        default=60.0,
        help="seconds a minute of an order's fields lasts (drip-feed intervals, delays)",
    )
    parser.add_argument(
        "--post-interval",
        type=float,
        default=30.0,
        help="seconds between two posts of an account a subscription follows",
    )
    parser.add_argument(
        "--requests-per-minute",
        type=int,
        default=None,
        metavar="N",
        help="answer 429 past N requests in any 60 seconds; leave out for no limit",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="ACTION=N/WINDOW",
        help="an action's own limit, answered 429 past it (repeatable): --limit add=60/minute",
    )
    args = parser.parse_args()
    limits = dict(item.partition("=")[::2] for item in args.limit)
    if args.packages < 1:
        parser.error("--packages: a catalog needs at least one service")
    if args.max_ids < 1:
        parser.error("--max-ids: at least 1")
    if args.minute <= 0 or args.post_interval <= 0:
        parser.error("--minute and --post-interval: more than 0 seconds")
    if args.requests_per_minute is not None and args.requests_per_minute < 1:
        parser.error("--requests-per-minute: at least 1 (leave it out for no limit)")

    provider = SimulatedProvider(
        dialect=args.dialect,
        token=args.token,
        packages=default_catalog(args.packages),
        balance=args.balance,
        order_duration=args.order_duration,
        max_ids=args.max_ids,
        latency=args.latency,
        spellings=args.spellings,
        requests_per_minute=args.requests_per_minute,
        minute=args.minute,
        post_interval=args.post_interval,
        limits=limits,
    )
    ids = provider.create_orders(args.orders) if args.orders else []
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # SIGUSR1 moves a tenth of the orders on (a benchmark's steady sweep), and says so.
    signal.signal(signal.SIGUSR1, lambda *_: print(f"moved {provider.move_on()}", flush=True))
    with SimulatorServer(provider, port=args.port) as server:
        print(f"url {server.url}", flush=True)
        if ids:
            print(f"orders {ids[0]} {ids[-1]}", flush=True)
        print(ready_config(server.url, args.token, args.dialect), flush=True)
        stop.wait()
        served = {action: provider.count(action) for action in provider.actions}
        print("served " + " ".join(f"{k}={v}" for k, v in served.items()), flush=True)
        print(
            f"requests busiest_minute={provider.busiest_minute} "
            f"rate_limited={provider.rate_limited}",
            flush=True,
        )
        limiter = provider.limiter
        for action in limiter.limits:
            print(
                f"limit {action}={limiter.limits[action]} busiest={limiter.busiest[action]} "
                f"rate_limited={limiter.rate_limited_by[action]}",
                flush=True,
            )
    if args.links is not None:  # the server has stopped: nothing changes the orders now
        preloaded = set(ids)
        taken = [(o.id, o.link) for o in provider.orders.values() if o.id not in preloaded]
        args.links.write_text("".join(f"{i} {link}\n" for i, link in taken), encoding="utf-8")
    return 0


def ready_config(url: str, token: str, dialect: str) -> str:
    """A syncd config for this simulator, as comment-free TOML after one comment line."""
    return f"""# a config for syncd against this simulator (save as syncd.toml):
[database]
url = "sqlite:///syncd.db"

[[providers]]
name = "sim"
url = "{url}"
token = "{token}"
dialect = "{dialect}"
orders_interval = "10s"
"""


if __name__ == "__main__":
    sys.exit(main())
