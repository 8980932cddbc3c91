"""Provider replies as hostile input: examples of each class of garbage, then properties
over any JSON value (and any bytes) for every action.

The promise under test: whatever a provider answers, the client returns a typed result or
raises one of the project's ``ProviderError``s; an ``add`` that may have created an order is
never reported as refused; money and counts are bounded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd import models
from syncd.errors import AuthError, MalformedReplyError, ProviderError, RefusedError
from syncd.models import (
    Balance,
    Catalog,
    OrderLookupError,
    OrderStatus,
    Status,
    UnreadableAnswer,
)
from syncd.provider import DIALECTS, ProviderClient
from syncd.provider.replies import (
    _CURRENCY,
    ReplyShapeError,
    parse_balance,
    parse_order_id,
    parse_packages,
    parse_status,
    parse_statuses,
    unanswered,
)
from syncd.secret import Secret
from syncd.units import LARGEST, MONEY_DIGITS, MONEY_PLACES, parse_count, parse_money

TOKEN = "replies-token-7d21"


def client_answering(status: int, body: bytes) -> ProviderClient:
    """A client whose provider answers every request with ``status`` and ``body``."""
    answer = httpx.MockTransport(lambda _: httpx.Response(status, content=body))
    http = httpx.AsyncClient(transport=answer)
    return ProviderClient(
        name="p", url="https://panel.example/api/v2", token=Secret(TOKEN),
        dialect=DIALECTS["api_token"], http=http, attempts=1,
    )  # fmt: skip


def call(status: int, body: bytes, action: Callable[[ProviderClient], Any]) -> Any:
    async def run() -> Any:
        async with client_answering(status, body) as client:
            return await action(client)

    return asyncio.run(run())


def add(client: ProviderClient) -> Any:
    return client.add(package=1, link="https://x.example", quantity=10)


# -- add: an order id wins over an empty error; an unreadable answer is never a refusal ----


@pytest.mark.parametrize(
    "reply",
    [
        {"order": 5042, "error": None},
        {"order": 5042, "error": ""},
        {"order": "5042", "errors": []},
        {"order": 5042, "error": False},
        {"order": 5042, "errors": {}},
        {"order": 5042, "error": [None, ""]},
    ],
)
def test_an_order_id_beside_an_empty_error_is_the_order(reply: object) -> None:
    assert call(200, json.dumps(reply).encode(), add) == 5042


@pytest.mark.parametrize(
    "reply",
    [
        "Order received",  # a bare string
        "",
        None,
        [],
        {},
        {"status": "ok"},
        {"order": None},
        {"order": "abc"},
        {"order": 0},
        {"order": True},
        {"order": 5042, "error": "Not enough funds"},  # both: the order may exist
    ],
)
def test_an_unrecognisable_answer_to_add_is_malformed_never_refused(reply: object) -> None:
    with pytest.raises(MalformedReplyError):
        call(200, json.dumps(reply).encode(), add)


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        ({"error": "Not enough funds"}, "Not enough funds"),
        ({"error": ["Quantity less than minimal 50"]}, "Quantity less than minimal 50"),
        ({"errors": {"link": ["Invalid link"]}}, "link: Invalid link"),
        ({"error": True}, "error"),
    ],
)
def test_a_real_error_object_is_still_a_refusal(reply: object, refused: str) -> None:
    with pytest.raises(RefusedError, match=refused):
        call(200, json.dumps(reply).encode(), add)


# -- statuses: a garbled entry is unreadable, an error entry is "not found" ------------


def test_garbled_status_entries_are_unreadable_not_not_found() -> None:
    answers = parse_statuses(
        {
            "1": {"status": "In progress", "charge": "NaN"},
            "2": {"charge": "0.5", "remains": "3"},  # no status
            "3": {"status": None},
            "4": {"status": "Completed", "currency": "\x1b[2J"},
            "5": {"error": "Order not found"},
            "6": "Incorrect order ID",
            "7": {"status": "Partial", "charge": "0.1", "error": None},
        },
        [1, 2, 3, 4, 5, 6, 7],
    )
    assert [type(answers[i]) for i in (1, 2, 3, 4)] == [UnreadableAnswer] * 4
    assert "charge" in answers[1].message  # type: ignore[union-attr]
    assert isinstance(answers[5], OrderLookupError) and isinstance(answers[6], OrderLookupError)
    assert isinstance(answers[7], OrderStatus) and answers[7].charge == Decimal("0.1")


def test_a_status_text_of_null_is_never_the_text_none() -> None:
    with pytest.raises(ReplyShapeError):
        parse_status({"status": None, "remains": "0"})


# -- catalog: a bad entry is skipped alone, the others are applied ---------------------


def test_one_absurd_rate_skips_its_package_only() -> None:
    catalog = parse_packages(
        [
            {"service": 1, "name": "Good", "rate": "0.90", "min": "10", "max": "100"},
            {"service": 2, "name": "Absurd", "rate": "1e30", "min": "10", "max": "100"},
            {"service": 3, "name": None, "rate": "1", "min": "10", "max": "100"},
            {"service": "x", "name": "No id", "rate": "1", "min": "10", "max": "100"},
            {"service": 4, "name": "Huge", "rate": "1e999999999999999999", "min": 1, "max": 2},
            {"service": 5, "name": "Negative", "rate": "-1", "min": 1, "max": 2},
        ]
    )
    assert [p.service_id for p in catalog.packages] == [1]
    assert [(s.service_id, s.index) for s in catalog.skipped] == [
        (2, 1), (3, 2), (None, 3), (4, 4), (5, 5)
    ]  # fmt: skip
    assert "rate: amount out of range: '1e30'" in catalog.skipped[0].reason
    assert "name" in catalog.skipped[1].reason


def test_a_catalog_of_nothing_readable_is_malformed() -> None:
    with pytest.raises(ReplyShapeError, match="no catalog entry can be read"):
        parse_packages([{"service": 1}, "Default"])


@pytest.mark.parametrize(
    "balance", ["1e33", "1e999999999999999999", "-1e20", "0.0000000000001", "NaN", None, True]
)
def test_an_absurd_balance_is_malformed_with_the_reason(balance: object) -> None:
    with pytest.raises(ReplyShapeError, match="balance"):
        parse_balance({"balance": balance, "currency": "USD"})


def test_a_currency_is_too_short_to_hold_a_piece_of_a_token() -> None:
    balance = parse_balance({"balance": "1.00", "currency": "abcdEFGH"})
    assert balance.currency is None
    assert balance.currency_problem == "currency: not a currency code: 'abcdEFGH'"


@pytest.mark.parametrize(
    ("currency", "shown"),
    [(840, "840"), (Decimal("840.0"), "840.0"), (True, "true"), ([], "a list"),
     ({"code": "USD"}, "an object"), ("x" * 50, "'xxxxxxxx")],
)  # fmt: skip
def test_a_balance_with_an_unreadable_currency_is_taken_with_the_currency_unknown(
    currency: object, shown: str
) -> None:
    balance = parse_balance({"balance": "100.84", "currency": currency})
    assert balance == Balance(Decimal("100.84"), None)
    assert balance.currency_problem is not None
    assert balance.currency_problem.startswith(f"currency: not a currency code: {shown}")


@pytest.mark.parametrize("currency", [None, "", "   "])
def test_a_balance_with_no_currency_has_no_currency_problem(currency: object) -> None:
    balance = parse_balance({"balance": "100.84", "currency": currency})
    assert (balance.currency, balance.currency_problem) == (None, None)


def test_an_order_id_beside_an_error_is_named_in_the_reason() -> None:
    with pytest.raises(MalformedReplyError, match="reply carries order id 5001 and an error"):
        call(200, json.dumps({"order": 5001, "error": "key problem"}).encode(), add)


def test_a_currency_with_control_characters_is_refused() -> None:
    refused = parse_balance({"balance": "1.00", "currency": "\x1b]0;pwned\x07"})
    assert refused.currency is None and refused.currency_problem is not None
    assert parse_balance({"balance": "1.00", "currency": " usdt "}).currency == "USDT"
    assert parse_balance({"balance": "1.00", "currency": "₽"}).currency == "₽"


@pytest.mark.parametrize(
    ("reply", "asked", "why"),
    [
        ({}, [1, 2], "names none of the 2 orders asked"),
        ({"errors": []}, [1], "names none of the 1 order asked"),
        ({"currency": "USD", "3": {"status": "Pending"}}, [1, 2], "names none"),
        ({"1": {"error": "Incorrect order ID"}, "2": "Order not found"}, [1, 2], "finds none"),
        ({"1": {"error": "Incorrect order ID"}}, [1, 2], "finds none of the 2 orders asked"),
        ({"1": {"error": "Incorrect order ID"}}, [1], None),  # alone: its own answer
        ({"1": {"error": "Incorrect order ID"}, "2": {"status": "Pending"}}, [1, 2], None),
        ({"1": {"error": "Incorrect order ID"}, "2": {"status": "Done", "charge": "NaN"}},
         [1, 2], None),  # an unreadable entry: the provider knows that order
    ],
)  # fmt: skip
def test_a_reply_that_answers_none_of_the_orders_asked_says_so(
    reply: dict[str, object], asked: list[int], why: str | None
) -> None:
    found = unanswered(asked, parse_statuses(reply, asked))
    if why is None:
        assert found is None
    else:
        assert found is not None and why in found


# -- properties --------------------------------------------------------------------------

NUMBER_TEXTS = st.sampled_from(
    ["0", "-0", "1e30", "-1e30", "1e999999999999999999", "1E-40", "0.27819", "600.00",
     "9223372036854775808", "NaN", "Infinity", "-3", "1_000", " 42 ", "٣", "²", "0x10", ""]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | NUMBER_TEXTS
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def near(keys: list[str]) -> st.SearchStrategy[dict[str, object]]:
    """Objects with the fields a reply should have, holding any JSON values."""
    return st.fixed_dictionaries({}, optional={k: JSON for k in keys})


PACKAGE = near(["service", "name", "type", "category", "rate", "min", "max", "refill", "error"])
STATUS = near(["status", "charge", "start_counter", "remains", "currency", "error", "errors"])


def dump(value: object) -> str:
    """JSON text, with Decimals written as JSON numbers (exponents and all)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def bounded_money(amount: Decimal | None) -> bool:
    if amount is None:
        return True
    exponent = amount.as_tuple().exponent
    return (
        isinstance(exponent, int)
        and exponent >= -MONEY_PLACES
        and (not amount or amount.adjusted() < MONEY_DIGITS)
    )


