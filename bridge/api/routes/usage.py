"""The usage actions and the usage ledger of a license."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, IdempotencyKey, Paging, RequestId
from bridge.api.render import JsonApiResponse, respond
from bridge.domain.model import UsageKind
from bridge.service.usage import UsageChange, usage_history

router = APIRouter(tags=["usage"])


def _apply(ctx: Ctx, bearer: Bearer, change: UsageChange) -> JsonApiResponse:
    outcome = ctx.usage.apply(bearer, change)
    doc = s.LicenseDocument(data=ctx.render.license(outcome.license, ctx.clock.now()))
    response = respond(doc)
    response.headers["Usage-Entry-Id"] = outcome.entry_id
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@router.post("/licenses/{license_id}/actions/increment-usage", response_model=s.LicenseDocument)
def increment_usage(
    ctx: Ctx,
    bearer: Bearer,
    license_id: str,
    key: IdempotencyKey,
    request_id: RequestId,
    body: Annotated[s.IncrementIn | None, Body()] = None,
) -> JsonApiResponse:
    """Add ``meta.increment`` (default 1) to the license's uses, within its ``maxUses``."""
    amount = body.meta.increment if body and body.meta else None
    change = UsageChange(
        license_id, UsageKind.INCREMENT, 1 if amount is None else amount, key, request_id
    )
    return _apply(ctx, bearer, change)


@router.post("/licenses/{license_id}/actions/decrement-usage", response_model=s.LicenseDocument)
def decrement_usage(
    ctx: Ctx,
    bearer: Bearer,
    license_id: str,
    key: IdempotencyKey,
    request_id: RequestId,
    body: Annotated[s.DecrementIn | None, Body()] = None,
) -> JsonApiResponse:
    """Subtract ``meta.decrement`` (default 1) from the license's uses, never below 0."""
    amount = body.meta.decrement if body and body.meta else None
    change = UsageChange(
        license_id, UsageKind.DECREMENT, 1 if amount is None else amount, key, request_id
    )
    return _apply(ctx, bearer, change)


@router.post("/licenses/{license_id}/actions/reset-usage", response_model=s.LicenseDocument)
def reset_usage(
    ctx: Ctx,
    bearer: Bearer,
    license_id: str,
    key: IdempotencyKey,
    request_id: RequestId,
    body: Annotated[s.NoParams | None, Body()] = None,
) -> JsonApiResponse:
    """Set the license's uses to 0."""
    return _apply(ctx, bearer, UsageChange(license_id, UsageKind.RESET, 0, key, request_id))


@router.get("/licenses/{license_id}/usage", response_model=s.UsageList)
def usage(ctx: Ctx, bearer: Bearer, license_id: str, paging: Paging) -> JsonApiResponse:
    """The license's usage ledger, newest first."""
    license, page = usage_history(ctx.uows, bearer, license_id, paging)
    data, meta, links = ctx.render.page(
        page, f"/licenses/{license.id}/usage", ctx.render.usage_entry
    )
    return respond(s.UsageList(data=data, meta=meta, links=links))
