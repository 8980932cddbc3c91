"""What a status answer says beyond the common fields, as one small canonical object.

Drip-feed orders answer with the ``runs`` done (``3``, ``"3"``, ``"3 / 10"``) and their
child ``orders`` (a list of ids or a comma-separated text); subscriptions with the
``posts`` made and their ``expiry`` (``d/m/Y``, or ``"null"``). These are kept in
``orders.status_extra`` as::

    {"runs": 3, "runs_total": 10, "orders": [901, 902], "posts": 4, "expiry": "2026-12-25"}

with only the keys the provider gave. Every value is read as hostile: a text that does
not read is kept as the provider's text, on one line and cut short (a person can still
read it); a value of the wrong kind (a list where a count belongs, an object, ``true``)
is dropped; a list of child orders is cut at ``ORDERS_KEPT`` ids (``orders_total`` then
says how many there were). Nothing here raises on a provider's value.

Reading the column back (``stored_extra``) is the other direction: a consumer may have
written anything there (SQLite keeps any text), so what is no JSON object is a
``ValueError`` for the row reader to report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any, Final

from syncd.units import LARGEST

# The status fields this module reads; anything else in a status answer is not kept.
FIELDS: Final = ("runs", "orders", "posts", "expiry")
FIELD_SET: Final = frozenset(FIELDS)
TEXT_KEPT: Final = 100  # characters of a value kept as text
ORDERS_KEPT: Final = 1000  # child order ids kept
STORED_LONGEST: Final = 200_000  # characters of a stored value read back

Extra = dict[str, Any]
Scrub = Callable[[str], str]

_DIGITS = re.compile(r"[0-9]{1,19}")
# "3 / 10", "3/10", "3 of 10", "3 out of 10", "3 from 10"
_RUNS = re.compile(r"([0-9]{1,19})\s*(?:/|of|out\s+of|from)\s*([0-9]{1,19})", re.IGNORECASE)
_ID_SEPARATORS = re.compile(r"[\s,;]+")
# d/m/Y (also with dots or hyphens), or Y-m-d; any time of day after it is dropped.
_DMY = re.compile(r"([0-9]{1,2})[/.\-]([0-9]{1,2})[/.\-]([0-9]{4})(?:[\sT].*)?", re.DOTALL)
_YMD = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})(?:[\sT].*)?", re.DOTALL)
_NOTHING = frozenset({"", "null", "none", "nil", "-", "n/a", "0", "false"})


def read_extra(reply: Mapping[str, Any], scrub: Scrub) -> Extra | None:
    """The canonical object of one status answer, or None when it carries none of
    ``FIELDS`` readable. ``scrub`` is applied to every text kept."""
    extra: Extra = {}
    for name in FIELDS:
        value = reply.get(name)
        if value is None:
            continue
        if name == "orders":
            _child_orders(value, extra, scrub)
        elif name == "expiry":
            if (day := _expiry(value, scrub)) is not None:
                extra["expiry"] = day
        elif name == "runs":
            _runs(value, extra, scrub)
        elif (count := _count(value, scrub)) is not None:
            extra[name] = count
    return extra or None


def merged(old: Extra | None, new: Extra | None) -> Extra | None:
    """What the order keeps after an answer: what the answer gave, over what was known
    (a field the answer leaves out keeps its last value, like a charge)."""
    if new is None:
        return old
    if not old:
        return new
    # A count's total belongs with the count it came with: a later answer's own count
    # without one (runs "4" after "3 / 10", two child ids after a list cut at 1000) does
    # not keep the old total beside it.
    kept = {
        key: value
        for key, value in old.items()
        if not (key in _TOTALS and _TOTALS[key] in new and key not in new)
    }
    both = {**kept, **new}
    return old if both == old else both


_TOTALS = {"runs_total": "runs", "orders_total": "orders"}  # a total: the field it counts


def stored_extra(value: object) -> Extra | None:
    """``orders.status_extra`` as a driver returns it: parsed already, or JSON text.
    What is not a JSON object raises ``ValueError`` naming why, on one line."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        raise ValueError(f"not JSON text: {type(value).__name__}")
    if len(value) > STORED_LONGEST:
        raise ValueError(f"longer than {STORED_LONGEST} characters")
    try:
        parsed = json.loads(value, parse_constant=_refused)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if parsed is None:
        return None
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    return parsed


