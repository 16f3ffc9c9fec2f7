"""Webhooks in (``POST /v1/webhooks/...``, verified by signature, not by token) and the admin's
view of the stored deliveries (``/webhook-deliveries``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, Rendered, respond
from bridge.api.schemas import Out
from bridge.domain.access import require_admin
from bridge.domain.errors import BridgeError, RouteNotFound
from bridge.domain.webhooks import DeliveryStatus, WebhookDelivery
from bridge.observability import metrics
from bridge.service import webhooks as uc


class DeliveryAttributes(Out):
    provider: str
    delivery_id: str
    event_type: str
    status: str
    subject: str | None
    attempts: int
    last_error: str | None
    effects: list[str]
    received_at: datetime
    handled_at: datetime | None


class DeliveryResource(Out):
    id: str
    type: Literal["webhook-deliveries"] = "webhook-deliveries"
    attributes: DeliveryAttributes


class DeliveryDocument(Out):
    data: DeliveryResource


class DeliveryListMeta(Out):
    rejected: dict[str, dict[str, int]]  # since start, by provider then error code


class DeliveryList(Out):
    data: list[DeliveryResource]
    meta: DeliveryListMeta


class EffectAttributes(Out):
    provider: str
    delivery_id: str  # the provider's id of the delivery
    delivery: str  # the stored delivery (GET /v1/webhook-deliveries/{id})
    action: str
    detail: str | None
    at: datetime


class EffectResource(Out):
    id: str
    type: Literal["webhook-effects"] = "webhook-effects"
    attributes: EffectAttributes


class EffectList(Out):
    data: list[EffectResource]


def resource(d: WebhookDelivery) -> DeliveryResource:
    return DeliveryResource(
        id=str(d.id),
        attributes=DeliveryAttributes(
            provider=d.provider,
            delivery_id=d.delivery_id,
            event_type=d.event_type,
            status=d.status.value,
            subject=d.subject,
            attempts=d.attempts,
            last_error=d.last_error,
            effects=list(d.effects),
            received_at=d.received_at,
            handled_at=d.handled_at,
        ),
    )


inbound = APIRouter(tags=["webhooks"])
router = APIRouter(tags=["webhooks"], route_class=JsonApiRoute)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": DeliveryDocument, "description": "Stored (or stored before): the delivery"}
}


async def _receive(request: Request, ctx: Ctx, provider: str) -> JsonApiResponse:
    receiver = ctx.webhooks.get(provider)
    if receiver is None:  # not configured: the endpoint does not exist
        raise RouteNotFound()
    body = await request.body()

    def store() -> JsonApiResponse:
        try:
            delivery = ctx.webhooks.accept(
                receiver, request.headers, body, str(request.url), ctx.clock.now()
            )
        except BridgeError:  # a bad signature, a stale timestamp, a body it cannot read
            metrics.webhook_delivery(provider, "refused")
            raise
        answer = Rendered[WebhookDelivery](lambda d: DeliveryDocument(data=resource(d)))
        uc.receive(ctx.uows, ctx.clock, delivery, answer)
        return answer.response

    return await run_in_threadpool(store)


@inbound.post("/webhooks/lago", responses=_RESPONSES)
async def lago_webhook(request: Request, ctx: Ctx) -> JsonApiResponse:
    """Lago (HMAC or JWT signature); the delivery key is ``X-Lago-Unique-Key``."""
    return await _receive(request, ctx, "lago")


@inbound.post("/webhooks/stripe", responses=_RESPONSES)
async def stripe_webhook(request: Request, ctx: Ctx) -> JsonApiResponse:
    """Stripe (``Stripe-Signature``); the delivery key is the event id."""
    return await _receive(request, ctx, "stripe")


@inbound.post("/webhooks/m3ter", responses=_RESPONSES)
async def m3ter_webhook(request: Request, ctx: Ctx) -> JsonApiResponse:
    """m3ter (``M3TER_SIGNED_REQUEST``); the delivery key is the event id."""
    return await _receive(request, ctx, "m3ter")


@inbound.post("/webhooks/keygen", responses=_RESPONSES)
async def keygen_webhook(request: Request, ctx: Ctx) -> JsonApiResponse:
    """Keygen (``Keygen-Signature``, draft-cavage, over ``(request-target) host date digest``);
    the delivery key is ``meta.idempotencyToken``."""
    return await _receive(request, ctx, "keygen")


@inbound.post("/webhooks/standard/{source}", responses=_RESPONSES)
async def standard_webhook(request: Request, ctx: Ctx, source: str) -> JsonApiResponse:
    """Any Standard Webhooks sender configured as ``[webhooks.standard.<source>]``; the
    delivery key is ``webhook-id``."""
    return await _receive(request, ctx, f"standard/{source}")


@router.get("/webhook-deliveries", response_model=DeliveryList)
def list_webhook_deliveries(
    ctx: Ctx,
    bearer: Bearer,
    paging: Paging,
    provider: Annotated[str | None, Query(description="only this provider")] = None,
    status: Annotated[DeliveryStatus | None, Query(description="only this status")] = None,
) -> JsonApiResponse:
    """Stored deliveries, newest first, and the count of refused ones since start."""
    require_admin(bearer)
    found = uc.list_deliveries(ctx.uows, provider, status, offset=paging.offset, limit=paging.size)
    meta = DeliveryListMeta(rejected=ctx.webhooks.rejected())
    return respond(DeliveryList(data=[resource(d) for d in found], meta=meta))


@router.get("/webhook-deliveries/{delivery_id}", response_model=DeliveryDocument)
def get_webhook_delivery(ctx: Ctx, bearer: Bearer, delivery_id: int) -> JsonApiResponse:
    require_admin(bearer)
    return respond(DeliveryDocument(data=resource(uc.get_delivery(ctx.uows, delivery_id))))


@router.get("/licenses/{license_id}/webhook-effects", response_model=EffectList)
def license_webhook_effects(ctx: Ctx, bearer: Bearer, license_id: str) -> JsonApiResponse:
    """The license's webhook history: each effect with the delivery that caused it."""
    require_admin(bearer)
    found = uc.license_effects(ctx.uows, license_id)
    data = [
        EffectResource(
            id=f"{e.delivery}:{n}",
            attributes=EffectAttributes(
                provider=e.provider,
                delivery_id=e.delivery_id,
                delivery=str(e.delivery),
                action=e.action,
                detail=e.detail,
                at=e.at,
            ),
        )
        for n, e in enumerate(found)
    ]
    return respond(EffectList(data=data))
