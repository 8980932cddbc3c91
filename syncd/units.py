"""The one place that turns provider and config text into money, integers and durations.

Money is ``Decimal`` end to end: JSON replies are parsed with ``parse_float=Decimal`` so a
JSON number never passes through ``float``, and this module never accepts a ``float``.

Every value from outside is bounded before it is used: an amount of ``"1e30"`` or
``"1e999999999999999999"`` is no price or balance any provider could mean, and letting it
through would only crash later arithmetic or formatting (Decimal precision, memory).  A
refused value raises ``ValueError`` with the reason, naming the value cut short.
"""

from __future__ import annotations

import re
import reprlib
from datetime import timedelta
from decimal import Decimal, InvalidOperation

_DURATION_PART = re.compile(r"([0-9]+)([smhd])")  # ASCII: \d takes Arabic-Indic digits too
_DURATION = re.compile(r"(?:[0-9]+[smhd])+")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

LARGEST = 2**63 - 1  # what a BIGINT column holds, in SQLite and PostgreSQL alike
COUNT_DIGITS = len(str(LARGEST)) - 1  # any number of this many digits is below LARGEST
MONEY_DIGITS = 12  # whole digits of an amount: below a trillion in any currency
MONEY_PLACES = 12  # decimal places of an amount (providers send up to 8)
_NUMBER_TEXT = 64  # characters of a number sent as text; longer is no number we can mean
# A refused value is quoted in its error message, cut short (a 10 MB string stays out).
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40
_REPR.maxlist = _REPR.maxdict = 3


def shown(value: object) -> str:
    """A value from outside as an error message quotes it, in the terms of the JSON it
    came in (``null``, ``true``, ``1E+300``, a text in quotes), cut short."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, Decimal):
        text = str(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    elif isinstance(value, dict):
        return "an object"
    elif isinstance(value, list):
        return "a list"
    else:
        text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _decimal(value: object, what: str) -> Decimal:
    """A finite Decimal from a JSON string, integer or (Decimal-parsed) number."""
    if isinstance(value, bool):  # bool is an int subclass; True is not 1 dollar
        raise ValueError(f"not {what}: {shown(value)}")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif (
        isinstance(value, str)
        and len(value) <= _NUMBER_TEXT
        and value.isascii()
        and "_" not in value
    ):
        # ASCII only: Decimal() reads Arabic-Indic digits as 10, and "1_000" as 1000,
        # which no provider means by an amount.
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not {what}: {shown(value)}") from None
    else:
        raise ValueError(f"not {what}: {shown(value)}")
    if not number.is_finite():
        raise ValueError(f"not {what}: {shown(value)}")
    return number.copy_abs() if number.is_zero() else number  # "-0" is 0


def parse_money(value: object) -> Decimal:
    """Parse a money amount: below 10^12 in size, at most 12 decimal places.

    Raises ``ValueError`` for anything else (floats included).
    """
    # Nearly every amount a provider sends is plain text such as "0.27819", within both
    # bounds by its shape alone: it skips the checks, which cost several times the parse
    # (a status sweep reads a charge per order).
    if type(value) is str and _plain_amount(value):
        return Decimal(value)
    return _money(value)


def parse_percent(value: object) -> Decimal:
    """A percentage written with its sign, such as ``"10%"`` or ``"2.5%"``: above 0 and at
    most 1000, ASCII digits with at most two decimal places. Raises ``ValueError``."""
    if not isinstance(value, str) or not value.endswith("%"):
        raise ValueError(f'not a percentage: {shown(value)} (write it like "10%")')
    number = value.removesuffix("%")
    whole, point, places = number.partition(".")
    if not (
        number.isascii()
        and whole.isdigit()
        and len(whole) <= 20
        and (not point or (0 < len(places) <= 2 and places.isdigit()))
    ):
        raise ValueError(
            f'not a percentage: {shown(value)} (write it like "10%", 2 decimals at most)'
        )
    percent = Decimal(number)
    if not 0 < percent <= 1000:
        raise ValueError(f"must be above 0% and at most 1000%, not {shown(value)}")
    return percent


def _plain_amount(text: str) -> bool:
    """Whether ``text`` is ASCII digits, ``MONEY_DIGITS`` at most, then optionally a point
    and 1 to ``MONEY_PLACES`` digits: no sign, no space, no exponent."""
    whole, point, places = text.partition(".")
    return (
        text.isascii()  # before isdigit(), which takes "²" and "٣" for digits
        and 0 < len(whole) <= MONEY_DIGITS
        and whole.isdigit()
        and (not point or (0 < len(places) <= MONEY_PLACES and places.isdigit()))
    )


def _money(value: object) -> Decimal:
    """``parse_money`` the long way, every rule checked in turn."""
    amount = _decimal(value, "an amount")
    if amount and amount.adjusted() >= MONEY_DIGITS:
        raise ValueError(
            f"amount out of range: {shown(value)} (no price or balance reaches 10^{MONEY_DIGITS})"
        )
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: never "n", "N" or "F"
    if exponent < -MONEY_PLACES:
        amount = amount.normalize()  # "0.5000000000000000" is still half a unit
        normal = amount.as_tuple().exponent
        assert isinstance(normal, int)
        if normal < -MONEY_PLACES:
            raise ValueError(
                f"amount too precise: {shown(value)} (at most {MONEY_PLACES} decimal places)"
            )
    return amount


def parse_count(value: object) -> int:
    """Parse a whole number sent as a JSON string, integer or integral decimal ("600.00"),
    within what a BIGINT column holds."""
    # The common cases first: a count as plain digits ("3572") short enough to be in range
    # whatever they are, or a JSON integer in range; anything else takes every check.
    if type(value) is str:
        if len(value) <= COUNT_DIGITS and value.isdigit() and value.isascii():
            return int(value)
    elif type(value) is int and -LARGEST <= value <= LARGEST:  # type(): never a bool
        return value
    return _count(value)


def _count(value: object) -> int:
    """``parse_count`` the long way, every rule checked in turn."""
    number = _decimal(value, "a whole number")
    # Check the size before int(): int(Decimal("1e999999999")) would build a huge integer.
    if number and number.adjusted() > 18:
        raise ValueError(f"out of range: {shown(value)}")
    if number != number.to_integral_value():
        raise ValueError(f"not a whole number: {shown(value)}")
    count = int(number)
    if abs(count) > LARGEST:
        raise ValueError(f"out of range: {shown(value)}")
    return count


def money_text(amount: Decimal) -> str:
    """Exact decimal text without exponent notation, as stored in the database."""
    return format(amount, "f")


def shown_money(amount: Decimal) -> str:
    """An amount as the commands print it: exact, without exponent notation, and without
    zeros after the point that add nothing. MariaDB returns every amount with its money
    column's 12 places (``0.050000000000``); SQLite and PostgreSQL keep a provider's
    ``0.0500``; a sum keeps its widest term's places. Equal amounts print alike whatever
    the database and however they were added up. What syncd stores, logs and sends keeps
    ``money_text``."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").removesuffix(".")
    return "0" if text == "-0" else text


