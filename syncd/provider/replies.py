"""Turn decoded provider replies into syncd's typed models.

Pure functions: they take the JSON value (decoded with ``parse_float=Decimal``) and either
return models or raise ``ReplyShapeError`` with a short description, which the client wraps
into a ``MalformedReplyError`` naming the provider.  Every value is read as hostile: any
JSON value at all gives a typed result or ``ReplyShapeError``, nothing else.

Quirks of real panels that are tolerated here: numbers as strings or JSON numbers, ids as
strings or ints, a missing currency, negative remains, error objects in all their shapes
(``{"error": "..."}``, ``{"error": [...]}``, ``{"errors": [...]}``, ``{"errors": {...}}``,
and inside a multi-status map a bare string), and an empty ``"error"`` beside a real answer
(``{"order": 5042, "error": null}``), which is no error at all.

Reading a catalog or a multi-status map goes on past a bad entry: one garbled package or
order answer is reported for itself and never hides the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from syncd.models import (
    Answer,
    Balance,
    Catalog,
    OrderLookupError,
    OrderStatus,
    Package,
    RefillAnswer,
    RefillState,
    RequestAnswer,
    RequestKind,
    RequestRefused,
    RequestTaken,
    SkippedEntry,
    UnreadableAnswer,
    canonical_refill_status,
    canonical_status,
)
from syncd.status_extra import FIELD_SET as _EXTRA_FIELDS
from syncd.status_extra import read_extra
from syncd.units import COUNT_DIGITS, LARGEST, parse_count, parse_money, shown

_PACKAGE_FIELDS = frozenset(
    {"service", "name", "type", "category", "rate", "min", "max", "refill", "cancel"}
)
_AUTH_WORDS = re.compile(
    r"api[\s_-]*key|api[\s_-]*token|\btoken\b|\bkey\b|unauthori[sz]ed|not authenticated|"
    r"authentication|access denied",
    re.IGNORECASE,
)
TEXT_LIMIT = 500  # characters of a name, type, category or status text; longer is garbage
# "USD", "usdt", "₽", "$": letters or a symbol, short (so no piece of a token fits in one).
_CURRENCY = re.compile(r"[^\W\d_]{1,5}|[^\s\w]{1,3}")

T = TypeVar("T")
A = TypeVar("A")  # one entry's answer in a list reply


class ReplyShapeError(ValueError):
    """A reply that does not have the shape the API promises."""


# -- errors --------------------------------------------------------------------------------


def error_message(reply: object) -> str | None:
    """The provider's error text if the whole reply is an error object, else ``None``.

    Only an object with a non-empty ``error`` or ``errors`` is an error: ``{"error": null}``,
    ``""``, ``[]`` or ``false`` beside an answer means "no error".  A bare string as the
    whole reply is not an error object (it is unreadable; only a multi-status entry may
    be a bare string).
    """
    if not isinstance(reply, Mapping):
        return None
    for key in ("error", "errors"):
        if key in reply and (text := _error_text(reply[key])) is not None:
            return text
    return None


def entry_error(entry: object) -> str | None:
    """The error text of one multi-status entry: an error object or a bare string."""
    if isinstance(entry, str):
        return entry.strip()[:TEXT_LIMIT] or "error"
    return error_message(entry)


def is_auth_error(message: str) -> bool:
    """Whether an error text says the token was rejected ("Invalid API key", ...)."""
    return bool(_AUTH_WORDS.search(message))


def _error_text(value: object) -> str | None:
    """The text of an ``error`` value, or None when it says "no error"."""
    if value is None or value is False:
        return None
    if value is True:
        return "error"
    if isinstance(value, Mapping):
        parts = [f"{k}: {text}" for k, v in value.items() if (text := _error_text(v))]
    elif isinstance(value, list):
        parts = [text for v in value if (text := _error_text(v))]
    else:
        text = (value if isinstance(value, str) else shown(value)).strip()
        parts = [text[:TEXT_LIMIT]] if text else []
    return "; ".join(parts)[:TEXT_LIMIT] or None


# -- the four actions ----------------------------------------------------------------------


def parse_packages(reply: object) -> Catalog:
    if not isinstance(reply, list):
        raise ReplyShapeError(f"catalog reply is {_kind(reply)}, not a list of packages")
    packages: dict[int, Package] = {}
    skipped: list[SkippedEntry] = []
    for index, item in enumerate(reply):
        try:
            package = _package(item)
        except ValueError as exc:
            skipped.append(SkippedEntry(index, _entry_id(item), str(exc)))
            continue
        # A repeated id keeps its first entry, like the provider's own order form does.
        packages.setdefault(package.service_id, package)
    if skipped and not packages:
        raise ReplyShapeError(f"no catalog entry can be read ({skipped[0]})")
    return Catalog(list(packages.values()), skipped)


_REQUIRED = ("service", "name", "rate", "min", "max")


def _package(item: object) -> Package:
    # A catalog reply holds thousands of entries: each is read with as few calls as the
    # checks allow, which are the same, in the same order, as for any other reply.
    # type() first: JSON objects are dicts, and isinstance() against the Mapping ABC
    # costs several times more.
    if type(item) is not dict and not isinstance(item, Mapping):
        raise ValueError(f"is {_kind(item)}, not an object")
    get = item.get
    service, name, rate, low, high = (get("service"), get("name"), get("rate"), get("min"),
                                      get("max"))  # fmt: skip
    if service is None or name is None or rate is None or low is None or high is None:
        raise ValueError(f"missing {', '.join(k for k in _REQUIRED if get(k) is None)}")
    field = "rate"  # the field being read, named in the message of its failure
    try:
        rate = parse_money(rate)
        field = "min"
        low = parse_count(low)
        field = "max"
        high = parse_count(high)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
    if rate < 0 or low < 0 or high < 0:
        raise ValueError("rate, min and max must not be negative")
    field = "service"
    try:
        service_id = _id(service)
        field = "name"
        name = _text(name)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None
    return Package(
        service_id,
        name,
        _optional(get("type"), _text) or "Default",
        _optional(get("category"), _text) or "",
        rate,
        low,
        high,
        _extra(item),
        _flag(get("refill")),
        _flag(get("cancel")),
    )


def _extra(item: Mapping[str, Any]) -> dict[str, Any]:
    """Every field syncd does not know, kept as JSON."""
    if item.keys() <= _PACKAGE_FIELDS:  # nearly every entry: nothing more to keep
        return {}
    try:
        return {str(k): _jsonable(v) for k, v in item.items() if k not in _PACKAGE_FIELDS}
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _entry_id(item: object) -> int | None:
    try:
        return _id(item["service"]) if isinstance(item, Mapping) else None
    except (ValueError, KeyError):
        return None


def parse_balance(reply: object) -> Balance:
    """The balance; a currency that cannot be read (``840``, the ISO number for USD, a list,
    a long text) is unknown, as if the reply left it out: the amount is what matters, and
    a wrong guess of its currency would be worse than none."""
    if not isinstance(reply, Mapping) or "balance" not in reply:
        raise ReplyShapeError(f"balance reply is {_kind(reply)} without a balance")
    try:
        amount = _field(reply, "balance", parse_money)
    except ValueError as exc:
        raise ReplyShapeError(str(exc)) from None
    try:
        return Balance(amount, _currency(reply))
    except ValueError as exc:
        return Balance(amount, None, currency_problem=str(exc))


def parse_order_id(reply: object) -> int:
    """The provider's id for an order just placed.  Anything else is unreadable, never a
    refusal: the provider may hold the order, so the caller must treat it as unknown."""
    if not isinstance(reply, Mapping) or reply.get("order") is None:
        raise ReplyShapeError(f"add reply is {_kind(reply)} without an order id")
    try:
        order_id = _id(reply["order"])
    except ValueError as exc:
        raise ReplyShapeError(f"order id: {exc}") from None
    if order_id == 0:
        raise ReplyShapeError("order id: 0 is no order")
    return order_id


def as_sent(text: str) -> str:
    """A text as the provider sent it: for callers with nothing to hide in it."""
    return text


def parse_status(reply: object, *, scrub: Callable[[str], str] = as_sent) -> OrderStatus:
    """One order's status; ``scrub`` is applied to the status text as it is read."""
    if not isinstance(reply, Mapping) or reply.get("status") is None:
        raise ReplyShapeError(f"status reply is {_kind(reply)} without a status")
    try:
        return _status(reply, scrub)
    except ValueError as exc:
        raise ReplyShapeError(str(exc)) from None


