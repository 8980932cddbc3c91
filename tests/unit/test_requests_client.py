"""Refill, refill_status and cancel in the client: the `key` dialect's shapes and their
quirks (respx), the `api_token` refusal, every reply shape read without a crash
(hypothesis), and the same calls over real HTTP against the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import MalformedReplyError, TransientError, UserError
from syncd.models import (
    OrderLookupError,
    RefillState,
    RefillStatus,
    RequestKind,
    RequestRefused,
    RequestTaken,
    UnreadableAnswer,
    canonical_refill_status,
)
from syncd.provider import DIALECTS, ProviderClient
from syncd.provider.replies import ReplyShapeError, parse_refill_statuses, parse_requests
from syncd.secret import Secret
from tests.unit.test_replies import JSON, near

pytestmark = pytest.mark.anyio
URL = "https://panel.example/api/v2"
TOKEN = "tok-3f9a1c77e2b4d5"


def client(dialect: str = "key", url: str = URL, token: str = TOKEN) -> ProviderClient:
    return ProviderClient(name="panel", url=url, token=Secret(token), dialect=DIALECTS[dialect])


@pytest.fixture
def api() -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock.post(URL)


def answer(value: object) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(value).encode())


def sent(route: respx.Route) -> dict[str, str]:
    return dict(parse_qsl(route.calls[-1].request.content.decode()))


# -- the shapes ------------------------------------------------------------------------------


async def test_a_batch_of_refills_reads_each_order_alone(api: respx.Route) -> None:
    api.mock(return_value=answer([
        {"order": 1, "refill": 1},
        {"order": "3", "refill": {"error": "Incorrect order ID"}},
        {"order": 4, "refill": "abc"},
        {"order": 99, "refill": 5},  # not asked: ignored
    ]))  # fmt: skip
    async with client() as c:
        answers = await c.refill([1, 3, 4, 5])
    assert sent(api)["action"] == "refill" and sent(api)["orders"] == "1,3,4,5"
    assert answers[1] == RequestTaken(1)
    assert answers[3] == RequestRefused("Incorrect order ID")
    assert isinstance(answers[4], UnreadableAnswer) and "not an id" in answers[4].message
    assert 5 not in answers  # left out: the provider may or may not have it
    assert 99 not in answers


@pytest.mark.parametrize(
    "reply",
    [
        {"refill": "1"},
        {"refill": 1},
        {"success": "Refill request has been received", "refill": "1"},
    ],
)
async def test_one_refill_goes_as_order_and_takes_each_success_shape(
    api: respx.Route, reply: dict[str, object]
) -> None:
    api.mock(return_value=answer(reply))
    async with client() as c:
        assert await c.refill([23501]) == {23501: RequestTaken(1)}
    assert sent(api) == {"key": TOKEN, "action": "refill", "order": "23501"}


async def test_one_refill_refused_is_that_orders_answer(api: respx.Route) -> None:
    api.mock(return_value=answer({"error": "Order not eligible for refill."}))
    async with client() as c:
        assert await c.refill([7]) == {7: RequestRefused("Order not eligible for refill.")}


async def test_a_refill_is_never_sent_twice(api: respx.Route) -> None:
    """A refill that may have reached the provider is not retried: a second request
    could be a second refill."""
    api.mock(side_effect=[httpx.ReadTimeout("slow"), answer({"refill": 1})])
    async with client() as c:
        with pytest.raises(TransientError) as caught:
            await c.refill([7])
    assert caught.value.maybe_processed
    assert api.call_count == 1


async def test_cancel_reads_flags_and_errors(api: respx.Route) -> None:
    api.mock(return_value=answer([
        {"order": 9, "cancel": {"error": "Incorrect order ID"}},
        {"order": 2, "cancel": 1},
        {"order": 3, "cancel": "1"},
        {"order": 4, "cancel": True},
        {"order": 5, "cancel": "maybe"},
    ]))  # fmt: skip
    async with client() as c:
        answers = await c.cancel([9, 2, 3, 4, 5])
    assert sent(api)["action"] == "cancel" and sent(api)["orders"] == "9,2,3,4,5"
    assert answers[9] == RequestRefused("Incorrect order ID")
    assert answers[2] == answers[3] == answers[4] == RequestTaken(None)
    assert isinstance(answers[5], UnreadableAnswer)


async def test_refill_statuses_one_and_many(api: respx.Route) -> None:
    api.mock(side_effect=[
        answer({"status": "Completed"}),
        answer([{"refill": 2, "status": "Rejected"},
                {"refill": "3", "status": {"error": "Refill not found"}},
                {"refill": 4, "status": "in_progress"}, {"refill": 5, "status": "Whatever"}]),
        answer({"error": "Refill not found"}),
    ])  # fmt: skip
    async with client() as c:
        assert await c.refill_statuses([1]) == {1: RefillState(RefillStatus.COMPLETED, "Completed")}
        assert sent(api) == {"key": TOKEN, "action": "refill_status", "refill": "1"}
        many = await c.refill_statuses([2, 3, 4, 5])
        assert sent(api)["refills"] == "2,3,4,5"
        assert await c.refill_statuses([6]) == {6: OrderLookupError("Refill not found")}
    assert many[2] == RefillState(RefillStatus.REJECTED, "Rejected")
    assert many[3] == OrderLookupError("Refill not found")
    assert many[4] == RefillState(RefillStatus.IN_PROGRESS, "in_progress")
    assert many[5] == RefillState(RefillStatus.UNKNOWN, "Whatever")  # never silently Pending


async def test_a_batch_reply_that_is_no_list_is_malformed(api: respx.Route) -> None:
    api.mock(return_value=answer({"1": {"refill": 5}}))
    async with client() as c:
        with pytest.raises(MalformedReplyError, match="refill reply is an object, not a list"):
            await c.refill([1, 2])


@pytest.mark.parametrize("action", ["refill", "cancel", "refill_statuses"])
async def test_the_reference_dialect_offers_none_and_nothing_is_sent(
    api: respx.Route, action: str
) -> None:
    async with client("api_token") as c:
        with pytest.raises(UserError, match="dialect offers no") as caught:
            await getattr(c, action)([1])
    assert "nothing was sent" in str(caught.value)
    assert api.call_count == 0


async def test_the_token_never_shows_in_a_refused_request(api: respx.Route) -> None:
    api.mock(return_value=answer([{"order": 1, "refill": {"error": f"bad key {TOKEN}"}}]))
    async with client() as c:
        answers = await c.refill([1, 2])
    assert TOKEN not in repr(answers)


# -- hostile replies -----------------------------------------------------------------------

ENTRY = near(["order", "refill", "cancel", "status", "error", "success"])
REPLIES = JSON | st.lists(ENTRY | JSON, max_size=6)


@given(REPLIES, st.sampled_from(list(RequestKind)))
def test_any_request_reply_reads_or_is_malformed(reply: Any, kind: RequestKind) -> None:
    asked = [1, 2, 3]
    try:
        answers = parse_requests(reply, asked, kind)
    except ReplyShapeError:
        assert not isinstance(reply, list)
        return
    assert set(answers) <= set(asked)
    for value in answers.values():
        assert isinstance(value, RequestTaken | RequestRefused | UnreadableAnswer)
        if isinstance(value, RequestTaken):
            assert (value.request_id is None) is (kind is RequestKind.CANCEL)


@given(REPLIES)
def test_any_refill_status_reply_reads_or_is_malformed(reply: Any) -> None:
    try:
        answers = parse_refill_statuses(reply, [1, 2])
    except ReplyShapeError:
        assert not isinstance(reply, list)
        return
    assert set(answers) <= {1, 2}
    for value in answers.values():
        assert isinstance(value, RefillState | OrderLookupError | UnreadableAnswer)


@given(st.text(max_size=30))
def test_a_refill_status_text_is_a_status_or_unknown(text: str) -> None:
    status = canonical_refill_status(text)
    assert status in set(RefillStatus)
    if text.strip().lower() == "pending":
        assert status is RefillStatus.PENDING
    elif "pend" not in text.lower():
        assert status is not RefillStatus.PENDING  # never guessed


# -- over real HTTP ---------------------------------------------------------------------------
