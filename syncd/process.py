"""Who is this process, and is the process that claimed a row still alive?

A ``submitting`` order carries its owner (``host:pid:start``). On the same host, the
owner is alive if that pid exists, is not a zombie and started at the same moment (so a
recycled pid is not mistaken for it). On another host (PostgreSQL shared by several
machines) nothing can be asked, so the claim's deadline decides.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime
from functools import cache


def _start_ticks(pid: int) -> str | None:
    """The process start time in clock ticks since boot (Linux), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]  # state, then starttime (field 22)


@cache
def owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or '?'}"


def owner_is_gone(claimed_by: str | None, deadline: datetime | None, now: datetime) -> bool:
    """Whether the process that claimed a row can no longer finish it."""
    if not claimed_by:
        return True
    host, _, rest = claimed_by.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return deadline is None or deadline <= now
    pid = int(pid_text)
    if pid == os.getpid() and claimed_by != owner():
        return True  # our pid, but an earlier process that had it
    if os.path.isdir("/proc"):
        ticks = _start_ticks(pid)  # None: no such process, or a zombie
        return ticks is None or start not in ("?", ticks)
    return not _exists(pid)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
