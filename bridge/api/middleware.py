"""Request guards that run before routing: request id, media type and body size."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qsl

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api.errors import error_response
from bridge.api.parsing import text_ok
from bridge.api.sources import Located, Source
from bridge.domain.errors import (
    BridgeError,
    ContentTypeUnsupported,
    PayloadTooLarge,
    StringInvalid,
)

_JSON_TYPES = ("application/json", "application/vnd.api+json")
_BODY_METHODS = ("POST", "PUT", "PATCH")

log = structlog.get_logger(__name__)


def bad_text(scope: Scope) -> Located | None:
    """A path or query with text the store cannot hold (a percent-encoded NUL): 400."""
    if not text_ok(scope["path"]):
        return Located(StringInvalid("the path must not contain NUL characters"), Source())
    query = scope.get("query_string", b"")
    if not query:
        return None
    for name, value in parse_qsl(query.decode("latin-1")):
        if not (text_ok(name) and text_ok(value)):
            return Located(StringInvalid(), Source(parameter=name if text_ok(name) else None))
    return None


def request_id(header: str | None) -> str:
    """The request's id: the client's ``X-Request-Id`` (its first 64 characters), else new."""
    return (header or str(uuid.uuid4()))[:64]


def refusal(
    method: str, length: str | None, chunked: bool, content_type: str | None, max_body: int
) -> BridgeError | None:
    """What the guard refuses before reading a body: one declared over ``max_body`` (413), a
    body that is not JSON (415)."""
    if length is not None and length.isdigit() and int(length) > max_body:
        return PayloadTooLarge(f"request body exceeds {max_body} bytes")
    has_body = (length is not None and length != "0") or chunked
    media = (content_type or "").split(";")[0].strip().lower()
    if method in _BODY_METHODS and has_body and media and media not in _JSON_TYPES:
        return ContentTypeUnsupported()
    return None


def log_completed(method: str, path: str, status: int, started: float) -> None:
    """The ``request_completed`` line (the access log)."""
    log.info(
        "request_completed",
        method=method,
        path=path,
        status=status,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )


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
        rid = request_id(headers.get("x-request-id"))
        scope.setdefault("state", {})["request_id"] = rid
        # Each request runs in a task of its own, so the binding ends with it; it is not reset
        # on the way out, so the 500 handler outside this middleware still logs under it.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        started = time.perf_counter()
        access_log = self.access_log

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", rid.encode("latin-1")))
                if access_log:
                    log_completed(scope["method"], scope["path"], message["status"], started)
            await send(message)

        error = refusal(
            scope["method"],
            headers.get("content-length"),
            "transfer-encoding" in headers,
            headers.get("content-type"),
            self.max_body,
        ) or bad_text(scope)
        if error is not None:
            await error_response(error, rid)(scope, receive, send_with_id)
            return
        await self.app(scope, limited(receive, self.max_body), send_with_id)


def limited(receive: Receive, max_body: int) -> Receive:
    """``receive``, raising 413 once the body read so far passes ``max_body`` bytes."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_body:
                raise PayloadTooLarge(f"request body exceeds {max_body} bytes")
        return message

    return wrapped
