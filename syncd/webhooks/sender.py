"""POSTs alert bodies: 10 s for the whole request, 2xx is delivered, redirects are not
followed.

The deadline covers the request from connect to the answer's status line and headers;
httpx's own timeouts bound each network read alone, so a receiver that trickles its answer
a byte at a time would otherwise hold the alerts job for as long as it keeps trickling.
The answer's body is never read: only the status matters, and a slow or huge body must
not hold the job either.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import httpx

TIMEOUT = 10.0


class WebhookSender:
    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"User-Agent": "syncd/0.1"}
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
        await self._http.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """None when the receiver took it (2xx), else why not, in a few words."""
        try:
            async with asyncio.timeout(self._timeout):
                status = await self._status(url, body, headers)
        except (TimeoutError, httpx.TimeoutException):
            return f"no answer within {self._timeout:g}s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return f"cannot deliver: {str(exc) or type(exc).__name__}"
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"

    async def _status(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        async with self._http.stream("POST", url, content=body, headers=headers) as response:
            # Leaving unread closes the connection instead of waiting for the body.
            return response.status_code
