"""Values that must never be printed (provider tokens, webhook secrets), and the one place
that finds them in text and hides them.

A provider that echoes a request back writes the token the way it travelled or the way its
framework re-encoded it: form- or URL-encoded (``%2f`` or ``%2F``), inside a JSON string,
HTML-escaped. Error texts quote a piece of it ("Invalid API key 3f9a1c7e02b4..."). So
hiding a secret means hiding every ``PIECE``-character piece of every one of those
spellings, whatever the case of its letters: over-redacting a few characters of a log line
costs nothing, a leaked piece of a token may cost the account.

An encoder may also escape characters no form encoder would (``sim%2Dtoken``: ``-`` needs
no escape), or escape some and not others. So besides those whole spellings, every run of
``PIECE`` characters of the secret is hidden with each character written in any of its
own spellings (itself, ``%XX`` of its UTF-8 bytes in either case, ``+`` for a space, its
JSON or HTML escape), chosen character by character. The secret's base64 (standard and
URL-safe, with or without padding, and the part that does not depend on its neighbours
when it is encoded after 1 or 2 other bytes, as in ``user:token``) is hidden whole, and
so is every run of ``PIECE`` of its bytes written in hex.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Iterator
from typing import Final, TypeAlias
from urllib.parse import quote, quote_plus

REDACTED: Final = "***"
PIECE: Final = 8  # the shortest piece of a spelling that counts as showing the secret
# A word to find, one unit per character of the text it stands for; a unit is the sorted
# spellings it matches (one, for a literal character).
_Unit: TypeAlias = tuple[str, ...]
_Word: TypeAlias = tuple[_Unit, ...]
_Trie: TypeAlias = dict[_Unit, "_Trie"]
_END: Final[_Unit] = ()  # marks the end of a word in a trie


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
    compiled into case-insensitive patterns that are tried at every position of a text.
    """

    __slots__ = ("_looks",)

    def __init__(self, secrets: Iterable[Secret]) -> None:
        values = [secret.reveal() for secret in secrets if secret.reveal()]
        literal = {w for value in values for w in _literal_words(value)}
        mixed = {w for value in values for w in _mixed_words(value)}
        # A piece written with no escape at all is a literal one: the mixed pieces need
        # only be looked for in a text holding a character an escape begins with.
        starts = {
            spelled[0].casefold()
            for value in values
            for char in set(value)
            for spelled in char_spellings(char)
            if spelled != char
        }
        looks = [_Look(literal, None), _Look(mixed, "".join(sorted(starts)))]
        self._looks = tuple(look for look in looks if look)

    def __bool__(self) -> bool:
        """Whether there is anything to hide at all."""
        return bool(self._looks)

    def holds_none(self, text: str) -> bool:
        """Whether ``text`` surely holds no piece of a secret (the first look alone). Every
        part of a text that holds none holds none either: many short texts joined are
        looked at once."""
        folded = text.casefold()
        return all(look.first_hit(folded) is None for look in self._looks)

    def scrub(self, text: str) -> str:
        if not self._looks:
            return text
        folded = text.casefold()
        hits = [(look, at) for look in self._looks if (at := look.first_hit(folded)) is not None]
        if not hits:
            return text
        # Where case folding kept every character one character (any ASCII text), the
        # folded text is searched, exactly and from the first hit on; else the text itself,
        # ignoring case. One match per position is enough, even a shorter piece than
        # another one starting there: replacing its characters breaks every piece that
        # starts at that position.
        aligned = len(folded) == len(text)
        spans = sorted(
            m.span(1)
            for look, at in hits
            for m in (look.folded.finditer(folded, at) if aligned else look.pattern.finditer(text))
        )
        parts: list[str] = []
        kept = 0
        for start, end in _merged(spans):
            parts += (text[kept:start], REDACTED)
            kept = end
        if not parts:
            return text
        parts.append(text[kept:])
        return "".join(parts)


class _Look:
    """One set of words to find: the case-insensitive pattern that finds them, and a
    first look that says whether a text may hold one at all.

    Case-insensitive matching is several times slower than exact matching, and most texts
    (every package name of a catalog) hold no secret at all: the first look, for the
    case-folded words in the case-folded text, decides whether the real pass runs. Case
    folding works character by character, so it misses nothing. ``starts``, when given,
    are the characters an escape begins with: a text without any holds no word this look
    alone must find (a word without escapes is a literal one, another look's), and is not
    looked at.
    """

    __slots__ = ("first_look", "folded", "pattern", "starts")

    def __init__(self, words: set[_Word], starts: str | None) -> None:
        self.starts = starts
        # A lookahead matches without consuming: overlapping pieces are all found.
        self.pattern = re.compile(f"(?=({_alternation(words)}))", re.IGNORECASE)
        folded = {tuple(tuple(sorted({s.casefold() for s in unit})) for unit in w) for w in words}
        found = _alternation(folded)
        self.first_look = re.compile(found) if words else None
        self.folded = re.compile(f"(?=({found}))")  # the real pass, on a folded text

    def __bool__(self) -> bool:
        return self.first_look is not None

    def first_hit(self, folded: str) -> int | None:
        """Where in the case-folded text the first word may begin; None: nowhere."""
        if self.first_look is None:
            return None
        if self.starts is not None and not any(c in folded for c in self.starts):
            return None
        found = self.first_look.search(folded)
        return None if found is None else found.start()


