"""The one place that turns provider and config text into money, integers and durations.

Money is ``Decimal`` end to end: JSON replies are parsed with ``parse_float=Decimal`` so a
JSON number never passes through ``float``, and this module never accepts a ``float``.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"(\d+)([smhd])")
_DURATION = re.compile(r"(?:\d+[smhd])+")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_money(value: object) -> Decimal:
    """Parse a money amount sent as a JSON string, integer or (Decimal-parsed) number.

    Raises ``ValueError`` for anything that is not a finite decimal amount.
    """
    if isinstance(value, bool):  # bool is an int subclass; True is not 1 dollar
        raise ValueError(f"not an amount: {value!r}")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not an amount: {value!r}") from None
    else:
        raise ValueError(f"not an amount: {value!r}")
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return amount


LARGEST = 2**63 - 1  # what a BIGINT column holds, in SQLite and PostgreSQL alike


def parse_count(value: object) -> int:
    """Parse a whole number sent as a JSON string, integer or integral decimal ("600.00")."""
    amount = parse_money(value)
    if amount != amount.to_integral_value():
        raise ValueError(f"not a whole number: {value!r}")
    if abs(amount) > LARGEST:
        raise ValueError(f"out of range: {value!r}")
    return int(amount)


def money_text(amount: Decimal) -> str:
    """Exact decimal text without exponent notation, as stored in the database."""
    return format(amount, "f")


def amount_text(amount: Decimal, currency: str | None) -> str:
    """``"100.84292 USD"``, or the bare amount when the provider named no currency."""
    return f"{money_text(amount)} {currency or ''}".strip()


def value_text(value: object) -> str:
    """Any stored value as people read it: money exactly, the rest as ``str``."""
    return money_text(value) if isinstance(value, Decimal) else str(value)


def parse_duration(text: str) -> timedelta:
    """Parse ``"90s"``, ``"2m"``, ``"1h"``, ``"30d"`` or a sum such as ``"1h30m"``."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text.strip()):
        raise ValueError(f'not a duration: {text!r} (use forms like "90s", "2m", "1h", "30d")')
    seconds = sum(int(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta) -> str:
    """The inverse of ``parse_duration`` for whole units: 30 days → ``"30d"``."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
