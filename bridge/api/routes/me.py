"""/me: the bearer's own resource, which every keygen-rs validation starts with."""

from __future__ import annotations

from fastapi import APIRouter

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx
from bridge.api.render import JsonApiResponse, respond
from bridge.domain.access import LicenseAction, Role
from bridge.domain.errors import NotFound
from bridge.service import licenses, products

router = APIRouter(tags=["me"])


@router.get("/me", response_model=s.LicenseDocument | s.ProductDocument)
def me(ctx: Ctx, bearer: Bearer) -> JsonApiResponse:
    """The license for ``License <key>`` or a license token, the product for a product token;
    no ``meta`` (keygen-rs reads this document's ``meta`` as empty and fails on any object)."""
    if bearer.role is Role.LICENSE:
        license = licenses.get_license(ctx.uows, bearer, bearer.id, LicenseAction.READ)
        return respond(s.LicenseDocument(data=ctx.render.license(license, ctx.clock.now())))
    if bearer.role is Role.PRODUCT:
        product = products.get_product(ctx.uows, bearer, bearer.id)
        return respond(s.ProductDocument(data=ctx.render.product(product)))
    # Keygen's admins are users; the bridge's admin token has no resource of its own.
    raise NotFound("The admin token has no profile resource (the bridge keeps no users)")