def parse_statuses(
    reply: object,
    asked: Iterable[int],
    *,
    scrub: Callable[[str], str] = as_sent,
    clean: Callable[[str], str] = as_sent,
) -> dict[int, Answer]:
    """Parse a multi-status map, one entry at a time: ``read_statuses``, every entry read
    at once."""
    return dict(read_statuses(reply, asked, scrub=scrub, clean=clean))


def read_statuses(
    reply: object,
    asked: Iterable[int],
    *,
    scrub: Callable[[str], str] = as_sent,
    clean: Callable[[str], str] = as_sent,
) -> StatusAnswers:
    """A multi-status map as a mapping of order id to its answer, each entry read when it
    is first looked up (``StatusAnswers``).

    An error entry (``{"error": "Order not found"}``, a bare string...) is the provider
    saying it cannot find the order: ``OrderLookupError``.  An entry that cannot be read
    (no status, a charge of ``"NaN"``) is ``UnreadableAnswer``: the provider answered, we
    cannot tell what, and that is not "not found".  Ids the provider left out are absent.

    ``scrub`` is applied to each status text and ``clean`` to each message as they are
    read, so a caller that must hide something in them (the client hides its token) gets
    the answers final, with no copy of each afterwards.
    """
    if not isinstance(reply, Mapping):
        raise ReplyShapeError(f"multi-status reply is {_kind(reply)}, not an object")
    # Keys come back as the ids were sent, nearly always: one lookup finds the id.
    by_key = {str(order_id): order_id for order_id in asked}
    wanted = set(by_key.values())
    entries: dict[int, object] = {}
    for key, entry in reply.items():
        order_id = by_key.get(key)
        if order_id is None:
            try:
                order_id = _id(key)  # written otherwise: " 1", "01"
            except ValueError:
                continue  # not an order id: providers sometimes add fields such as "currency"
            if order_id not in wanted:
                continue
        entries[order_id] = entry  # a later key for the same order wins, as it always has
    return StatusAnswers(entries, scrub, clean)


