"""The systemd notify protocol (sd_notify(3)), spoken with the standard library.

Datagrams of ``KEY=value`` lines to the socket named by ``$NOTIFY_SOCKET``; without it
(not started by systemd with ``Type=notify``) every call does nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("syncd.daemon")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: its address starts with a NUL byte.
        self._address = "\0" + path[1:] if path.startswith("@") else path
        self.watchdog_interval = _watchdog_interval(env)
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, text: str) -> None:
        # Once stopping, that is the status: a job ending during the shutdown must not
        # make systemd show the daemon as running again.
        if not self._stopping:
            self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._stopping = True
        self._send("STOPPING=1\nSTATUS=stopping")

    def _send(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never wait: a listener that does not read must not stall the event loop
                # (a full queue drops this message; the next one will say the same).
                sock.setblocking(False)
                sock.sendto(message.encode(), self._address)
        except BlockingIOError:
            log.debug("notify.dropped", reason="the notify socket's queue is full")
        except OSError as exc:  # systemd gone or the socket unreachable: keep serving
            log.warning("notify.failed", error=str(exc))


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, if the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1_000_000 / 2
