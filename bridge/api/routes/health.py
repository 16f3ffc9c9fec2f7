"""Liveness and readiness probes (unauthenticated)."""

from __future__ import annotations

from fastapi import APIRouter

from bridge.api import schemas as s
from bridge.api.deps import Ctx
from bridge.api.render import JsonApiResponse, respond
from bridge.domain.errors import ServiceUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=s.Health)
def healthz() -> JsonApiResponse:
    """The process is up."""
    return respond(s.Health(status="ok"))


@router.get("/readyz", response_model=s.Health, responses={503: {"model": s.ErrorDocument}})
def readyz(ctx: Ctx) -> JsonApiResponse:
    """The database answers."""
    if not ctx.ready():
        raise ServiceUnavailable("database is not reachable")
    return respond(s.Health(status="ready"))