# What a status sweep holds of an order, for ``StatusAnswers.repeats``.
Stored = tuple[object, object, Decimal | None, int | None, int | None, str | None]


class StatusAnswers(Mapping[int, Answer]):
    """The answers of one multi-status reply, by order id: each entry is read (and its
    texts scrubbed) when it is first looked up.

    A status sweep looks most orders up only through ``repeats``: between two sweeps most
    orders have not changed, and an entry that says exactly what the order's row holds
    is known as such from its raw fields, with no answer built for it.
    """

    __slots__ = ("_amounts", "_clean", "_codes", "_entries", "_read", "_scrub", "_texts")

    def __init__(
        self, entries: dict[int, object], scrub: Callable[[str], str], clean: Callable[[str], str]
    ) -> None:
        self._entries = entries
        self._scrub, self._clean = scrub, clean
        self._read: dict[int, Answer] = {}
        # A reply repeats a few status texts for all its orders: each is read once.
        self._texts: dict[str, tuple[str, object]] = {}
        # And a few charges and currencies: ``repeats`` reads each text once per reply.
        self._amounts: dict[str, Decimal | None] = {}
        self._codes: dict[object, str | _Unreadable | None] = {}

    def __getitem__(self, order_id: int) -> Answer:
        answer = self._read.get(order_id)
        if answer is None:
            answer = self._read[order_id] = self._answer(self._entries[order_id])
        return answer

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._entries

    def __repr__(self) -> str:
        return f"StatusAnswers({dict(self)!r})"

    def _answer(self, entry: object) -> Answer:
        # type() first: an isinstance() against the Mapping ABC costs several times more,
        # and JSON objects are dicts.
        if (type(entry) is dict or isinstance(entry, Mapping)) and entry.get("status") is not None:
            try:
                return _status(entry, self._status_text)
            except ValueError as exc:
                problem = str(exc)
        else:
            problem = f"status reply is {_kind(entry)} without a status"
        message = entry_error(entry)
        if message is not None:
            return OrderLookupError(self._clean(message))
        return UnreadableAnswer(self._clean(problem))

    def _status_text(self, text: str) -> str:
        return self._text(text)[0]

    def _text(self, raw: str) -> tuple[str, object]:
        """A status text as stored (scrubbed), and what it reads as: the canonical
        ``Status``, or None when the text is not one a status is read from as it is."""
        known = self._texts.get(raw)
        if known is None:
            kept = self._scrub(raw)
            plain = kept == raw and raw == raw.strip() and 0 < len(raw) <= TEXT_LIMIT
            known = self._texts[raw] = (kept, canonical_status(raw) if plain else None)
        return known

    def repeats(self, order_id: int, stored: Stored) -> bool:
        """Whether the order's entry says exactly what its row holds, ``stored`` being
        (status, status_raw, charge, start_counter, remains, currency) as read from the
        row: the same status text (which reads as the row's status), charge, start
        counter, remains and currency, or leaves a number or the currency out (the row's
        stands), and nothing beyond the common fields. Read from the raw entry as
        ``_status`` reads it; False whenever anything needs a closer look, which the full
        reading then takes."""
        status, status_raw, charge, start_counter, remains, currency = stored
        entry = self._entries.get(order_id)
        if type(entry) is not dict:
            return False
        text = entry.get("status")
        if type(text) is not str or text != status_raw or self._text(text)[1] is not status:
            return False
        if not _EXTRA_FIELDS.isdisjoint(entry):
            return False
        get = entry.get
        value = get("charge")
        if not _blank(value) and not self._same_charge(value, charge):
            return False
        if not (_same_count(get("start_counter"), start_counter)):
            return False
        if not (_same_count(get("remains"), remains)):
            return False
        value = get("currency")
        return _blank(value) or self._same_currency(entry, value, currency)

    def _same_charge(self, value: object, charge: Decimal | None) -> bool:
        """A given charge reads (``parse_money``) as the row's; each text read once."""
        if type(value) is not str or charge is None:
            return False
        amount = self._amounts.get(value, _UNREAD)
        if amount is _UNREAD:
            try:
                amount = parse_money(value)
            except ValueError:
                amount = None
            self._amounts[value] = amount
        return amount is not None and amount == charge

    def _same_currency(self, entry: dict[str, Any], value: object, currency: str | None) -> bool:
        """A given currency reads (``_currency``) as the row's; each text read once."""
        code = self._codes.get(value, _UNREAD) if type(value) is str else _UNREAD
        if code is _UNREAD:
            try:
                code = _currency(entry)
            except ValueError:
                code = _UNREADABLE
            if type(value) is str:
                self._codes[value] = code
        return isinstance(code, str) and code == currency


