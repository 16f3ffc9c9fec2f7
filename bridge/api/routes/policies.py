"""/policies."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, Rendered, respond
from bridge.domain.model import Policy
from bridge.service import policies as uc

router = APIRouter(tags=["policies"], route_class=JsonApiRoute)


@router.post("/policies", status_code=201, response_model=s.PolicyDocument)
def create_policy(ctx: Ctx, bearer: Bearer, body: s.PolicyCreate) -> JsonApiResponse:
    answer: Rendered[Policy] = Rendered(lambda p: s.PolicyDocument(data=ctx.render.policy(p)), 201)
    uc.create_policy(ctx.uows, ctx.clock, bearer, body.command(), answer)
    return answer.response


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
    answer: Rendered[Policy] = Rendered(lambda p: s.PolicyDocument(data=ctx.render.policy(p)))
    uc.update_policy(ctx.uows, ctx.clock, bearer, policy_id, body.command(), answer)
    return answer.response


@router.delete("/policies/{policy_id}", status_code=204)
def delete_policy(ctx: Ctx, bearer: Bearer, policy_id: str) -> Response:
    uc.delete_policy(ctx.uows, bearer, policy_id)
    return Response(status_code=204)