def well_typed_status(answer: OrderStatus) -> bool:
    return (
        isinstance(answer.status_raw, str)
        and answer.status_raw not in ("", "None")
        and bounded_money(answer.charge)
        and all(
            v is None or (isinstance(v, int) and abs(v) <= LARGEST)
            for v in (answer.start_counter, answer.remains)
        )
        and (answer.currency is None or answer.currency.isprintable())
    )


@given(st.one_of(JSON, st.lists(PACKAGE | JSON, max_size=5)))
def test_any_catalog_reply_parses_to_bounded_packages_or_a_shape_error(reply: object) -> None:
    try:
        catalog = parse_packages(reply)
    except ReplyShapeError:
        return
    assert isinstance(catalog, Catalog)
    assert isinstance(reply, list) and len(catalog.packages) + len(catalog.skipped) <= len(reply)
    assert not reply or catalog.packages  # entries, none readable: a shape error instead
    for p in catalog.packages:
        assert 0 <= p.service_id <= LARGEST and bounded_money(p.rate) and p.rate >= 0
        assert 0 <= p.min <= LARGEST and 0 <= p.max <= LARGEST
        assert all(isinstance(t, str) and t != "None" for t in (p.name, p.type, p.category))
        json.dumps(p.extra)  # storable as JSON


