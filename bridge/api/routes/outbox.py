"""/outbox: delivery status per sink, dead letters, and their retry. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, respond
from bridge.domain.access import require_admin
from bridge.service import relay

router = APIRouter(tags=["outbox"], route_class=JsonApiRoute)
Sink = Annotated[str | None, Query(description="only this sink")]


@router.get("/outbox", response_model=s.OutboxStatusList)
def outbox_status(ctx: Ctx, bearer: Bearer) -> JsonApiResponse:
    """Per sink and status: how many items, how many for each reason, and the oldest one's
    creation time."""
    require_admin(bearer)
    rows = relay.outbox_status(ctx.uows)
    data = [
        s.OutboxStatusResource(
            id=f"{r.sink}:{r.status.value}",
            attributes=s.OutboxStatusAttributes(
                sink=r.sink,
                status=r.status.value,
                count=r.count,
                mapping_missing=r.mapping_missing,
                reasons={reason.value: n for reason, n in sorted(r.reasons.items())},
                oldest_created=r.oldest_created,
            ),
        )
        for r in rows
    ]
    return respond(s.OutboxStatusList(data=data))


@router.get("/outbox/dead-letters", response_model=s.DeadLetterList)
def dead_letters(ctx: Ctx, bearer: Bearer, paging: Paging, sink: Sink = None) -> JsonApiResponse:
    """Items that will not be retried, oldest first, with the platform's error."""
    require_admin(bearer)
    letters = relay.dead_letters(ctx.uows, sink, paging)
    data = [
        s.DeadLetterResource(
            id=str(d.item.id),
            attributes=s.DeadLetterAttributes(
                sink=d.item.sink,
                attempts=d.item.attempts,
                reason=d.reason.value if d.reason is not None else None,
                error=d.error,
                entry_id=d.item.entry.id,
                license_id=d.item.entry.license_id,
                kind=d.item.entry.kind.value,
                delta=d.item.entry.delta,
                occurred_at=d.item.entry.occurred_at,
            ),
        )
        for d in letters
    ]
    return respond(s.DeadLetterList(data=data))


@router.post("/outbox/actions/retry", response_model=s.RetryOut)
def retry(
    ctx: Ctx, bearer: Bearer, body: Annotated[s.RetryIn | None, Body()] = None
) -> JsonApiResponse:
    """Send dead letters again (all, one sink's, or ``meta.ids``), with their original ids."""
    require_admin(bearer)
    meta = body.meta if body and body.meta else s.RetryMeta()
    count = relay.retry_dead_letters(ctx.uows, ctx.clock, meta.sink, meta.ids)
    return respond(s.RetryOut(meta=s.RetryMetaOut(requeued=count)))
