"""Turn decoded provider replies into syncd's typed models.

Pure functions: they take the JSON value (decoded with ``parse_float=Decimal``) and either
return models or raise ``ReplyShapeError`` with a short description, which the client wraps
into a ``MalformedReplyError`` naming the provider.  Every tolerated quirk of SPEC §2 is
handled here: numbers as strings or JSON numbers, ids as strings or ints, missing
currency, negative remains, and error objects in all their shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

from syncd.models import (
    Balance,
    OrderLookupError,
    OrderStatus,
    Package,
    canonical_status,
)
from syncd.units import LARGEST, parse_count, parse_money

_PACKAGE_FIELDS = frozenset({"service", "name", "type", "category", "rate", "min", "max"})
_AUTH_WORDS = re.compile(
    r"api[\s_-]*key|api[\s_-]*token|\btoken\b|\bkey\b|unauthori[sz]ed|not authenticated|"
    r"authentication|access denied",
    re.IGNORECASE,
)


T = TypeVar("T")


class ReplyShapeError(ValueError):
    """A reply that does not have the shape the API promises."""


def error_message(reply: object) -> str | None:
    """The provider's error text if ``reply`` is an error object, else ``None``.

    Accepted shapes: ``{"error": "..."}``, ``{"error": ["..."]}``, ``{"errors": [...]}``,
    ``{"errors": {"field": ["..."]}}`` and, inside a multi-status map, a bare string.
    """
    if isinstance(reply, str):
        return reply.strip() or "error"
    if not isinstance(reply, Mapping):
        return None
    for key in ("error", "errors"):
        if key in reply:
            return _flatten(reply[key]) or key
    return None


def is_auth_error(message: str) -> bool:
    """Whether an error text says the token was rejected ("Invalid API key", ...)."""
    return bool(_AUTH_WORDS.search(message))


def _flatten(value: object) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_flatten(v) for v in value)
    if value is None or value is True:
        return ""
    return str(value).strip()


def parse_packages(reply: object) -> list[Package]:
    if not isinstance(reply, list):
        raise ReplyShapeError(f"catalog reply is {_kind(reply)}, not a list of packages")
    packages: dict[int, Package] = {}
    for index, item in enumerate(reply):
        try:
            package = _package(item)
        except (ValueError, TypeError, KeyError) as exc:
            raise ReplyShapeError(f"catalog entry {index}: {exc}") from None
        # A repeated id keeps its first entry, like the provider's own order form does.
        packages.setdefault(package.service_id, package)
    return list(packages.values())


def _package(item: object) -> Package:
    if not isinstance(item, Mapping):
        raise ValueError(f"is {_kind(item)}, not an object")
    missing = [k for k in ("service", "name", "rate", "min", "max") if k not in item]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return Package(
        service_id=_id(item["service"]),
        name=str(item["name"]),
        type=str(item.get("type") or "Default"),
        category=str(item.get("category") or ""),
        rate=parse_money(item["rate"]),
        min=parse_count(item["min"]),
        max=parse_count(item["max"]),
        extra=_jsonable({k: v for k, v in item.items() if k not in _PACKAGE_FIELDS}),
    )


def parse_balance(reply: object) -> Balance:
    if not isinstance(reply, Mapping) or "balance" not in reply:
        raise ReplyShapeError(f"balance reply is {_kind(reply)} without a balance")
    try:
        amount = parse_money(reply["balance"])
    except ValueError as exc:
        raise ReplyShapeError(f"balance: {exc}") from None
    return Balance(amount, _currency(reply))


def parse_order_id(reply: object) -> int:
    if not isinstance(reply, Mapping) or "order" not in reply:
        raise ReplyShapeError(f"add reply is {_kind(reply)} without an order id")
    try:
        return _id(reply["order"])
    except ValueError as exc:
        raise ReplyShapeError(f"order id: {exc}") from None


def parse_status(reply: object) -> OrderStatus:
    if not isinstance(reply, Mapping) or "status" not in reply:
        raise ReplyShapeError(f"status reply is {_kind(reply)} without a status")
    try:
        return _status(reply)
    except (ValueError, TypeError) as exc:
        raise ReplyShapeError(f"status: {exc}") from None


def parse_statuses(reply: object, asked: list[int]) -> dict[int, OrderStatus | OrderLookupError]:
    """Parse a multi-status map. Per-order errors of any shape become ``OrderLookupError``.

    An entry that is garbled is reported for that order only: one bad entry never fails the
    other 99 of the batch.  Ids the provider left out are absent from the result.
    """
    if not isinstance(reply, Mapping):
        raise ReplyShapeError(f"multi-status reply is {_kind(reply)}, not an object")
    wanted = set(asked)
    result: dict[int, OrderStatus | OrderLookupError] = {}
    for key, entry in reply.items():
        try:
            order_id = _id(key)
        except ValueError:
            continue  # not an order id: providers sometimes add fields such as "currency"
        if order_id not in wanted:
            continue
        message = error_message(entry)
        if message is not None:
            result[order_id] = OrderLookupError(message)
            continue
        try:
            result[order_id] = parse_status(entry)
        except ReplyShapeError as exc:
            result[order_id] = OrderLookupError(f"unreadable entry: {exc}")
    return result


def _status(reply: Mapping[str, Any]) -> OrderStatus:
    raw = str(reply["status"]).strip()
    return OrderStatus(
        status=canonical_status(raw),
        status_raw=raw,
        charge=_optional(reply.get("charge"), parse_money),
        start_counter=_optional(reply.get("start_counter"), parse_count),
        remains=_optional(reply.get("remains"), parse_count),
        currency=_currency(reply),
    )


def _optional(value: object, parse: Callable[[object], T]) -> T | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse(value)


def _currency(reply: Mapping[str, Any]) -> str | None:
    currency = reply.get("currency")
    if isinstance(currency, str) and currency.strip():
        return currency.strip().upper()
    return None


def _id(value: object) -> int:
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, Decimal) and value == value.to_integral_value():
        number = int(value)
    if number is None or not 0 <= number <= LARGEST:
        raise ValueError(f"not an id: {value!r}")
    return number


def _jsonable(value: Any) -> Any:
    """Decimals (from ``parse_float``) back to exact strings so ``extra`` stores as JSON."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _kind(value: object) -> str:
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"
