"""/products and product tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, Rendered, respond
from bridge.domain.model import Product
from bridge.service import products as uc
from bridge.service.auth import IssuedToken

router = APIRouter(tags=["products"], route_class=JsonApiRoute)


@router.post("/products", status_code=201, response_model=s.ProductDocument)
def create_product(ctx: Ctx, bearer: Bearer, body: s.ProductIn) -> JsonApiResponse:
    answer: Rendered[Product] = Rendered(
        lambda p: s.ProductDocument(data=ctx.render.product(p)), 201
    )
    uc.create_product(ctx.uows, ctx.clock, bearer, body.new(), answer)
    return answer.response


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
    answer: Rendered[Product] = Rendered(lambda p: s.ProductDocument(data=ctx.render.product(p)))
    uc.update_product(ctx.uows, ctx.clock, bearer, product_id, body.patch(), answer)
    return answer.response


@router.delete("/products/{product_id}", status_code=204)
def delete_product(ctx: Ctx, bearer: Bearer, product_id: str) -> Response:
    uc.delete_product(ctx.uows, bearer, product_id)
    return Response(status_code=204)


@router.post("/products/{product_id}/tokens", status_code=201, response_model=s.TokenDocument)
def create_product_token(ctx: Ctx, bearer: Bearer, product_id: str) -> JsonApiResponse:
    answer: Rendered[IssuedToken] = Rendered(
        lambda t: s.TokenDocument(data=ctx.render.token(t)), 201
    )
    uc.create_product_token(ctx.uows, ctx.clock, bearer, product_id, answer)
    return answer.response
