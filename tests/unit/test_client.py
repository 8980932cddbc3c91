"""ProviderClient unit tests: recorded replies served by respx, one test per quirk.

Covers the provider API and the quirks seen in the wild, the error taxonomy of
``syncd.errors`` (what is retried and what is not, above all for ``add``), and the
secrecy of the token (no redirects, no plain http off loopback, bounded replies, the
token never shown).

Retries and the pauses a 429 asks for are instant here (the autouse ``instant_retries``
and ``instant_pauses`` fixtures of conftest.py), and the pauses are recorded. The
deadline tests speak real HTTP to the simulator on loopback: only a real connection shows
when a request began to leave.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
import stamina
import stamina.instrumentation
import structlog

from syncd import logs
from syncd.errors import (
    AuthError,
    MalformedReplyError,
    ProviderError,
    RateLimitedError,
    RefusedError,
    TransientError,
    UserError,
)
from syncd.models import (
    Balance,
    OrderLookupError,
    OrderStatus,
    Package,
    Status,
    UnreadableAnswer,
)
from syncd.order_types import Placement, placement
from syncd.provider import DIALECTS, ProviderClient
from syncd.provider.pace import Pace
from syncd.provider.transport import MAX_SMALL_REPLY_BYTES
from syncd.secret import Secret
from tests.fakes import FakeClock
from tests.leaks import ENCODED_TOKEN, leaked

pytestmark = pytest.mark.anyio

URL = "https://panel.example/api/v2"
TOKEN = "SECRET123-q7Lr9XwP4mTz"  # distinctive, so any leak of it is easy to spot
REPLIES = Path(__file__).parent / "fixtures" / "replies"

MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Site Maintenance</title></head>"
    b"<body><h1>We&rsquo;ll be back soon!</h1></body></html>"
)
BAD_GATEWAY_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>"
)
WAF_PAGE = (
    b"<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head>"
    b"<body>Sorry, you have been blocked</body></html>"
)


# -- helpers ---------------------------------------------------------------------------------


def recorded(name: str) -> bytes:
    """A recorded reply, byte for byte (JSON numbers keep their exact text)."""
    return (REPLIES / name).read_bytes()


def reply(name: str, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, content=recorded(name), headers={"content-type": "application/json", **headers}
    )


def json_reply(value: object, status: int = 200) -> httpx.Response:
    """A small inline reply (no floats in ``value``: those go in recorded files)."""
    return httpx.Response(
        status, content=json.dumps(value).encode(), headers={"content-type": "application/json"}
    )


def html_reply(page: bytes, status: int) -> httpx.Response:
    return httpx.Response(status, content=page, headers={"content-type": "text/html"})


def make_client(dialect: str = "api_token", *, token: str = TOKEN, **kwargs: Any) -> ProviderClient:
    kwargs.setdefault("url", URL)
    return ProviderClient(name="panel", token=Secret(token), dialect=DIALECTS[dialect], **kwargs)


def form(route: respx.Route, index: int = -1) -> dict[str, str]:
    """The form fields of a request respx captured."""
    body = route.calls[index].request.content.decode()
    return dict(parse_qsl(body, keep_blank_values=True))


def leaks(text: str) -> bool:
    """Whether ``text`` shows the token or any 8-character piece of it."""
    return any(TOKEN[i : i + 8] in text for i in range(len(TOKEN) - 7))


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    """A streamed body (chunked: no Content-Length header)."""
    for part in parts:
        yield part


async def cut_off(*parts: bytes) -> AsyncIterator[bytes]:
    """A body whose connection is reset after ``parts``."""
    for part in parts:
        yield part
    raise httpx.ReadError("connection reset by peer")


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def api(router: respx.MockRouter) -> respx.Route:
    return router.post(URL)


# Each action, called with typical arguments: lets one test run against several actions.
Call = Callable[[ProviderClient], Any]
CALLS: dict[str, Call] = {
    "packages": lambda c: c.packages(),
    "balance": lambda c: c.balance(),
    "status": lambda c: c.status(23501),
    "statuses": lambda c: c.statuses([23501, 23502]),
    "add": lambda c: c.add(package=1, link="https://instagram.com/p/abc", quantity=100),
}


# -- numbers as strings or JSON numbers, ids as strings or ints, money exact -----------------


async def test_catalog_parses_ids_and_numbers_in_either_form(api: respx.Route) -> None:
    api.mock(return_value=reply("catalog.json"))
    async with make_client() as client:
        catalog = (await client.packages()).packages

    assert [p.service_id for p in catalog] == [1, 2, 3, 4]  # "2" and "4" were strings
    assert all(isinstance(p.rate, Decimal) for p in catalog)
    assert [str(p.rate) for p in catalog] == ["0.30", "12.5", "0.27819", "0.00012345"]
    assert [p.min for p in catalog] == [50, 10, 100, 10]
    assert [p.max for p in catalog] == [10000, 500, 1000000, 50000]
    assert catalog[1].type == "Custom Comments"
    assert (catalog[0].refill, catalog[0].cancel) == (True, False)
    assert catalog[0].extra == {}  # unknown fields would be kept here


@pytest.mark.parametrize("name", ["status_strings.json", "status_numbers.json"])
async def test_status_numbers_as_strings_or_json_numbers(api: respx.Route, name: str) -> None:
    api.mock(return_value=reply(name))
    async with make_client() as client:
        status = await client.status(23501)

    assert isinstance(status.charge, Decimal)
    assert status.charge == Decimal("0.27819")
    assert str(status.charge) == "0.27819"  # never went through float
    assert (status.start_counter, status.remains) == (3572, 157)
    assert status.currency == "USD"


@pytest.mark.parametrize(
    "name", ["balance_8_decimals_string.json", "balance_8_decimals_number.json"]
)
async def test_money_keeps_8_decimals(api: respx.Route, name: str) -> None:
    api.mock(return_value=reply(name))
    async with make_client() as client:
        balance = await client.balance()

    assert isinstance(balance.amount, Decimal)
    assert str(balance.amount) == "100.84292123"


async def test_balance_without_currency(api: respx.Route) -> None:
    api.mock(return_value=reply("balance_no_currency.json"))
    async with make_client() as client:
        balance = await client.balance()

    assert balance == Balance(Decimal("100.84292"), None)


@pytest.mark.parametrize("currency", [840, TOKEN, f"in {TOKEN}", [TOKEN]])
async def test_balance_with_an_unreadable_currency_is_read_without_it(
    api: respx.Route, currency: object
) -> None:
    api.mock(return_value=json_reply({"balance": "100.84", "currency": currency}))
    async with make_client() as client:
        balance = await client.balance()

    assert balance == Balance(Decimal("100.84"), None)
    assert (
        balance.currency_problem is not None and "not a currency code" in balance.currency_problem
    )
    assert not leaks(balance.currency_problem)


async def test_balance_with_currency(api: respx.Route) -> None:
    api.mock(return_value=reply("balance.json"))
    async with make_client() as client:
        balance = await client.balance()

    assert balance == Balance(Decimal("100.84292"), "USD")


@pytest.mark.parametrize("name", ["add_order_int.json", "add_order_string.json"])
async def test_order_id_as_int_or_string(api: respx.Route, name: str) -> None:
    api.mock(return_value=reply(name))
    async with make_client() as client:
        order_id = await client.add(package=1, link="https://instagram.com/p/abc", quantity=100)

    assert order_id == 23501
    assert type(order_id) is int


@pytest.mark.parametrize(
    ("remains", "expected"),
    [("-12", -12), (-12, -12), ("1500", 1500), (1500, 1500)],
    ids=["negative-string", "negative-number", "above-quantity-string", "above-quantity-number"],
)
async def test_remains_kept_as_sent(api: respx.Route, remains: object, expected: int) -> None:
    # Providers report negative remains (over-delivery) and remains above the quantity.
    api.mock(return_value=json_reply({"status": "In progress", "remains": remains}))
    async with make_client() as client:
        status = await client.status(23501)

    assert status.remains == expected


# -- status spellings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Pending", Status.PENDING),
        ("Processing", Status.PROCESSING),
        ("In progress", Status.IN_PROGRESS),
        ("In Progress", Status.IN_PROGRESS),
        ("inprogress", Status.IN_PROGRESS),
        ("in_progress", Status.IN_PROGRESS),
        ("Active", Status.IN_PROGRESS),
        ("Completed", Status.COMPLETED),
        ("Complete", Status.COMPLETED),
        ("Partial", Status.PARTIAL),
        ("Partially Completed", Status.PARTIAL),
        ("Canceled", Status.CANCELED),
        ("Cancelled", Status.CANCELED),
        ("Refunded", Status.REFUNDED),
        ("Fail", Status.FAILED),
        ("Failed", Status.FAILED),
        ("Error", Status.FAILED),
    ],
)
async def test_status_spellings(api: respx.Route, raw: str, expected: Status) -> None:
    api.mock(return_value=json_reply({"status": raw, "start_counter": "0", "remains": "0"}))
    async with make_client() as client:
        status = await client.status(23501)

    assert status.status is expected
    assert status.status_raw == raw


@pytest.mark.parametrize("raw", ["On hold", "Awaiting moderation"])
async def test_unknown_status_is_unknown_not_pending(api: respx.Route, raw: str) -> None:
    api.mock(return_value=json_reply({"status": raw, "remains": "100"}))
    async with make_client() as client:
        status = await client.status(23501)

    assert status.status is Status.UNKNOWN
    assert status.status_raw == raw


# -- multi-status: good entries beside per-order errors of every shape ------------------------

MULTI_IDS = [1, 2, 3, 10, 11, 12, 13, 14, 99]


async def test_multi_status_good_entries(api: respx.Route) -> None:
    api.mock(return_value=reply("multi_status.json"))
    async with make_client() as client:
        result = await client.statuses(MULTI_IDS)

    assert result[1] == OrderStatus(Status.PARTIAL, "Partial", Decimal("0.27819"), 3572, 157, "USD")
    # charge as a JSON number, no currency, negative remains
    assert result[2] == OrderStatus(
        Status.IN_PROGRESS, "In Progress", Decimal("0.27819"), 0, -12, None
    )
    # 8 decimals, lower-case status and currency, remains above any quantity
    assert result[3] == OrderStatus(
        Status.COMPLETED, "completed", Decimal("1.12345678"), 600, 1500, "USD"
    )
    assert str(result[3].charge) == "1.12345678"
    assert 99 not in result  # asked for but absent from the reply: absent from the result


@pytest.mark.parametrize(
    ("order_id", "text"),
    [
        (10, "Incorrect order ID"),  # {"error": "..."}
        (11, "Order Not found"),  # {"error": ["..."]}
        (12, "Order not found"),  # {"errors": [...]}
        (13, "Order not found"),  # {"errors": {"order": [...]}}
        (14, "Order not found"),  # a bare string
    ],
    ids=["error-string", "error-list", "errors-list", "errors-object", "bare-string"],
)
async def test_multi_status_per_order_error_shapes(
    api: respx.Route, order_id: int, text: str
) -> None:
    api.mock(return_value=reply("multi_status.json"))
    async with make_client() as client:
        result = await client.statuses(MULTI_IDS)

    entry = result[order_id]
    assert isinstance(entry, OrderLookupError)
    assert text in entry.message
    # the other orders of the batch still parse
    assert all(isinstance(result[i], OrderStatus) for i in (1, 2, 3))


async def test_multi_status_garbled_entry_is_unreadable_alone_not_not_found(
    api: respx.Route,
) -> None:
    api.mock(
        return_value=json_reply(
            {
                "1": {"status": "Completed", "charge": "0.5", "remains": "0"},
                "2": {"status": "Completed", "charge": "n/a", "remains": "0"},
                "3": ["unexpected"],
            }
        )
    )
    async with make_client() as client:
        result = await client.statuses([1, 2, 3])

    assert isinstance(result[1], OrderStatus)
    assert isinstance(result[2], UnreadableAnswer) and "charge" in result[2].message
    assert isinstance(result[3], UnreadableAnswer)


async def test_multi_status_sends_ids_comma_separated(api: respx.Route) -> None:
    api.mock(return_value=json_reply({"17": {"status": "Pending"}}))
    async with make_client() as client:
        await client.statuses([23501, 17, 9])

    sent = form(api)
    assert sent["action"] == "status"
    assert sent["orders"] == "23501,17,9"
    assert "order" not in sent


@pytest.mark.parametrize("count", [101, 250, 0])
async def test_multi_status_refuses_more_than_100_ids(api: respx.Route, count: int) -> None:
    api.mock(return_value=json_reply({}))
    async with make_client() as client:
        with pytest.raises(ValueError, match=r"1\.\.100"):
            await client.statuses(list(range(1, count + 1)))

    assert api.call_count == 0  # refused before anything was sent


async def test_multi_status_accepts_exactly_100_ids(api: respx.Route) -> None:
    api.mock(return_value=json_reply({"100": {"status": "Pending"}}))
    async with make_client() as client:
        await client.statuses(list(range(1, 101)))

    assert api.call_count == 1
    assert form(api)["orders"].split(",") == [str(i) for i in range(1, 101)]


# -- errors with HTTP 200 --------------------------------------------------------------------

ERROR_SHAPES = [
    ("error_string.json", "Incorrect request"),  # {"error": "..."}
    ("error_list.json", "Not enough funds on balance"),  # {"error": ["..."]}
    ("errors_list.json", "Quantity less than minimal 50"),  # {"errors": [...]}
    ("errors_object.json", "Quantity less than minimal 50"),  # {"errors": {...}}
]


@pytest.mark.parametrize("action", ["balance", "status", "statuses", "add"])
@pytest.mark.parametrize(("name", "text"), ERROR_SHAPES)
async def test_error_object_with_http_200_is_refused(
    api: respx.Route, action: str, name: str, text: str
) -> None:
    api.mock(return_value=reply(name))
    async with make_client() as client:
        with pytest.raises(RefusedError) as caught:
            await CALLS[action](client)

    assert text in str(caught.value)
    assert api.call_count == 1  # a refusal is not retried


@pytest.mark.parametrize(("name", "text"), ERROR_SHAPES)
async def test_catalog_error_object_is_refused_not_an_empty_catalog(
    api: respx.Route, name: str, text: str
) -> None:
    api.mock(return_value=reply(name))
    async with make_client() as client:
        with pytest.raises(RefusedError, match=text):
            await client.packages()


@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"data": []}', b"null", b"42", b"true", b'["Default"]', b""],
    ids=["empty-object", "wrapped-list", "null", "number", "true", "list-of-strings", "empty-body"],
)
async def test_catalog_reply_that_is_not_a_list_of_packages_is_malformed(
    api: respx.Route, body: bytes
) -> None:
    api.mock(return_value=httpx.Response(200, content=body))
    async with make_client() as client:
        with pytest.raises(MalformedReplyError):
            await client.packages()


# -- HTML pages, truncated JSON --------------------------------------------------------------


async def test_html_502_from_a_proxy_is_transient(api: respx.Route) -> None:
    api.mock(return_value=html_reply(BAD_GATEWAY_PAGE, 502))
    async with make_client() as client:
        with pytest.raises(TransientError) as caught:
            await client.balance()

    assert caught.value.maybe_processed is True
    assert "502 Bad Gateway" in str(caught.value)  # the page title, not the whole page
    assert "<html>" not in str(caught.value)


async def test_html_maintenance_page_with_200_is_malformed(api: respx.Route) -> None:
    api.mock(return_value=html_reply(MAINTENANCE_PAGE, 200))
    async with make_client() as client:
        with pytest.raises(MalformedReplyError) as caught:
            await client.packages()

    assert "Site Maintenance" in str(caught.value)


async def test_html_waf_page_is_a_provider_error(api: respx.Route) -> None:
    api.mock(return_value=html_reply(WAF_PAGE, 403))
    async with make_client() as client:
        with pytest.raises(ProviderError, match="Cloudflare"):
            await client.balance()


@pytest.mark.parametrize(
    ("name", "action"),
    [("catalog.json", "packages"), ("multi_status.json", "statuses"), ("balance.json", "balance")],
)
async def test_truncated_json_is_malformed(api: respx.Route, name: str, action: str) -> None:
    whole = recorded(name)
    api.mock(return_value=httpx.Response(200, content=whole[: len(whole) // 2]))
    async with make_client() as client:
        with pytest.raises(MalformedReplyError, match="JSON"):
            await CALLS[action](client)


# -- 429 with Retry-After, timeouts ----------------------------------------------------------


async def test_429_waits_as_long_as_retry_after_says(
    api: respx.Route, instant_pauses: FakeClock
) -> None:
    api.mock(
        side_effect=[
            httpx.Response(429, content=b"Too Many Requests", headers={"Retry-After": "7"}),
            reply("balance.json"),
        ]
    )
    outcomes: list[tuple[str, ProviderError | None]] = []

    async def observe(action: str, error: ProviderError | None) -> None:
        outcomes.append((action, error))

    async with make_client(observer=observe) as client:
        balance = await client.balance()

    assert balance.amount == Decimal("100.84292")
    assert api.call_count == 2
    assert instant_pauses.slept == [7.0]  # the header's value, not a backoff of syncd's
    # The 429 is told as it came (the throttle state is kept from it), then the success.
    assert [(action, type(error)) for action, error in outcomes] == [
        ("balance", RateLimitedError),
        ("balance", type(None)),
    ]


async def test_429_with_an_http_date_waits_until_that_moment(
    api: respx.Route, instant_pauses: FakeClock
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    limited = httpx.Response(429, headers={"Retry-After": when})
    api.mock(side_effect=[limited, reply("balance.json")])
    async with make_client() as client:
        await client.balance()

    assert len(instant_pauses.slept) == 1
    assert 27 <= instant_pauses.slept[0] <= 30


async def test_a_429_is_not_an_attempt(api: respx.Route) -> None:
    """Five 429s and two 503s: the 503s use two of three attempts, the 429s none."""
    too_many = httpx.Response(429, headers={"Retry-After": "2"})
    api.mock(
        side_effect=[too_many, httpx.Response(503), too_many, too_many, httpx.Response(503),
                     too_many, too_many, reply("balance.json")]
    )  # fmt: skip
    async with make_client() as client:
        assert (await client.balance()).amount == Decimal("100.84292")
    assert api.call_count == 8


async def test_429_pauses_every_call_of_the_provider(
    api: respx.Route, instant_pauses: FakeClock
) -> None:
    """One job's 429 holds back the next call another job makes with the same pace."""
    pace = Pace("panel")
    api.mock(side_effect=[httpx.Response(429, headers={"Retry-After": "5"}), reply("balance.json"),
                          reply("balance.json")])  # fmt: skip
    async with make_client(pace=pace) as one, make_client(pace=pace) as other:
        await one.balance()
        await pace.slow_down(9)  # as if a third job had just met a 429
        await other.balance()
    assert instant_pauses.slept == [5.0, 9.0]


