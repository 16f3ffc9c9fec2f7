"""/products and product tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.render import JsonApiResponse, respond
from bridge.service import products as uc

router = APIRouter(tags=["products"])


@router.post("/products", status_code=201, response_model=s.ProductDocument)
def create_product(ctx: Ctx, bearer: Bearer, body: s.ProductIn) -> JsonApiResponse:
    product = uc.create_product(ctx.uows, ctx.clock, bearer, body.new())
    return respond(s.ProductDocument(data=ctx.render.product(product)), 201)


@router.get("/products", response_model=s.ProductList)
def list_products(ctx: Ctx, bearer: Bearer, paging: Paging) -> JsonApiResponse:
    page = uc.list_products(ctx.uows, bearer, paging)
    data, meta, links = ctx.render.page(page, "/products", ctx.render.product)
    return respond(s.ProductList(data=data, meta=meta, links=links))


@router.get("/products/{product_id}", response_model=s.ProductDocument)
def get_product(ctx: Ctx, bearer: Bearer, product_id: str) -> JsonApiResponse:
    product = uc.get_product(ctx.uows, bearer, product_id)
    return respond(s.ProductDocument(data=ctx.render.product(product)))


@router.patch("/products/{product_id}", response_model=s.ProductDocument)
def update_product(ctx: Ctx, bearer: Bearer, product_id: str, body: s.ProductIn) -> JsonApiResponse:
    product = uc.update_product(ctx.uows, ctx.clock, bearer, product_id, body.patch())
    return respond(s.ProductDocument(data=ctx.render.product(product)))


@router.delete("/products/{product_id}", status_code=204, response_class=Response)
def delete_product(ctx: Ctx, bearer: Bearer, product_id: str) -> Response:
    uc.delete_product(ctx.uows, bearer, product_id)
    return Response(status_code=204)


@router.post("/products/{product_id}/tokens", status_code=201, response_model=s.TokenDocument)
def create_product_token(ctx: Ctx, bearer: Bearer, product_id: str) -> JsonApiResponse:
    token = uc.create_product_token(ctx.uows, ctx.clock, bearer, product_id)
    return respond(s.TokenDocument(data=ctx.render.token(token)), 201)
