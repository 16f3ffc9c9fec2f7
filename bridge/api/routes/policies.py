"""/policies."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.render import JsonApiResponse, respond
from bridge.service import policies as uc

router = APIRouter(tags=["policies"])


@router.post("/policies", status_code=201, response_model=s.PolicyDocument)
def create_policy(ctx: Ctx, bearer: Bearer, body: s.PolicyCreate) -> JsonApiResponse:
    policy = uc.create_policy(ctx.uows, ctx.clock, bearer, body.command())
    return respond(s.PolicyDocument(data=ctx.render.policy(policy)), 201)


@router.get("/policies", response_model=s.PolicyList)
def list_policies(
    ctx: Ctx,
    bearer: Bearer,
    paging: Paging,
    product: Annotated[str | None, Query(description="only this product's policies")] = None,
) -> JsonApiResponse:
    page = uc.list_policies(ctx.uows, bearer, paging, product)
    extra = {"product": product} if product else None
    data, meta, links = ctx.render.page(page, "/policies", ctx.render.policy, extra)
    return respond(s.PolicyList(data=data, meta=meta, links=links))


@router.get("/policies/{policy_id}", response_model=s.PolicyDocument)
def get_policy(ctx: Ctx, bearer: Bearer, policy_id: str) -> JsonApiResponse:
    policy = uc.get_policy(ctx.uows, bearer, policy_id)
    return respond(s.PolicyDocument(data=ctx.render.policy(policy)))


@router.patch("/policies/{policy_id}", response_model=s.PolicyDocument)
def update_policy(
    ctx: Ctx, bearer: Bearer, policy_id: str, body: s.PolicyUpdate
) -> JsonApiResponse:
    policy = uc.update_policy(ctx.uows, ctx.clock, bearer, policy_id, body.command())
    return respond(s.PolicyDocument(data=ctx.render.policy(policy)))


@router.delete("/policies/{policy_id}", status_code=204, response_class=Response)
def delete_policy(ctx: Ctx, bearer: Bearer, policy_id: str) -> Response:
    uc.delete_policy(ctx.uows, bearer, policy_id)
    return Response(status_code=204)