def as_json(extra: Extra | None) -> str | None:
    """The text written to the JSON column (what its column type would write)."""
    return None if extra is None else json.dumps(extra, ensure_ascii=False)


def _refused(constant: str) -> object:
    raise ValueError(constant)


# -- one field at a time -------------------------------------------------------------------


def _count(value: object, scrub: Scrub) -> int | str | None:
    """A count 0..LARGEST; a text that is none is kept as text; other kinds are dropped."""
    if type(value) is int:
        return value if 0 <= value <= LARGEST else _kept(str(value), scrub)
    if isinstance(value, Decimal):
        if value.is_finite() and 0 <= value <= LARGEST and value == value.to_integral_value():
            return int(value)
        return _kept(_number_text(value), scrub)
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text) and int(text) <= LARGEST:
            return int(text)
        return None if text.lower() in ("", "null") else _kept(text, scrub)
    return None  # a boolean, a list, an object: nothing anyone can read as a count


def _runs(value: object, extra: Extra, scrub: Scrub) -> None:
    if isinstance(value, str) and (both := _RUNS.fullmatch(value.strip())):
        done, total = int(both[1]), int(both[2])
        if done <= LARGEST and total <= LARGEST:
            extra["runs"], extra["runs_total"] = done, total
            return
    if (count := _count(value, scrub)) is not None:
        extra["runs"] = count


def _child_orders(value: object, extra: Extra, scrub: Scrub) -> None:
    if isinstance(value, list):
        items: list[object] = value
    elif isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "null"):
            return
        parts = [part for part in _ID_SEPARATORS.split(text) if part]
        if not parts or not all(_DIGITS.fullmatch(part) for part in parts):
            extra["orders"] = _kept(text, scrub)
            return
        items = list(parts)
    elif type(value) is int or isinstance(value, Decimal):
        items = [value]
    else:
        return
    ids = [i for item in items if (i := _order_id(item)) is not None]
    if not ids:
        return
    extra["orders"] = ids[:ORDERS_KEPT]
    if len(ids) > ORDERS_KEPT:
        extra["orders_total"] = len(ids)


def _order_id(item: object) -> int | None:
    if type(item) is int:
        number = item
    elif isinstance(item, str) and _DIGITS.fullmatch(item.strip()):
        number = int(item.strip())
    elif isinstance(item, Decimal) and item.is_finite() and item.adjusted() <= 18:
        if item != item.to_integral_value():
            return None
        number = int(item)
    else:
        return None
    return number if 0 < number <= LARGEST else None


def _expiry(value: object, scrub: Scrub) -> str | None:
    """A date as ``YYYY-MM-DD``; "null", empty or an all-zero date is no expiry; a text
    that is no date is kept as text."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.lower() in _NOTHING:
        return None
    if found := _DMY.fullmatch(text):
        day, month, year = int(found[1]), int(found[2]), int(found[3])
    elif found := _YMD.fullmatch(text):
        year, month, day = int(found[1]), int(found[2]), int(found[3])
    else:
        return _kept(text, scrub)
    if day == month == year == 0:
        return None
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return _kept(text, scrub)


def _kept(text: str, scrub: Scrub) -> str:
    """A provider's text kept as it is, scrubbed, on one line, at most ``TEXT_KEPT``."""
    line = " ".join(scrub(text).split())  # scrubbed before it is cut: no piece survives
    return line if len(line) <= TEXT_KEPT else line[: TEXT_KEPT - 3] + "..."


def _number_text(value: Decimal) -> str:
    return format(value, "f") if abs(value.adjusted()) < 100 else str(value)