async def test_stamina_sees_every_retry_the_first_included(api: respx.Route) -> None:
    # The first attempt runs outside stamina's retry context; its failure must still be
    # stamina's first, so that the waits and the retry hooks are the same as ever.
    api.mock(side_effect=[httpx.ReadError("reset"), httpx.Response(502), reply("balance.json")])
    retries: list[tuple[int, str]] = []
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks(
        [lambda details: retries.append((details.retry_num, str(details.caused_by)))]
    )
    try:
        async with make_client() as client:
            balance = await client.balance()
    finally:
        stamina.instrumentation.set_on_retry_hooks(hooks)

    assert balance.amount == Decimal("100.84292")
    assert [(num, "connection broken" in why, "HTTP 502" in why) for num, why in retries] == [
        (1, True, False),
        (2, False, True),
    ]


async def test_429_with_retry_after_beyond_the_limit_gives_up_at_once(
    api: respx.Route, instant_pauses: FakeClock
) -> None:
    api.mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
    outcomes: list[ProviderError | None] = []

    async def observe(action: str, error: ProviderError | None) -> None:
        outcomes.append(error)

    async with make_client(max_retry_after=60, observer=observe) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.balance()
        # The pause stands: the next call is not sent either, until it has passed.
        with pytest.raises(RateLimitedError, match="asked to wait 120s more"):
            await client.balance()

    assert caught.value.retry_after == 120
    assert not caught.value.maybe_processed
    assert api.call_count == 1
    assert "HTTP 429 rate limited, Retry-After 120s" in str(caught.value)
    assert "the next pass tries again" in str(caught.value)
    assert instant_pauses.slept == []
    # The one 429 answer is told; the call not sent for the pause is no answer at all.
    assert [type(error) for error in outcomes] == [RateLimitedError]


