"""The FastAPI application, built from an ``ApiContext`` by the composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp

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
from bridge.api.signing import ResponseSigner, Signing
from bridge.observability.http import RequestMetrics

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
    """Signs responses outside Starlette's error middleware, so that a 500 is signed too."""

    signing: Signing

    def build_middleware_stack(self) -> ASGIApp:
        return ResponseSigner(super().build_middleware_stack(), self.signing)


def create_app(
    context: ApiContext, signing: Signing, *, fast_usage: bool = True, access_log: bool = True
) -> FastAPI:
    """The API. ``fast_usage=False`` leaves the usage actions to the general router (the tests
    compare the two)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
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
    if fast_usage:  # inside RequestGuard: added first, so wrapped by it
        routes = {r.name: r for r in usage.router.routes if isinstance(r, APIRoute)}
        app.add_middleware(UsageFastPath, context=context, routes=routes)
    app.add_middleware(RequestGuard, max_body=MAX_BODY_BYTES, access_log=access_log)
    app.add_middleware(RequestMetrics)  # outermost: counts the guard's refusals too
    return app
