"""Sending one provider's calls: HTTP, retries, pacing and the provider's health.

A *call* is one action asked of the provider (one ``packages``, one ``status`` of up to 100
orders, one ``add``...); it takes one or more *attempts*, each one HTTP exchange. What an
answer means is ``verdicts.classify()``'s to say; this module only gets it and acts on it:
every transport failure becomes a ``ProviderError`` of ``syncd.errors`` here, every answer
becomes one through its verdict.

Read actions are retried on transient errors (honouring ``Retry-After``); a call that is
not idempotent (``add``, a refill or a cancel) is retried only when it surely never
reached the provider, so nothing is asked twice.

The provider's ``timeout`` bounds every attempt as a whole, from connect to the last byte
of the reply. httpx's own timeouts (kept too) bound each network read alone, so a provider
that trickles its reply a byte at a time would hold a job for as long as it keeps
trickling. A call therefore takes at most ``attempts * timeout`` plus the waits between
attempts: a backoff of at most 1.5 s and then 2 s.

Every attempt first waits for its turn in the provider's ``Pace`` (``requests_per_minute``,
the action's own limit, and the pauses its 429s ask for, in every process). A 429 is no
failed attempt: the call waits as the provider asks and sends again, up to
``max_retry_after`` seconds of such waits in all; past that it raises ``RateLimitedError``
and the job defers its work to the next pass.
Each 429 is told to the observer as it comes, so that a provider answering nothing but
429s for long is seen (``jobs.health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import stamina
import structlog

from syncd.deadlines import RETRY_JITTER, RETRY_WAIT, longest_call
from syncd.errors import (
    JobError,
    MalformedReplyError,
    ProviderError,
    RateLimitedError,
    TransientError,
)
from syncd.provider.pace import Pace, RunNote
from syncd.provider.verdicts import classify
from syncd.secret import Scrubber, Secret

MAX_REPLY_BYTES: Final = 32 * 1024 * 1024  # a 10,000-service catalog is about 3 MB
# Every other reply (a balance, an order id, the statuses of 100 orders: a few tens of
# KB) has a smaller cap: a 32 MB JSON reply costs about 200 MB of memory to decode.
MAX_SMALL_REPLY_BYTES: Final = 4 * 1024 * 1024
USER_AGENT: Final = "syncd/0.1"
log = structlog.get_logger("syncd.provider")
# Told the outcome of every call, after its retries, and of every 429 as it comes (a
# ``RateLimitedError``): the provider's health is kept from them.
Observer = Callable[[str, ProviderError | None], Awaitable[None]]
# Told of every attempt: (action, HTTP status or "timeout" / "network", seconds).
AttemptHook = Callable[[str, str, float], None]
# The trace events httpcore reports before an attempt's first byte leaves: opening the
# connection (connection.connect_tcp, .connect_unix_socket, .start_tls, .retry) and
# HTTP/2's connection preface. The next one is http11 or http2.send_request_headers.started;
# any event not listed here counts as sending, the safe side for an add.
_BEFORE_SENDING: Final = ("connection.", "http2.send_connection_init.")


class Transport:
    """Sends the calls of one provider, ``key_field`` carrying the token in each body
    (never in a URL or a header, so nothing else ever logs it)."""

    def __init__(
        self,
        *,
        name: str,
        url: str,
        token: Secret,
        key_field: str,
        scrubber: Scrubber,
        timeout: float,
        http: httpx.AsyncClient | None,
        attempts: int,
        max_retry_after: float,
        max_reply_bytes: int,
        max_connections: int,
        observer: Observer | None,
        pace: Pace,
        on_attempt: AttemptHook | None,
        actions: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.pace = pace
        self._actions = dict(actions or {})  # the wire's action names to syncd's (limits)
        self._token = token
        self._key_field = key_field
        self._scrubber = scrubber
        self._timeout = timeout
        self._attempts = attempts
        self._max_retry_after = max_retry_after
        self._max_reply_bytes = max_reply_bytes
        self._max_connections = max_connections
        self._observer = observer
        self._on_attempt = on_attempt
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(
            follow_redirects=False,  # the token is in the body: never replay it elsewhere
            timeout=timeout,
            limits=httpx.Limits(max_connections=max_connections),
            headers={"User-Agent": USER_AGENT},
        )

    @property
    def longest_pause(self) -> float:
        """The longest a call waits for 429 pauses in all (``max_retry_after``)."""
        return self._max_retry_after

    def longest_call(self) -> float:
        """Seconds one call may take at the most, every wait included (``deadlines``)."""
        return longest_call(
            timeout=self._timeout,
            spacing=self.pace.slowest,
            concurrency=self._max_connections,
            attempts=self._attempts,
            pauses=self._max_retry_after,
        )

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def call(
        self,
        action: str,
        fields: Mapping[str, str] | None = None,
        *,
        idempotent: bool = True,
        observe_success: bool = True,
        large: bool = False,
        waits_out_429: bool = True,
    ) -> tuple[object, bytes]:
        """One call: its OK reply, decoded, and the bytes it came in.

        ``idempotent``: it may be sent again after it may have reached the provider.
        ``observe_success``: a success is reported to the observer here (a caller that
        still reads the reply reports it itself, with ``observe``). ``large``: the reply
        may be as large as a catalog. ``waits_out_429``: a 429 is waited out, as long as a
        call may wait; without, the first 429 raises ``RateLimitedError``."""

        def should_retry(exc: Exception) -> bool:
            if not isinstance(exc, TransientError) or isinstance(exc, RateLimitedError):
                return False  # a 429 was waited for already, as long as a call may
            return not (exc.maybe_processed and not idempotent)

        cap = self._max_reply_bytes if large else min(self._max_reply_bytes, MAX_SMALL_REPLY_BYTES)
        data = {self._key_field: self._token.reveal(), "action": action, **(fields or {})}
        attempt = _Attempt(action, data, cap, waits_out_429)
        try:
            answer = await self._attempts_of(attempt, should_retry)
        except RateLimitedError:
            raise  # each 429 was told as it came (``_paced``); a pause unwaited is no answer
        except ProviderError as exc:
            await self.observe(action, exc)
            raise
        if observe_success:
            await self.observe(action, None)
        return answer

    async def observe(self, action: str, error: ProviderError | None) -> None:
        """Report the outcome to the provider's health; a failure to record it must never
        cost the reply (an accepted order's id above all).

        The observer's write has finished, one way or the other, when it raises: the line
        logged then is about the provider's health and nothing else. What the call
        brought (an order's id, statuses) is the caller's to record, and its own line
        says if that fails (``order.outcome_unrecorded``)."""
        if self._observer is None:
            return
        try:
            await self._observer(action, error)
        except JobError as exc:
            log.warning(
                "provider.health_unrecorded",
                provider=self.name,
                action=action,
                call="answered" if error is None else "failed",
                error=exc.detail,
                note="the reply is handled as usual; the provider's next call records its health",
            )

    async def _attempts_of(
        self, attempt: _Attempt, should_retry: Callable[[Exception], bool]
    ) -> tuple[object, bytes]:
        # The first attempt runs on its own: nearly every call succeeds at once, and setting
        # up a retry context costs more than the rest of syncd's own work on a call. A
        # first failure worth retrying is handed to stamina as the failure of its first
        # attempt, so the waits, the count of attempts, testing mode and the retry hooks
        # are stamina's, exactly as if it had made that attempt itself.
        try:
            return await self._paced(attempt)
        except Exception as exc:
            if not should_retry(exc):
                raise
            first: Exception | None = exc
        tries = 0
        try:
            async for retry in stamina.retry_context(
                on=should_retry,
                attempts=self._attempts,
                timeout=None,
                wait_initial=0.5,
                wait_max=RETRY_WAIT,
                wait_jitter=RETRY_JITTER,
            ):
                with retry:
                    tries = retry.num
                    if first is not None:
                        failed, first = first, None
                        raise failed
                    return await self._paced(attempt)
        except TransientError as exc:
            if tries > 1:
                raise TransientError(
                    self.name,
                    f"{exc.detail} (after {tries} attempts)",
                    maybe_processed=exc.maybe_processed,
                    retry_after=exc.retry_after,
                    answered=exc.answered,
                ) from None
            raise
        raise AssertionError("unreachable: retry_context raises after the last attempt")

    async def _paced(self, attempt: _Attempt) -> tuple[object, bytes]:
        """One attempt in its turn; the 429s on the way are waited for, not counted, up
        to ``max_retry_after`` of waiting in all (unless the call waits out none)."""
        left = self._max_retry_after
        while True:
            before = self.pace.now()
            await self.pace.turn(left, self._actions.get(attempt.action, attempt.action))
            left -= self.pace.now() - before
            try:
                answer = await self._post(attempt)
            except RateLimitedError as exc:
                pause = await self.pace.slow_down(exc.retry_after)
                self._log_429(self.pace.run.limited(self.pace.now()), attempt.action, pause)
                # Every 429 is told as it comes, whatever the call does next: a provider
                # that answers nothing else for long is throttled (a banned key). It is no
                # failed call; the call's own outcome is told when it ends, unless that is
                # this 429 again.
                await self.observe(attempt.action, exc)
                if not attempt.waits_out_429:
                    raise
                if pause > left:
                    waited = self._max_retry_after - left
                    raise RateLimitedError(
                        self.name,
                        f"{exc.detail}: more than a call waits (it waited {waited:.0f}s of "
                        f"{self._max_retry_after:.0f}s); the next pass tries again",
                        retry_after=exc.retry_after,
                    ) from None
                continue
            except ProviderError:
                await self._answered("failed")
                raise
            await self._answered("answered")
            return answer

    def _log_429(self, note: RunNote, action: str, pause: float) -> None:
        """A 429: the first of a run at info, then one summary a minute (``RateLimitRun``);
        the others at debug, so that ``-v`` still shows each one."""
        fields = {"provider": self.name, "action": action, "pause": pause}
        if note.kind == "started":
            log.info(
                "provider.rate_limited",
                **fields,
                note="the next 429s in a row are summed up once a minute until it answers",
            )
        elif note.loud:
            log.info(
                "provider.still_rate_limited",
                **fields,
                count=note.count,
                seconds=round(note.seconds),
            )
        else:
            log.debug("provider.rate_limited", **fields, count=note.count)

    async def _answered(self, outcome: str) -> None:
        """An attempt that ended other than in a 429 ends a run of them, if one ran."""
        await self.pace.answered()
        note = self.pace.run.answered(self.pace.now())
        if note is not None:
            log.info(
                "provider.rate_limit_over",
                provider=self.name,
                attempt=outcome,
                count=note.count,
                seconds=round(note.seconds),
                summary=(
                    f"answers again after {note.count} 429s over {note.seconds:.0f}s"
                    if outcome == "answered"
                    else f"no more 429s after {note.count} over {note.seconds:.0f}s, "
                    "though the next attempt failed otherwise"
                ),
            )

    async def _post(self, attempt: _Attempt) -> tuple[object, bytes]:
        """One attempt, bounded as a whole by ``timeout``."""
        progress = _Progress()
        if (watching := _WATCHED.get()) is not None:
            watching.append(progress)
        started, code = time.monotonic(), "network"
        try:
            async with asyncio.timeout(self._timeout):
                response, body = await self._exchange(attempt.data, progress, attempt.cap)
            code = str(response.status_code)
        except TimeoutError:
            code = "timeout"
            raise self._transient(
                f"no reply within {self._timeout:g}s", sent=progress.sending
            ) from None
        finally:
            if self._on_attempt is not None:
                self._on_attempt(attempt.action, code, time.monotonic() - started)
        verdict = classify(
            response.status_code, response.headers, body, now=datetime.now(UTC),
            scrub=self._scrubber.scrub,
        )  # fmt: skip
        return verdict.raise_for(self.name), body

    async def _exchange(
        self, data: dict[str, str], progress: _Progress, cap: int
    ) -> tuple[httpx.Response, bytes]:
        """The attempt's HTTP exchange and its whole reply; httpx's failures become
        provider errors."""
        try:
            async with self._http.stream(
                "POST", self.url, data=data, extensions={"trace": progress.trace}
            ) as response:
                progress.sending = True  # an answer arrived, so the attempt did
                return response, await self._read(response, cap)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise self._transient(f"cannot connect: {_reason(exc)}", sent=False) from None
        except httpx.TimeoutException:
            raise self._transient(f"no reply within {self._timeout:g}s", sent=True) from None
        except httpx.TransportError as exc:
            raise self._transient(f"connection broken: {_reason(exc)}", sent=True) from None
        except httpx.DecodingError as exc:  # e.g. a body that claims gzip and is not
            raise MalformedReplyError(
                self.name, f"reply cannot be decoded: {_reason(exc)}"
            ) from None
        except httpx.HTTPError as exc:  # anything else httpx has: the attempt may have left
            raise self._transient(f"request failed: {_reason(exc)}", sent=True) from None

    async def _read(self, response: httpx.Response, cap: int) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise MalformedReplyError(self.name, f"reply of {declared} bytes exceeds the cap")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise MalformedReplyError(self.name, f"reply larger than {cap} bytes; not read")
            chunks.append(chunk)
        return b"".join(chunks)

    def _transient(self, message: str, *, sent: bool) -> TransientError:
        """A failure with no answer from the provider: the network's or a deadline's."""
        return TransientError(self.name, message, maybe_processed=sent, answered=False)


class _Attempt:
    """What every attempt of one call sends, and how."""

    __slots__ = ("action", "cap", "data", "waits_out_429")

    def __init__(self, action: str, data: dict[str, str], cap: int, waits_out_429: bool) -> None:
        self.action = action
        self.data = data  # the form, token included
        self.cap = cap  # the largest reply read
        self.waits_out_429 = waits_out_429


class _Progress:
    """How far one attempt got, from httpcore's ``trace`` request extension: whether its
    bytes began to leave. A deadline striking before that leaves the attempt surely
    unsent (an add may go again); after it, the provider may have it."""

    def __init__(self) -> None:
        self.sending = False

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        if not event.startswith(_BEFORE_SENDING):
            self.sending = True


# The attempts of the calls made in a ``watch_attempts()`` block: whether any began to
# send, for a caller stopped (cancelled) while a call waited for its turn.
_WATCHED: ContextVar[list[_Progress] | None] = ContextVar("syncd_watched", default=None)


@contextlib.contextmanager
def watch_attempts() -> Iterator[Callable[[], bool]]:
    """Within the block, the calls' attempts are noted; the function it gives tells
    whether any of them began to send (False: the provider surely got nothing)."""
    seen: list[_Progress] = []
    token = _WATCHED.set(seen)
    try:
        yield lambda: any(p.sending for p in seen)
    finally:
        _WATCHED.reset(token)


def _reason(exc: httpx.HTTPError) -> str:
    return str(exc) or type(exc).__name__