async def test_a_failure_without_an_answer_is_told_as_no_answer(api: respx.Route) -> None:
    api.mock(side_effect=[httpx.ConnectError("refused")] * 3 + [httpx.Response(502)] * 3)
    outcomes: list[ProviderError | None] = []

    async def observe(action: str, error: ProviderError | None) -> None:
        outcomes.append(error)

    async with make_client(observer=observe) as client:
        for _ in range(2):
            with pytest.raises(TransientError):
                await client.balance()

    assert [(type(e), isinstance(e, TransientError) and e.answered) for e in outcomes] == [
        (TransientError, False),  # no connection: the provider said nothing
        (TransientError, True),  # a 502 is an answer
    ]


async def test_429s_stop_waiting_once_a_call_has_waited_its_share(
    api: respx.Route, instant_pauses: FakeClock
) -> None:
    api.mock(return_value=httpx.Response(429, headers={"Retry-After": "25"}))
    async with make_client(max_retry_after=60) as client:
        # 25 s, 25 s: a third pause would take the call past its 60 s.
        with pytest.raises(RateLimitedError, match=r"it waited 50s of 60s"):
            await client.balance()
    assert api.call_count == 3
    assert instant_pauses.slept == [25.0, 25.0]


async def test_a_hundred_429s_in_a_row_are_a_few_info_lines_not_a_hundred(
    api: respx.Route, instant_pauses: FakeClock, logged: list[MutableMapping[str, Any]]
) -> None:
    """A provider answering only 429s for minutes: its start, one summary a minute and
    its end at info; each 429 only at debug."""
    limited = [httpx.Response(429, headers={"Retry-After": "1"}) for _ in range(100)]
    api.mock(side_effect=[*limited, reply("balance.json")])
    async with make_client(max_retry_after=30) as client:
        while True:  # each call waits out up to 30 s of 429s, then the next pass tries
            try:
                await client.balance()
                break
            except RateLimitedError:
                continue
    assert api.call_count == 101
    took = instant_pauses.monotonic()
    info = [e for e in logged if e["log_level"] != "debug" and "rate_limit" in e["event"]]
    events = [e["event"] for e in info]
    assert events[0] == "provider.rate_limited" and events[-1] == "provider.rate_limit_over"
    assert set(events[1:-1]) <= {"provider.still_rate_limited"}
    assert len(info) <= 2 + took // 60  # the start, at most one a minute, the end
    assert info[-1]["count"] == 100
    assert info[-1]["summary"] == f"answers again after 100 429s over {info[-1]['seconds']}s"
    assert [e["count"] for e in info[1:-1]] == sorted(e["count"] for e in info[1:-1])
    debug = [
        e for e in logged if e["log_level"] == "debug" and e["event"] == "provider.rate_limited"
    ]
    assert len(debug) + len(info) - 1 == 100  # every 429 has its line, under -v at least


