"""The ``syncd`` command line. No sync logic lives here: it parses, calls, and reports.

Exit status: 0 success, 1 a job failed, 2 bad usage or config.  Every error a
user can cause is printed as one line starting with ``syncd:``; only bugs show a traceback.

A command's module is imported when that command runs, and the modules of ``order``,
``packages`` and ``changes`` (which define their own arguments, and import the storage
layer and the jobs) only to parse a line that names them, or to print the whole help,
and the job table only to read a ``sync`` line: ``syncd status`` must not pay for them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, NoReturn, overload

from syncd import __version__
from syncd.cli import commands
from syncd.cli.exits import EXIT_BROKEN_PIPE, EXIT_JOB_FAILED, EXIT_USAGE
from syncd.display import printable
from syncd.errors import ConfigError, SyncdError, UserError
from syncd.units import parse_duration


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage block."""
        self.exit(EXIT_USAGE, f"syncd: {printable(message)} (see '{self.prog} --help')\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command. With ``only``, the commands whose module defines their
    arguments are left out unless named: a line naming ``only`` parses alike, without
    importing them."""

    def wanted(command: str) -> bool:
        return only is None or only == command

    parser = _Parser(
        prog="syncd", description="Keeps a local database in step with SMM panel providers."
    )
    _add_global_options(parser, top=True)
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    commands.add_parser("run", help="the daemon: every job of every provider until SIGTERM")
    commands.add_parser(
        "migrate", help="create the database schema, or bring it to this syncd's revision"
    )

    sync = commands.add_parser("sync", help="one pass of jobs, then exit")
    sync.add_argument(
        "job", nargs="?", default="all", choices=_JobNames(), metavar="JOB",
        help="one of %(choices)s (default: all)",
    )  # fmt: skip
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

    # Imported here, and only when wanted: see the module's docstring.
    if wanted("order"):
        from syncd.cli import orders  # noqa: PLC0415

        orders.add_parsers(commands)
    if wanted("packages"):
        from syncd.cli import catalog  # noqa: PLC0415

        catalog.add_parser(commands)
    if wanted("changes"):
        from syncd.cli import changes  # noqa: PLC0415

        changes.add_parser(commands)
    if wanted("report"):
        from syncd.cli import report  # noqa: PLC0415

        report.add_parser(commands)

    demo = commands.add_parser("demo", help="a self-contained run against the built-in simulator")
    demo.add_argument("--forever", action="store_true", help="keep syncing until Ctrl-C")
    _global_options_everywhere(parser)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command line takes, before its command or after it. The top
    level gives them their defaults; a command's own copy sets nothing unless given
    (``argparse.SUPPRESS``), so ``syncd -v sync`` keeps its ``-v``, and a value given
    after the command, being read last, wins over one given before it."""
    unset: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $SYNCD_CONFIG, ./syncd.toml, /etc/syncd/syncd.toml)",
        **unset,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the log stream on one-shot commands",
        **unset,
    )


def _global_options_everywhere(parser: argparse.ArgumentParser) -> None:
    """Give every command and sub-command (``order list``...) the global options, so that
    ``syncd sync balance -v`` works as ``syncd -v sync balance`` does."""
    # argparse lists a parser's sub-commands nowhere but in its (private) actions.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(p): p for p in action.choices.values()}.values():
                _add_global_options(sub, top=False)
                _global_options_everywhere(sub)


class _JobNames(Sequence[str]):
    """The jobs ``syncd sync`` runs, read from the job table when a line needs them (to
    check a job's name, or to print ``syncd sync --help``): the table imports the jobs."""

    def _names(self) -> tuple[str, ...]:
        from syncd.jobs.runner import SYNC_ORDER  # noqa: PLC0415

        return (*SYNC_ORDER, "all")

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    named = _command_named(words)
    args = build_parser(named if named in COMMANDS else None).parse_args(words)
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


# Every command build_parser defines (a test checks).
COMMANDS = frozenset(
    {"run", "migrate", "sync", "check", "status", "order", "packages", "changes", "report", "demo"}
)


class _Probe(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def _command_named(words: Sequence[str]) -> str | None:
    """The command a command line names, read by a parser of the options that may come
    before it; None when that is not plain (help, a typo, a bad option): the parser of
    every command then decides, and reports."""
    probe = _Probe(add_help=False)
    probe.add_argument("--config")
    probe.add_argument("-v", "--verbose", action="store_true")
    probe.add_argument("--version", action="store_true")
    try:
        _, rest = probe.parse_known_args(words)
    except ValueError:
        return None
    return rest[0] if rest else None


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    # Each command's module is imported when it runs (see the module's docstring).
    if name == "status":
        from syncd.cli import status  # noqa: PLC0415

        return status.status
    if name == "order":
        from syncd.cli import orders  # noqa: PLC0415

        return orders.run
    if name == "packages":
        from syncd.cli import catalog  # noqa: PLC0415

        return catalog.packages
    if name == "changes":
        from syncd.cli import changes  # noqa: PLC0415

        return changes.changes
    if name == "report":
        from syncd.cli import report  # noqa: PLC0415

        return report.report
    if name == "demo":
        from syncd.cli import demo  # noqa: PLC0415 - the simulator, for this command only

        return demo.demo
    return {
        "run": commands.run, "migrate": commands.migrate, "sync": commands.sync,
        "check": commands.check,
    }[name]  # fmt: skip


def _error(message: str) -> None:
    print(f"syncd: {printable(message)}", file=sys.stderr)
