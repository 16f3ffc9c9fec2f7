"""What the routes need, handed over by the composition root, and the shared dependencies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from bridge.api.render import Renderer
from bridge.api.writes import MachineWrites, UsageWrites
from bridge.domain.access import Principal
from bridge.domain.errors import IdempotencyKeyInvalid, NotFound
from bridge.domain.ports import Clock, UnitOfWorkFactory
from bridge.service.auth import Authenticator
from bridge.service.checkin import CheckInService
from bridge.service.checkout import CheckoutService
from bridge.service.common import MAX_PAGE_NUMBER, MAX_PAGE_SIZE, PageRequest
from bridge.service.machines import MachineService
from bridge.service.signed_keys import KeyMint
from bridge.webhooks.endpoints import Receivers


@dataclass(frozen=True, slots=True)
class ApiContext:
    uows: UnitOfWorkFactory
    clock: Clock
    auth: Authenticator
    usage: UsageWrites
    machines: MachineService
    activations: MachineWrites  # in the usage writer's batches
    render: Renderer
    account: str
    ready: Callable[[], bool]
    checkout: CheckoutService
    mint: KeyMint  # signs the keys of ED25519_SIGN licenses
    webhooks: Receivers = field(default_factory=lambda: Receivers({}))
    # Renders /metrics (body, content type); None when it is off or served on its own port.
    metrics: Callable[[], tuple[bytes, str]] | None = None
    checkins: CheckInService | None = None


# Dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in the
# threadpool, and a thread hop costs more than any of them.


async def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]

# Documented in OpenAPI as an API key header: the value is "Bearer <token>" or "License <key>".
_authorization = APIKeyHeader(
    name="Authorization",
    auto_error=False,
    description='"Bearer <admin, product or license token>" or "License <license key>"',
)


async def authenticate(ctx: ApiContext, authorization: str | None) -> Principal:
    # The configured admin token and cached database tokens need no lookup; others are read
    # from the store in the threadpool, so the event loop never blocks on the database.
    known = ctx.auth.known(authorization)
    if known is not None:
        return known
    return await run_in_threadpool(ctx.auth.authenticate, authorization)


async def principal(
    request: Request, authorization: Annotated[str | None, Depends(_authorization)]
) -> Principal:
    return await authenticate(request.app.state.context, authorization)


Bearer = Annotated[Principal, Depends(principal)]


async def check_account(ctx: Ctx, account: str) -> None:
    """``/v1/accounts/{account}/...`` accepts only the configured account id."""
    if account != ctx.account:
        raise NotFound.resource("account", account)


async def page(
    number: Annotated[int, Query(alias="page[number]", ge=1, le=MAX_PAGE_NUMBER)] = 1,
    size: Annotated[int | None, Query(alias="page[size]", ge=1, le=MAX_PAGE_SIZE)] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_PAGE_SIZE, description="Keygen's page size without page")
    ] = None,
) -> PageRequest:
    """Keygen's pagination: ``page[size]``, else ``limit`` (what keygen-rs sends), else 10."""
    return PageRequest(number=number, size=size or limit or 10)


Paging = Annotated[PageRequest, Depends(page)]


async def request_id(request: Request) -> str | None:
    """The request id the middleware assigned (recorded on ledger entries)."""
    return getattr(request.state, "request_id", None)


RequestId = Annotated[str | None, Depends(request_id)]


def checked_idempotency_key(key: str | None) -> str | None:
    if key is not None and (not 1 <= len(key) <= 255 or not key.isascii() or not key.isprintable()):
        raise IdempotencyKeyInvalid
    return key


@dataclass(frozen=True, slots=True)
class WriteCall:
    """The context, the bearer and the request id as one dependency (see ``UsageCall``): a
    machine activation's."""

    ctx: ApiContext
    principal: Principal
    request_id: str | None


async def write_call(request: Request) -> WriteCall:
    """Reads the header as ``_authorization`` does (absent or empty: None) instead of depending
    on it: FastAPI works out the OAuth scopes of every security dependency on every request."""
    ctx: ApiContext = request.app.state.context
    return WriteCall(
        ctx=ctx,
        principal=await authenticate(ctx, request.headers.get("authorization") or None),
        request_id=getattr(request.state, "request_id", None),
    )


Write = Annotated[WriteCall, Depends(write_call)]
# The OpenAPI security of a route that takes ``Write`` (as ``_authorization`` declares it).
WRITE_SECURITY: dict[str, Any] = {"security": [{_authorization.scheme_name: []}]}


@dataclass(frozen=True, slots=True)
class UsageCall:
    """Everything a usage action needs besides its body, resolved as one dependency: FastAPI's
    dependency solving costs more per dependency than the rest of the request's parsing."""

    ctx: ApiContext
    principal: Principal
    idempotency_key: str | None
    request_id: str | None


async def usage_call(
    request: Request,
    authorization: Annotated[str | None, Depends(_authorization)],
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Makes a usage action safe to retry: the same key replays the first "
            "answer; the same key with another request is 422 IDEMPOTENCY_KEY_REUSED.",
        ),
    ] = None,
) -> UsageCall:
    ctx: ApiContext = request.app.state.context
    return UsageCall(
        ctx=ctx,
        principal=await authenticate(ctx, authorization),
        idempotency_key=checked_idempotency_key(key),
        request_id=getattr(request.state, "request_id", None),
    )


Usage = Annotated[UsageCall, Depends(usage_call)]