@given(st.one_of(JSON, near(["balance", "currency", "error"])))
def test_any_balance_reply_is_a_bounded_balance_or_a_shape_error(reply: object) -> None:
    try:
        balance = parse_balance(reply)
    except ReplyShapeError:
        return
    assert bounded_money(balance.amount)


@given(st.one_of(JSON, near(["order", "error", "errors"])))
def test_any_add_reply_is_a_positive_id_or_a_shape_error(reply: object) -> None:
    try:
        order_id = parse_order_id(reply)
    except ReplyShapeError:
        return
    assert isinstance(order_id, int) and 0 < order_id <= LARGEST


@given(st.dictionaries(st.sampled_from(["1", "2", "03", "x", "9"]), STATUS | JSON, max_size=5))
def test_any_multi_status_entry_is_a_status_an_error_or_unreadable(
    reply: dict[str, object],
) -> None:
    answers = parse_statuses(reply, [1, 2, 3])
    assert set(answers) <= {1, 2, 3}
    for answer in answers.values():
        if isinstance(answer, OrderStatus):
            assert well_typed_status(answer)
        else:
            assert isinstance(answer, OrderLookupError | UnreadableAnswer) and answer.message


ACTIONS: dict[str, Callable[[ProviderClient], Any]] = {
    "packages": lambda c: c.packages(),
    "balance": lambda c: c.balance(),
    "status": lambda c: c.statuses([1, 2, 3]),
    "add": add,
}


@given(
    action=st.sampled_from(sorted(ACTIONS)),
    code=st.sampled_from([200, 200, 200, 400, 401, 403, 404, 429, 500, 502]),
    body=JSON.map(lambda v: dump(v).encode()) | st.binary(max_size=64),
)
def test_the_client_returns_a_result_or_a_provider_error_for_any_answer(
    action: str, code: int, body: bytes
) -> None:
    try:
        result = call(code, body, ACTIONS[action])
    except ProviderError as exc:
        assert TOKEN not in str(exc)
        if action == "add" and isinstance(exc, RefusedError | AuthError) and code != 401:
            # A refusal sends the order back or rejects it: only when no order id came.
            reply = json.loads(body, parse_float=Decimal)
            assert isinstance(reply, dict) and reply.get("order") is None
        return
    assert code < 400
    if action == "add":
        assert isinstance(result, int) and result > 0


