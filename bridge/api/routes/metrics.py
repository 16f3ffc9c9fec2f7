"""/metrics: the Prometheus metrics, for the admin token (unless served on a port of their
own, ``metrics.port``, where the network decides who may scrape)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from bridge.api.deps import Bearer, Ctx
from bridge.domain.access import require_admin
from bridge.domain.errors import RouteNotFound

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics(ctx: Ctx, bearer: Bearer) -> Response:
    """Prometheus' text format: counters of every process sharing the metrics directory, and
    the outbox read from the store."""
    require_admin(bearer)
    if ctx.metrics is None:
        raise RouteNotFound
    body, content_type = ctx.metrics()
    return Response(body, media_type=content_type)
