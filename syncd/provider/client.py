"""Async client for one API v2 provider.

One ``_request()`` turns every transport failure, HTTP status and error body into the
``ProviderError`` tree of ``syncd.errors``; replies become typed models at this boundary.
Read actions are retried on transient errors (honouring ``Retry-After``); ``add`` is retried
only when the request surely never reached the provider, so an order is never sent twice.

The provider's ``timeout`` bounds every attempt as a whole, from connect to the last byte
of the reply. httpx's own timeouts (kept too) bound each network read alone, so a provider
that trickles its reply a byte at a time would hold a job for as long as it keeps
trickling. A call therefore takes at most ``attempts * timeout`` plus the waits between
attempts: a backoff of at most 1.5 s and then 2 s.

Every request first waits for its turn in the provider's ``Pace`` (``requests_per_minute``,
and the pauses its 429s ask for). A 429 is no failed attempt: the call waits as the
provider asks and sends again, up to ``max_retry_after`` seconds of such waits in all;
past that it raises ``RateLimitedError`` and the job defers its work to the next pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import httpx
import stamina
import structlog

from syncd.deadlines import ATTEMPTS, PAUSES_PER_TRY, RETRY_JITTER, RETRY_WAIT, longest_call
from syncd.errors import (
    JobError,
    MalformedReplyError,
    ProviderError,
    RateLimitedError,
    RefusedError,
    TransientError,
    UserError,
)
from syncd.models import (
    Answer,
    Balance,
    Catalog,
    CatalogReply,
    OrderLookupError,
    OrderStatus,
    Package,
    RefillAnswer,
    RequestAnswer,
    RequestKind,
    RequestRefused,
)
from syncd.provider import replies
from syncd.provider.dialects import Dialect
from syncd.provider.pace import Pace
from syncd.provider.urls import provider_url_problem
from syncd.provider.verdicts import MESSAGE_LIMIT, classify, one_line
from syncd.secret import Scrubber, Secret

MAX_REPLY_BYTES: Final = 32 * 1024 * 1024  # a 10,000-service catalog is about 3 MB
# Every other reply (a balance, an order id, the statuses of 100 orders: a few tens of
# KB) has a smaller cap: a 32 MB JSON reply costs about 200 MB of memory to decode.
MAX_SMALL_REPLY_BYTES: Final = 4 * 1024 * 1024
MAX_IDS_PER_CALL: Final = 100  # more ids in one call can fail the whole call
USER_AGENT: Final = "syncd/0.1"
T = TypeVar("T")
log = structlog.get_logger("syncd.provider")
# Told the outcome of every call, after its retries: the provider's health is kept from it.
Observer = Callable[[str, ProviderError | None], Awaitable[None]]
# The trace events httpcore reports before a request's first byte leaves: opening the
# connection (connection.connect_tcp, .connect_unix_socket, .start_tls, .retry) and
# HTTP/2's connection preface. The next one is http11 or http2.send_request_headers.started;
# any event not listed here counts as sending, the safe side for an add.
_BEFORE_SENDING: Final = ("connection.", "http2.send_connection_init.")


class ProviderClient:
    """Speaks API v2 to one provider. The token is only ever put into request bodies.

    ``timeout`` bounds each attempt from connect to the last byte of the reply; a call
    takes at most ``attempts * timeout`` plus the waits between its attempts.
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        token: Secret,
        dialect: Dialect,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
        attempts: int = ATTEMPTS,
        max_retry_after: float = PAUSES_PER_TRY,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        max_connections: int = 8,
        observer: Observer | None = None,
        pace: Pace | None = None,
        on_request: Callable[[str, str, float], None] | None = None,
    ) -> None:
        if (why := provider_url_problem(url)) is not None:
            raise UserError(f"provider {name}: url {why}")
        self.name = name
        self.url = url
        self.dialect = dialect
        self._token = token
        self._scrubber = Scrubber([token])  # compiled once: every error text passes it
        self._timeout = timeout
        self._attempts = attempts
        self._max_retry_after = max_retry_after
        self._max_reply_bytes = max_reply_bytes
        self._observer = observer
        self._max_connections = max_connections
        self.pace = pace or Pace(name)
        # Told of every request: (action, HTTP status or "timeout" / "network", seconds).
        self._on_request = on_request
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
            spacing=self.pace.spacing,
            concurrency=self._max_connections,
            attempts=self._attempts,
            pauses=self._max_retry_after,
        )

    def __repr__(self) -> str:
        return (
            f"ProviderClient(name={self.name!r}, url={self.url!r}, dialect={self.dialect.name!r})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # -- the four actions ----------------------------------------------------------------

    async def packages(self) -> Catalog:
        """The catalog; entries that cannot be read are listed in ``skipped``."""
        return self.read_catalog(await self.catalog_reply())

    async def catalog_reply(self) -> CatalogReply:
        """The catalog reply, decoded but not read yet, with a digest of its bytes: a reply
        the same as the last one applied need not be read again."""
        reply = await self._request(self.dialect.list_action)
        assert isinstance(reply, CatalogReply)
        return reply

    def read_catalog(self, reply: CatalogReply) -> Catalog:
        """The packages of a catalog reply (``packages`` in two steps)."""
        catalog = self._parse(replies.parse_packages, reply.value)
        skipped = [replace(s, reason=self._clean(s.reason)) for s in catalog.skipped]
        return Catalog([self._scrubbed(p) for p in catalog.packages], skipped)

    async def balance(self) -> Balance:
        reply = await self._request("balance")
        return self._parse(replies.parse_balance, reply)

    async def status(self, order_id: int) -> OrderStatus:
        reply = await self._request("status", {"order": str(order_id)})
        return self._parse(lambda r: replies.parse_status(r, scrub=self._scrubber.scrub), reply)

    async def statuses(self, order_ids: Sequence[int]) -> dict[int, Answer]:
        """One multi-status call. Orders absent from the reply are absent from the result."""
        if not 0 < len(order_ids) <= MAX_IDS_PER_CALL:
            raise ValueError(f"a status call takes 1..{MAX_IDS_PER_CALL} ids, not {len(order_ids)}")
        ids = list(order_ids)
        reply = await self._request("status", {"orders": ",".join(map(str, ids))})
        # The token is scrubbed out of each status text and message as it is read.
        return self._parse(
            lambda r: replies.parse_statuses(r, ids, scrub=self._scrubber.scrub, clean=self._clean),
            reply,
        )

    async def add(
        self, *, package: int, link: str, quantity: int, custom_data: str | None = None
    ) -> int:
        """Submit one order and return the provider's order id. Never retried once sent."""
        fields = {self.dialect.package_field: str(package), "link": link, "quantity": str(quantity)}
        if custom_data is not None:
            fields[self.dialect.comments_field] = custom_data
        reply = await self._request("add", fields, idempotent=False, observe_success=False)
        try:
            order_id = self._parse(replies.parse_order_id, reply)
        except MalformedReplyError as exc:
            await self._observe("add", exc)
            raise
        # Logged before anything else can wait (recording the provider's health may meet a
        # locked database, and a shutdown may cancel the job there): whatever happens to
        # this process next, the provider's id for the order is on record.
        log.info("provider.order_taken", provider=self.name, provider_order_id=order_id)
        await self._observe("add", None)
        return order_id

    # -- refill and cancel (where the dialect offers them) --------------------------------

    async def refill(self, order_ids: Sequence[int]) -> dict[int, RequestAnswer]:
        """Ask for a refill of each order: one call. Never retried once it may have been
        sent (a second request would be a second refill). Orders the reply leaves out are
        absent from the result: the provider may or may not have taken them."""
        return await self._ask(RequestKind.REFILL, order_ids)

    async def cancel(self, order_ids: Sequence[int]) -> dict[int, RequestAnswer]:
        """Ask to cancel each order: one call, like ``refill``."""
        return await self._ask(RequestKind.CANCEL, order_ids)

    async def refill_statuses(self, refill_ids: Sequence[int]) -> dict[int, RefillAnswer]:
        """The status of each refill: one call, retried like every read."""
        ids = self._batch("refill_status", refill_ids)
        if len(ids) == 1:
            try:
                reply = await self._request("refill_status", {"refill": str(ids[0])})
            except RefusedError as exc:  # {"error": "Refill not found"}: about this refill
                return {ids[0]: OrderLookupError(exc.detail)}
            return {ids[0]: replies.parse_refill_status(reply, scrub=self._scrubber.scrub)}
        reply = await self._request("refill_status", {"refills": ",".join(map(str, ids))})
        return self._parse(
            lambda r: replies.parse_refill_statuses(
                r, ids, scrub=self._scrubber.scrub, clean=self._clean
            ),
            reply,
        )

    async def _ask(self, kind: RequestKind, order_ids: Sequence[int]) -> dict[int, RequestAnswer]:
        ids = self._batch(kind.value, order_ids)
        if kind is RequestKind.REFILL and len(ids) == 1:
            # One order goes as `order`, the form every panel of the dialect takes.
            try:
                reply = await self._request("refill", {"order": str(ids[0])}, idempotent=False)
            except RefusedError as exc:  # "Order not eligible for refill.": this order's
                return {ids[0]: RequestRefused(exc.detail)}
            return {ids[0]: replies.parse_request(reply, kind)}
        reply = await self._request(
            kind.value, {"orders": ",".join(map(str, ids))}, idempotent=False
        )
        return self._parse(lambda r: replies.parse_requests(r, ids, kind, clean=self._clean), reply)

    def _batch(self, action: str, ids: Sequence[int]) -> list[int]:
        if action not in self.dialect.offers:
            raise UserError(
                f"provider {self.name}: the {self.dialect.name} dialect offers no {action}; "
                "nothing was sent"
            )
        if not 0 < len(ids) <= MAX_IDS_PER_CALL:
            raise ValueError(f"a {action} call takes 1..{MAX_IDS_PER_CALL} ids, not {len(ids)}")
        return list(ids)

    # -- one request ---------------------------------------------------------------------

    async def _request(
        self,
        action: str,
        fields: dict[str, str] | None = None,
        *,
        idempotent: bool = True,
        observe_success: bool = True,
    ) -> object:
        def should_retry(exc: Exception) -> bool:
            if not isinstance(exc, TransientError) or isinstance(exc, RateLimitedError):
                return False  # a 429 was waited for already, as long as a call may
            return not (exc.maybe_processed and not idempotent)

        try:
            reply = await self._attempts_of(action, fields, should_retry)
        except RateLimitedError:
            raise  # the provider answered: no failure of its health, nor a success
        except ProviderError as exc:
            await self._observe(action, exc)
            raise
        if observe_success:
            await self._observe(action, None)
        return reply

    async def _observe(self, action: str, error: ProviderError | None) -> None:
        """Report the outcome; a failure to record it must never cost the reply (an
        accepted order's id above all)."""
        if self._observer is None:
            return
        try:
            await self._observer(action, error)
        except JobError as exc:
            log.warning("provider.outcome_unrecorded", provider=self.name, error=str(exc))

    async def _attempts_of(
        self,
        action: str,
        fields: dict[str, str] | None,
        should_retry: Callable[[Exception], bool],
    ) -> object:
        fields = fields or {}
        # The first attempt runs on its own: nearly every call succeeds at once, and setting
        # up a retry context costs more than the rest of syncd's own work on a request. A
        # first failure worth retrying is handed to stamina as the failure of its first
        # attempt, so the waits, the count of attempts, testing mode and the retry hooks
        # are stamina's, exactly as if it had made that attempt itself.
        try:
            return await self._paced(action, fields)
        except Exception as exc:
            if not should_retry(exc):
                raise
            first: Exception | None = exc
        tries = 0
        try:
            async for attempt in stamina.retry_context(
                on=should_retry,
                attempts=self._attempts,
                timeout=None,
                wait_initial=0.5,
                wait_max=RETRY_WAIT,
                wait_jitter=RETRY_JITTER,
            ):
                with attempt:
                    tries = attempt.num
                    if first is not None:
                        failed, first = first, None
                        raise failed
                    return await self._paced(action, fields)
        except TransientError as exc:
            if tries > 1:
                raise TransientError(
                    self.name,
                    f"{exc.detail} (after {tries} attempts)",
                    maybe_processed=exc.maybe_processed,
                    retry_after=exc.retry_after,
                ) from None
            raise
        raise AssertionError("unreachable: retry_context raises after the last attempt")

    async def _paced(self, action: str, fields: dict[str, str]) -> object:
        """One attempt in its turn; the 429s on the way are waited for, not counted, up
        to ``max_retry_after`` of waiting in all. An ``add`` never waits out a 429: its
        order is claimed while it waits, and is better back in the queue."""
        left = self._max_retry_after
        while True:
            before = self.pace.now()
            await self.pace.turn(left)
            left -= self.pace.now() - before
            try:
                reply = await self._post(action, fields)
            except RateLimitedError as exc:
                pause = self.pace.slow_down(exc.retry_after)
                log.info("provider.rate_limited", provider=self.name, action=action, pause=pause)
                if action == "add" or pause > left:
                    waited = self._max_retry_after - left
                    raise RateLimitedError(
                        self.name,
                        f"{exc.detail}: more than a call waits (it waited {waited:.0f}s of "
                        f"{self._max_retry_after:.0f}s); the next pass tries again"
                        if action != "add"
                        else f"{exc.detail}; the order goes back to the queue",
                        retry_after=exc.retry_after,
                    ) from None
                continue
            except ProviderError:
                self.pace.answered()
                raise
            self.pace.answered()
            return reply

    async def _post(self, action: str, fields: dict[str, str]) -> object:
        """One attempt, bounded as a whole by ``timeout``."""
        data = {self.dialect.key_field: self._token.reveal(), "action": action, **fields}
        progress = _Progress()
        if (watching := _WATCHED.get()) is not None:
            watching.append(progress)
        started, code = time.monotonic(), "network"
        try:
            async with asyncio.timeout(self._timeout):
                response, body = await self._exchange(data, progress, self._cap(action))
            code = str(response.status_code)
        except TimeoutError:
            code = "timeout"
            raise self._transient(
                f"no reply within {self._timeout:g}s", sent=progress.sending
            ) from None
        finally:
            if self._on_request is not None:
                self._on_request(action, code, time.monotonic() - started)
        reply = self._decode(response, body)
        if action == self.dialect.list_action:
            return CatalogReply(reply, self._digest(body))
        return reply

    def _digest(self, body: bytes) -> str:
        """A digest of a reply, keyed with the token: a reply that echoes the token must
        not let anyone who reads the database test guesses of it against the digest."""
        key = hashlib.sha256(self._token.reveal().encode()).digest()
        return hashlib.blake2b(body, digest_size=16, key=key).hexdigest()

    def _cap(self, action: str) -> int:
        """The largest reply read for ``action``."""
        if action == self.dialect.list_action:
            return self._max_reply_bytes
        return min(self._max_reply_bytes, MAX_SMALL_REPLY_BYTES)

    async def _exchange(
        self, data: dict[str, str], progress: _Progress, cap: int
    ) -> tuple[httpx.Response, bytes]:
        """The request and its whole reply; httpx's failures become provider errors."""
        try:
            async with self._http.stream(
                "POST", self.url, data=data, extensions={"trace": progress.trace}
            ) as response:
                progress.sending = True  # an answer arrived, so the request did
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
        except httpx.HTTPError as exc:  # anything else httpx has: the request may have left
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

    def _decode(self, response: httpx.Response, body: bytes) -> object:
        verdict = classify(
            response.status_code, response.headers, body, now=datetime.now(UTC),
            scrub=self._scrubber.scrub,
        )  # fmt: skip
        return verdict.raise_for(self.name)

    def _parse(self, parse: Callable[[object], T], reply: object) -> T:
        try:
            return parse(reply)
        except replies.ReplyShapeError as exc:
            raise MalformedReplyError(self.name, self._clean(str(exc))) from None

    # -- messages ------------------------------------------------------------------------

    def _scrubbed(self, package: Package) -> Package:
        """A package with the token scrubbed out of every text a provider could echo it
        into (names end up in the database, on terminals and in webhook payloads)."""
        texts = (package.name, package.type, package.category)
        if not package.extra and self._scrubber.holds_none("\n".join(texts)):
            return package  # nearly every package: one look instead of three
        name, kind, category = (self._scrubber.scrub(text) for text in texts)
        extra = self._scrubbed_json(package.extra)
        if (name, kind, category) == texts and extra == package.extra:
            return package
        return replace(package, name=name, type=kind, category=category, extra=extra)

    def _scrubbed_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._scrubber.scrub(value)
        if isinstance(value, dict):
            return {self._scrubber.scrub(k): self._scrubbed_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrubbed_json(v) for v in value]
        return value

    def _transient(self, message: str, *, sent: bool) -> TransientError:
        return TransientError(self.name, message, maybe_processed=sent)

    def _clean(self, text: str, *, limit: int = MESSAGE_LIMIT) -> str:
        return one_line(text, self._scrubber.scrub, limit=limit)


class _Progress:
    """How far one attempt got, from httpcore's ``trace`` request extension: whether its
    bytes began to leave. A deadline striking before that leaves the request surely
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


__all__ = ["ProviderClient", "ProviderError"]
