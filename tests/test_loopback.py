"""The fakes' HTTP server treats a request whose body never fully arrived as a real server does:
the client died mid-request (the fault suite SIGKILLs processes while they post), so there is
no request to answer, and the fake platform behind it never sees a truncated body."""

from __future__ import annotations

import socket
import time

import httpx

from tests.fakes.loopback import LoopbackServer


def test_a_body_cut_short_by_a_dead_client_never_reaches_the_handler() -> None:
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.read())
        return httpx.Response(200, json={})

    with LoopbackServer(handler) as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /api/v1/events/batch HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                b'{"events": [{"transa'
            )
        # The server thread has read the whole of what arrived (the close ended its read); a
        # complete request on a new connection is answered after it, in order.
        with httpx.Client() as client:
            answer = client.post(f"{server.url}/api/v1/events/batch", content=b'{"events": []}')
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    assert answer.status_code == 200
    assert seen == [b'{"events": []}']