@pytest.mark.parametrize(
    "kind", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.ConnectTimeout, httpx.PoolTimeout]
)
async def test_timeouts_are_transient(api: respx.Route, kind: type[Exception]) -> None:
    api.mock(side_effect=kind)
    async with make_client() as client:
        with pytest.raises(TransientError):
            await client.packages()

    assert api.call_count == 3  # a read action is retried up to its attempts


# -- a deadline on the whole request -------------------------------------------------------


# -- error taxonomy: auth, what is retried and what is not -----------------------------------


@pytest.mark.parametrize(
    "response",
    [
        lambda: reply("error_invalid_api_key.json"),
        lambda: json_reply({"error": "Unauthenticated."}, status=401),
        lambda: httpx.Response(401),
        lambda: html_reply(b"<html><title>401 Authorization Required</title></html>", 401),
    ],
    ids=["invalid-api-key-200", "http-401-json", "http-401-empty", "http-401-html"],
)
async def test_bad_token_is_auth_error(
    api: respx.Route, response: Callable[[], httpx.Response]
) -> None:
    api.mock(return_value=response())
    async with make_client() as client:
        with pytest.raises(AuthError):
            await client.balance()

    assert api.call_count == 1  # retrying will not fix a token


# A failure makes what the mocked transport gives back: a reply, or an exception to raise.
Failure = Callable[[], httpx.Response | Exception]