def shown_amount(amount: Decimal, currency: str | None) -> str:
    """``amount_text`` as the commands print it (``shown_money``)."""
    return _with_currency(shown_money(amount), currency)


def amount_text(amount: Decimal, currency: str | None) -> str:
    """``"100.84292 USD"``, or the bare amount when the provider named no currency."""
    return _with_currency(money_text(amount), currency)


def _with_currency(text: str, currency: str | None) -> str:
    return f"{text} {currency or ''}".strip()


def value_text(value: object) -> str:
    """Any stored value as people read it: money exactly, flags as true/false, the rest as
    ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return money_text(value) if isinstance(value, Decimal) else str(value)


def shown_value(value: object) -> str:
    """``value_text`` as the commands print it: an amount by ``shown_money``."""
    return shown_money(value) if isinstance(value, Decimal) else value_text(value)


LONGEST_DURATION = timedelta(days=3650)  # ten years: longer is a typo, and overflows dates


def parse_duration(text: str, *, longest: timedelta = LONGEST_DURATION) -> timedelta:
    """Parse ``"90s"``, ``"2m"``, ``"1h"``, ``"30d"`` or a sum such as ``"1h30m"``, from a
    second up to ``longest``."""
    if not isinstance(text, str) or len(text) > 40 or not _DURATION.fullmatch(text.strip()):
        raise ValueError(f'not a duration: {text!r} (use forms like "90s", "2m", "1h", "30d")')
    seconds = sum(int(n) * _SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    if seconds > longest.total_seconds():
        raise ValueError(f"duration too long: {text!r} (at most {format_duration(longest)})")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta) -> str:
    """The inverse of ``parse_duration`` for whole units: 30 days → ``"30d"``."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
