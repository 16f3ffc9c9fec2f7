"""Request guards that run before routing: request id, media type and body size."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api.errors import error_response
from bridge.api.parsing import text_ok
from bridge.api.sources import Located, Source
from bridge.domain.errors import ContentTypeUnsupported, PayloadTooLarge, StringInvalid

_JSON_TYPES = ("application/json", "application/vnd.api+json")
_BODY_METHODS = ("POST", "PUT", "PATCH")

log = structlog.get_logger(__name__)


def _bad_text(scope: Scope) -> Located | None:
    """A path or query with text the store cannot hold (a percent-encoded NUL): 400."""
    if not text_ok(scope["path"]):
        return Located(StringInvalid("the path must not contain NUL characters"), Source())
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if not (text_ok(name) and text_ok(value)):
            return Located(StringInvalid(), Source(parameter=name if text_ok(name) else None))
    return None


class RequestGuard:
    """Tags each request with an id (``X-Request-Id``), bound into the log context of every
    line the request logs and logged with the answer's status (``request_completed``); rejects
    non-JSON bodies with 415, bodies over ``max_body`` bytes with 413, whether or not they
    declare a Content-Length, and a NUL in the path or the query with 400 ``STRING_INVALID``.
    ``access_log=False`` drops the ``request_completed`` line (the ``access_log`` setting)."""

    def __init__(self, app: ASGIApp, *, max_body: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body = max_body
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = headers.get("x-request-id") or str(uuid.uuid4())
        request_id = request_id[:64]
        scope.setdefault("state", {})["request_id"] = request_id
        # Each request runs in a task of its own, so the binding ends with it; it is not reset
        # on the way out, so the 500 handler outside this middleware still logs under it.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        access_log = self.access_log

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(
                    (b"x-request-id", request_id.encode("latin-1"))
                )
                if access_log:
                    log.info(
                        "request_completed",
                        method=scope["method"],
                        path=scope["path"],
                        status=message["status"],
                        ms=round((time.perf_counter() - started) * 1000, 1),
                    )
            await send(message)

        error = self._reject(scope["method"], headers) or _bad_text(scope)
        if error is not None:
            await error_response(error, request_id)(scope, receive, send_with_id)
            return
        await self.app(scope, self._limited(receive), send_with_id)

    def _reject(self, method: str, headers: Headers) -> Any:
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return PayloadTooLarge(f"request body exceeds {self.max_body} bytes")
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if method in _BODY_METHODS and has_body and media and media not in _JSON_TYPES:
            return ContentTypeUnsupported()
        return None

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(f"request body exceeds {self.max_body} bytes")
            return message

        return wrapped
