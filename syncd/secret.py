"""A value that must never be printed: provider tokens and webhook secrets."""

from __future__ import annotations

from typing import Final

REDACTED: Final = "***"


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


def scrub(text: str, secrets: list[Secret] | tuple[Secret, ...]) -> str:
    """Replace every occurrence of any secret's value in ``text`` with ``***``."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            text = text.replace(value, REDACTED)
    return text
