"""The usage actions served directly, ahead of the general router.

``POST /v1[/accounts/{account}]/licenses/{license_id}/actions/{increment,decrement,reset}-usage``
is most of a metered product's traffic. FastAPI's route matching, dependency solving and
request/response objects cost several times the change itself, so this ASGI layer, placed
inside ``RequestGuard`` (request id, media type, body size, the ``request_completed`` line) and
the response signer, serves those requests itself and hands every other request on unchanged.

It answers exactly as the routes in ``bridge.api.routes.usage`` do, in the same order of checks
(``tests/test_fast_usage.py`` compares the two answer by answer):

1. reading the body (413 past the limit, a client gone: 400), then parsing it as JSON when its
   content type is JSON (``parse_json``'s errors);
2. the account of the ``/v1/accounts/{account}`` form (404);
3. authentication (401/403), then the ``Idempotency-Key`` (400);
4. the body against the same schema (``IncrementIn``, ``DecrementIn``, ``NoParams``), its first
   error translated by ``error_from_validation``;
5. the change itself, rendered inside its transaction before the commit
   (``Renderer.license_json``), so an answer that cannot be built rolls it back.

An error this layer does not know (a bug) propagates to Starlette's error middleware, which
answers the 500 document and logs it as for any route; ``scope["route"]`` names the route as the
router would have, for that log and for any middleware that labels requests by route.
"""

from __future__ import annotations

import email.message
import re
from typing import Any

from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.api import schemas as s
from bridge.api.deps import ApiContext, authenticate, checked_idempotency_key
from bridge.api.errors import error_from_validation, error_response
from bridge.api.parsing import parse_json
from bridge.api.render import JSONAPI
from bridge.api.sources import Located
from bridge.domain.errors import BadRequest, BridgeError, NotFound
from bridge.domain.model import UsageKind
from bridge.service.usage import UsageChange, UsageOutcome

# Starlette's own pattern for these templates (``[^/]+`` per parameter, ``$`` at the end).
_PATH = re.compile(
    r"^/v1/(?:accounts/(?P<account>[^/]+)/)?licenses/(?P<license_id>[^/]+)"
    r"/actions/(?P<action>increment|decrement|reset)-usage$"
)
_KINDS = {
    "increment": UsageKind.INCREMENT,
    "decrement": UsageKind.DECREMENT,
    "reset": UsageKind.RESET,
}
_BODIES: dict[UsageKind, TypeAdapter[Any]] = {
    UsageKind.INCREMENT: TypeAdapter(s.IncrementIn | None),
    UsageKind.DECREMENT: TypeAdapter(s.DecrementIn | None),
    UsageKind.RESET: TypeAdapter(s.NoParams | None),
}
_JSON_MEDIA = frozenset({b"application/json", b"application/vnd.api+json"})
_NO_BODY = object()


def _is_json(content_type: bytes) -> bool:
    """FastAPI's test: ``application/json`` or ``application/*+json``, parameters aside."""
    if content_type in _JSON_MEDIA:
        return True
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        try:
            message = await receive()
        except (BridgeError, Located):  # RequestGuard's limit
            raise
        except Exception as exc:  # as FastAPI answers a body it cannot read
            raise BadRequest("There was an error parsing the body") from exc
        if message["type"] != "http.request":  # the client went away
            raise BadRequest("There was an error parsing the body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _amount(kind: UsageKind, body: Any) -> int:
    if kind is UsageKind.RESET:
        return 0
    meta = body.meta if body is not None else None
    value = None
    if meta is not None:
        value = meta.increment if kind is UsageKind.INCREMENT else meta.decrement
    return 1 if value is None else int(value)


class UsageFastPath:
    """See the module docstring. ``routes`` are the usage router's routes by name (FastAPI puts
    the same route object in the scope for both URL forms)."""

    def __init__(self, app: ASGIApp, *, context: ApiContext, routes: dict[str, APIRoute]) -> None:
        self.app = app
        self.context = context
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        match = _PATH.match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        account, license_id, action = match.group("account", "license_id", "action")
        scope["route"] = self.routes[f"{action}_usage"]
        scope["path_params"] = {"license_id": license_id} | (
            {"account": account} if account is not None else {}
        )
        request_id = scope.get("state", {}).get("request_id")
        try:
            body, outcome = await self._apply(scope, receive, account, license_id, action)
        except (BridgeError, Located) as error:
            await error_response(error, request_id)(scope, receive, send)
            return
        headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", JSONAPI.encode()),
            (b"usage-entry-id", outcome.entry_id.encode("latin-1")),
        ]
        if outcome.replayed:
            headers.append((b"idempotent-replayed", b"true"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _apply(
        self, scope: Scope, receive: Receive, account: str | None, license_id: str, action: str
    ) -> tuple[bytes, UsageOutcome]:
        ctx = self.context
        kind = _KINDS[action]
        content_type = authorization = key = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"content-type":
                content_type = value if content_type is None else content_type
            elif name == b"authorization":
                authorization = value if authorization is None else authorization
            elif name == b"idempotency-key":
                key = value if key is None else key
        raw = await _read_body(receive)
        received: Any = _NO_BODY
        if raw:
            # FastAPI validates a body without a JSON content type as its bytes (and fails).
            json_body = content_type is not None and _is_json(content_type)
            received = parse_json(raw) if json_body else raw
        if account is not None and account != ctx.account:
            raise NotFound.resource("account", account)
        principal = await authenticate(
            ctx, authorization.decode("latin-1") if authorization else None
        )
        idempotency_key = checked_idempotency_key(
            key.decode("latin-1") if key is not None else None
        )
        body = None
        if received is not _NO_BODY:
            try:
                body = _BODIES[kind].validate_python(received, from_attributes=True)
            except ValidationError as exc:
                errors = exc.errors(include_url=False)
                for error in errors:
                    error["loc"] = ("body", *error["loc"])
                raise error_from_validation(errors) from None
        request_id = scope.get("state", {}).get("request_id")
        change = UsageChange(license_id, kind, _amount(kind, body), idempotency_key, request_id)
        rendered: list[bytes] = []

        def answer(outcome: UsageOutcome) -> None:
            # Inside the change's transaction, before its commit: a failure here undoes it.
            rendered[:] = [ctx.render.license_json(outcome.license, ctx.clock.now())]

        outcome = await ctx.usage.apply(principal, change, answer)
        return rendered[0], outcome