class _Unreadable:
    """A charge or currency text ``repeats`` found unreadable (never equal to a row's)."""


_UNREAD: Any = object()  # not looked up yet
_UNREADABLE = _Unreadable()


def _same_count(value: object, stored: int | None) -> bool:
    """A count field of an entry is left out, or reads (``parse_count``) as ``stored``."""
    # A JSON integer, or short plain digits: read as parse_count reads them, with no call.
    if type(value) is int:
        return value == stored and -LARGEST <= value <= LARGEST
    if type(value) is str and len(value) <= COUNT_DIGITS and value.isdigit() and value.isascii():
        return stored is not None and int(value) == stored
    if _blank(value):
        return True
    try:
        return stored is not None and parse_count(value) == stored
    except ValueError:
        return False


def unanswered(asked: Sequence[int], answers: Mapping[int, Answer]) -> str | None:
    """Why a multi-status reply (``parse_statuses``' answers) answers none of the orders
    ``asked``, or None when it answers at least one.

    A reply that names none of them (``{}``, ``{"errors": []}``, only fields that are no
    order id) says nothing of any order; nor does one that finds none of several ("not
    found", "Incorrect order ID" for each): an order lost at the provider is one among
    orders it still finds, and a whole batch "not found" at once is the provider failing
    (its database failing over). An entry that cannot be read is an answer (the provider
    knows the order). One order asked alone and said not found is still its own answer:
    nothing else tells an order really gone from a provider failing on it, and an order
    that is gone must become ``missing`` some day.
    """
    if not any(order_id in answers for order_id in asked):
        count = len(asked)
        return f"the status reply names none of the {count} order{'s' * (count != 1)} asked"
    if len(asked) < 2:
        return None
    # The first answer that is no "not found" settles it: nearly always the first one, so
    # the rest of a lazily read reply (``StatusAnswers``) stays unread here.
    found = (answers.get(order_id) for order_id in asked)
    if any(a is not None and not isinstance(a, OrderLookupError) for a in found):
        return None
    said = next(a.message for a in map(answers.get, asked) if isinstance(a, OrderLookupError))
    return f"the status reply finds none of the {len(asked)} orders asked ({said})"


