"""The usage actions and the usage ledger of a license."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging, Usage, UsageCall
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, respond
from bridge.domain.model import UsageKind
from bridge.service.usage import UsageChange, UsageOutcome, usage_history

router = APIRouter(tags=["usage"], route_class=JsonApiRoute)


async def _apply(call: UsageCall, kind: UsageKind, license_id: str, amount: int) -> JsonApiResponse:
    ctx = call.ctx
    change = UsageChange(license_id, kind, amount, call.idempotency_key, call.request_id)
    rendered: list[JsonApiResponse] = []

    def answer(outcome: UsageOutcome) -> None:
        # Called inside the change's transaction, before its commit (see ``Rendered``).
        doc = s.LicenseDocument(data=ctx.render.license(outcome.license, ctx.clock.now()))
        response = respond(doc)
        response.headers["Usage-Entry-Id"] = outcome.entry_id
        if outcome.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        rendered[:] = [response]

    await ctx.usage.apply(call.principal, change, answer)
    return rendered[0]


@router.post("/licenses/{license_id}/actions/increment-usage", response_model=s.LicenseDocument)
async def increment_usage(
    call: Usage,
    license_id: str,
    body: Annotated[s.IncrementIn | None, Body()] = None,
) -> JsonApiResponse:
    """Add ``meta.increment`` (default 1) to the license's uses, within its ``maxUses``."""
    amount = body.meta.increment if body and body.meta else None
    return await _apply(call, UsageKind.INCREMENT, license_id, 1 if amount is None else amount)


@router.post("/licenses/{license_id}/actions/decrement-usage", response_model=s.LicenseDocument)
async def decrement_usage(
    call: Usage,
    license_id: str,
    body: Annotated[s.DecrementIn | None, Body()] = None,
) -> JsonApiResponse:
    """Subtract ``meta.decrement`` (default 1) from the license's uses, never below 0."""
    amount = body.meta.decrement if body and body.meta else None
    return await _apply(call, UsageKind.DECREMENT, license_id, 1 if amount is None else amount)


@router.post("/licenses/{license_id}/actions/reset-usage", response_model=s.LicenseDocument)
async def reset_usage(
    call: Usage,
    license_id: str,
    body: Annotated[s.NoParams | None, Body()] = None,
) -> JsonApiResponse:
    """Set the license's uses to 0."""
    return await _apply(call, UsageKind.RESET, license_id, 0)


@router.get("/licenses/{license_id}/usage", response_model=s.UsageList)
def usage(ctx: Ctx, bearer: Bearer, license_id: str, paging: Paging) -> JsonApiResponse:
    """The license's usage ledger, newest first."""
    license, page = usage_history(ctx.uows, bearer, license_id, paging)
    data, meta, links = ctx.render.page(
        page, f"/licenses/{license.id}/usage", ctx.render.usage_entry
    )
    return respond(s.UsageList(data=data, meta=meta, links=links))
