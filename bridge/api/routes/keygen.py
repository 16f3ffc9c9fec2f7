"""/keygen/status: the Keygen relay at a glance (admin). The deliveries themselves arrive at
``POST /v1/webhooks/keygen`` (``bridge.api.routes.webhooks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter

from bridge.api.deps import Bearer, Ctx
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, respond
from bridge.api.schemas import Out
from bridge.domain.access import require_admin
from bridge.domain.errors import KeygenNotConfigured
from bridge.service import keygen as uc

router = APIRouter(tags=["keygen"], route_class=JsonApiRoute)


class KeygenStatusAttributes(Out):
    mirrored: int  # licenses mirrored (deleted in Keygen included)
    deleted: int  # of those, deleted in Keygen
    last_delivery: datetime | None
    last_check: datetime | None
    corrections: int  # deltas forwarded by the check (lost deliveries repaired)
    corrected: int  # their sum
    forwarded: int  # the net usage forwarded for mirrored licenses
    resets: dict[str, int]  # Keygen resets of closed periods, by status
    checks_due: int
    rejected: dict[str, int]  # refused deliveries since start, by error code


class KeygenStatusResource(Out):
    id: str
    type: Literal["keygen-statuses"] = "keygen-statuses"
    attributes: KeygenStatusAttributes


class KeygenStatusDocument(Out):
    data: KeygenStatusResource


@router.get("/keygen/status", response_model=KeygenStatusDocument)
def keygen_status(ctx: Ctx, bearer: Bearer) -> JsonApiResponse:
    """Mirrored licenses, the last delivery and check, the corrections made and the resets."""
    require_admin(bearer)
    receiver = ctx.webhooks.get("keygen")
    if receiver is None:
        raise KeygenNotConfigured
    found = uc.status(ctx.uows, ctx.clock)
    attributes = KeygenStatusAttributes(
        mirrored=found.mirrored,
        deleted=found.deleted,
        last_delivery=found.last_delivery_at,
        last_check=found.last_check_at,
        corrections=found.corrections,
        corrected=found.corrected,
        forwarded=found.forwarded,
        resets=found.resets,
        checks_due=found.checks_due,
        rejected=ctx.webhooks.rejected().get("keygen", {}),
    )
    account = getattr(receiver, "account_id", "keygen")
    return respond(
        KeygenStatusDocument(data=KeygenStatusResource(id=account, attributes=attributes))
    )