# Failures after which the request may have reached the provider's application.
MAYBE_SENT: dict[str, Failure] = {
    "read-timeout": lambda: httpx.ReadTimeout("timed out"),
    "write-timeout": lambda: httpx.WriteTimeout("timed out"),
    "http-500": lambda: httpx.Response(500),
    "http-502-html": lambda: html_reply(BAD_GATEWAY_PAGE, 502),
    "http-503": lambda: httpx.Response(503, content=b"Service Unavailable"),
    "connection-reset": lambda: httpx.ReadError("connection reset by peer"),
    "server-disconnected": lambda: httpx.RemoteProtocolError("Server disconnected"),
    "reset-mid-body": lambda: httpx.Response(200, content=cut_off(b'{"ord')),
}
# Failures where the request surely never reached it.
NEVER_SENT: dict[str, Failure] = {
    "connection-refused": lambda: httpx.ConnectError("[Errno 111] Connection refused"),
    "dns-failure": lambda: httpx.ConnectError("[Errno -2] Name or service not known"),
    "connect-timeout": lambda: httpx.ConnectTimeout("timed out"),
    "http-429": lambda: httpx.Response(429),
}
TRANSIENT = MAYBE_SENT | NEVER_SENT


@pytest.mark.parametrize("failure", TRANSIENT.values(), ids=TRANSIENT.keys())
async def test_transient_error_on_a_read_is_retried(api: respx.Route, failure: Failure) -> None:
    api.mock(side_effect=[failure(), reply("balance.json")])
    async with make_client() as client:
        balance = await client.balance()

    assert balance.amount == Decimal("100.84292")
    assert api.call_count == 2


async def test_transient_errors_give_up_after_the_attempts(api: respx.Route) -> None:
    api.mock(return_value=httpx.Response(503))
    async with make_client() as client:
        with pytest.raises(TransientError):
            await client.balance()

    assert api.call_count == 3


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (lambda: reply("error_string.json"), RefusedError),
        (lambda: json_reply({"error": "Incorrect request"}, status=400), RefusedError),
        (lambda: reply("error_invalid_api_key.json"), AuthError),
        (lambda: httpx.Response(401), AuthError),
        (lambda: html_reply(MAINTENANCE_PAGE, 200), MalformedReplyError),
        (lambda: httpx.Response(200, content=b'{"balance": "10'), MalformedReplyError),
        (lambda: json_reply({"funds": "10"}), MalformedReplyError),
    ],
    ids=[
        "error-object",
        "http-400",
        "bad-token",
        "http-401",
        "maintenance-page",
        "truncated-json",
        "wrong-shape",
    ],
)
async def test_non_transient_errors_are_not_retried(
    api: respx.Route, response: Callable[[], httpx.Response], error: type[Exception]
) -> None:
    api.mock(side_effect=[response(), reply("balance.json")])
    async with make_client() as client:
        with pytest.raises(error):
            await client.balance()

    assert api.call_count == 1


@pytest.mark.parametrize("failure", MAYBE_SENT.values(), ids=MAYBE_SENT.keys())
async def test_add_is_not_retried_once_it_may_have_been_sent(
    api: respx.Route, failure: Failure
) -> None:
    api.mock(side_effect=[failure(), reply("add_order_int.json")])
    async with make_client() as client:
        with pytest.raises(TransientError) as caught:
            await client.add(package=1, link="https://instagram.com/p/abc", quantity=100)

    assert caught.value.maybe_processed is True
    assert api.call_count == 1  # exactly one request: an order is never sent twice


UNSENT_BUT_429 = {k: v for k, v in NEVER_SENT.items() if k != "http-429"}


@pytest.mark.parametrize("failure", UNSENT_BUT_429.values(), ids=UNSENT_BUT_429.keys())
async def test_add_is_retried_when_the_request_never_left(
    api: respx.Route, failure: Failure
) -> None:
    api.mock(side_effect=[failure(), reply("add_order_int.json")])
    async with make_client() as client:
        order_id = await client.add(package=1, link="https://instagram.com/p/abc", quantity=100)

    assert order_id == 23501
    assert api.call_count == 2
    assert form(api, 0) == form(api, 1)


async def test_add_never_waits_out_a_429_its_order_goes_back_to_the_queue(
    api: respx.Route, instant_pauses: FakeClock
) -> None:
    """The order is claimed while its add waits: a 429 ends the call at once (nothing
    was processed), and the pause holds back the provider's next call."""
    api.mock(side_effect=[httpx.Response(429, headers={"Retry-After": "9"}), reply("balance.json")])
    async with make_client() as client:
        with pytest.raises(RateLimitedError, match="the order goes back to the queue") as caught:
            await client.add(package=1, link="https://instagram.com/p/abc", quantity=100)
        assert not caught.value.maybe_processed
        assert await client.pace.pause_left() == 9
        await client.balance()
    assert api.call_count == 2
    assert instant_pauses.slept == [9.0]


@pytest.mark.parametrize(
    ("failure", "maybe_processed"),
    [(f, True) for f in MAYBE_SENT.values()] + [(f, False) for f in NEVER_SENT.values()],
    ids=[*MAYBE_SENT, *NEVER_SENT],
)
async def test_maybe_processed_flag(
    api: respx.Route, failure: Failure, maybe_processed: bool
) -> None:
    api.mock(side_effect=[failure()])
    # One attempt, and no wait for a 429 either: the first failure is the call's.
    async with make_client(attempts=1, max_retry_after=0) as client:
        with pytest.raises(TransientError) as caught:
            await client.balance()

    assert caught.value.maybe_processed is maybe_processed


# -- both dialects ---------------------------------------------------------------------------

# Per dialect: key field, list action, package field, comments field.
EXPECTED_FIELDS = {
    "api_token": ("api_token", "packages", "package", "custom_data"),
    "key": ("key", "services", "service", "comments"),
}


@pytest.mark.parametrize("dialect", EXPECTED_FIELDS)
async def test_dialect_catalog_request(api: respx.Route, dialect: str) -> None:
    key, list_action, _, _ = EXPECTED_FIELDS[dialect]
    api.mock(return_value=reply("catalog.json"))
    async with make_client(dialect) as client:
        await client.packages()

    assert form(api) == {key: TOKEN, "action": list_action}


