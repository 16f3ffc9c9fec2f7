"""/machines: activate, read, list, update, deactivate and ping (heartbeat)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from bridge.api import schemas as s
from bridge.api.deps import WRITE_SECURITY, Bearer, Ctx, Paging, RequestId, Write
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, Rendered, RenderedJson, respond
from bridge.domain.model import Machine

router = APIRouter(tags=["machines"], route_class=JsonApiRoute)


def _doc(ctx: Ctx, machine: Machine, status: int = 200) -> JsonApiResponse:
    return respond(s.MachineDocument(data=ctx.render.machine(machine, ctx.clock.now())), status)


def _answer(ctx: Ctx, status: int = 200) -> Rendered[Machine]:
    return Rendered(
        lambda m: s.MachineDocument(data=ctx.render.machine(m, ctx.clock.now())), status
    )


@router.post(
    "/machines",
    status_code=201,
    response_model=s.MachineDocument,
    openapi_extra=WRITE_SECURITY,
)
async def activate_machine(call: Write, body: s.MachineCreate) -> Response:
    """Activate a machine on a license, within its maxMachines and maxCores."""
    ctx = call.ctx
    answer: RenderedJson[Machine] = RenderedJson(
        lambda m: ctx.render.machine_json(m, ctx.clock.now()), 201
    )
    await ctx.activations.activate(call.principal, body.command(), call.request_id, answer)
    return answer.response


@router.get("/machines", response_model=s.MachineList)
def list_machines(
    ctx: Ctx,
    bearer: Bearer,
    paging: Paging,
    license: Annotated[str | None, Query(description="only this license's (id or key)")] = None,
) -> JsonApiResponse:
    page = ctx.machines.list(bearer, paging, license)
    now = ctx.clock.now()
    extra = {"license": license} if license else None
    data, meta, links = ctx.render.page(
        page, "/machines", lambda m: ctx.render.machine(m, now), extra
    )
    return respond(s.MachineList(data=data, meta=meta, links=links))


@router.get("/licenses/{license_id}/machines", response_model=s.MachineList)
def list_license_machines(
    ctx: Ctx,
    bearer: Bearer,
    paging: Paging,
    license_id: str,
    fingerprint: Annotated[str | None, Query(description="only the machine with this one")] = None,
) -> JsonApiResponse:
    """The license's machines (id or key), as keygen-rs lists them (``?limit=100``)."""
    page = ctx.machines.list(
        bearer, paging, license_id, strict_license=True, fingerprint=fingerprint
    )
    now = ctx.clock.now()
    extra = {"fingerprint": fingerprint} if fingerprint else None
    data, meta, links = ctx.render.page(
        page, f"/licenses/{license_id}/machines", lambda m: ctx.render.machine(m, now), extra
    )
    return respond(s.MachineList(data=data, meta=meta, links=links))


@router.get("/licenses/{license_id}/machines/{machine_id}", response_model=s.MachineDocument)
def get_license_machine(
    ctx: Ctx, bearer: Bearer, license_id: str, machine_id: str
) -> JsonApiResponse:
    """One of the license's machines, by id or fingerprint."""
    return _doc(ctx, ctx.machines.get(bearer, machine_id, license_id))


@router.get("/machines/{machine_id}", response_model=s.MachineDocument)
def get_machine(ctx: Ctx, bearer: Bearer, machine_id: str) -> JsonApiResponse:
    """The machine by id or fingerprint (within the bearer's scope)."""
    return _doc(ctx, ctx.machines.get(bearer, machine_id))


@router.patch("/machines/{machine_id}", response_model=s.MachineDocument)
def update_machine(
    ctx: Ctx, bearer: Bearer, request_id: RequestId, machine_id: str, body: s.MachineUpdate
) -> JsonApiResponse:
    """Descriptive fields, or ``cores`` (admin and product only; a raise is limit-checked)."""
    answer = _answer(ctx)
    ctx.machines.update(bearer, machine_id, body.command(), request_id, answer)
    return answer.response


@router.delete("/machines/{machine_id}", status_code=204)
def deactivate_machine(
    ctx: Ctx, bearer: Bearer, request_id: RequestId, machine_id: str
) -> Response:
    """Deactivate the machine; its cores are freed."""
    ctx.machines.deactivate(bearer, machine_id, request_id)
    return Response(status_code=204)


@router.post("/machines/{machine_id}/actions/ping", response_model=s.MachineDocument)
def ping_machine(
    ctx: Ctx, bearer: Bearer, machine_id: str, body: Annotated[s.NoParams | None, Body()] = None
) -> JsonApiResponse:
    """A heartbeat: with a policy heartbeatDuration, the next one is due within it."""
    answer = _answer(ctx)
    ctx.machines.ping(bearer, machine_id, answer)
    return answer.response
