"""The hot writes served directly, ahead of FastAPI: the usage actions and machine activations.

``POST /v1[/accounts/{account}]/licenses/{license_id}/actions/{increment,decrement,reset}-usage``
is most of a metered product's traffic, and ``POST /v1[/accounts/{account}]/machines`` (an
activation) the next. FastAPI's route matching, dependency solving, request and response objects
and middleware layers cost several times the change itself, so the app (``bridge.api.app``)
hands these requests to ``UsageFastPath`` before FastAPI sees them, and every other request to
FastAPI unchanged.

It does in one pass what the layers around the router do for any request, and answers exactly
as they and the routes in ``bridge.api.routes.usage`` and ``bridge.api.routes.machines`` do, in
the same order of checks (``tests/test_fast_usage.py`` compares the two answer by answer):

0. the signer's ``Keygen-Accept-Signature`` check (400, unsigned); the guard's request id
   (``X-Request-Id``, bound into the log context), declared body size (413), media type (415)
   and NUL in the path or query (400);
1. reading the body (413 past the limit, a client gone: 400), then parsing it as JSON when its
   content type is JSON (``parse_json``'s errors);
2. the account of the ``/v1/accounts/{account}`` form (404);
3. authentication (401/403), then the ``Idempotency-Key`` (400; the usage actions only);
4. the body against the same schema (``IncrementIn``, ``DecrementIn``, ``NoParams``;
   ``MachineCreate``, which is required), its first error translated by
   ``error_from_validation``;
5. the change itself, rendered inside its transaction before the commit
   (``Renderer.license_json``, ``Renderer.machine_json``), so an answer that cannot be built
   rolls it back.

Every answer is signed as ``ResponseSigner`` signs, carries ``X-Request-Id``, is counted in the
HTTP metrics under its route template and logged as ``request_completed`` (the ``access_log``
setting). An error this path does not know (a bug) is logged as ``request_failed`` and answered
with the 500 document, as the app's error handler does for any route.
"""

from __future__ import annotations

import email.message
import re
import time
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import TypeAdapter, ValidationError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.api import schemas as s
from bridge.api.deps import ApiContext, authenticate, checked_idempotency_key
from bridge.api.errors import error_from_validation, error_response, unexpected_response
from bridge.api.middleware import bad_text, limited, log_completed, refusal, request_id
from bridge.api.parsing import parse_json
from bridge.api.render import JSONAPI, RenderedJson
from bridge.api.signing import Signer, accepted_algorithm, host_of, target
from bridge.api.sources import Located
from bridge.domain.errors import AcceptSignatureInvalid, BadRequest, BridgeError, NotFound
from bridge.domain.model import Machine, UsageKind
from bridge.observability.http import UNROUTED, RequestCounts
from bridge.service.usage import UsageChange, UsageOutcome