@pytest.mark.parametrize("dialect", EXPECTED_FIELDS)
async def test_dialect_add_request_with_comments(api: respx.Route, dialect: str) -> None:
    key, _, package, comments = EXPECTED_FIELDS[dialect]
    api.mock(return_value=reply("add_order_int.json"))
    async with make_client(dialect) as client:
        await client.add(
            package=7,
            link="https://instagram.com/p/abc",
            quantity=2,
            custom_data="Great post!\nLove it",
        )

    assert form(api) == {
        key: TOKEN,
        "action": "add",
        package: "7",
        "link": "https://instagram.com/p/abc",
        "quantity": "2",
        comments: "Great post!\nLove it",
    }


# Each type's fields as order_types places them for the key dialect, and what the form
# then carries besides the token, the action and the service.
PLACED = [
    ("Default", {"dripfeed": True}, {"quantity": 100, "params": {"runs": 5, "interval": "30"}},
     {"link": "https://instagram.com/p/abc", "quantity": "100", "runs": "5", "interval": "30"}),
    ("Custom Comments", {}, {"quantity": 2, "custom_data": "Nice\r\nWow\n"},
     {"link": "https://instagram.com/p/abc", "quantity": "2", "comments": "Nice\nWow"}),
    ("Subscriptions", {}, {"link": None, "params": '{"username": "ann", "min": 50, "max": 90}'},
     {"username": "ann", "min": "50", "max": "90"}),
    ("Package", {}, {}, {"link": "https://instagram.com/p/abc"}),
    ("Mentions Custom List", {}, {"params": {"usernames": ["ann", "bob"]}},
     {"link": "https://instagram.com/p/abc", "usernames": "ann\nbob"}),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "extra", "row", "sent"), PLACED, ids=[p[0] for p in PLACED])
async def test_add_sends_exactly_the_fields_placed_for_the_key_dialect(
    api: respx.Route,
    kind: str,
    extra: dict[str, Any],
    row: dict[str, Any],
    sent: dict[str, str],
) -> None:
    package = Package(7, "Service", kind, "Instagram", Decimal("1.00"), 1, 1000, extra)
    values = {"link": "https://instagram.com/p/abc", "quantity": None, "custom_data": None,
              "params": None} | row  # fmt: skip
    placed = placement(package, dialect=DIALECTS["key"], **values)
    assert isinstance(placed, Placement), placed
    api.mock(return_value=reply("add_order_int.json"))
    async with make_client("key") as client:
        assert await client.add(package=7, fields=placed.fields) == 23501

    assert form(api) == {"key": TOKEN, "action": "add", "service": "7", **sent}


async def test_add_refuses_a_field_that_would_replace_the_token_action_or_service(
    api: respx.Route,
) -> None:
    async with make_client("key") as client:
        for name in ("key", "action", "service"):
            with pytest.raises(ValueError, match=name):
                await client.add(package=7, fields={"link": "x", name: "1"})
        with pytest.raises(ValueError, match="not both"):
            await client.add(package=7, link="x", fields={"link": "x"})
    assert not api.called


@pytest.mark.parametrize("dialect", EXPECTED_FIELDS)
async def test_dialect_add_request_without_comments(api: respx.Route, dialect: str) -> None:
    key, _, package, _ = EXPECTED_FIELDS[dialect]
    api.mock(return_value=reply("add_order_int.json"))
    async with make_client(dialect) as client:
        await client.add(package=7, link="https://instagram.com/p/abc", quantity=1000)

    assert form(api) == {
        key: TOKEN,
        "action": "add",
        package: "7",
        "link": "https://instagram.com/p/abc",
        "quantity": "1000",
    }


@pytest.mark.parametrize("dialect", EXPECTED_FIELDS)
async def test_dialect_balance_and_status_requests(api: respx.Route, dialect: str) -> None:
    key = EXPECTED_FIELDS[dialect][0]
    api.mock(side_effect=[reply("balance.json"), reply("status_strings.json")])
    async with make_client(dialect) as client:
        await client.balance()
        await client.status(23501)

    assert form(api, 0) == {key: TOKEN, "action": "balance"}
    assert form(api, 1) == {key: TOKEN, "action": "status", "order": "23501"}


# -- transport safety: redirects, plain http, reply size -------------------------------------


@pytest.mark.parametrize("code", [301, 302, 307, 308])
async def test_redirect_is_not_followed(
    router: respx.MockRouter, api: respx.Route, code: int
) -> None:
    elsewhere = router.route(host="mirror.example").mock(return_value=reply("balance.json"))
    api.mock(return_value=httpx.Response(code, headers={"Location": "https://mirror.example/v2"}))
    async with make_client() as client:
        with pytest.raises(MalformedReplyError, match="redirect"):
            await client.balance()

    assert api.call_count == 1
    assert elsewhere.call_count == 0  # the token was not replayed to another host


@pytest.mark.parametrize(
    "url",
    ["http://panel.example/api/v2", "http://203.0.113.7/api/v2", "http://127.0.0.1.nip.io/api/v2"],
)
def test_plain_http_is_refused_off_loopback(url: str) -> None:
    with pytest.raises(UserError, match="http://"):
        make_client(url=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/api/v2",
        "http://localhost/api/v2",
        "http://localhost:3000/api/v2",
        "http://[::1]:8080/api/v2",
    ],
)
async def test_plain_http_is_accepted_on_loopback(router: respx.MockRouter, url: str) -> None:
    route = router.post(url).mock(return_value=reply("balance.json"))
    async with make_client(url=url) as client:
        balance = await client.balance()

    assert balance.currency == "USD"
    assert route.call_count == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_reply_larger_than_the_cap_is_malformed(api: respx.Route, chunked: bool) -> None:
    body = recorded("catalog.json")
    content = chunks(body[:100], body[100:]) if chunked else body
    api.mock(return_value=httpx.Response(200, content=content))
    async with make_client(max_reply_bytes=len(body) - 1) as client:
        with pytest.raises(MalformedReplyError, match="bytes"):
            await client.packages()

    assert api.call_count == 1


async def test_declared_size_over_the_cap_is_refused_before_reading(api: respx.Route) -> None:
    body_read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        body_read.append(b"")
        yield recorded("catalog.json")

    too_big = {"content-length": str(1 << 30)}  # a 1 GiB "catalog"
    api.mock(return_value=httpx.Response(200, content=body(), headers=too_big))
    async with make_client(max_reply_bytes=1 << 20) as client:
        with pytest.raises(MalformedReplyError, match="exceeds the cap"):
            await client.packages()

    assert body_read == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_reply_at_the_cap_is_read(api: respx.Route, chunked: bool) -> None:
    body = recorded("catalog.json")
    content = chunks(body[:100], body[100:]) if chunked else body
    api.mock(return_value=httpx.Response(200, content=content))
    async with make_client(max_reply_bytes=len(body)) as client:
        catalog = (await client.packages()).packages

    assert len(catalog) == 4


