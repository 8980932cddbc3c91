"""Refill and cancel replies about several orders, in the list shape providers send, and
refill_status replies about several refills: each entry settles its own request, and
only its own. A hypothesis property builds replies from every mix (taken, refused in
each error shape, left out, repeated, about orders not asked, junk, ids as text) and
checks what each asked request becomes; respx and the job's own sending path check the
exact shapes providers document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from syncd.jobs.context import JobContext
from syncd.jobs.order_requests import RequestCounts, _send
from syncd.models import (
    OrderLookupError,
    RefillAnswer,
    RefillState,
    RefillStatus,
    RequestAnswer,
    RequestKind,
    RequestRefused,
    RequestTaken,
    UnreadableAnswer,
    canonical_refill_status,
)
from syncd.order_requests import Request, RequestState, answered
from syncd.provider import DIALECTS, ProviderClient
from syncd.provider.replies import parse_refill_statuses, parse_requests
from syncd.secret import Secret
from tests.unit.test_replies import JSON

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
URL = "https://panel.example/api/v2"
TOKEN = "tok-3f9a1c77e2b4d5"

# -- a model of one reply ------------------------------------------------------------------

ERROR_TEXT = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=1, max_size=20
).filter(str.strip)


@dataclass(frozen=True)
class Outcome:
    """What the reply says about one asked id, and what the parser must make of it."""

    entries: tuple[dict[str, Any], ...]  # the reply's entries about it (none: left out)
    expected: RequestAnswer | RefillAnswer | None  # None: absent from the result
    unreadable: bool = False  # expected is an UnreadableAnswer, whatever its message


def written_id(number: int) -> st.SearchStrategy[object]:
    """An id as providers write it: a JSON number, or text, padded or not."""
    return st.sampled_from([number, str(number), f" {number} "])


def error_value(text: str) -> st.SearchStrategy[object]:
    return st.sampled_from([{"error": text}, {"error": [text]}, {"errors": [text]}])


@st.composite
def request_outcome(draw: st.DrawFn, order_id: int, kind: RequestKind) -> Outcome:
    key = kind.value
    choice = draw(st.sampled_from(["taken", "refused", "refused-entry", "missing", "junk"]))
    order = draw(written_id(order_id))
    if choice == "missing":
        return Outcome((), None)
    if choice == "taken":
        if kind is RequestKind.REFILL:
            refill = draw(st.integers(1, 10**12))
            value: object = draw(written_id(refill))
            expected: RequestAnswer = RequestTaken(refill)
        else:
            value, expected = (
                draw(st.sampled_from([1, "1", True, "true", "yes"])),
                RequestTaken(None),
            )
        entry = {"order": order, key: value}
    elif choice == "refused":
        text = draw(ERROR_TEXT)
        entry, expected = (
            {"order": order, key: draw(error_value(text))},
            RequestRefused(text.strip()),
        )
    elif choice == "refused-entry":  # the error beside the order, no value
        text = draw(ERROR_TEXT)
        entry, expected = {"order": order, "error": text}, RequestRefused(text.strip())
    else:  # a value nobody can read: the provider may have acted
        junk = draw(st.sampled_from([[1], {"a": 1}, "maybe", -3, 0, "1.5"]))
        if kind is RequestKind.CANCEL and junk == 0:
            junk = "maybe"
        return Outcome(({"order": order, key: junk},), UnreadableAnswer(""), unreadable=True)
    repeat = draw(st.sampled_from(["once", "twice", "conflict"]))
    if repeat == "once":
        return Outcome((entry,), expected)
    if repeat == "twice":
        return Outcome((entry, dict(entry)), expected)
    other = {"order": order, key: {"error": "Incorrect order ID"}}
    if isinstance(expected, RequestRefused):
        other = {"order": order, key: 7 if kind is RequestKind.REFILL else 1}
    return Outcome((entry, other), UnreadableAnswer(""), unreadable=True)


NOT_ASKED = st.integers(10_001, 20_000)
# Entries about no refill of ours, for a refill_status reply: "refill" names a refill
# there, so an entry with an asked refill's id is an answer about it, not junk.
JUNK_STATUS_ENTRIES = st.one_of(
    JSON.filter(lambda v: not isinstance(v, dict)),
    st.fixed_dictionaries(
        {"refill": st.sampled_from([None, "x", [1], -1, 1.5, True]), "status": JSON}
    ),
)
JUNK_ENTRIES = st.one_of(
    JSON.filter(lambda v: not isinstance(v, dict)),
    st.fixed_dictionaries({"refill": JSON, "cancel": JSON, "status": JSON}),  # no order
    st.fixed_dictionaries(
        {
            "order": st.sampled_from([None, "x", [1], -1, 1.5, True]),
            "refill": st.just(3),
            "cancel": st.just(1),
        }
    ),
)


@st.composite
def request_reply(
    draw: st.DrawFn, kind: RequestKind
) -> tuple[list[int], list[Any], dict[int, Outcome]]:
    asked = draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=12, unique=True))
    outcomes = {order_id: draw(request_outcome(order_id, kind)) for order_id in asked}
    entries: list[Any] = [e for o in outcomes.values() for e in o.entries]
    for stranger in draw(st.lists(NOT_ASKED, max_size=3)):
        entries.append({"order": draw(written_id(stranger)), kind.value: 5})
    entries += draw(st.lists(JUNK_ENTRIES, max_size=3))
    return asked, draw(st.permutations(entries)), outcomes


def request(request_id: int, kind: RequestKind) -> Request:
    return Request(
        id=request_id, order_id=request_id, kind=kind, state=RequestState.SUBMITTING,
        provider="panel",
    )  # fmt: skip


@given(
    st.sampled_from(list(RequestKind)).flatmap(lambda k: st.tuples(st.just(k), request_reply(k)))
)
def test_each_entry_settles_its_own_request_and_only_its_own(
    drawn: tuple[RequestKind, tuple[list[int], list[Any], dict[int, Outcome]]],
) -> None:
    kind, (asked, reply, outcomes) = drawn
    answers = parse_requests(reply, asked, kind)
    assert set(answers) <= set(asked)  # nothing about orders not asked, nothing made up
    for order_id, outcome in outcomes.items():
        got = answers.get(order_id)
        if outcome.unreadable:
            assert isinstance(got, UnreadableAnswer), (order_id, got)
        else:
            assert got == outcome.expected, (order_id, got)
        # And what the request becomes by it: taken, refused, or for a person to check.
        step = answered(request(order_id, kind), got, NOW, timedelta(minutes=2))
        state = step.update.written()["state"]
        if isinstance(outcome.expected, RequestTaken):
            assert state is (RequestState.SENT if kind is RequestKind.REFILL else RequestState.DONE)
            if kind is RequestKind.REFILL:
                assert step.update.written()["provider_request_id"] == outcome.expected.request_id
        elif isinstance(outcome.expected, RequestRefused):
            assert state is RequestState.REJECTED
            assert step.update.written()["error"] == outcome.expected.message
        else:
            assert state is RequestState.AMBIGUOUS and step.alert is not None


@st.composite
def refill_outcome(draw: st.DrawFn, refill_id: int) -> Outcome:
    refill = draw(written_id(refill_id))
    choice = draw(st.sampled_from(["status", "error", "missing", "junk"]))
    if choice == "missing":
        return Outcome((), None)
    if choice == "junk":
        junk = draw(st.sampled_from([[1], {"a": 1}, True, "", None]))
        return Outcome(({"refill": refill, "status": junk},), UnreadableAnswer(""), unreadable=True)
    if choice == "status":
        text = draw(st.sampled_from(["Pending", "In progress", "Completed", "Rejected", "Odd"]))
        entry: dict[str, Any] = {"refill": refill, "status": text}
        expected: RefillAnswer = RefillState(canonical_refill_status(text), text)
    else:
        text = draw(ERROR_TEXT)
        entry, expected = (
            {"refill": refill, "status": draw(error_value(text))},
            OrderLookupError(text.strip()),
        )
    repeat = draw(st.sampled_from(["once", "twice", "conflict"]))
    if repeat == "once":
        return Outcome((entry,), expected)
    if repeat == "twice":
        return Outcome((entry, dict(entry)), expected)
    other = {"refill": refill, "status": "Completed" if choice == "error" else {"error": "gone"}}
    if choice == "status" and text == "Completed":
        other = {"refill": refill, "status": "Rejected"}
    return Outcome((entry, other), UnreadableAnswer(""), unreadable=True)


@st.composite
def refill_reply(draw: st.DrawFn) -> tuple[list[int], list[Any], dict[int, Outcome]]:
    asked = draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=12, unique=True))
    outcomes = {refill_id: draw(refill_outcome(refill_id)) for refill_id in asked}
    entries: list[Any] = [e for o in outcomes.values() for e in o.entries]
    for stranger in draw(st.lists(NOT_ASKED, max_size=3)):
        entries.append({"refill": draw(written_id(stranger)), "status": "Completed"})
    entries += draw(st.lists(JUNK_STATUS_ENTRIES, max_size=3))
    return asked, draw(st.permutations(entries)), outcomes


@given(refill_reply())
def test_each_refill_status_entry_settles_its_own_refill(
    drawn: tuple[list[int], list[Any], dict[int, Outcome]],
) -> None:
    asked, reply, outcomes = drawn
    answers = parse_refill_statuses(reply, asked)
    assert set(answers) <= set(asked)
    for refill_id, outcome in outcomes.items():
        got = answers.get(refill_id)
        if outcome.unreadable:
            assert isinstance(got, UnreadableAnswer), (refill_id, got)
        else:
            assert got == outcome.expected, (refill_id, got)


# -- the exact shapes, over respx and through the job's sending path -----------------------


@pytest.fixture
def api() -> Iterator[respx.Route]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock.post(URL)


def client() -> ProviderClient:
    return ProviderClient(name="panel", url=URL, token=Secret(TOKEN), dialect=DIALECTS["key"])


def reply(value: object) -> httpx.Response:
    return httpx.Response(200, content=json.dumps(value).encode())


def context(c: ProviderClient) -> JobContext:
    provider = SimpleNamespace(name="panel", orders_interval=timedelta(minutes=2))
    return cast(JobContext, SimpleNamespace(client=c, provider=provider, now=lambda: NOW))


async def send(kind: RequestKind, order_ids: list[int]) -> dict[int, Any]:
    """The requests of ``order_ids`` (request id = order id = provider order id) sent in
    one call by the job's own path; what each one's row becomes."""
    counts = RequestCounts()
    async with client() as c:
        sent = [(request(i, kind), i) for i in order_ids]
        outcomes = await _send(context(c), kind, sent, counts)
    assert counts.failure is None
    return {r.id: step.update.written() for r, step in outcomes}


@pytest.mark.anyio
async def test_a_refill_list_reply_settles_each_request(api: respx.Route) -> None:
    api.mock(
        return_value=reply(
            [{"order": 1, "refill": 1}, {"order": 3, "refill": {"error": "Incorrect order ID"}}]
        )
    )
    rows = await send(RequestKind.REFILL, [1, 3])
    assert (rows[1]["state"], rows[1]["provider_request_id"]) == (RequestState.SENT, 1)
    assert (rows[3]["state"], rows[3]["error"]) == (RequestState.REJECTED, "Incorrect order ID")


@pytest.mark.anyio
async def test_a_cancel_list_reply_settles_each_request(api: respx.Route) -> None:
    api.mock(return_value=reply([{"order": 9, "cancel": {"error": "Incorrect order ID"}},
                                 {"order": 2, "cancel": 1}]))  # fmt: skip
    rows = await send(RequestKind.CANCEL, [2, 9])
    assert rows[2]["state"] is RequestState.DONE
    assert (rows[9]["state"], rows[9]["error"]) == (RequestState.REJECTED, "Incorrect order ID")


@pytest.mark.anyio
async def test_a_request_the_list_leaves_out_or_answers_twice_differently_is_ambiguous(
    api: respx.Route,
) -> None:
    api.mock(return_value=reply([{"order": 1, "refill": 4},
                                 {"order": 1, "refill": {"error": "Incorrect order ID"}},
                                 {"order": 5, "refill": 6}]))  # fmt: skip
    rows = await send(RequestKind.REFILL, [1, 2, 5])
    assert rows[1]["state"] is RequestState.AMBIGUOUS and "twice" in rows[1]["error"]
    assert rows[2]["state"] is RequestState.AMBIGUOUS and "left this order out" in rows[2]["error"]
    assert (rows[5]["state"], rows[5]["provider_request_id"]) == (RequestState.SENT, 6)


@pytest.mark.anyio
async def test_one_order_answered_in_the_list_shape_is_read(api: respx.Route) -> None:
    """A refill of one order goes as ``order``; some panels answer it with the list."""
    api.mock(side_effect=[
        reply([{"order": 7, "refill": 31}]),
        reply([{"order": "7", "refill": {"error": "Incorrect order ID"}}]),
        reply({"order": 8, "refill": 31}),  # about another order: not this one's answer
        reply([{"order": 7, "cancel": 1}]),
        reply({"order": 7, "cancel": 1}),  # a one-order cancel answered as one object
    ])  # fmt: skip
    async with client() as c:
        assert await c.refill([7]) == {7: RequestTaken(31)}
        assert await c.refill([7]) == {7: RequestRefused("Incorrect order ID")}
        other = (await c.refill([7]))[7]
        assert isinstance(other, UnreadableAnswer) and "order 8" in other.message
        assert await c.cancel([7]) == {7: RequestTaken(None)}
        assert await c.cancel([7]) == {7: RequestTaken(None)}


@pytest.mark.anyio
async def test_refill_status_entries_with_an_error_status(api: respx.Route) -> None:
    api.mock(side_effect=[
        reply([{"refill": 3, "status": {"error": "Refill not found"}},
               {"refill": "4", "status": "Completed"}]),
        reply([{"refill": 3, "status": {"error": "Refill not found"}}]),  # one refill, listed
    ])  # fmt: skip
    async with client() as c:
        many = await c.refill_statuses([3, 4])
        one = await c.refill_statuses([3])
    assert many == {3: OrderLookupError("Refill not found"),
                    4: RefillState(RefillStatus.COMPLETED, "Completed")}  # fmt: skip
    assert one == {3: OrderLookupError("Refill not found")}
