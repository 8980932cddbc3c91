"""What an order needs besides its package: the order types providers sell, as data, and
the one function that turns an order row into the fields of its ``add`` call.

A package's ``type`` (read case- and space-insensitively) and its catalog entry's
``dripfeed`` flag decide what its orders take. The consumer writes the fields beyond link,
quantity and comments in ``orders.params``, a JSON object under the provider's own field
names; comments stay in ``custom_data``. ``placement`` checks a row against its type and
against what the provider's dialect documents, and returns either the exact form fields
to send (besides the token, the action and the service) or a one-line reason naming the
field at fault. Anything a consumer may have written there (text that is no JSON, a list,
nested objects, numbers as floats, booleans, a billion runs) ends in one of the two,
never in an exception. Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Final, NamedTuple, Protocol

from syncd.models import Package
from syncd.units import LARGEST, shown

COMMENTS: Final = "comments"  # the comments, kept in custom_data; each dialect spells them
LINK_LONGEST: Final = 2000  # characters of a link or of a one-line field
LIST_LONGEST: Final = 2**20  # bytes of a one-per-line field, comments included
PARAMS_LONGEST: Final = 4 * 2**20  # bytes of the params text as stored
COUNT_LARGEST: Final = 10**9  # a count in params above this is a typo, not an order


@dataclass(frozen=True, slots=True)
class OrderType:
    """What orders of one package type take. Field names are the provider's own."""

    name: str
    needs: tuple[str, ...] = ()  # fields it must have (``comments``: in custom_data)
    may: tuple[str, ...] = ()  # fields it may have
    link: bool = True
    quantity: bool = True
    # The one-per-line field whose entries must number the quantity.
    per_unit: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return self.needs + self.may

    def needs_text(self, *, dripfeed: bool = False) -> str:
        """What it needs, for a person: ``comments (1 per unit)``, ``username, min, max``,
        ``runs+interval (optional)``."""
        parts = [f"{f} (1 per unit)" if f == self.per_unit else f for f in self.needs]
        optional = [*self.may, *(("runs+interval",) if dripfeed and self is DEFAULT else ())]
        if optional:
            parts.append(f"{', '.join(optional)} (optional)")
        if not self.link:
            parts.append("no link")
        if not self.quantity:
            parts.append("no quantity")
        return ", ".join(parts) or "-"


DEFAULT: Final = OrderType("Default")
_TYPES = (
    DEFAULT,
    OrderType("Package", quantity=False),
    OrderType("Custom Comments", needs=(COMMENTS,), per_unit=COMMENTS),
    OrderType("Custom Comments Package", needs=(COMMENTS,), quantity=False),
    OrderType("Mentions", needs=("usernames",), per_unit="usernames"),
    OrderType("Mentions with Hashtags", needs=("usernames", "hashtags"), per_unit="usernames"),
    OrderType("Mentions Custom List", needs=("usernames",), quantity=False),
    OrderType("Mentions Hashtag", needs=("hashtag",)),
    OrderType("Mentions User Followers", needs=("username",)),
    OrderType("Mentions Media Likers", needs=("media",)),
    OrderType("Comment Likes", needs=("username",)),
    OrderType("Comment Replies", needs=("username", COMMENTS), quantity=False),
    OrderType("Poll", needs=("answer_number",)),
    OrderType("Invites from Groups", needs=("groups",)),
    OrderType("SEO", needs=("keywords",)),
    OrderType(
        "Subscriptions",
        needs=("username", "min", "max"),
        may=("posts", "old_posts", "delay", "expiry"),
        link=False,
        quantity=False,
    ),
)
DRIP_FEED: Final = ("runs", "interval")  # a Default package with ``dripfeed`` takes both


def type_key(package_type: str) -> str:
    """A package type as ``TYPES`` keys it: ``Custom  comments`` is ``customcomments``."""
    return "".join(package_type.split()).lower()


TYPES: Final[Mapping[str, OrderType]] = {type_key(t.name): t for t in _TYPES}

