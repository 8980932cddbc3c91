"""Text from outside (a provider's error message, a currency, a webhook's error) made safe
to show on a terminal.

A provider controls those texts, and a terminal obeys control characters: ``\\x1b[2J``
clears the screen, ``\\x1b]0;...\\x07`` retitles the window, other sequences rewrite what
is already on it; bidi controls reorder what is shown. ``printable`` writes each such
character as a visible escape and leaves all other text, accents and emoji included, as it
is. Newlines are escaped too: every output shows one item per line.
"""

from __future__ import annotations

import re
from typing import Final

_UNSAFE: Final = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0, DEL and C1 controls (ESC, BEL, CSI, OSC...)
    "\u2028\u2029"  # line and paragraph separators
    "\u202a-\u202e\u2066-\u2069"  # bidi embeddings, overrides and isolates
    "]"
)


def printable(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN`` or ``\\uNNNN``."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
