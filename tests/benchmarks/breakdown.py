"""Where a sweep's CPU goes, by the CPU time of the thread that spends it.

    python tests/benchmarks/breakdown.py --config FILE sync orders

Runs ``syncd`` with its arguments in this process, with the status sweep's parts wrapped
in ``time.thread_time()`` (each thread's own CPU, so the database thread and the event
loop are told apart, and a busy machine does not stretch them), and prints to standard
error, when the process ends, each part's CPU seconds and calls: the statements by their
first words (the driver's time, the database's work included: SQLite runs in the
calling thread), the Python around them, the write transaction whole, the commit. What
the database thread does not account for is the event loop's: the status calls (httpx),
reading the replies, the hand-overs. ``orders.py --breakdown`` runs each pass this way.

Unlike a sampling profiler (``--profile``), this sees the time SQLite spends with the
GIL released, and adds nothing but two clock reads per wrapped call.
"""

from __future__ import annotations

import atexit
import resource
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

SECONDS: defaultdict[str, float] = defaultdict(float)
CALLS: Counter[str] = Counter()
_APART = ("(database thread)", "(before the command)")  # the parts the loop's excludes
_LOOP_THREAD = "event loop thread (status calls, replies, hand-overs), by difference"


def timed(owner: Any, name: str, label: str) -> None:
    """Wrap ``owner.name`` to add its thread's CPU time to ``label``."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            SECONDS[label] += time.thread_time() - started
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def statement_timed(driver: Any) -> None:
    """Each statement the driver runs, by its first words."""
    original: Callable[..., Any] = driver.Driver._on_cursor

    def wrapper(self: Any, text: str, act: Any) -> Any:
        started = time.thread_time()
        try:
            return original(self, text, act)
        finally:
            label = "SQL " + " ".join(text.split()[:4])[:48]
            SECONDS[label] += time.thread_time() - started
            CALLS[label] += 1

    driver.Driver._on_cursor = wrapper


def install() -> None:
    import sqlalchemy.engine.default as default  # noqa: PLC0415

    from syncd import lifecycle  # noqa: PLC0415
    from syncd.storage import base, driver, sweep  # noqa: PLC0415

    statement_timed(driver)
    timed(default.DefaultDialect, "do_commit", "SQL COMMIT")
    timed(base.StorageBase, "_write", "write transactions, whole (database thread)")
    timed(base.StorageBase, "_read", "read transactions, whole (database thread)")
    timed(base, "check_fence", "lease fence check")
    timed(sweep, "_repeated", "reading rows, judging repeats (_repeated)")
    timed(sweep, "_write_repeated", "writing repeated rows (_write_repeated)")
    timed(sweep, "_write_status_plan", "writing changed rows and their change rows")
    timed(sweep, "raise_clock_mark", "clock mark")
    timed(lifecycle.StatusJudge, "plan", "planning changed orders (StatusJudge.plan)")


def report() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    threads = sum(SECONDS[label] for label in SECONDS if label.endswith("(database thread)"))
    SECONDS[_LOOP_THREAD] = total - threads
    print(f"breakdown: process CPU {total:.2f} s (user {usage.ru_utime:.2f}, system"
          f" {usage.ru_stime:.2f})", file=sys.stderr)  # fmt: skip
    for label, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        if seconds >= 0.005:
            calls = f"{CALLS[label]:>7}" if label in CALLS else " " * 7
            print(f"  {seconds:7.2f} s {calls}  {label}", file=sys.stderr)


if __name__ == "__main__":
    started = time.process_time()
    from syncd.cli import main

    install()
    SECONDS["imports of the CLI and the sweep's modules (before the command)"] = (
        time.process_time() - started
    )
    atexit.register(report)
    main(sys.argv[1:])
