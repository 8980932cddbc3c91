"""A real HTTP server on loopback in front of a ``SimulatedProvider``.

Standard library only (``ThreadingHTTPServer``): one thread per connection, keep-alive,
so a client with ``max_concurrency`` connections really has that many calls in flight.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

from syncd.simulator.provider import SimulatedProvider
from syncd.simulator.wire import Reply

PATH = "/api/v2"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the client's
    # delayed ACK would add about 40 ms to every reply.
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        if self.path.split("?")[0] != PATH:
            self._send(Reply(404, b"<html><title>404 Not Found</title></html>"))
            return
        form = dict(parse_qsl(body, keep_blank_values=True))
        provider = self.server.provider
        provider.enter()
        try:
            reply = provider.admit(form)  # a 429 when past a limit, at once
            if reply is None:
                if delay := provider.delay(form):
                    time.sleep(delay)
                reply = provider.handle(form)
        finally:
            provider.leave()
        self._send(reply)

    def do_GET(self) -> None:
        self._send(Reply(405, b"API v2 takes POST requests\n", {"allow": "POST"}))

    def _send(self, reply: Reply) -> None:
        if reply.hang:
            self.server.stopping.wait()  # until the server stops; the client times out first
            self.close_connection = True
            return
        if reply.reset:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(reply.body)))
        self.end_headers()
        if reply.drip:
            self._drip(reply.body)
        else:
            self.wfile.write(reply.body)

    def _drip(self, body: bytes) -> None:
        """One byte per ``drip_interval``: each of the client's reads gets data in time,
        so only a deadline on the whole call ends its wait. Stops as soon as the server
        stops, and within one interval of the client hanging up."""
        for offset in range(len(body)):
            if self.server.stopping.wait(self.server.provider.drip_interval) or self._gone():
                self.close_connection = True
                return
            self.wfile.write(body[offset : offset + 1])

    def _gone(self) -> bool:
        """Whether the client closed its end (its socket reads as end of file). Writing
        alone would notice only at the second byte after, one interval later."""
        connection: socket.socket = self.connection
        readable, _, _ = select.select([connection], [], [], 0)
        if not readable:
            return False
        try:
            return connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, provider: SimulatedProvider, port: int) -> None:
        self.provider = provider
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (it timed out, or was killed) is normal here, not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class SimulatorServer:
    """Serves a simulated provider on ``127.0.0.1`` until ``stop()`` (or ``with`` exit)."""

    def __init__(self, provider: SimulatedProvider | None = None, *, port: int = 0) -> None:
        self.provider = provider or SimulatedProvider()
        self._server = _Server(self.provider, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
