"""The ``syncd`` command line. No sync logic lives here: it parses, calls, and reports.

Exit status: 0 success, 1 a job failed, 2 bad usage or config.  Every error a
user can cause is printed as one line starting with ``syncd:``; only bugs show a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import NoReturn

from syncd import __version__
from syncd.cli import catalog, changes, commands, orders
from syncd.cli.exits import EXIT_BROKEN_PIPE, EXIT_JOB_FAILED, EXIT_USAGE
from syncd.display import printable
from syncd.errors import ConfigError, SyncdError, UserError
from syncd.jobs import SYNC_ORDER
from syncd.units import parse_duration


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage block."""
        self.exit(EXIT_USAGE, f"syncd: {printable(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="syncd", description="Keeps a local database in step with SMM panel providers."
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $SYNCD_CONFIG, ./syncd.toml, /etc/syncd/syncd.toml)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the log stream on one-shot commands"
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    commands.add_parser("run", help="the daemon: every job of every provider until SIGTERM")

    sync = commands.add_parser("sync", help="one pass of jobs, then exit")
    sync.add_argument(
        "job", nargs="?", default="all", choices=(*SYNC_ORDER, "all"), help="default: all"
    )
    sync.add_argument("--provider", metavar="NAME", help="only this provider")
    sync.add_argument(
        "--force", action="store_true", help="apply a catalog the safety valve refused"
    )
    sync.add_argument(
        "--wait",
        type=_duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="how long to wait for a running syncd working on a provider (default: 60s)",
    )

    commands.add_parser("check", help="validate the config, then one balance call per provider")

    status = commands.add_parser("status", help="per provider: balance, jobs, open orders")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    orders.add_parsers(commands)
    catalog.add_parser(commands)
    changes.add_parser(commands)

    demo = commands.add_parser("demo", help="a self-contained run against the built-in simulator")
    demo.add_argument("--forever", action="store_true", help="keep syncing until Ctrl-C")
    return parser


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _command(args.command)
    try:
        return handler(args)
    except BrokenPipeError:
        # The reader went away (`syncd order list | head`): no error of syncd's. Point
        # stdout at nothing so that flushing it on the way out cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        for problem in exc.problems:
            _error(f"{exc.source}: {problem}")
        return EXIT_USAGE
    except UserError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except SyncdError as exc:
        _error(str(exc))
        return EXIT_JOB_FAILED
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # the output cannot be written (a full disk under stdout, ...)
        where = f" {exc.filename}" if exc.filename else ""
        with contextlib.suppress(OSError):
            _error(f"cannot write{where}: {exc.strerror or exc}")
        return EXIT_JOB_FAILED


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    return {
        "run": commands.run,
        "sync": commands.sync,
        "check": commands.check,
        "status": commands.status,
        "demo": _demo,
        "order": orders.run,
        "packages": catalog.packages,
        "changes": changes.changes,
    }[name]


def _demo(args: argparse.Namespace) -> int:
    from syncd.cli import demo  # noqa: PLC0415 - the simulator, for this command only

    return demo.demo(args)


def _error(message: str) -> None:
    print(f"syncd: {printable(message)}", file=sys.stderr)
