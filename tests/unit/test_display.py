"""``printable``: nothing a terminal would obey gets through, everything else is kept."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from syncd.display import printable

BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
SEPARATORS = {"\u2028", "\u2029"}


def unsafe(char: str) -> bool:
    return unicodedata.category(char) == "Cc" or char in BIDI | SEPARATORS


@given(st.text())
def test_nothing_unsafe_survives(text: str) -> None:
    assert not any(unsafe(c) for c in printable(text))


@given(st.text(st.characters().filter(lambda c: not unsafe(c))))
def test_text_without_controls_is_unchanged(text: str) -> None:
    assert printable(text) == text


def test_escapes_are_visible_and_the_rest_is_kept() -> None:
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("\x1b]0;pwned\x07") == "\\x1b]0;pwned\\x07"
    assert printable("line\nnext\r\t\x00\x7f\x9b") == "line\\x0anext\\x0d\\x09\\x00\\x7f\\x9b"
    assert printable("\u202eevil\u2066\u2028") == "\\u202eevil\\u2066\\u2028"
    assert printable("Привет, café 😀 \\x1b") == "Привет, café 😀 \\x1b"
