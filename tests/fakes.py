"""The fakes every test module shares: one clock a test moves by hand, and one webhook
receiver on loopback.

A test never waits for wall-clock time to pass: it moves a ``FakeClock`` (or runs its
coroutines on the clock's event loop, where waiting costs nothing), and it waits on
events, never on sleeps.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T")


class FakeClock:
    """The one clock tests move by hand, in each form syncd reads the time:

    - ``now``, or calling the clock: the wall time as an aware datetime, what jobs and
      decisions take;
    - ``wall()``: the same in seconds since the epoch, as ``time.time`` gives it;
    - ``monotonic()``: seconds on a clock nobody can set, as ``time.monotonic`` gives
      it (pauses, the simulator's world);
    - ``sleep(seconds)``: an asyncio sleep that passes at once and moves the clock by
      that much, recorded in ``slept`` (as ``Pace``'s timer: a 429's pause costs nothing);
    - ``run(main)``: runs a coroutine on an event loop whose time is this clock, where
      waiting for a timer moves the clock to it at once, so ``asyncio.sleep`` and what is
      built on it (a pace's turns) keep exact time, whatever the machine's load.

    ``advance`` is time passing: both clocks move. ``step`` is someone setting the wall
    clock (NTP, an operator): only the wall moves.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime.now(UTC).replace(microsecond=0)
        self._monotonic = 0.0
        self.slept: list[float] = []

    @property
    def now(self) -> datetime:
        return self._wall

    def __call__(self) -> datetime:
        return self._wall

    def wall(self) -> float:
        return self._wall.timestamp()

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, **delta: float) -> datetime:
        """Let time pass (``timedelta``'s keywords); it never runs backwards."""
        moved = timedelta(**delta)
        assert moved >= timedelta(0), "time passing never goes back: step() sets the wall"
        self._wall += moved
        self._monotonic += moved.total_seconds()
        return self._wall

    def advance_to(self, when: datetime) -> datetime:
        """Let time pass until ``when`` (nothing when it is not ahead)."""
        return self.advance(seconds=max(0.0, (when - self._wall).total_seconds()))

    def at(self, seconds: float) -> None:
        """Let time pass until the monotonic clock reads ``seconds`` (a simulator's world
        is written as moments since it started)."""
        assert seconds >= self._monotonic, "time passing never goes back"
        self._pass(seconds - self._monotonic)

    def step(self, **delta: float) -> datetime:
        """Set the wall clock by ``delta`` (either way); the monotonic clock keeps time."""
        self._wall += timedelta(**delta)
        return self._wall

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._pass(seconds)
        await asyncio.sleep(0)

    def _pass(self, seconds: float) -> None:
        # Exact on the monotonic clock, which an event loop's timers are kept on (a
        # timedelta would round a timer's last microsecond away, and the loop would never
        # get there).
        self._monotonic += seconds
        self._wall += timedelta(seconds=seconds)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """``asyncio.run`` on this clock's time. A thread or a socket is waited for only
        while no timer is set: with one set, the clock jumps to it instead (a coroutine
        that waits on a thread with a timeout set would time out at once)."""
        with asyncio.Runner(loop_factory=lambda: _ClockedLoop(self)) as runner:
            return runner.run(main)


# Each turn of the clock's event loop takes this long, as on a real machine: code that
# sets a timer for "now plus a rounding error" would otherwise find
# the clock standing still, and never get its turn.
LOOP_TURN = 1e-6


class _InstantSelector(selectors.DefaultSelector):
    """Answers at once when nothing is ready: the loop asked to wait ``timeout`` seconds
    for its next timer, so the clock moves that far instead."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if not ready and timeout is None:  # no timer: only a thread or a socket can wake it
            ready = super().select(None)
        self._clock._pass(LOOP_TURN if ready or timeout is None else max(timeout, LOOP_TURN))
        return ready


class _ClockedLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__(_InstantSelector(clock))
        self._clock = clock

    def time(self) -> float:
        return self._clock.monotonic()


# -- a webhook receiver ----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]


TOGETHER_WITHIN = 8.0  # seconds; below the sender's 10 s timeout, so the 500 is seen


class Receiver:
    """A webhook endpoint on loopback that records every request.

    It answers 500 to the next ``failures`` requests (to every one while ``broken``),
    ``status`` (204 unless told) otherwise, with ``headers``; ``down()`` closes its port
    (connections are refused) and ``up()`` opens the same port again.

    Receivers given one ``together`` barrier answer only once each of them holds a
    request: a sender that posts to them one after another never gets them all there, so
    the barrier breaks (after ``TOGETHER_WITHIN`` seconds) and they answer 500.
    """

    def __init__(
        self,
        *,
        failures: int = 0,
        broken: bool = False,
        delay: float = 0.0,
        status: int = 204,
        headers: dict[str, str] | None = None,
        together: threading.Barrier | None = None,
    ) -> None:
        self.failures = failures
        self.broken = broken
        self.delay = delay  # seconds before each answer: a slow receiver
        self.status = status
        self.headers = headers or {}
        self.together = together
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def _answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        # A slow receiver, as the sender sees it: a wait on an event nobody sets, so that
        # taking the receiver down ends it.
        threading.Event().wait(self.delay)
        apart = False
        if self.together is not None:
            try:
                self.together.wait(TOGETHER_WITHIN)
            except threading.BrokenBarrierError:
                apart = True
        with self._lock:
            status = self.status
            if self.broken or self.failures > 0 or apart:
                status = 500
                self.failures = max(0, self.failures - 1)
            self.requests.append(Received(path, headers, body, status))
            return status

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                status = receiver._answer(self.path, headers, body)
                self.send_response(status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def down(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = self._thread = None