# Every field params may carry, by kind. Counts: the least each may be (a drip-feed has
# two runs at least; a subscription may start at once, `delay` 0, and take no old posts).
COUNTS: Final[Mapping[str, int]] = {
    "runs": 2, "interval": 1, "answer_number": 1, "min": 1, "max": 1, "posts": 1,
    "old_posts": 0, "delay": 0,
}  # fmt: skip
LISTS: Final = frozenset({"usernames", "hashtags", "groups", "keywords"})  # one per line
TEXTS: Final = frozenset({"username", "hashtag", "media", "expiry"})  # one line each
# Fields a consumer might write in params that belong elsewhere, and where.
_ELSEWHERE: Final = {
    "link": "the link column holds it", "quantity": "the quantity column holds it",
    COMMENTS: "comments go in custom_data", "custom_data": "comments go in custom_data",
    "service": "the service_id column holds it", "package": "the service_id column holds it",
    "action": "syncd sends it itself", "key": "syncd sends it itself",
    "api_token": "syncd sends it itself",
}  # fmt: skip


class Spelling(Protocol):
    """What ``placement`` needs of a provider's dialect (``provider.dialects.Dialect``):
    its name, how it spells comments, and the other ``add`` fields it documents."""

    @property
    def name(self) -> str: ...
    @property
    def comments_field(self) -> str: ...
    @property
    def order_fields(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class Spelled:
    """A ``Spelling`` as plain data, for deciders that are not handed a dialect."""

    name: str
    comments_field: str
    order_fields: frozenset[str] = frozenset()


# The reference dialect's (``api_token``): comments as custom_data, no other field. A test
# holds it equal to the dialect's own description.
REFERENCE: Final = Spelled("api_token", "custom_data")


@dataclass(frozen=True, slots=True)
class Placement:
    """An order ready to send: its form fields (link, quantity, comments under the
    dialect's name, the params), and what its estimated cost is counted from."""

    fields: dict[str, str]
    kind: OrderType
    units: int | None  # quantity, times runs for a drip-feed; None for a type without quantity

    def cost(self, rate: Decimal) -> Decimal:
        """What it costs at the package's ``rate``: per 1000 units for a type with a
        quantity (every run of a drip-feed counted); the price of one package for a type
        without; a subscription at ``max`` per post, for ``posts`` posts (one when it sets
        no end), as it is charged post by post."""
        if self.units is not None:
            return rate * self.units / 1000
        if self.kind is _SUBSCRIPTIONS:
            posts = int(self.fields.get("posts", "1"))
            return rate * int(self.fields["max"]) * posts / 1000
        return rate


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an order cannot be sent as it is: one line, naming the field."""

    reason: str


_SUBSCRIPTIONS: Final = TYPES["subscriptions"]
_LINES: Final = re.compile(r"\r?\n")


def comment_lines(text: str | None) -> list[str]:
    """The non-empty lines of a custom-comments text (``\\n`` or ``\\r\\n``), each without
    the spaces around it: a stray ``\\r`` or a trailing space is no part of a comment."""
    return [line.strip() for line in _LINES.split(text or "") if line.strip()]


def takes_dripfeed(package: Package) -> bool:
    """Whether the catalog entry offers drip-feed: ``dripfeed`` true, 1 or "1"/"yes"."""
    extra = package.extra
    flag = extra.get("dripfeed") if isinstance(extra, dict) else None
    if isinstance(flag, str):
        return flag.strip().lower() in ("1", "true", "yes")
    return flag is True or (type(flag) is int and flag == 1)


def needs(package: Package) -> str:
    """What an order of ``package`` needs besides its link and quantity, for a person
    (``syncd packages``); ``unknown type`` for one syncd cannot order."""
    kind = order_type(package)
    return "unknown type" if kind is None else kind.needs_text(dripfeed=takes_dripfeed(package))


def order_type(package: Package) -> OrderType | None:
    """The type of a package's orders; None for a type syncd does not know."""
    return TYPES.get(type_key(package.type))


def placement(
    package: Package,
    *,
    link: str | None,
    quantity: object,
    custom_data: str | None,
    params: object,
    dialect: Spelling,
    today: date | None = None,
) -> Placement | Refusal:
    """The fields of an order's ``add`` under ``dialect``'s spelling, or why there are none.

    ``quantity`` and ``params`` are taken as a row holds them (``params``: None, JSON text
    or bytes, an object a driver decoded, or anything else a consumer wrote). ``today``
    (UTC): a subscription's ``expiry`` before the day before it is refused; the provider
    would refuse it after an ``add`` (and a turn of its limit) in words that name no field.
    A day of slack: the provider's own day may not have begun where UTC's has."""
    try:
        kind, what = _kind(package)
        values = read_params(params)
        _names(package, kind, what, values, dialect)
        fields, units = _columns(package, kind, what, _Row(link, quantity, custom_data), dialect)
        for name in kind.needs:
            if name != COMMENTS and name not in values:
                raise _Refused(f"params.{name}: {what} needs {name}")
        read = {name: _value(name, value) for name, value in values.items()}
        if today is not None and "expiry" in read:
            expiry = datetime.strptime(read["expiry"], "%d/%m/%Y").date()
            if expiry < today - timedelta(days=1):
                raise _Refused(f"params.expiry: {read['expiry']} is in the past")
        units = _together(package, kind, what, read, units)
    except _Refused as refused:
        return Refusal(str(refused))
    return Placement(fields | read, kind, units)


class _Refused(Exception):
    pass


class _Row(NamedTuple):
    link: str | None
    quantity: object
    custom_data: str | None


def _kind(package: Package) -> tuple[OrderType, str]:
    """The package's order type, and how a reason names the package."""
    kind = order_type(package)
    if kind is None:
        raise _Refused(
            f"package {package.service_id} has type {shown(package.type)}, which syncd does "
            "not know how to order"
        )
    return kind, f"package {package.service_id} ({kind.name})"


def _names(
    package: Package, kind: OrderType, what: str, values: Mapping[str, object], spelling: Spelling
) -> None:
    """Every field named is one the type takes and the dialect has; every field the type
    needs is one the dialect has."""
    taken = (*kind.fields, *(DRIP_FEED if kind is DEFAULT and takes_dripfeed(package) else ()))
    for name in values:
        if name in _ELSEWHERE:
            raise _Refused(f"params.{name}: {_ELSEWHERE[name]}, not params")
        if name in DRIP_FEED and kind is DEFAULT and name not in taken:
            raise _Refused(f"params.{name}: {what} offers no drip-feed (no dripfeed flag)")
        if name not in taken:
            raise _Refused(f"params.{name}: {what} takes no {name}")
    for name in kind.needs:
        if name != COMMENTS and name not in spelling.order_fields:
            raise _Refused(
                f"{what} needs {name}, which the {spelling.name} dialect has no field for: "
                "it cannot be ordered from this provider"
            )
    for name in values:
        if name not in spelling.order_fields:
            raise _Refused(f"params.{name}: the {spelling.name} dialect has no field for {name}")


def _columns(
    package: Package, kind: OrderType, what: str, row: _Row, dialect: Spelling
) -> tuple[dict[str, str], int | None]:
    """The fields the order's own columns make (link, quantity, comments), and its
    quantity: only those the type takes, and each as the type wants it."""
    fields: dict[str, str] = {}
    if kind.link:
        fields["link"] = _link(row.link)
    elif row.link is not None and row.link.strip():
        raise _Refused(f"link: {what} takes no link (its account is params.username)")
    units: int | None = None
    if kind.quantity:
        units = _quantity(row.quantity, package)
        fields["quantity"] = str(units)
    elif row.quantity is not None and not _one(row.quantity):
        # A panel writes 1 for one package (its own orders table has no empty quantity):
        # that is the order, and nothing is sent for it. Any other number is a mistake.
        raise _Refused(f"quantity: {what} takes no quantity: leave it empty (NULL) or 1")
    lines = comment_lines(row.custom_data)
    if COMMENTS not in kind.needs:
        if lines:
            raise _Refused(f"custom_data: {what} does not take custom comments")
        return fields, units
    if not lines and kind.per_unit != COMMENTS:
        raise _Refused(f"custom_data: {what} needs comments, one per line")
    if kind.per_unit == COMMENTS and len(lines) != units:
        raise _Refused(
            f"custom_data: {what} takes one comment per unit: {len(lines)} comment lines "
            f"for quantity {units}"
        )
    fields[dialect.comments_field] = _bounded("custom_data", "\n".join(lines))
    return fields, units


def _together(
    package: Package, kind: OrderType, what: str, read: Mapping[str, str], units: int | None
) -> int | None:
    """The rules between fields: a count of lines per unit, a drip-feed's total within
    the package's range, a subscription's min and max; the units the order buys."""
    if ("runs" in read) != ("interval" in read):
        missing = "interval" if "runs" in read else "runs"
        raise _Refused(f"params.{missing}: a drip-feed needs both runs and interval")
    listed = kind.per_unit
    if listed is not None and listed in read and units is not None:
        count = len(read[listed].split("\n"))
        if count != units:
            raise _Refused(
                f"params.{listed}: {what} takes one per unit: {count} lines for quantity {units}"
            )
    if units is not None and "runs" in read:
        units *= int(read["runs"])
        if not package.min <= units <= package.max:
            raise _Refused(
                f"params.runs: the drip-feed's total (quantity times runs) {units} is "
                f"outside {package.min}..{package.max}"
            )
    if kind is _SUBSCRIPTIONS:
        low, high = int(read["min"]), int(read["max"])
        if low > high:
            raise _Refused(f"params.min: min {low} is above max {high}")
        if not (package.min <= low and high <= package.max):
            raise _Refused(
                f"params.min, params.max: {low}..{high} is outside {package.min}..{package.max}"
            )
    return units


def _one(quantity: object) -> bool:
    """Whether a quantity, as a row holds it, is the number 1 (a panel's one package)."""
    return (type(quantity) is int and quantity == 1) or quantity == "1"


def sent_cost(rate: Decimal, package_type: str, quantity: object, params: object) -> Decimal:
    """What an order sent earlier is counted at until the balance shows it (the funds left
    for the next): ``Placement.cost`` of the row as it is stored, read leniently, since
    it was valid when sent. A value that no longer reads counts as absent: 0 units, one
    run, one post."""
    kind = TYPES.get(type_key(package_type), DEFAULT)
    try:
        values = read_params(params)
    except _Refused:
        values = {}

    def count(name: str, otherwise: int) -> int:
        try:
            return _count(name, values[name], 0) if name in values else otherwise
        except _Refused:
            return otherwise

    if kind.quantity:
        units = quantity if type(quantity) is int and 0 < quantity <= LARGEST else 0
        return rate * units * count("runs", 1) / 1000
    if kind is _SUBSCRIPTIONS:
        return rate * count("max", 0) * count("posts", 1) / 1000
    return rate


def read_params(raw: object) -> dict[str, object]:
    """The params object as a row holds it: None or blank is none; JSON text (or its
    UTF-8 bytes) or an object a driver decoded is read; anything else is refused."""
    if raw is None:
        return {}
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise _Refused("params: not UTF-8 text") from None
    if isinstance(raw, str):
        if len(raw) > PARAMS_LONGEST:
            raise _Refused(f"params: longer than {PARAMS_LONGEST // 2**20} MiB")
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant,
                             object_pairs_hook=_no_repeats)  # fmt: skip
        except RecursionError:
            raise _Refused("params: nested too deeply") from None
        except ValueError as exc:
            raise _Refused(f"params: not JSON ({_one_line(str(exc))})") from None
        if raw is None:
            return {}
    if not isinstance(raw, dict):
        raise _Refused(f"params must be a JSON object, not {_json_kind(raw)}")
    _field_names(raw)
    return dict(raw)


