"""What counts as a token leak in test output, worked out here rather than borrowed from
``syncd.secret``, so that the tests check the redaction instead of repeating it.

A leak is any 8-character piece (a shorter token: the whole) of any way the token can be
written back: as typed, URL-encoded (``quote``, ``quote_plus``, ``%xx`` in either case),
form-encoded as the client sends it, or escaped in a JSON string; in any letter case.
"""

from __future__ import annotations

import json
from urllib.parse import quote, quote_plus, urlencode

# Every encoding changes it (``/+=&%``, a space, non-ASCII), and no test data looks like it.
ENCODED_TOKEN = "SECRET/q7+Lr9=Xw&P4 mTz%üé"
PIECE = 8


def spellings(token: str) -> set[str]:
    form = urlencode({"t": token}).removeprefix("t=")
    return {
        token,
        quote(token),
        quote(token, safe=""),
        quote_plus(token),
        form,
        json.dumps(token)[1:-1],
        json.dumps(token, ensure_ascii=False)[1:-1],
    }


def pieces(token: str) -> set[str]:
    return {s[i : i + PIECE] for s in spellings(token) for i in range(max(1, len(s) - PIECE + 1))}


def leaked(text: str, token: str) -> list[str]:
    """The pieces of ``token`` that ``text`` shows, whatever their letter case."""
    wanted = {_fold(p) for p in pieces(token)}
    return [
        text[i : i + size]
        for size in {len(p) for p in wanted}
        for i in range(len(text) - size + 1)
        if _fold(text[i : i + size]) in wanted
    ]


def _fold(text: str) -> tuple[str, ...]:
    # Character by character: str.lower() of a whole text may change its length ("İ").
    return tuple(c.lower() for c in text)