# -- refill, refill_status, cancel --------------------------------------------------------


def parse_requests(
    reply: object,
    asked: Iterable[int],
    kind: RequestKind,
    *,
    clean: Callable[[str], str] = as_sent,
) -> dict[int, RequestAnswer]:
    """A refill or cancel reply for several orders: a list of ``{"order": 1, "refill":
    12}`` (``"cancel": 1``), where the value may be an error object instead. Each entry
    is its own order's answer: one that cannot be read is that order's alone
    (``UnreadableAnswer``), as is an order the list answers twice in two ways (the
    provider may have acted on it); entries about orders not asked, or about no order,
    are no answer; orders the reply leaves out are absent. One order asked may be
    answered with one object instead of a list. Anything else is malformed."""
    wanted = list(dict.fromkeys(asked))
    if isinstance(reply, Mapping) and len(wanted) == 1:
        return {wanted[0]: _one_request(reply, wanted[0], kind, clean)}
    if not isinstance(reply, list):
        raise ReplyShapeError(f"{kind} reply is {_kind(reply)}, not a list")
    return _each_entry(
        reply, wanted, "order", lambda entry: _request_answer(entry, kind, clean), kind.value
    )


def parse_request(
    reply: object, kind: RequestKind, order_id: int, *, clean: Callable[[str], str] = as_sent
) -> RequestAnswer:
    """A refill reply for one order (``order_id``): ``{"refill": 12}``, or as some panels
    put it ``{"success": "...", "refill": 12}``, or the list shape of several orders.
    (An error object never gets here: the client reads it as the provider refusing the
    request.)"""
    if isinstance(reply, list):
        found = parse_requests(reply, [order_id], kind, clean=clean)
        return found.get(order_id) or UnreadableAnswer(
            f"{kind} reply: a list that does not name order {order_id}"
        )
    if not isinstance(reply, Mapping):
        return UnreadableAnswer(f"{kind} reply is {_kind(reply)}")
    return _one_request(reply, order_id, kind, clean)


def _one_request(
    reply: Mapping[str, Any], order_id: int, kind: RequestKind, clean: Callable[[str], str]
) -> RequestAnswer:
    """One object answering the one order asked; one naming another order is no answer
    about it."""
    if (named := reply.get("order")) is not None:
        try:
            other = _id(named)
        except ValueError:
            other = None
        if other != order_id:
            return UnreadableAnswer(
                clean(f"{kind} reply names order {shown(named)}, not {order_id}")
            )
    return _request_answer(reply, kind, clean)


