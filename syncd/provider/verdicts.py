"""What a provider's answer means, before any action reads its content.

``classify()`` is a pure function of one HTTP answer (status code, headers, body bytes, and
the time, for a ``Retry-After`` given as a date): no I/O, no HTTP client, and it never
raises. It gives exactly one ``Verdict``, whose outcome maps one to one onto the
``ProviderError`` tree::

    Outcome       when                                            raise_for() raises
    OK            a JSON reply that is no error object            nothing: the reply
    REFUSED       an error object: the provider understood, no    RefusedError
    AUTH          HTTP 401, or an error object about the token    AuthError
    TRANSIENT     HTTP 5xx: may work later; may have been acted   TransientError
    RATE_LIMITED  HTTP 429: slow down; nothing was processed      RateLimitedError
    MALFORMED     not what the API promises (a redirect, HTML,    MalformedReplyError
                  broken JSON, an id beside an error): what the
                  provider did cannot be told, so an ``add`` that
                  got it is ambiguous, never refused

The transport in ``transport.py`` sends, retries and paces; the actions in ``client.py`` read
an OK reply with ``replies.py``.
"""

from __future__ import annotations

import email.utils
import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, assert_never

from syncd.errors import (
    AuthError,
    MalformedReplyError,
    RateLimitedError,
    RefusedError,
    TransientError,
)
from syncd.provider import replies
from syncd.units import shown

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
MESSAGE_LIMIT: Final = 200  # characters of provider text in one message


class Outcome(enum.Enum):
    OK = "ok"
    REFUSED = "refused"
    AUTH = "auth"
    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One answer, classified. ``reply`` is the decoded JSON of an OK answer (None
    otherwise); ``detail`` says why any other outcome is what it is, provider text
    already cleaned; ``retry_after`` is a 429's asked wait in seconds, if it said."""

    outcome: Outcome
    reply: object = None
    detail: str = ""
    retry_after: float | None = None

    def raise_for(self, provider: str) -> object:
        """The reply when the outcome is OK; else the outcome's error, naming ``provider``."""
        match self.outcome:
            case Outcome.OK:
                return self.reply
            case Outcome.REFUSED:
                raise RefusedError(provider, self.detail)
            case Outcome.AUTH:
                raise AuthError(provider, self.detail)
            case Outcome.TRANSIENT:
                # An answer came back, so the call reached the provider: it may have acted.
                raise TransientError(provider, self.detail, maybe_processed=True)
            case Outcome.RATE_LIMITED:
                raise RateLimitedError(provider, self.detail, retry_after=self.retry_after)
            case Outcome.MALFORMED:
                raise MalformedReplyError(provider, self.detail)
        assert_never(self.outcome)


def _as_sent(text: str) -> str:
    return text


def one_line(
    text: str, scrub: Callable[[str], str] = replies.as_sent, *, limit: int = MESSAGE_LIMIT
) -> str:
    """Provider text for a message: ``scrub`` applied first (before cutting, so no piece of
    what it hides survives), on one line, at most ``limit`` characters."""
    text = " ".join(scrub(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    scrub: Callable[[str], str] = replies.as_sent,
) -> Verdict:
    """What one answer means. ``headers`` are read by lower-case name (``location``,
    ``retry-after``); ``scrub`` hides what must never show in a message (the token)."""
    if 300 <= status < 400:
        target = one_line(headers.get("location", "?"), scrub, limit=120)
        return Verdict(
            Outcome.MALFORMED,
            detail=f"HTTP {status} redirect to {target} not followed (the token travels in "
            "the body); fix the provider url",
        )
    if status == 429:
        wait = retry_after(headers.get("retry-after"), now)
        asks = (
            ""
            if wait is None
            else f", Retry-After {wait:.0f}s"
            if wait < 10**7
            else ", Retry-After over 100 days"
        )
        return Verdict(
            Outcome.RATE_LIMITED, detail=f"HTTP 429 rate limited{asks}", retry_after=wait
        )
    if status >= 500:
        return Verdict(Outcome.TRANSIENT, detail=f"HTTP {status} ({describe(body, scrub)})")
    try:
        reply = decode(body)
    except ValueError:
        if status < 400:
            return Verdict(Outcome.MALFORMED, detail=f"reply is not JSON: {describe(body, scrub)}")
        reply = None  # a 4xx may carry a JSON error object worth reading, or a page
    message = replies.error_message(reply)
    held = next((k for k in ("order", "refill") if isinstance(reply, dict) and k in reply), None)
    if message is not None and held is not None:
        # An order or refill id beside a real error text: it may exist. Never a refusal.
        assert isinstance(reply, dict)
        taken = one_line(shown(reply[held]), scrub, limit=40)
        return Verdict(
            Outcome.MALFORMED,
            detail=f"reply carries {held} id {taken} and an error ({one_line(message, scrub)})",
        )
    if status == 401 or (message is not None and replies.is_auth_error(message)):
        text = one_line(message or f"HTTP {status}", scrub)
        return Verdict(Outcome.AUTH, detail=f"token rejected: {text}")
    if status >= 400:
        if message is None:  # a firewall's or proxy's page, not the panel answering
            return Verdict(Outcome.MALFORMED, detail=f"HTTP {status} ({describe(body, scrub)})")
        return Verdict(Outcome.REFUSED, detail=f"HTTP {status} ({one_line(message, scrub)})")
    if message is not None:
        return Verdict(Outcome.REFUSED, detail=one_line(message, scrub))
    return Verdict(Outcome.OK, reply)


def decode(body: bytes) -> object:
    """A reply's JSON, numbers with a fraction as exact ``Decimal``s; ``ValueError`` for a
    body that is no JSON (NaN and Infinity are no numbers, too deep a nesting no reply).

    A JSON escape can spell a character no stored text may hold: a lone surrogate
    (``"\\ud800"``, which no UTF-8 encodes: every write of it fails) or NUL
    (``"\\u0000"``, which PostgreSQL text refuses). Either, in a status or an error text,
    would fail every pass that writes it; each becomes U+FFFD, as a decoder shows a byte
    it cannot read."""
    try:
        reply = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
        return _storable(reply) if _UNSTORABLE_ESCAPE.search(body) else reply
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


_UNSTORABLE_ESCAPE: Final = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")  # a pair is one character once decoded


def _storable(value: object) -> object:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_UNSTORABLE.sub("\ufffd", key): _storable(item) for key, item in value.items()}
    return value


def describe(body: bytes, scrub: Callable[[str], str] = replies.as_sent) -> str:
    """What a body that is no reply looks like, for a message: an HTML page by its title,
    broken JSON by its size, anything else by its start."""
    if not body.strip():
        return "empty body"
    head = body.lstrip()[:512].lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head or b"<title" in head:
        title = _TITLE.search(body[:4096])
        name = title.group(1).decode("utf-8", "replace").strip() if title else ""
        return f'HTML page "{one_line(name, scrub)}"' if name else "HTML page"
    if head[:1] in (b"{", b"["):
        return f"truncated or invalid JSON of {len(body)} bytes"
    text = body[:4096].decode("utf-8", "replace")
    return f"unexpected text {one_line(text, scrub, limit=80)!r}"


def retry_after(header: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: either delta-seconds or an HTTP date."""
    if header is None:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")
