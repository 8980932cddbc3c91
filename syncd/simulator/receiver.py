"""A webhook receiver on loopback for the demo: it checks each alert's Standard Webhooks
signature and keeps what it got, so the demo can show alerts as they arrive."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from syncd.secret import Secret
from syncd.webhooks.payload import signature


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        expected = signature(
            self.server.secret,
            self.headers.get("webhook-id", ""),
            self.headers.get("webhook-timestamp", ""),
            body,
        )
        verified = self.headers.get("webhook-signature") == expected
        with self.server.lock:
            self.server.received.append((json.loads(body), verified))
        self.send_response(204 if verified else 401)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, secret: Secret) -> None:
        self.secret = secret
        self.received: list[tuple[dict[str, Any], bool]] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class WebhookReceiver:
    def __init__(self, secret: Secret) -> None:
        self._server = _Server(secret)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._seen = 0

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/syncd"

    def new(self) -> list[tuple[dict[str, Any], bool]]:
        """What arrived since the last call: (JSON body, signature verified)."""
        with self._server.lock:
            fresh = self._server.received[self._seen :]
            self._seen = len(self._server.received)
        return fresh

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
