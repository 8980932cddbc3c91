"""Who is this process, and is the process that claimed a row still alive?

A ``submitting`` order carries its owner (``host:pid:start``). On the same host, the
owner is alive if that pid exists, is not a zombie and started at the same moment (so a
recycled pid is not mistaken for it). On another host (PostgreSQL shared by several
machines) nothing can be asked, so the claim's deadline decides.
"""

from __future__ import annotations

import gc
import os
import socket
from datetime import datetime, timedelta
from functools import cache


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process, or None when /proc does
    not show it to us (no /proc, or hidden: systemd's ProtectProc= hides other users)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc(5)


@cache
def owner() -> str:
    pid = os.getpid()
    stat = _stat(pid)
    return f"{socket.gethostname()}:{pid}:{stat[1] if stat else '?'}"


def owner_is_gone(
    claimed_by: str | None,
    deadline: datetime | None,
    now: datetime,
    *,
    longest: timedelta | None = None,
) -> bool:
    """Whether the process that claimed a row can no longer finish it.

    ``longest`` is the longest claim anyone takes: a deadline further ahead was set by a
    clock that ran ahead, and is no reason to wait for days.
    """
    if not claimed_by:
        return True
    host, _, rest = claimed_by.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        if longest is not None and deadline is not None and deadline > now + longest:
            return True
        return deadline is None or deadline <= now
    pid = int(pid_text)
    if not _exists(pid):
        return True
    stat = _stat(pid)
    if stat is None:  # it exists, but we may not look: trust the claim until its deadline
        return deadline is None or deadline <= now
    state, started = stat
    return state == "Z" or start not in ("?", started)  # a zombie, or the pid was reused


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_settled = False


def settle_heap() -> None:
    """Once per process, when start-up is over: collect, then freeze what is left.

    Start-up leaves a few hundred thousand long-lived objects (modules, SQLAlchemy's
    tables and compiled statements, the HTTP client). Every full collection walked them
    all again: 60 to 100 ms, once every other catalog sync and several times per sweep.
    Frozen, they are left out of every collection; what a job allocates is collected
    as before.
    """
    global _settled  # noqa: PLW0603 - one flag for the whole process
    if not _settled:
        _settled = True
        gc.collect()
        gc.freeze()
