"""POSTs alert bodies: 10 s timeout, 2xx is delivered, redirects are not followed."""

from __future__ import annotations

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
            response = await self._http.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            return f"no answer within {self._timeout:g}s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return f"cannot deliver: {str(exc) or type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
