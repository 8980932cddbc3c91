"""The API v2 actions of one provider, as typed calls.

Each action builds its form from the provider's ``Dialect``, has its call sent by the
``Transport`` (HTTP, retries, pacing, the provider's health) and reads the reply into
syncd's models with ``replies``. Everything a provider sends back passes the token's
scrubber on its way in, so no text read here can carry the token into the database, a
terminal, a log line or a webhook.

``add``, ``refill`` and ``cancel`` change the provider's state, so their calls are never
sent again once they may have reached it: an order is never placed twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import httpx
import structlog

from syncd.deadlines import ATTEMPTS, PAUSES_PER_TRY
from syncd.errors import (
    MalformedReplyError,
    ProviderError,
    RateLimitedError,
    RefusedError,
    UnansweredError,
    UserError,
)
from syncd.models import (
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
from syncd.provider.transport import (
    MAX_REPLY_BYTES,
    AttemptHook,
    Observer,
    Transport,
    watch_attempts,
)
from syncd.provider.urls import provider_url_problem
from syncd.provider.verdicts import MESSAGE_LIMIT, one_line
from syncd.secret import Scrubber, Secret

MAX_IDS_PER_CALL: Final = 100  # more ids in one call can fail the whole call
T = TypeVar("T")
log = structlog.get_logger("syncd.provider")


class ProviderClient:
    """Speaks API v2 to one provider. The token is only ever put into call bodies.

    ``timeout`` bounds each attempt from connect to the last byte of the reply; a call
    takes at most ``attempts * timeout`` plus the waits between its attempts.
    ``on_request`` is told of every attempt (action, HTTP status or "timeout" /
    "network", seconds): it feeds the ``syncd_provider_requests_total`` metric.
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
        on_request: AttemptHook | None = None,
    ) -> None:
        if (why := provider_url_problem(url)) is not None:
            raise UserError(f"provider {name}: url {why}")
        self.name = name
        self.url = url
        self.dialect = dialect
        self._token = token
        self._scrubber = Scrubber([token])  # compiled once: every error text passes it
        self._transport = Transport(
            name=name, url=url, token=token, key_field=dialect.key_field,
            scrubber=self._scrubber, timeout=timeout, http=http, attempts=attempts,
            max_retry_after=max_retry_after, max_reply_bytes=max_reply_bytes,
            max_connections=max_connections, observer=observer, pace=pace or Pace(name),
            on_attempt=on_request, actions=dialect.actions,
        )  # fmt: skip
        self.pace = self._transport.pace

    @property
    def longest_pause(self) -> float:
        """The longest a call waits for 429 pauses in all (``max_retry_after``)."""
        return self._transport.longest_pause

    def longest_call(self) -> float:
        """Seconds one call may take at the most, every wait included (``deadlines``)."""
        return self._transport.longest_call()

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
        await self._transport.aclose()

    # -- the four actions ----------------------------------------------------------------

    async def packages(self) -> Catalog:
        """The catalog; entries that cannot be read are listed in ``skipped``."""
        return self.read_catalog(await self.catalog_reply())

    async def catalog_reply(self) -> CatalogReply:
        """The catalog reply, decoded but not read yet, with a digest of its bytes: a reply
        the same as the last one applied need not be read again."""
        reply, body = await self._transport.call(self.dialect.list_action, large=True)
        return CatalogReply(reply, self._digest(body))

    def read_catalog(self, reply: CatalogReply) -> Catalog:
        """The packages of a catalog reply (``packages`` in two steps)."""
        catalog = self._parse(replies.parse_packages, reply.value)
        skipped = [replace(s, reason=self._clean(s.reason)) for s in catalog.skipped]
        return Catalog([self._scrubbed(p) for p in catalog.packages], skipped)

    async def balance(self) -> Balance:
        reply = await self._call("balance")
        balance = self._parse(replies.parse_balance, reply)
        if balance.currency_problem is None:
            return balance
        return replace(balance, currency_problem=self._clean(balance.currency_problem))

    async def status(self, order_id: int) -> OrderStatus:
        reply = await self._call("status", {"order": str(order_id)})
        return self._parse(lambda r: replies.parse_status(r, scrub=self._scrubber.scrub), reply)

    async def statuses(self, order_ids: Sequence[int]) -> replies.StatusAnswers:
        """One multi-status call. Orders absent from the reply are absent from the result.

        A reply that answers none of the orders asked (``replies.unanswered``) raises
        ``UnansweredError``. The call's outcome is reported to the provider's health once
        the reply is read: a reply that cannot be read, or answers nothing, is a failed
        call like any other."""
        ids = self._ids("status", order_ids)
        reply = await self._call(
            "status", {"orders": ",".join(map(str, ids))}, observe_success=False
        )
        try:
            # The token is scrubbed out of each status text and message as it is read.
            answers = self._parse(
                lambda r: replies.read_statuses(
                    r, ids, scrub=self._scrubber.scrub, clean=self._clean
                ),
                reply,
            )
            if (why := replies.unanswered(ids, answers)) is not None:
                raise UnansweredError(self.name, why)
        except MalformedReplyError as exc:
            await self._transport.observe("status", exc)
            raise
        await self._transport.observe("status", None)
        return answers

    async def add(
        self,
        *,
        package: int,
        link: str | None = None,
        quantity: int | None = None,
        custom_data: str | None = None,
        fields: Mapping[str, str] | None = None,
    ) -> int:
        """Submit one order and return the provider's order id. Never retried once sent.

        ``fields`` are the order's form fields as ``order_types.placement`` spelled them
        for this dialect (link, quantity, comments and what the order's type needs), sent
        as they are; without them, ``link``, ``quantity`` and ``custom_data`` make them."""
        if fields is None:
            fields = {}
            if link is not None:
                fields["link"] = link
            if quantity is not None:
                fields["quantity"] = str(quantity)
            if custom_data is not None:
                fields[self.dialect.comments_field] = custom_data
        elif link is not None or quantity is not None or custom_data is not None:
            raise ValueError("add takes fields, or link, quantity and custom_data: not both")
        reserved = {"action", self.dialect.key_field, self.dialect.package_field}
        if clash := reserved.intersection(fields):
            raise ValueError(f"add: {sorted(clash)[0]} is not an order's field")
        form = {self.dialect.package_field: str(package), **fields}
        try:
            reply, _ = await self._transport.call(
                "add", form, idempotent=False, observe_success=False, waits_out_429=False
            )
        except RateLimitedError as exc:
            # Its order is claimed while a call waits: it is better back in the queue than
            # waiting out the provider's pause.
            raise RateLimitedError(
                self.name,
                f"{exc.detail}; the order goes back to the queue",
                retry_after=exc.retry_after,
            ) from None
        try:
            order_id = self._parse(replies.parse_order_id, reply)
        except MalformedReplyError as exc:
            await self._transport.observe("add", exc)
            raise
        # Logged before anything else can wait (recording the provider's health may meet a
        # locked database, and a shutdown may cancel the job there): whatever happens to
        # this process next, the provider's id for the order is on record.
        log.info("provider.order_taken", provider=self.name, provider_order_id=order_id)
        await self._transport.observe("add", None)
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
                reply = await self._call("refill_status", {"refill": str(ids[0])})
            except RefusedError as exc:  # {"error": "Refill not found"}: about this refill
                return {ids[0]: OrderLookupError(exc.detail)}
            return {
                ids[0]: replies.parse_refill_status(
                    reply, ids[0], scrub=self._scrubber.scrub, clean=self._clean
                )
            }
        reply = await self._call("refill_status", {"refills": ",".join(map(str, ids))})
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
                reply = await self._call("refill", {"order": str(ids[0])}, idempotent=False)
            except RefusedError as exc:  # "Order not eligible for refill.": this order's
                return {ids[0]: RequestRefused(exc.detail)}
            return {ids[0]: replies.parse_request(reply, kind, ids[0], clean=self._clean)}
        reply = await self._call(kind.value, {"orders": ",".join(map(str, ids))}, idempotent=False)
        return self._parse(lambda r: replies.parse_requests(r, ids, kind, clean=self._clean), reply)

    def _batch(self, action: str, ids: Sequence[int]) -> list[int]:
        """The ids of one call of an optional action, which the dialect must offer."""
        if action not in self.dialect.offers:
            raise UserError(
                f"provider {self.name}: the {self.dialect.name} dialect offers no {action}; "
                "nothing was sent"
            )
        return self._ids(action, ids)

    @staticmethod
    def _ids(action: str, ids: Sequence[int]) -> list[int]:
        if not 0 < len(ids) <= MAX_IDS_PER_CALL:
            raise ValueError(f"a {action} call takes 1..{MAX_IDS_PER_CALL} ids, not {len(ids)}")
        return list(ids)

    # -- one call ------------------------------------------------------------------------

    async def _call(
        self,
        action: str,
        fields: dict[str, str] | None = None,
        *,
        idempotent: bool = True,
        observe_success: bool = True,
    ) -> object:
        """The reply of one call that is not the catalog (whose bytes are digested too)."""
        reply, _ = await self._transport.call(
            action, fields, idempotent=idempotent, observe_success=observe_success
        )
        return reply

    def _digest(self, body: bytes) -> str:
        """A digest of a reply, keyed with the token: a reply that echoes the token must
        not let anyone who reads the database test guesses of it against the digest."""
        key = hashlib.sha256(self._token.reveal().encode()).digest()
        return hashlib.blake2b(body, digest_size=16, key=key).hexdigest()

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

    def _clean(self, text: str, *, limit: int = MESSAGE_LIMIT) -> str:
        return one_line(text, self._scrubber.scrub, limit=limit)


# watch_attempts: the jobs that send an add know the client, not how it sends.
__all__ = ["ProviderClient", "ProviderError", "watch_attempts"]
