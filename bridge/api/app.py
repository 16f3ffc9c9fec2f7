"""The FastAPI application, built from an ``ApiContext`` by the composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import __version__
from bridge.api import errors
from bridge.api.deps import ApiContext, check_account
from bridge.api.fast_usage import UsageFastPath
from bridge.api.middleware import RequestGuard
from bridge.api.render import JsonApiResponse
from bridge.api.routes import (
    checkin,
    checkouts,
    health,
    keygen,
    licenses,
    machines,
    me,
    metrics,
    outbox,
    policies,
    products,
    reconciliations,
    usage,
    webhooks,
)
from bridge.api.schemas import ErrorDocument
from bridge.api.signing import ResponseSigner, Signer, Signing
from bridge.observability.http import RequestCounts, RequestMetrics

MAX_BODY_BYTES = 1_048_576

_ERRORS = {
    code: {"model": ErrorDocument, "description": "JSON:API error document"}
    for code in (400, 401, 403, 404, 413, 415, 422, 503)
}


def _resources() -> APIRouter:
    router = APIRouter(responses=_ERRORS)  # type: ignore[arg-type]
    for module in (
        products,
        policies,
        licenses,
        usage,
        checkin,
        machines,
        checkouts,
        outbox,
        reconciliations,
        me,
        webhooks,
        keygen,
    ):
        router.include_router(module.router)
    router.include_router(webhooks.inbound)  # signed by the platform, not token-authenticated
    return router


class _SignedApp(FastAPI):
    """Signs responses outside Starlette's error middleware, so that a 500 is signed too, and
    hands the hot writes (usage actions, machine activations) to the fast path (if any) before
    FastAPI sees them."""

    signing: Signing
    usage_fast_path: UsageFastPath | None = None

    def build_middleware_stack(self) -> ASGIApp:
        return ResponseSigner(super().build_middleware_stack(), self.signing)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.usage_fast_path
        if fast is not None:
            match = fast.match(scope)
            if match is not None:
                await fast(scope, receive, send, match)
                return
        await super().__call__(scope, receive, send)


async def _warm_routes(app: FastAPI) -> None:
    """FastAPI prepares each included route (its fields and dependencies) on the first request
    that reaches it, about half a second for this API's routes on the first request of a
    process, during which the event loop serves nothing else. One request for a path no route
    matches, sent to the router alone before the server accepts connections, pays it here."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/accounts/-/-/-",
        "raw_path": b"/v1/accounts/-/-/-",
        "query_string": b"",
        "headers": [],
        "root_path": "",
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: Message) -> None:
        return None

    await app.router(scope, receive, send)


def create_app(
    context: ApiContext, signing: Signing, *, fast_usage: bool = True, access_log: bool = True
) -> FastAPI:
    """The API. ``fast_usage=False`` leaves the usage actions and activations to the general
    router (the tests compare the two)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watch = context.auth.watch()
        if watch is not None:
            watch.start()
        await _warm_routes(app)
        yield
        if watch is not None:
            watch.close()
        context.usage.close()

    app = _SignedApp(
        lifespan=lifespan,
        title="Metering Bridge",
        version=__version__,
        description="Keygen-compatible metered-license API with an append-only usage ledger.",
        default_response_class=JsonApiResponse,  # the OpenAPI document declares vnd.api+json
    )
    app.state.context = context
    app.signing = signing
    errors.install(app)
    resources = _resources()
    # Every route is served both under /v1/... and /v1/accounts/{account}/...; the short form
    # first, because it is the one clients use and Starlette tries routes in order (no /v1
    # path can match an /accounts/ one: no parameter there is a catch-all).
    app.include_router(
        resources, prefix="/v1", generate_unique_id_function=lambda route: route.name
    )
    app.include_router(
        resources,
        prefix="/v1/accounts/{account}",
        dependencies=[Depends(check_account)],
        generate_unique_id_function=lambda route: f"account_{route.name}",
    )
    app.include_router(health.router)
    app.include_router(metrics.router)
    counts = RequestCounts()
    if fast_usage:
        app.usage_fast_path = UsageFastPath(
            context,
            signer=Signer(signing),
            counts=counts,
            max_body=MAX_BODY_BYTES,
            access_log=access_log,
        )
    app.add_middleware(RequestGuard, max_body=MAX_BODY_BYTES, access_log=access_log)
    app.add_middleware(RequestMetrics, counts=counts)  # outermost: counts the guard's refusals
    return app