def _field_names(raw: dict[object, object]) -> None:
    """Every name is a field's name: text, and a short word. Each is shown in every
    reason about it: a name with a line break, or 2 MB of one, would break the one-line
    error."""
    for name in raw:
        if not isinstance(name, str):
            raise _Refused("params: every field name must be text")
        if not _FIELD_NAME.fullmatch(name):
            raise _Refused(f"params: {shown(name)} is no field name (letters, digits, _)")


# What a provider's field is called: no provider names one otherwise.
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is no number")


def _no_repeats(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found: dict[str, object] = {}
    for name, value in pairs:
        if name in found:
            raise ValueError(f"{shown(name)} is given twice")
        found[name] = value
    return found


def _link(link: str | None) -> str:
    if link is None:
        raise _Refused("link is required")
    text = link.strip()
    if not text or "\n" in text or "\r" in text:
        raise _Refused("link must be one non-empty line")
    if len(text) > LINK_LONGEST:
        raise _Refused(f"link is longer than {LINK_LONGEST} characters")
    _utf8("link", text)
    return text


def _quantity(quantity: object, package: Package) -> int:
    if quantity is None:
        raise _Refused("quantity is required")
    if not (type(quantity) is int and 0 < quantity <= LARGEST):
        raise _Refused(f"quantity must be a whole number above 0, not {shown(quantity)}")
    if not package.min <= quantity <= package.max:
        raise _Refused(f"quantity {quantity} is outside {package.min}..{package.max}")
    return quantity


def _value(name: str, value: object) -> str:
    """One params value as the form sends it."""
    if name in COUNTS:
        return str(_count(name, value, COUNTS[name]))
    if name in LISTS:
        return _list(name, value)
    text = _line(name, value)
    if name == "expiry":
        try:
            day = datetime.strptime(text, "%d/%m/%Y")  # a date: no time, no zone
        except ValueError:
            raise _Refused(f"params.expiry: not a date as d/m/Y: {shown(text)}") from None
        # Not strftime: it writes a year below 1000 with fewer than four digits, which
        # strptime (and a provider) would not read back.
        return f"{day.day:02d}/{day.month:02d}/{day.year:04d}"
    return text


def _count(name: str, value: object, least: int) -> int:
    number: int | None = None
    if type(value) is int:
        number = value
    elif isinstance(value, str) and len(value) <= 20 and value.strip().isascii():
        number = int(value.strip()) if value.strip().isdigit() else None
    elif isinstance(value, Decimal | float) and not isinstance(value, bool):
        whole = Decimal(value) if isinstance(value, float) else value
        if whole.is_finite() and whole == whole.to_integral_value() and abs(whole) <= LARGEST:
            number = int(whole)
    if number is None or not least <= number <= COUNT_LARGEST:
        raise _Refused(
            f"params.{name}: must be a whole number from {least} to {COUNT_LARGEST}, "
            f"not {shown(value)}"
        )
    return number


def _line(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise _Refused(f"params.{name}: must be text, not {_json_kind(value)}")
    text = value.strip()
    if not text or "\n" in text or "\r" in text:
        raise _Refused(f"params.{name}: must be one non-empty line")
    if len(text) > LINK_LONGEST:
        raise _Refused(f"params.{name}: longer than {LINK_LONGEST} characters")
    _utf8(f"params.{name}", text)
    return text


def _list(name: str, value: object) -> str:
    """A one-per-line field, as text or as a JSON list of one-line texts; sent as lines
    joined with ``\\n``. An empty entry is refused: it would shift every entry after it."""
    if isinstance(value, list):
        if not all(isinstance(item, str) for item in value):
            raise _Refused(f"params.{name}: a list of texts, one entry each")
        items = [item.strip() for item in value]
        if any("\n" in item or "\r" in item for item in items):
            raise _Refused(f"params.{name}: an entry of the list holds a line break")
    elif isinstance(value, str):
        items = [item.strip() for item in _LINES.split(value.strip())]
    else:
        raise _Refused(f"params.{name}: must be text, one per line, not {_json_kind(value)}")
    if not items or items == [""]:
        raise _Refused(f"params.{name}: must not be empty")
    if "" in items:
        raise _Refused(f"params.{name}: line {items.index('') + 1} is empty")
    return _bounded(f"params.{name}", "\n".join(items))


def _bounded(name: str, text: str) -> str:
    if len(_utf8(name, text)) > LIST_LONGEST:
        raise _Refused(f"{name}: longer than {LIST_LONGEST // 2**20} MiB")
    return text


def _utf8(name: str, text: str) -> bytes:
    """The text as it goes on the wire; JSON's ``"\\ud800"`` is text no form can carry,
    and a NUL is one no panel keeps (PHP and the databases behind panels cut text there)."""
    if "\0" in text:
        raise _Refused(f"{name}: holds a NUL character, which is not text")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refused(f"{name}: holds a character that is not text (a lone surrogate)") from None


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return f"the number {shown(value)}"
    return type(value).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())[:120]