def _each_entry(
    reply: list[Any], asked: Iterable[int], key: str, read: Callable[[Mapping[str, Any]], A],
    what: str,
) -> dict[int, A | UnreadableAnswer]:  # fmt: skip
    """Each entry of a list reply read as the answer about the id under ``key``, for the
    ids ``asked``. An id answered twice the same way has that answer; answered twice in
    two ways, neither can be believed."""
    wanted = set(asked)
    result: dict[int, A | UnreadableAnswer] = {}
    twice: set[int] = set()
    for entry in reply:
        if not isinstance(entry, Mapping):
            continue
        try:
            found = _id(entry.get(key))
        except ValueError:
            continue  # an entry about nothing asked cannot be placed anywhere
        if found not in wanted or found in twice:
            continue
        answer: A | UnreadableAnswer = read(entry)
        if found in result and result[found] != answer:
            twice.add(found)
            answer = UnreadableAnswer(f"the {what} reply answers {key} {found} twice, differently")
        result[found] = answer
    return result


def _request_answer(
    entry: Mapping[str, Any], kind: RequestKind, clean: Callable[[str], str]
) -> RequestAnswer:
    value = entry.get(kind.value)
    if (message := error_message(value)) is not None:
        return RequestRefused(clean(message))
    if (message := error_message(entry)) is not None:
        if value is None or _blank(value):
            return RequestRefused(clean(message))
        # A value beside an error text: the provider may have acted. Never a refusal.
        return UnreadableAnswer(clean(f"{kind}: {shown(value)} beside an error ({message})"))
    if kind is RequestKind.CANCEL:
        if _flag(value) is True:
            return RequestTaken(None)
        return UnreadableAnswer(clean(f"cancel: not a yes: {shown(value)}"))
    try:
        refill_id = _id(value)
    except ValueError as exc:
        return UnreadableAnswer(clean(f"refill id: {exc}"))
    if refill_id == 0:
        return UnreadableAnswer("refill id: 0 is no refill")
    return RequestTaken(refill_id)


def parse_refill_statuses(
    reply: object,
    asked: Iterable[int],
    *,
    scrub: Callable[[str], str] = as_sent,
    clean: Callable[[str], str] = as_sent,
) -> dict[int, RefillAnswer]:
    """A refill_status reply for several refills: ``[{"refill": 2, "status":
    "Rejected"}, {"refill": 3, "status": {"error": "Refill not found"}}]``, each entry
    its own refill's answer, read as ``parse_requests`` reads its entries."""
    if not isinstance(reply, list):
        raise ReplyShapeError(f"refill_status reply is {_kind(reply)}, not a list")
    return _each_entry(
        reply, asked, "refill", lambda entry: _refill_state(entry, scrub, clean), "refill_status"
    )


def parse_refill_status(
    reply: object,
    refill_id: int,
    *,
    scrub: Callable[[str], str] = as_sent,
    clean: Callable[[str], str] = as_sent,
) -> RefillAnswer:
    """A refill_status reply for one refill: ``{"status": "Completed"}``, or the list
    shape of several refills."""
    if isinstance(reply, list):
        found = parse_refill_statuses(reply, [refill_id], scrub=scrub, clean=clean)
        return found.get(refill_id) or UnreadableAnswer(
            f"refill_status reply: a list that does not name refill {refill_id}"
        )
    if not isinstance(reply, Mapping):
        return UnreadableAnswer(f"refill_status reply is {_kind(reply)}")
    return _refill_state(reply, scrub, clean)


def _refill_state(
    entry: Mapping[str, Any], scrub: Callable[[str], str], clean: Callable[[str], str]
) -> RefillAnswer:
    value = entry.get("status")
    if (message := error_message(value)) is not None or (
        value is None and (message := error_message(entry)) is not None
    ):
        return OrderLookupError(clean(message))
    try:
        raw = _text(value)
    except ValueError as exc:
        return UnreadableAnswer(clean(f"status: {exc}"))
    if not raw:
        return UnreadableAnswer("status: empty")
    return RefillState(canonical_refill_status(raw), scrub(raw))


