"""How a simulated answer travels: the ``Reply`` the HTTP server sends, and JSON written
with exact numbers, labelled the way real panels label it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # send nothing until the server stops (client timeout)
    drip: bool = False  # status line and headers at once, then the body byte by byte
    reset: bool = False  # close the connection without a reply


_NUMBER = re.compile(r'"\\u0000num:(-?[0-9.]+)"')
_MARK = "\\u0000num:"  # how json.dumps writes the start of a marked number


def _marked(value: object) -> str:
    """A Decimal marked so that it can be written as an exact JSON number (never via
    float); ``json.dumps`` asks for it only for the values it cannot write itself."""
    if isinstance(value, Decimal):
        return f"\x00num:{format(value, 'f')}"
    raise TypeError(f"{type(value).__name__} is not JSON")


def json_reply(value: object, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    """``value`` as a JSON reply; its Decimals become exact JSON numbers."""
    # Real panels often label JSON as text/html; the client must not trust the header.
    # json.dumps walks the value in C and asks _marked only for Decimals; a reply with
    # none (a catalog, unless numbers go as JSON numbers) is not searched by the pattern.
    text = json.dumps(value, default=_marked)
    body = (_NUMBER.sub(r"\1", text) if _MARK in text else text).encode()
    return Reply(status, body, {"content-type": "text/html; charset=UTF-8", **(headers or {})})
