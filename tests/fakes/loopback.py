"""Serves a fake (a handler from ``httpx.Request`` to ``httpx.Response``) over real HTTP.

The fakes are written as ``httpx.MockTransport`` handlers, which the fast unit tests call in
process. ``LoopbackServer`` puts the same handler behind a real socket on ``127.0.0.1`` (a port
the OS picks), so end-to-end tests and other processes (``meterbridge worker``) reach it over
HTTP/1.1 with keep-alive, as they would reach the platform:

    with LoopbackServer(FakeLago(KEY)) as lago:
        settings = LagoSinkSettings(enabled=True, api_url=lago.url, ...)

``as_url`` rewrites each request's scheme and host before the handler sees it, for fakes that
route on the full URL (the fake m3ter serves ``https://api.m3ter.test`` and
``https://ingest.m3ter.test``: one server for each, on the same fake).

A handler that raises ``httpx.TimeoutException`` (a fake told to time out) becomes a real hang
here: no answer, until the client gives up and closes the connection (or ``hang_s`` passes).
``hold_next()`` parks the next request before the handler sees it, until the test releases it,
so a test can act (kill the client, say) while a request is known to be in flight.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

import httpx

Handler = Callable[[httpx.Request], httpx.Response]
_HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding"}
WAIT_S = 30.0  # the longest a held or hanging request waits


class Hold:
    """One request parked on its way to the handler: ``arrived`` is set when it is parked."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        """Let the request through to the handler (its client may be gone by then)."""
        self._released.set()

    def wait_released(self) -> None:
        self._released.wait(WAIT_S)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging request never keeps the test process alive
    block_on_close = False

    def __init__(self, loopback: LoopbackServer, port: int) -> None:
        self.loopback = loopback
        super().__init__(("127.0.0.1", port), _RequestHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client killed mid-request (the fault suite's SIGKILLs) is expected: no traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the platforms
    # Headers and body leave in separate writes: with Nagle's algorithm on, the body waits for
    # the client's delayed ACK of the headers, 40 ms per answer on Linux.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:  # the names http.server dispatches to
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        loopback = self.server.loopback
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if len(body) < length:  # the client died mid-request (a SIGKILL): as a real server,
            self.close_connection = True  # drop what never fully arrived, unanswered
            return
        request = httpx.Request(
            self.command,
            f"{loopback.as_url}{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() != "host"],
            content=body,
        )
        hold = loopback.take_hold()
        if hold is not None:
            hold.arrived.set()
            hold.wait_released()
        try:
            response = loopback.handler(request)
        except httpx.TimeoutException:
            self._hang()
            return
        content = response.read()
        with suppress(ConnectionError):  # the client died waiting (a killed worker, say)
            self.send_response(response.status_code)
            for name, value in response.headers.multi_items():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    def _hang(self) -> None:
        """No answer: wait until the client closes the connection, then drop it."""
        self.close_connection = True
        self.connection.settimeout(self.server.loopback.hang_s)
        with suppress(OSError):  # the hang ran out, or the client is already gone
            self.connection.recv(1)  # b"" when the client hangs up
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the fakes record what tests need."""


class LoopbackServer:
    """``handler`` served on ``url`` (``http://127.0.0.1:PORT``) by a thread, while in a
    ``with`` block (or between ``start()`` and ``stop()``)."""

    def __init__(
        self,
        handler: Handler,
        *,
        as_url: str | None = None,
        hang_s: float = WAIT_S,
        port: int = 0,
    ) -> None:
        """``port``: 0 lets the OS pick; a given one serves again where a stopped server was
        (a platform back after an outage, at the address the bridge was configured with)."""
        self.handler = handler
        self.hang_s = hang_s
        self._server = _Server(self, port)
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"
        self.as_url = (as_url or self.url).rstrip("/")
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def hold_next(self) -> Hold:
        """Park the next request until ``release()`` (then the handler answers it)."""
        hold = Hold()
        with self._lock:
            self._holds.append(hold)
        return hold

    def take_hold(self) -> Hold | None:
        with self._lock:
            return self._holds.pop(0) if self._holds else None

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=WAIT_S)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