# -- the token never appears -----------------------------------------------------------------


async def test_repr_hides_the_token() -> None:
    async with make_client() as client:
        assert not leaks(repr(client))
        assert not leaks(str(client))
        assert "panel" in repr(client)


async def test_token_travels_only_in_the_body(api: respx.Route) -> None:
    api.mock(return_value=reply("balance.json"))
    async with make_client() as client:
        await client.balance()

    request = api.calls.last.request
    assert not leaks(str(request.url))
    assert not any(leaks(value) for value in request.headers.values())
    assert form(api)["api_token"] == TOKEN


# A WAF that echoes the raw request body in plain text; the token straddles the point
# (80 characters in) where the client cuts long unexpected text.
WAF_ECHO = f"Request blocked by firewall rule 942100 (SQLi), body: api_token={TOKEN}&action=balance"

TOKEN_ECHOES: dict[str, Callable[[], httpx.Response]] = {
    "auth-error-text": lambda: json_reply({"error": f"Invalid key {TOKEN}"}),
    "error-list": lambda: json_reply({"error": [f"Order rejected ({TOKEN})"]}),
    "errors-object": lambda: json_reply({"errors": {"link": [f"Bad link from {TOKEN}"]}}),
    "http-401": lambda: json_reply({"error": f"Token {TOKEN} is revoked"}, status=401),
    "http-400": lambda: json_reply({"error": f"Bad request from {TOKEN}"}, status=400),
    "long-error-text": lambda: json_reply({"error": "Rejected: " + "x" * 185 + TOKEN}),
    "html-title-502": lambda: html_reply(
        f"<html><head><title>Upstream error for {TOKEN}</title></head></html>".encode(), 502
    ),
    "plain-text-200": lambda: httpx.Response(200, content=f"Bad request key={TOKEN}".encode()),
    "plain-text-waf-echo": lambda: httpx.Response(403, content=WAF_ECHO.encode()),
    "redirect-location-echo": lambda: httpx.Response(
        302, headers={"Location": f"https://panel.example/login?api_token={TOKEN}&action=balance"}
    ),
}


@pytest.mark.parametrize("response", TOKEN_ECHOES.values(), ids=TOKEN_ECHOES.keys())
async def test_token_echoed_by_the_provider_never_in_an_exception_message(
    api: respx.Route, response: Callable[[], httpx.Response]
) -> None:
    api.mock(return_value=response())
    async with make_client() as client:
        with pytest.raises(ProviderError) as caught:
            await client.balance()

    error = caught.value
    assert not leaks(str(error)), str(error)
    assert not leaks(repr(error))
    assert not leaks(error.detail)


async def test_token_echoed_in_a_per_order_error_is_scrubbed(api: respx.Route) -> None:
    api.mock(
        return_value=json_reply(
            {
                "1": {"status": "Completed", "remains": "0"},
                "2": f"Order not found (api_token={TOKEN})",
                "3": {"error": [f"Invalid order for key {TOKEN}"]},
            }
        )
    )
    async with make_client() as client:
        result = await client.statuses([1, 2, 3])

    for order_id in (2, 3):
        entry = result[order_id]
        assert isinstance(entry, OrderLookupError)
        assert not leaks(entry.message), entry.message


async def test_token_echoed_in_status_texts_and_unreadable_entries_is_scrubbed(
    api: respx.Route,
) -> None:
    api.mock(
        side_effect=[
            json_reply(
                {
                    "1": {"status": f"Completed {TOKEN}", "remains": "0"},
                    "2": {"status": f"Completed {TOKEN}", "remains": "1"},
                    "3": {"status": "Partial", "charge": TOKEN},  # unreadable, quoted
                    "4": {"status": "Partial", "remains": "5"},
                }
            ),
            json_reply({"status": f"Pending {TOKEN}", "remains": "10"}),
        ]
    )
    async with make_client() as client:
        result = await client.statuses([1, 2, 3, 4])
        single = await client.status(5)

    for entry in (result[1], result[2], single):
        assert isinstance(entry, OrderStatus)
        assert entry.status_raw.endswith(" ***") and not leaks(entry.status_raw)
    assert isinstance(result[3], UnreadableAnswer) and result[3].message.startswith("charge")
    assert not leaks(result[3].message), result[3].message
    assert result[4] == OrderStatus(Status.PARTIAL, "Partial", None, None, 5, None)


async def test_an_auth_error_quoting_the_start_of_the_token_shows_none_of_it(
    api: respx.Route,
) -> None:
    api.mock(return_value=json_reply({"error": f"Invalid API key {ENCODED_TOKEN[:12]}..."}))
    async with make_client(token=ENCODED_TOKEN) as client:
        with pytest.raises(AuthError) as caught:
            await client.balance()

    assert str(caught.value) == "provider panel: token rejected: Invalid API key ***..."


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """A stream for syncd's log lines; structlog and stamina hooks are restored after."""
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stream = io.StringIO()
    yield stream
    structlog.reset_defaults()
    stamina.instrumentation.set_on_retry_hooks(hooks)


@pytest.mark.parametrize("redacting", [False, True], ids=["client-alone", "with-log-redaction"])
async def test_token_never_in_log_output(
    api: respx.Route, log_output: io.StringIO, redacting: bool
) -> None:
    # Without configured secrets, only the client's own scrubbing keeps the token out.
    secrets = [Secret(TOKEN)] if redacting else []
    logs.configure(fmt="json", level="debug", secrets=secrets, stream=log_output)
    api.mock(
        side_effect=[
            html_reply(f"<html><head><title>Error for {TOKEN}</title></head></html>".encode(), 503),
            httpx.Response(500, content=f"upstream failed: key={TOKEN}".encode()),
            reply("balance.json"),
        ]
    )
    async with make_client() as client:
        await client.balance()

    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["retry.scheduled", "retry.scheduled"]
    assert all(line["provider"] == "panel" for line in lines)
    assert not leaks(log_output.getvalue())