@given(st.one_of(JSON, st.text(max_size=80)))
def test_money_and_counts_are_bounded_or_refused_with_a_reason(value: object) -> None:
    for parse in (parse_money, parse_count):
        try:
            parsed = parse(value)
        except ValueError as exc:
            assert str(exc) and len(str(exc)) < 200
            continue
        if parse is parse_money:
            assert isinstance(parsed, Decimal) and bounded_money(parsed)
        else:
            assert isinstance(parsed, int) and abs(parsed) <= LARGEST


@given(st.decimals(places=8, min_value=-(10**11), max_value=10**11))
def test_every_amount_a_provider_could_mean_parses_exactly(amount: Decimal) -> None:
    for sent in (str(amount), amount, format(amount, "f")):
        assert parse_money(sent) == amount


# -- what the client hides, hidden as each entry is read ---------------------------------


def test_status_texts_and_messages_pass_the_callers_scrub_and_clean_as_they_are_read() -> None:
    scrubbed: list[str] = []

    def scrub(text: str) -> str:
        scrubbed.append(text)
        return text.replace("key", "***")

    answers = parse_statuses(
        {
            "1": {"status": "Done with key"},
            "2": {"status": "Done with key"},
            "3": {"status": "Partial"},
            "4": {"error": "No order for key"},
            "5": {"status": "Partial", "charge": "key"},
            "6": {"charge": "1"},
        },
        [1, 2, 3, 4, 5, 6],
        scrub=scrub,
        clean=lambda text: text.upper(),
    )

    assert answers[1] == answers[2]
    assert isinstance(answers[1], OrderStatus) and answers[1].status_raw == "Done with ***"
    assert sorted(scrubbed) == ["Done with key", "Partial"]  # each text once per reply
    assert answers[4] == OrderLookupError("NO ORDER FOR KEY")
    assert answers[5] == UnreadableAnswer("CHARGE: NOT AN AMOUNT: 'KEY'")
    assert answers[6] == UnreadableAnswer("STATUS REPLY IS AN OBJECT WITHOUT A STATUS")


def test_a_provider_sending_new_status_texts_all_along_cannot_grow_syncds_memory() -> None:
    for sweep in range(30):
        reply = {str(i): {"status": f"In progress ({sweep}.{i})"} for i in range(100)}
        answers = parse_statuses(reply, list(range(100)))
        assert all(a.status is Status.UNKNOWN for a in answers.values())  # type: ignore[union-attr]
        assert len(models._SEEN_STATUSES) <= models._SEEN_STATUSES_LIMIT
    assert parse_status({"status": "In progress"}).status is Status.IN_PROGRESS


CURRENCIES = st.one_of(
    st.text(alphabet="uSdTé1²٣_ ₽$\t", max_size=7),
    st.text(alphabet=st.characters(categories=["L"]), min_size=4, max_size=7),
    st.text(max_size=8),
    JSON,
)


@given(CURRENCIES)
def test_a_currency_is_what_the_currency_pattern_takes(value: object) -> None:
    text = value.strip() if isinstance(value, str) else None
    balance = parse_balance({"balance": "1", "currency": value})
    if value is None or text == "":
        assert balance.currency is None and balance.currency_problem is None
    elif text is not None and _CURRENCY.fullmatch(text.upper()):  # checked as stored
        assert balance.currency == text.upper() and balance.currency_problem is None
    else:
        assert balance.currency is None and balance.currency_problem is not None


@given(
    amount=st.decimals(min_value=-(10**9), max_value=10**9, places=8),
    written=st.sampled_from([str, lambda d: d]),
    currency=st.one_of(CURRENCIES, st.integers(), st.text(min_size=6, max_size=60)),
)
def test_a_hostile_currency_never_costs_the_balance(
    amount: Decimal, written: Callable[[Decimal], object], currency: object
) -> None:
    """Whatever the currency holds, the balance is read exactly, and the currency is a
    short code or unknown."""
    balance = parse_balance({"balance": written(amount), "currency": currency})
    assert balance.amount == amount
    assert balance.currency is None or _CURRENCY.fullmatch(balance.currency)
    assert (balance.currency_problem is None) or balance.currency is None


@pytest.mark.parametrize("currency", ["AAAAŉ", "ßßß", "ﬃﬃ"])
def test_a_currency_that_grows_when_upper_cased_is_checked_as_upper_cased(currency: str) -> None:
    """Some letters become two when upper-cased ("ß" is "SS"): the code stored is the
    upper-cased one, so that is the one held to five letters."""
    balance = parse_balance({"balance": "1.50", "currency": currency})
    assert balance.amount == Decimal("1.50")
    assert balance.currency is None and balance.currency_problem is not None
    assert parse_balance({"balance": "1", "currency": "ß"}).currency == "SS"
