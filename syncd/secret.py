"""Values that must never be printed (provider tokens, webhook secrets), and the one place
that finds them in text and hides them.

A provider that echoes a request back writes the token the way it travelled or the way its
framework re-encoded it: form- or URL-encoded (``%2f`` or ``%2F``), inside a JSON string,
HTML-escaped. Error texts quote a piece of it ("Invalid API key 3f9a1c7e02b4..."). So
hiding a secret means hiding every ``PIECE``-character piece of every one of those
spellings, whatever the case of its letters: over-redacting a few characters of a log line
costs nothing, a leaked piece of a token may cost the account.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Iterator
from typing import Final, TypeAlias
from urllib.parse import quote, quote_plus

REDACTED: Final = "***"
PIECE: Final = 8  # the shortest piece of a spelling that counts as showing the secret
_Trie: TypeAlias = dict[str, "_Trie"]


class Secret:
    """Wraps a token so that ``str``, ``repr`` and f-strings show ``***``.

    Only ``reveal()`` gives the value, and only the code that puts it on the wire calls it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret is not picklable")


class Scrubber:
    """Replaces every piece of any spelling of some secrets in a text with ``***``.

    Built once per set of secrets (the log pipeline runs it on every line): the pieces are
    compiled into one case-insensitive pattern that is tried at every position of a text.
    """

    __slots__ = ("_first_look", "_pattern")

    def __init__(self, secrets: Iterable[Secret]) -> None:
        found = {p for secret in secrets if secret.reveal() for p in pieces(secret.reveal())}
        # A lookahead matches without consuming: overlapping pieces are all found.
        self._pattern = re.compile(f"(?=({_alternation(found)}))", re.IGNORECASE) if found else None
        # Case-insensitive matching is several times slower than exact matching, and most
        # texts (every package name of a catalog) hold no secret at all: a first look for
        # the case-folded pieces in the case-folded text decides whether the real pass
        # runs. Case folding works character by character, so it misses nothing.
        folded = {p.casefold() for p in found}
        self._first_look = re.compile(_alternation(folded)) if found else None

    def __bool__(self) -> bool:
        """Whether there is anything to hide at all."""
        return self._pattern is not None

    def holds_none(self, text: str) -> bool:
        """Whether ``text`` surely holds no piece of a secret (the first look alone). Every
        part of a text that holds none holds none either: many short texts joined are
        looked at once."""
        return self._first_look is None or self._first_look.search(text.casefold()) is None

    def scrub(self, text: str) -> str:
        if self._pattern is None or self._first_look is None:
            return text
        if self._first_look.search(text.casefold()) is None:
            return text
        parts: list[str] = []
        kept = 0
        # One match per position is enough, even a shorter piece than another one starting
        # there: replacing its characters breaks every piece that starts at that position.
        for start, end in _merged(m.span(1) for m in self._pattern.finditer(text)):
            parts += (text[kept:start], REDACTED)
            kept = end
        if not parts:
            return text
        parts.append(text[kept:])
        return "".join(parts)


def spellings(value: str) -> set[str]:
    """Every way ``value`` is written back by a provider that echoes it (letter case aside:
    the search ignores it, which covers ``%2f`` and ``%2F``, ``\\u00e9`` and ``\\u00E9``)."""
    encoded = (quote(value), quote(value, safe=""), quote_plus(value), quote_plus(value, safe="/"))
    return {escaped for text in {value, *encoded} for escaped in _escaped(text)}


def pieces(value: str) -> set[str]:
    """Every ``PIECE``-character piece of every spelling; a shorter spelling whole."""
    return {s[i : i + PIECE] for s in spellings(value) for i in range(max(1, len(s) - PIECE + 1))}


def _escaped(text: str) -> tuple[str, ...]:
    as_json = json.dumps(text)[1:-1]
    raw_json = json.dumps(text, ensure_ascii=False)[1:-1]
    # PHP, which most panels run on, writes "/" in JSON strings as "\/".
    php = (as_json.replace("/", "\\/"), raw_json.replace("/", "\\/"))
    return (text, as_json, raw_json, *php, html.escape(text))


def _alternation(words: Iterable[str]) -> str:
    """A pattern matching any of ``words``, their common prefixes shared (a trie): at each
    position of a text, matching costs one branch per character, not one per word."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # "" marks the end of a word
    return _trie_pattern(trie)


def _trie_pattern(node: _Trie) -> str:
    branches = [re.escape(char) + _trie_pattern(child) for char, child in node.items() if char]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body


def _merged(spans: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Overlapping or touching spans, sorted by start, as the spans they cover together."""
    current: tuple[int, int] | None = None
    for start, end in spans:
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            yield current
        current = (start, end)
    if current is not None:
        yield current