# -- replies that must still end inside the error tree -------------------------------------


async def test_an_html_error_page_with_a_4xx_is_malformed_not_a_refusal(api: respx.Route) -> None:
    # A firewall's page is not the panel refusing: an add answered so is ambiguous, not rejected.
    api.mock(return_value=html_reply(WAF_PAGE, 403))
    async with make_client() as client:
        with pytest.raises(MalformedReplyError, match=r"HTTP 403 \(HTML page"):
            await client.add(package=1, link="https://x", quantity=10)
    assert len(api.calls) == 1


async def test_a_4xx_with_an_error_object_is_a_refusal(api: respx.Route) -> None:
    api.mock(return_value=json_reply({"error": "Incorrect service ID"}, 422))
    async with make_client() as client:
        with pytest.raises(RefusedError, match="Incorrect service ID"):
            await client.add(package=1, link="https://x", quantity=10)


async def test_a_body_that_is_not_the_gzip_it_claims_is_malformed(api: respx.Route) -> None:
    garbage = chunks(b"not gzip at all")  # streamed, so it is decoded only when read
    api.mock(
        return_value=httpx.Response(200, content=garbage, headers={"content-encoding": "gzip"})
    )
    async with make_client() as client:
        with pytest.raises(MalformedReplyError, match="cannot be decoded"):
            await client.balance()


async def test_absurdly_deep_json_is_malformed(api: respx.Route) -> None:
    api.mock(return_value=httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000))
    async with make_client() as client:
        with pytest.raises(MalformedReplyError):
            await client.packages()


async def test_numbers_out_of_a_bigint_range_fail_only_their_order(api: respx.Route) -> None:
    api.mock(return_value=json_reply({
        "1": {"status": "In progress", "remains": "1e30", "start_counter": "5"},
        "2": {"status": "Completed", "remains": "0", "start_counter": "5"},
    }))  # fmt: skip
    async with make_client() as client:
        answers = await client.statuses([1, 2])
    assert isinstance(answers[1], UnreadableAnswer) and "out of range" in answers[1].message
    assert isinstance(answers[2], OrderStatus)


async def test_retry_after_zero_still_retries(api: respx.Route, instant_pauses: FakeClock) -> None:
    api.mock(side_effect=[httpx.Response(429, headers={"retry-after": "0"}), reply("balance.json")])
    async with make_client() as client:
        assert (await client.balance()).currency is not None
    assert len(api.calls) == 2
    assert instant_pauses.slept == [1.0]  # no wait named: a second, not a busy loop


async def test_429s_without_retry_after_back_off_until_an_answer(
    api: respx.Route, instant_pauses: FakeClock
) -> None:
    bare = httpx.Response(429)
    api.mock(side_effect=[bare, bare, bare, reply("balance.json"), bare, reply("balance.json")])
    async with make_client() as client:
        await client.balance()
        await client.balance()
    # 1, 2, 4 s of pauses; then the second call keeps a second after the first (a
    # minute after a pause requests are spread out), and its own 429 pauses 1 s again.
    assert instant_pauses.slept == [1.0, 2.0, 4.0, 1.0, 1.0]


async def test_a_status_reply_has_a_smaller_cap_than_a_catalog(api: respx.Route) -> None:
    """Only a catalog may be tens of MB: a status reply that large would cost hundreds
    of MB to decode, for 100 orders."""
    entry = '"1": {"status": "Pending", "charge": "0.1", "remains": "5"}'
    padding = '"x": "' + "a" * (MAX_SMALL_REPLY_BYTES) + '"'
    api.mock(return_value=httpx.Response(200, content=f"{{{entry}, {padding}}}".encode()))
    async with make_client() as client:
        with pytest.raises(MalformedReplyError, match="bytes"):
            await client.statuses([1])
    api.mock(return_value=httpx.Response(200, content=f"{{{entry}}}".encode()))
    async with make_client() as client:
        assert list(await client.statuses([1])) == [1]


async def test_a_catalog_digest_is_keyed_with_the_token(api: respx.Route) -> None:
    """The same reply read with another token gives another digest: a reply that echoes
    the token cannot be used to test guesses of it against the stored digest."""
    api.mock(return_value=httpx.Response(200, content=recorded("catalog.json")))
    digests = []
    for token in ("token-one-0000", "token-one-0000", "token-two-0000"):
        async with make_client(token=token) as client:
            digests.append((await client.catalog_reply()).digest)
    assert digests[0] == digests[1] != digests[2]


def lower_case_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), text)


# What a provider's 400 answer makes of the request body it echoes (``body``: the form
# exactly as the client sent it, the token URL-encoded in it).

# What a provider's 400 answer makes of the request body it echoes (``body``: the form
# exactly as the client sent it, the token URL-encoded in it).
REQUEST_ECHOES: dict[str, Callable[[str], httpx.Response]] = {
    "html-title-as-sent": lambda body: html_reply(
        f"<html><head><title>400 Bad Request: {body}</title></head></html>".encode(), 400
    ),
    "html-title-lower-case-escapes": lambda body: html_reply(
        f"<html><title>Bad request {lower_case_escapes(body)}</title></html>".encode(), 400
    ),
    "html-title-percent-20": lambda body: html_reply(
        f"<html><title>Rejected: {body.replace('+', '%20')}</title></html>".encode(), 400
    ),
    "plain-text": lambda body: httpx.Response(400, content=f"Bad request: {body}".encode()),
    "json-error-quoting-the-form-as-json": lambda body: json_reply(
        {"error": f"Invalid request {json.dumps(dict(parse_qsl(body)))}"}, 400
    ),
}


@pytest.mark.parametrize("echo", REQUEST_ECHOES.values(), ids=REQUEST_ECHOES.keys())
async def test_a_400_echoing_the_request_body_shows_no_piece_of_the_token(
    api: respx.Route, echo: Callable[[str], httpx.Response]
) -> None:
    api.mock(side_effect=lambda request: echo(request.content.decode()))
    async with make_client(token=ENCODED_TOKEN) as client:
        with pytest.raises(ProviderError) as caught:
            await client.balance()

    assert "%2F" in api.calls.last.request.content.decode()  # the token did travel encoded
    error = caught.value
    assert "action" in str(error)  # the echo is shown, only the token is gone
    for text in (str(error), repr(error), error.detail):
        assert leaked(text, ENCODED_TOKEN) == [], text
