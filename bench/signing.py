"""What response signing costs per request, next to the same app without it.

The app is the one ``bridge.bootstrap.build_app`` builds (SQLite file, WAL), called in process
through ASGI so that the figures hold the application's work only (no sockets, no HTTP parser):

- **signed**: the app as served, its outermost layer ``ResponseSigner`` (Date, Digest, one
  Ed25519 signature per response);
- **unsigned**: the same app's middleware stack without that layer (``FastAPI``'s own
  ``build_middleware_stack`` on the same instance: same routes, same RequestGuard, same state).

Two requests: ``GET /v1/me`` with ``Authorization: License <key>`` (a key look-up in SQLite and a
license document, what every keygen-rs validation starts with) and ``GET /healthz`` (almost no
work, so the signer's share is at its largest). The sides alternate between rounds; each round
runs ``--ops`` requests one after another; the median and the best round of each side are
printed (on a busy machine the best rounds are the steadier comparison). Then the signer
alone, around an app that sends a fixed 1 KiB body, next to that app bare.

    python bench/signing.py [--ops 1000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import _setup as s
from fastapi import FastAPI

from bridge.api.signing import ResponseSigner, Signing
from bridge.bootstrap import build_app
from bridge.clock import SystemClock
from bridge.keys import AccountKey

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
KEY = "BENCH-SIGN-0001"
OWNER: list[FastAPI] = []


async def call(
    app: App, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, bytes]:
    payload = json.dumps(body).encode() if body is not None else b""
    raw = [(b"host", b"127.0.0.1:8080")] + [
        (k.lower().encode(), v.encode()) for k, v in headers.items()
    ]
    if body is not None:
        raw += [(b"content-type", b"application/vnd.api+json")]
        raw += [(b"content-length", str(len(payload)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "state": {},
        "app": OWNER[0] if OWNER else None,  # Starlette sets it before its middleware stack
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # a client that stays connected
        sent = True
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def seed(app: App) -> None:
    admin = {"authorization": f"Bearer {s.ADMIN_TOKEN}"}
    status, out = await call(
        app,
        "POST",
        "/v1/products",
        admin,
        {"data": {"type": "products", "attributes": {"name": "B"}}},
    )
    product = json.loads(out)["data"]["id"]
    rel = {"product": {"data": {"type": "products", "id": product}}}
    body = {"data": {"type": "policies", "attributes": {"name": "P"}, "relationships": rel}}
    policy = json.loads((await call(app, "POST", "/v1/policies", admin, body))[1])["data"]["id"]
    rel = {"policy": {"data": {"type": "policies", "id": policy}}}
    body = {"data": {"type": "licenses", "attributes": {"key": KEY}, "relationships": rel}}
    status, out = await call(app, "POST", "/v1/licenses", admin, body)
    assert status == 201, out


async def per_request_us(app: App, path: str, headers: dict[str, str], ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        status, _body = await call(app, "GET", path, headers)
        assert status == 200, status
    return (time.perf_counter() - start) / ops * 1e6


async def fixed(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b'{"data":' + b"x" * 1013 + b"}"
    headers = [(b"content-type", b"application/vnd.api+json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def main(ops: int, rounds: int) -> None:
    with s.scratch_dir() as directory:
        container = s.container_for(s.sqlite_url(directory / "bench.db"))
        app = build_app(container)
        OWNER.append(app)
        signed: App = app
        unsigned: App = FastAPI.build_middleware_stack(app)
        await seed(signed)
        signer: App = ResponseSigner(
            fixed,
            Signing(account="default", key=AccountKey.generate().private, now=SystemClock().now),
        )
        cases: list[tuple[str, App, App, str, dict[str, str]]] = [
            (
                "GET /v1/me (License key)",
                signed,
                unsigned,
                "/v1/me",
                {"authorization": f"License {KEY}"},
            ),
            ("GET /healthz", signed, unsigned, "/healthz", {}),
            ("signer alone, 1 KiB body", signer, fixed, "/", {}),
        ]
        print(
            f"load average before: {os.getloadavg()[0]:.2f}; "
            f"{ops} requests per round, {rounds} rounds"
        )
        for name, with_signing, without, path, headers in cases:
            await per_request_us(with_signing, path, headers, ops // 10)  # warm-up
            await per_request_us(without, path, headers, ops // 10)
            a: list[float] = []
            b: list[float] = []
            for r in range(rounds):
                order = [(with_signing, a), (without, b)]
                for target, into in order if r % 2 == 0 else reversed(order):
                    into.append(await per_request_us(target, path, headers, ops))
            for label, pick in (("median", statistics.median), ("best", min)):
                sa, sb = pick(a), pick(b)
                print(
                    f"{name:26} {label:6} signed {sa:7.1f} us/req  unsigned {sb:7.1f} us/req  "
                    f"cost {sa - sb:6.1f} us ({(sa - sb) / sa:5.1%} of the signed request)"
                )
        container.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.ops, args.rounds))