def _status(reply: Mapping[str, Any], scrub: Callable[[str], str]) -> OrderStatus:
    raw = _field(reply, "status", _text)
    if not raw:
        raise ValueError("status: empty")
    # The three optional numbers, read the way _optional_field reads them, spelled out:
    # a status sweep reads them for every order.
    get = reply.get
    charge, start_counter, remains = get("charge"), get("start_counter"), get("remains")
    return OrderStatus(
        status=canonical_status(raw),  # what the provider said, before anything is hidden
        status_raw=scrub(raw),
        charge=None if _blank(charge) else _named("charge", parse_money, charge),
        start_counter=(
            None if _blank(start_counter) else _named("start_counter", parse_count, start_counter)
        ),
        remains=None if _blank(remains) else _named("remains", parse_count, remains),
        currency=_currency(reply),
        # Nearly every answer has none of these: one look at its few keys says so.
        extra=None if _EXTRA_FIELDS.isdisjoint(reply) else read_extra(reply, scrub),
    )


def _blank(value: object) -> bool:
    """Absent, null or blank: a value the provider did not give."""
    return value is None or (isinstance(value, str) and (not value or value.isspace()))


def _named(name: str, parse: Callable[[object], T], value: object) -> T:
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


# -- values --------------------------------------------------------------------------------


def _field(reply: Mapping[str, Any], name: str, parse: Callable[[object], T]) -> T:
    """``parse`` one field; a failure names the field."""
    try:
        return parse(reply[name])
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _optional_field(reply: Mapping[str, Any], name: str, parse: Callable[[object], T]) -> T | None:
    """``parse`` one field that may be absent, null or blank (then None); a failure names
    the field. ``_optional`` spelled out: a status sweep reads three of these per order."""
    value = reply.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _optional(value: object, parse: Callable[[object], T]) -> T | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse(value)


def _text(value: object) -> str:
    """A short text field: a string, or a number written as text; never ``"None"``."""
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        text = _number_text(value) if isinstance(value, Decimal) else str(value)
    else:
        raise ValueError(f"not text: {shown(value)}")
    if len(text) > TEXT_LIMIT:
        raise ValueError(f"longer than {TEXT_LIMIT} characters")
    return text


_YES = ("1", "true", "yes")
_NO = ("0", "false", "no")


def _flag(value: object) -> bool | None:
    """A yes/no flag sent as a boolean, 0/1, or text; anything else: the provider does not
    say (None), which is no reason to refuse the package."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        text = str(value).strip().lower()
        return True if text in _YES else False if text in _NO else None
    return None


def _currency(reply: Mapping[str, Any]) -> str | None:
    """A currency code (``USD``, ``usdt``, ``₽``), upper-cased; absent or empty is None."""
    value = reply.get("currency")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    # Letters alone, five at most: what the pattern below takes, and what providers send
    # with every order ("USD"), known without running it.
    # Checked once upper-cased: a letter may become two ("ß" is "SS").
    code = value.strip().upper() if isinstance(value, str) else None
    if code is not None and len(code) <= 5 and code.isalpha():
        return code
    if code is None or not _CURRENCY.fullmatch(code):
        raise ValueError(f"currency: not a currency code: {shown(value)}")
    return code


def _id(value: object) -> int:
    number: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and len(value) <= 20 and _is_digits(value.strip()):
        number = int(value.strip())
    elif (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() <= 18
        and value == value.to_integral_value()
    ):
        number = int(value)
    if number is None or not 0 <= number <= LARGEST:
        raise ValueError(f"not an id: {shown(value)}")
    return number


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # "²" and "٣" are digits to str.isdigit()


def _number_text(value: Decimal) -> str:
    """Exact text of a JSON number; exponent notation only where plain digits would be
    absurdly long (formatting 1e999999999 as digits would exhaust memory)."""
    return format(value, "f") if abs(value.adjusted()) < 100 else str(value)


def _jsonable(value: Any) -> Any:
    """Decimals (from ``parse_float``) back to exact strings so ``extra`` stores as JSON."""
    if isinstance(value, Decimal):
        return _number_text(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _kind(value: object) -> str:
    """What a JSON value is, in JSON's terms."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return "a number"