# Starlette's own pattern for these templates (``[^/]+`` per parameter, ``$`` at the end).
_PATH = re.compile(
    r"^/v1/(?:accounts/(?P<account>[^/]+)/)?(?:licenses/(?P<license_id>[^/]+)"
    r"/actions/(?P<action>increment|decrement|reset)-usage|machines)$"  # no action: activate
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
# The route templates the HTTP metrics count these under, by action and URL form (long or not).
_ROUTES = {
    action: {
        False: f"/v1/licenses/{{license_id}}/actions/{action}-usage",
        True: f"/v1/accounts/{{account}}/licenses/{{license_id}}/actions/{action}-usage",
    }
    for action in ("increment", "decrement", "reset")
}
_ROUTES["activate"] = {False: "/v1/machines", True: "/v1/accounts/{account}/machines"}
_MACHINE_BODY: TypeAdapter[s.MachineCreate] = TypeAdapter(s.MachineCreate)
# FastAPI's error for a required body that is absent (no bytes).
_BODY_MISSING = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
_JSON_MEDIA = frozenset({b"application/json", b"application/vnd.api+json"})
_NO_BODY = object()
_JSONAPI = JSONAPI.encode()


@dataclass(slots=True)
class _Request:
    """The headers this path reads, each the first of its name (as Starlette's ``Headers.get``)."""

    content_type: bytes | None = None
    authorization: bytes | None = None
    idempotency_key: bytes | None = None
    request_id: bytes | None = None
    content_length: bytes | None = None
    chunked: bool = False
    accept_signature: bytes | None = None
    host: bytes | None = None

    @classmethod
    def of(cls, scope: Scope) -> _Request:
        r = cls()
        for name, value in scope["headers"]:
            if name == b"content-type":
                r.content_type = value if r.content_type is None else r.content_type
            elif name == b"authorization":
                r.authorization = value if r.authorization is None else r.authorization
            elif name == b"idempotency-key":
                r.idempotency_key = value if r.idempotency_key is None else r.idempotency_key
            elif name == b"x-request-id":
                r.request_id = value if r.request_id is None else r.request_id
            elif name == b"content-length":
                r.content_length = value if r.content_length is None else r.content_length
            elif name == b"transfer-encoding":
                r.chunked = True
            elif name == b"keygen-accept-signature":
                r.accept_signature = value if r.accept_signature is None else r.accept_signature
            elif name == b"host":
                r.host = value if r.host is None else r.host
        return r


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


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
    """See the module docstring. ``signer``, ``counts``, ``max_body`` and ``access_log`` are the
    app's own: the same signer, metrics, body limit and access-log setting its layers use."""

    def __init__(
        self,
        context: ApiContext,
        *,
        signer: Signer,
        counts: RequestCounts,
        max_body: int,
        access_log: bool,
    ) -> None:
        self.context = context
        self.signer = signer
        self.counts = counts
        self.max_body = max_body
        self.access_log = access_log

    @staticmethod
    def match(scope: Scope) -> re.Match[str] | None:
        """The usage action ``scope`` asks for, if it is one."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        return _PATH.match(scope["path"])

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, match: re.Match[str]
    ) -> None:
        started = time.perf_counter()
        account, action = match.group("account", "action")
        action = action or "activate"
        headers = _Request.of(scope)
        rid = request_id(_text(headers.request_id))
        try:
            algorithm = accepted_algorithm(
                _text(headers.accept_signature), self.signer.signing.account
            )
        except AcceptSignatureInvalid as error:  # answered before the guard, without signature
            status, out, body = _error(error, rid)
            out.append((b"x-request-id", rid.encode("latin-1")))
            await _send(send, status, out + self._signed(scope, headers, body, None), body)
            return
        scope.setdefault("state", {})["request_id"] = rid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=rid)
        route = _ROUTES[action][account is not None]
        label = UNROUTED  # the guard refuses before routing, as in the app
        status = 500
        try:
            refused = refusal(
                "POST",
                _text(headers.content_length),
                headers.chunked,
                _text(headers.content_type),
                self.max_body,
            ) or bad_text(scope)
            if refused is not None:
                status, out, body = _error(refused, rid)
            else:
                label = route
                status, out, body = await self._answer(
                    scope, limited(receive, self.max_body), headers, rid, route, match
                )
            out.append((b"x-request-id", rid.encode("latin-1")))
            await _send(send, status, out + self._signed(scope, headers, body, algorithm), body)
        finally:
            self.counts.count(label, "POST", status)
            if self.access_log:
                log_completed("POST", scope["path"], status, started)

    def _signed(
        self, scope: Scope, headers: _Request, body: bytes, algorithm: str | None
    ) -> list[tuple[bytes, bytes]]:
        host = self.signer.signing.public_host or host_of(scope, _text(headers.host))
        return self.signer.headers("POST", target(scope), host, body, algorithm)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        headers: _Request,
        rid: str,
        route: str,
        match: re.Match[str],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        account, license_id, action = match.group("account", "license_id", "action")
        if action is None:
            return await self._activation(receive, headers, rid, route, account)
        try:
            body, outcome = await self._apply(
                scope, receive, headers, rid, account, license_id, action
            )
        except (BridgeError, Located) as error:
            return _error(error, rid)
        except Exception:  # a bug: logged, answered as the app's handler answers it
            return _parts(unexpected_response("POST", route, rid))
        out = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", _JSONAPI),
            (b"usage-entry-id", outcome.entry_id.encode("latin-1")),
        ]
        if outcome.replayed:
            out.append((b"idempotent-replayed", b"true"))
        return 200, out, body

    async def _apply(
        self,
        scope: Scope,
        receive: Receive,
        headers: _Request,
        rid: str,
        account: str | None,
        license_id: str,
        action: str,
    ) -> tuple[bytes, UsageOutcome]:
        ctx = self.context
        kind = _KINDS[action]
        received = await _received(receive, headers)
        if account is not None and account != ctx.account:
            raise NotFound.resource("account", account)
        principal = await authenticate(ctx, _text(headers.authorization))
        idempotency_key = checked_idempotency_key(_text(headers.idempotency_key))
        body = None if received is _NO_BODY else _validated(_BODIES[kind], received)
        change = UsageChange(license_id, kind, _amount(kind, body), idempotency_key, rid)
        rendered: list[bytes] = []

        def answer(outcome: UsageOutcome) -> None:
            # Inside the change's transaction, before its commit: a failure here undoes it.
            rendered[:] = [ctx.render.license_json(outcome.license, ctx.clock.now())]

        outcome = await ctx.usage.apply(principal, change, answer)
        return rendered[0], outcome

    async def _activation(
        self, receive: Receive, headers: _Request, rid: str, route: str, account: str | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        ctx = self.context
        try:
            received = await _received(receive, headers)
            if account is not None and account != ctx.account:
                raise NotFound.resource("account", account)
            principal = await authenticate(ctx, _text(headers.authorization))
            if received is _NO_BODY:
                raise error_from_validation([dict(_BODY_MISSING)])
            body = _validated(_MACHINE_BODY, received)
            answer: RenderedJson[Machine] = RenderedJson(
                lambda m: ctx.render.machine_json(m, ctx.clock.now()), 201
            )
            await ctx.activations.activate(principal, body.command(), rid, answer)
        except (BridgeError, Located) as error:
            return _error(error, rid)
        except Exception:  # a bug: logged, answered as the app's handler answers it
            return _parts(unexpected_response("POST", route, rid))
        return _parts(answer.response)


async def _received(receive: Receive, headers: _Request) -> Any:
    """The body as the route's parameter receives it: parsed JSON when its content type is
    JSON, else its bytes (FastAPI validates those, and fails); ``_NO_BODY`` when empty."""
    raw = await _read_body(receive)
    if not raw:
        return _NO_BODY
    # FastAPI validates a body without a JSON content type as its bytes (and fails).
    content_type = headers.content_type
    return parse_json(raw) if content_type is not None and _is_json(content_type) else raw


def _validated(adapter: TypeAdapter[Any], received: Any) -> Any:
    """``received`` against the route's body schema, its errors located in ``body`` as
    FastAPI locates them."""
    try:
        return adapter.validate_python(received, from_attributes=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for error in errors:
            error["loc"] = ("body", *error["loc"])
        raise error_from_validation(errors) from None


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(error: BridgeError | Located, rid: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return _parts(error_response(error, rid))


def _parts(response: Response) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    return response.status_code, list(response.raw_headers), bytes(response.body)
