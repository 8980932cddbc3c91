"""The provider client against real HTTP on loopback: deadlines that only a real server
dripping its reply, or never answering, can show.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import httpx
import pytest

from syncd.errors import (
    TransientError,
)
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from tests.unit.test_client import TOKEN, Call, make_client

pytestmark = pytest.mark.anyio

T = TypeVar("T")


DEADLINE = 1.0  # the provider's timeout in these tests


async def timed(call: Awaitable[T], *, give_up_after: float) -> tuple[T, float]:
    """``call``'s result and seconds taken. The test's own limit turns a client without a
    deadline into a TimeoutError, not a test that hangs for as long as the reply drips."""
    started = time.monotonic()
    async with asyncio.timeout(give_up_after):
        result = await call
    return result, time.monotonic() - started


async def no_reply(
    call: Awaitable[object], *, give_up_after: float
) -> tuple[TransientError, float]:
    """The TransientError ``call`` must raise, and when it did."""
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"no reply within 1s") as caught:
        await timed(call, give_up_after=give_up_after)
    return caught.value, time.monotonic() - started


class Stalling(httpx.AsyncBaseTransport):
    """Reports ``event`` through the request's trace extension, as httpcore does, then
    waits forever."""

    def __init__(self, event: str) -> None:
        self.event = event

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if trace := request.extensions.get("trace"):
            await trace(self.event, {"request": request})
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("event", "maybe_processed"),
    [
        ("connection.connect_tcp.started", False),
        ("connection.connect_tcp.complete", False),
        ("connection.start_tls.started", False),
        ("http2.send_connection_init.started", False),  # HTTP/2's preface, not the request
        ("http11.send_request_headers.started", True),
        ("http2.send_request_headers.started", True),
        ("http11.receive_response_headers.started", True),
        ("http3.send_request_headers.started", True),  # unknown: counted as sent, to be safe
    ],
)
async def test_the_deadline_knows_whether_sending_began(event: str, maybe_processed: bool) -> None:
    async with (
        httpx.AsyncClient(transport=Stalling(event)) as http,
        make_client(timeout=DEADLINE, attempts=1, http=http) as client,
    ):
        error, _ = await no_reply(client.balance(), give_up_after=8 * DEADLINE)

    assert error.maybe_processed is maybe_processed


# The simulator's packages, so that an add it lets through creates an order.
DRIPPED: dict[str, Call] = {
    "packages": lambda c: c.packages(),
    "balance": lambda c: c.balance(),
    "statuses": lambda c: c.statuses([23501, 23502]),
    "add": lambda c: c.add(package=100, link="https://instagram.com/p/abc", quantity=100),
}


@pytest.fixture
def dripping() -> Iterator[SimulatorServer]:
    """The simulator on loopback, every reply dripped at 0.5 s a byte: no read of the
    client ever waits a whole second, and a reply takes from 8 s to hours."""
    provider = SimulatedProvider(token=TOKEN)
    provider.inject(Fault.DRIP, times=None, after_processing=True)
    with SimulatorServer(provider) as running:
        yield running


@pytest.mark.parametrize("action", DRIPPED)
async def test_a_dripping_reply_is_cut_off_at_the_timeout(
    dripping: SimulatorServer, action: str
) -> None:
    async with make_client(url=dripping.url, timeout=DEADLINE, attempts=1) as client:
        error, elapsed = await no_reply(DRIPPED[action](client), give_up_after=8 * DEADLINE)

    assert elapsed < 3 * DEADLINE  # a deadline, not a benchmark: generous
    assert error.maybe_processed is True  # the reply had begun: the provider got it
    assert len(dripping.provider.calls) == 1


async def test_each_retry_of_a_dripping_read_stops_at_its_own_deadline(
    dripping: SimulatorServer,
) -> None:
    async with make_client(url=dripping.url, timeout=DEADLINE) as client:
        error, elapsed = await no_reply(client.balance(), give_up_after=20 * DEADLINE)

    assert "after 3 attempts" in str(error)
    assert dripping.provider.count("balance") == 3
    assert elapsed < 3 * 2 * DEADLINE


async def test_a_dripping_add_is_sent_once_and_left_ambiguous(dripping: SimulatorServer) -> None:
    async with make_client(url=dripping.url, timeout=DEADLINE) as client:
        error, _ = await no_reply(DRIPPED["add"](client), give_up_after=8 * DEADLINE)

    assert error.maybe_processed is True
    assert dripping.provider.count("add") == 1  # never sent again
    assert len(dripping.provider.orders) == 1  # and the provider did take it


async def test_a_deadline_before_the_request_left_lets_an_add_be_sent_again(
    dripping: SimulatorServer,
) -> None:
    # One connection, held by a slow call: the add waits for it and never gets it. Only
    # the deadline can end that wait (the pool's own timeout is far longer).
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=60) as http:
        slow = make_client(url=dripping.url, timeout=10 * DEADLINE, attempts=1, http=http)
        holding = asyncio.create_task(slow.balance())
        for _ in range(500):  # until the slow call has the connection
            if dripping.provider.calls:
                break
            await asyncio.sleep(0.01)
        async with make_client(url=dripping.url, timeout=DEADLINE, http=http) as client:
            error, elapsed = await no_reply(DRIPPED["add"](client), give_up_after=8 * DEADLINE)
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding

    assert [c.action for c in dripping.provider.calls] == ["balance"]
    assert error.maybe_processed is False  # so an add may go back to the queue
    assert "after 3 attempts" in str(error)  # and was retried, each attempt bounded
    assert elapsed < 3 * 2 * DEADLINE


async def test_an_add_sent_but_never_answered_is_ambiguous_at_the_deadline() -> None:
    # No answer at all, not even headers: only the trace tells that the request left.
    provider = SimulatedProvider(token=TOKEN)
    provider.inject(Fault.TIMEOUT, actions=["add"], after_processing=True)
    with SimulatorServer(provider) as server:
        async with (
            httpx.AsyncClient(timeout=60) as http,  # httpx's own timeouts far longer
            make_client(url=server.url, timeout=DEADLINE, http=http) as client,
        ):
            error, elapsed = await no_reply(DRIPPED["add"](client), give_up_after=8 * DEADLINE)

    assert error.maybe_processed is True
    assert elapsed < 3 * DEADLINE
    assert provider.count("add") == 1 and len(provider.orders) == 1
