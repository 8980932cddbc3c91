"""Faults a test or a demo injects into a simulated provider's answers.

Each injection answers the next ``times`` matching calls (``None``: all, until cleared),
optionally only for some actions, and strikes either before the call is processed (nothing
changes on the provider) or after it (an order created, then a 502: an ambiguous
submission). Faults change how an answer looks or travels, never the world behind it.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from syncd.simulator.wire import Reply, json_reply


class Fault(enum.StrEnum):
    HTML_502 = "html_502"  # a proxy's 502 page
    HTML_200 = "html_200"  # a maintenance page sent with 200
    TIMEOUT = "timeout"  # no reply until the client gives up
    DRIP = "drip"  # the reply is sent one byte at a time, slowly
    RESET = "reset"  # connection closed without a reply
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After
    TRUNCATED_JSON = "truncated_json"
    ERROR_STRING = "error_string"  # {"error": "..."} with HTTP 200
    ERROR_LIST = "error_list"  # {"error": ["..."]}
    ERRORS_LIST = "errors_list"  # {"errors": ["..."]}
    ERRORS_OBJECT = "errors_object"  # {"errors": {"field": ["..."]}}
    NOT_A_LIST = "not_a_list"  # a catalog reply that is an object of services
    EMPTY_LIST = "empty_list"  # a catalog reply that is []
    REPLY = "reply"  # a JSON value the test chose (``inject(..., reply=value)``)


@dataclass
class Injection:
    fault: Fault
    remaining: int | None  # None: until cleared
    actions: frozenset[str] | None
    after_processing: bool
    reply: object = None  # for Fault.REPLY


# What a fault that strikes before processing has in hand instead of a real answer, for
# the actions that change the provider (a read may as well be answered for real).
DRY_ANSWERS: dict[str, object] = {"add": {"order": 0}, "refill": {"refill": 0}, "cancel": []}
_UNAVAILABLE = "Service temporarily unavailable"
_ERROR_SHAPES: dict[Fault, object] = {
    Fault.ERROR_STRING: {"error": _UNAVAILABLE},
    Fault.ERROR_LIST: {"error": [_UNAVAILABLE]},
    Fault.ERRORS_LIST: {"errors": [_UNAVAILABLE]},
    Fault.ERRORS_OBJECT: {"errors": {"action": [_UNAVAILABLE]}},
}
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_HTML_MAINTENANCE = (
    b"<!DOCTYPE html><html><head><title>Site Maintenance</title></head>"
    b"<body><h1>We&rsquo;ll be back soon!</h1></body></html>"
)


class Faults:
    """The injections in force, first injected first used; thread-safe."""

    def __init__(self) -> None:
        self._injections: list[Injection] = []
        self._lock = threading.Lock()

    def add(self, injection: Injection) -> None:
        with self._lock:
            self._injections.append(injection)

    def clear(self) -> None:
        with self._lock:
            self._injections.clear()

    def take(self, action: str) -> Injection | None:
        """The injection that answers this call of ``action``, counted as used."""
        with self._lock:
            for injection in self._injections:
                if injection.actions is None or action in injection.actions:
                    if injection.remaining is not None:
                        injection.remaining -= 1
                        if injection.remaining <= 0:
                            self._injections.remove(injection)
                    return injection
        return None


def faulty(
    injection: Injection,
    normal: Reply,
    *,
    retry_after: int,
    services: Callable[[], dict[str, str]],
) -> Reply:
    """What the fault makes of the ``normal`` reply. ``retry_after``: the seconds an
    injected 429 asks for; ``services``: the catalog as ``NOT_A_LIST`` sends it."""
    match injection.fault:
        case Fault.TIMEOUT:
            return Reply(hang=True)
        case Fault.RESET:
            return Reply(reset=True)
        case Fault.DRIP:
            return replace(normal, drip=True)
        case Fault.HTML_502:
            return Reply(502, _HTML_502, {"content-type": "text/html"})
        case Fault.HTML_200:
            return Reply(200, _HTML_MAINTENANCE, {"content-type": "text/html"})
        case Fault.RATE_LIMIT:
            headers = {"retry-after": str(retry_after)}
            return json_reply({"error": "Too many requests"}, 429, headers)
        case Fault.TRUNCATED_JSON:
            body = normal.body if len(normal.body) > 2 else b'{"balance": "1'
            return Reply(200, body[: max(1, len(body) // 2)], {"content-type": "application/json"})
        case Fault.ERROR_STRING | Fault.ERROR_LIST | Fault.ERRORS_LIST | Fault.ERRORS_OBJECT:
            return json_reply(_ERROR_SHAPES[injection.fault])
        case Fault.NOT_A_LIST:
            return json_reply(services())
        case Fault.EMPTY_LIST:
            return json_reply([])
        case Fault.REPLY:
            return json_reply(injection.reply)
    raise AssertionError(injection.fault)
