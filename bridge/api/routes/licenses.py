"""/licenses: CRUD, tokens, suspension and validation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, Rendered, respond
from bridge.domain.access import LicenseAction
from bridge.domain.model import License
from bridge.domain.validation import ValidationResult, ValidationScope
from bridge.service import licenses as uc
from bridge.service.auth import IssuedToken

router = APIRouter(tags=["licenses"], route_class=JsonApiRoute)


def _doc(ctx: Ctx, license: License, status: int = 200) -> JsonApiResponse:
    return respond(s.LicenseDocument(data=ctx.render.license(license, ctx.clock.now())), status)


def _answer(ctx: Ctx, status: int = 200) -> Rendered[License]:
    return Rendered(
        lambda lic: s.LicenseDocument(data=ctx.render.license(lic, ctx.clock.now())), status
    )


@router.post("/licenses", status_code=201, response_model=s.LicenseDocument)
def create_license(ctx: Ctx, bearer: Bearer, body: s.LicenseCreate) -> JsonApiResponse:
    answer = _answer(ctx, 201)
    uc.create_license(ctx.uows, ctx.clock, bearer, body.command(), answer, mint=ctx.mint)
    return answer.response


@router.get("/licenses", response_model=s.LicenseList)
def list_licenses(
    ctx: Ctx,
    bearer: Bearer,
    paging: Paging,
    policy: Annotated[str | None, Query(description="only this policy's licenses")] = None,
) -> JsonApiResponse:
    page = uc.list_licenses(ctx.uows, bearer, paging, policy)
    now = ctx.clock.now()
    extra = {"policy": policy} if policy else None
    data, meta, links = ctx.render.page(
        page, "/licenses", lambda lic: ctx.render.license(lic, now), extra
    )
    return respond(s.LicenseList(data=data, meta=meta, links=links))


@router.get("/licenses/{license_id}", response_model=s.LicenseDocument)
def get_license(ctx: Ctx, bearer: Bearer, license_id: str) -> JsonApiResponse:
    """By id or by key."""
    return _doc(ctx, uc.get_license(ctx.uows, bearer, license_id, LicenseAction.READ))


@router.patch("/licenses/{license_id}", response_model=s.LicenseDocument)
def update_license(
    ctx: Ctx, bearer: Bearer, license_id: str, body: s.LicenseUpdate
) -> JsonApiResponse:
    answer = _answer(ctx)
    uc.update_license(ctx.uows, ctx.clock, bearer, license_id, body.command(), answer)
    return answer.response


@router.delete("/licenses/{license_id}", status_code=204)
def delete_license(ctx: Ctx, bearer: Bearer, license_id: str) -> Response:
    uc.delete_license(ctx.uows, ctx.clock, bearer, license_id)
    return Response(status_code=204)


@router.post("/licenses/{license_id}/tokens", status_code=201, response_model=s.TokenDocument)
def create_license_token(ctx: Ctx, bearer: Bearer, license_id: str) -> JsonApiResponse:
    answer: Rendered[IssuedToken] = Rendered(
        lambda t: s.TokenDocument(data=ctx.render.token(t)), 201
    )
    uc.create_license_token(ctx.uows, ctx.clock, bearer, license_id, answer)
    return answer.response


@router.post("/licenses/{license_id}/actions/suspend", response_model=s.LicenseDocument)
def suspend(
    ctx: Ctx, bearer: Bearer, license_id: str, body: Annotated[s.NoParams | None, Body()] = None
) -> JsonApiResponse:
    answer = _answer(ctx)
    uc.set_suspended(ctx.uows, ctx.clock, bearer, license_id, True, answer)
    return answer.response


@router.post("/licenses/{license_id}/actions/reinstate", response_model=s.LicenseDocument)
def reinstate(
    ctx: Ctx, bearer: Bearer, license_id: str, body: Annotated[s.NoParams | None, Body()] = None
) -> JsonApiResponse:
    answer = _answer(ctx)
    uc.set_suspended(ctx.uows, ctx.clock, bearer, license_id, False, answer)
    return answer.response


def _validation(
    ctx: Ctx, nonce: int | None, scope: s.ScopeIn | None
) -> Rendered[tuple[License | None, ValidationResult]]:
    def build(validated: tuple[License | None, ValidationResult]) -> s.ValidationDocument:
        license, result = validated
        now = ctx.clock.now()
        meta = s.ValidationMetaOut(
            ts=now,
            valid=result.valid,
            code=result.code,
            detail=result.detail,
            nonce=nonce,
            scope=scope.model_dump(exclude_unset=True) if scope else None,  # as sent (Keygen)
        )
        data = ctx.render.license(license, now) if license is not None else None
        return s.ValidationDocument(data=data, meta=meta)

    return Rendered(build)


def _scope(scope: s.ScopeIn | None) -> ValidationScope:
    if scope is None:
        return ValidationScope()

    def many(values: list[str] | None) -> tuple[str, ...] | None:
        return tuple(values) if values is not None else None

    return ValidationScope(
        product=scope.product,
        policy=scope.policy,
        fingerprint=scope.fingerprint,
        fingerprints=many(scope.fingerprints),
        machine=scope.machine,
        user=scope.user,
        components=many(scope.components),
        entitlements=many(scope.entitlements),
        checksum=scope.checksum,
        version=scope.version,
        environment=scope.environment,
        given=frozenset(scope.model_fields_set),
    )


@router.post("/licenses/{license_id}/actions/validate", response_model=s.ValidationDocument)
def validate(
    ctx: Ctx,
    bearer: Bearer,
    license_id: str,
    body: Annotated[s.ValidateIn | None, Body()] = None,
) -> JsonApiResponse:
    meta = body.meta if body and body.meta else s.ValidateMeta()
    answer = _validation(ctx, meta.nonce, meta.scope)
    uc.validate(ctx.uows, ctx.clock, bearer, license_id, _scope(meta.scope), answer)
    return answer.response


@router.post("/licenses/actions/validate-key", response_model=s.ValidationDocument)
def validate_key(ctx: Ctx, body: s.ValidateKeyIn) -> JsonApiResponse:
    """No token needed: the key is the credential (Keygen)."""
    meta = body.meta
    answer = _validation(ctx, meta.nonce, meta.scope)
    uc.validate_key(ctx.uows, ctx.clock, meta.key, _scope(meta.scope), answer)
    return answer.response