def spellings(value: str) -> set[str]:
    """Every way ``value`` is written back by a provider that echoes it (letter case aside:
    the search ignores it, which covers ``%2f`` and ``%2F``, ``\\u00e9`` and ``\\u00E9``)."""
    encoded = (quote(value), quote(value, safe=""), quote_plus(value), quote_plus(value, safe="/"))
    return {escaped for text in {value, *encoded} for escaped in _escaped(text)}


def pieces(value: str) -> set[str]:
    """Every ``PIECE``-character piece of every spelling; a shorter spelling whole."""
    return {s[i : i + PIECE] for s in spellings(value) for i in range(max(1, len(s) - PIECE + 1))}


def char_spellings(char: str) -> set[str]:
    """Every way one character of a secret is written back on its own: itself, ``%XX``
    of each of its UTF-8 bytes (either case: the search ignores it), ``+`` for a space,
    escaped in a JSON string (PHP's ``\\/`` included) or in HTML."""
    escaped = "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    spelled = {char, escaped, *_escaped(char)}
    if char == " ":
        spelled.add("+")
    return spelled


def base64_spellings(value: str) -> set[str]:
    """The secret's base64, standard and URL-safe: whole, with or without its padding,
    and the characters that hold only its bits when it is encoded after 1 or 2 other
    bytes (``user:token``), which do not depend on what surrounds it."""
    data = value.encode("utf-8", "surrogatepass")
    found = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode("ascii")
        found |= {whole, whole.rstrip("=")}
        for before in (1, 2):
            encoded = encode(bytes(before) + data).decode("ascii")
            bits = 8 * (before + len(data))
            found.add(encoded[-(-8 * before // 6) : bits // 6])
    return {text for text in found if len(text) >= PIECE}


def hex_spellings(value: str) -> set[str]:
    """The secret's bytes in hex (the search ignores case: ``2d`` and ``2D`` alike), as
    a debugging provider prints a key it could not read: every run of ``PIECE`` of its
    bytes, or the whole of a shorter secret."""
    digits = value.encode("utf-8", "surrogatepass").hex()
    width = 2 * PIECE
    return {digits[i : i + width] for i in range(0, max(1, len(digits) - width + 1), 2)}


def _literal_words(value: str) -> set[_Word]:
    """Every piece (``pieces``), the base64 and hex spellings, letter by letter."""
    literal = pieces(value) | base64_spellings(value) | hex_spellings(value)
    return {tuple((c,) for c in text) for text in literal}


def _mixed_words(value: str) -> set[_Word]:
    """Every ``PIECE`` characters of the secret in a row (all of it, when shorter), each
    spelled any way of its own (``char_spellings``)."""
    units = [tuple(sorted(char_spellings(c))) for c in value]
    size = min(PIECE, len(units))
    return {tuple(units[i : i + size]) for i in range(len(units) - size + 1)}


def _escaped(text: str) -> tuple[str, ...]:
    as_json = json.dumps(text)[1:-1]
    raw_json = json.dumps(text, ensure_ascii=False)[1:-1]
    # PHP, which most panels run on, writes "/" in JSON strings as "\/".
    php = (as_json.replace("/", "\\/"), raw_json.replace("/", "\\/"))
    return (text, as_json, raw_json, *php, html.escape(text))


def _alternation(words: Iterable[_Word]) -> str:
    """A pattern matching any of ``words``, their common prefixes shared (a trie): at each
    position of a text, matching costs one branch per character, not one per word."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for unit in word:
            node = node.setdefault(unit, {})
        node[_END] = {}
    return _trie_pattern(trie, root=True)


def _unit_pattern(unit: _Unit) -> str:
    if len(unit) == 1:
        return re.escape(unit[0])
    # Longest first: a spelling that begins with another one ("%2F" and "%") wins.
    return "(?:" + "|".join(map(re.escape, sorted(unit, key=len, reverse=True))) + ")"


def _trie_pattern(node: _Trie, *, root: bool = False) -> str:
    if root:
        # Every branch of the root begins with a plain character, so that the regular
        # expression engine knows the characters a match may start with and skips the
        # others at once (the first look at a text that holds no secret, the usual case).
        by_first: dict[str, list[str]] = {}
        for unit, child in node.items():
            for spelled in unit:
                rest = re.escape(spelled[1:]) + _trie_pattern(child)
                by_first.setdefault(spelled[0], []).append(rest)
        branches = [
            re.escape(first) + (rests[0] if len(rests) == 1 else "(?:" + "|".join(rests) + ")")
            for first, rests in by_first.items()
        ]
        return "(?:" + "|".join(branches) + ")" if len(branches) > 1 else "".join(branches)
    branches = [_unit_pattern(unit) + _trie_pattern(child) for unit, child in node.items() if unit]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if _END in node else body


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
