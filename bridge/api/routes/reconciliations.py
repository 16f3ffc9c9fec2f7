"""/reconciliations: the stored findings of reconciliation runs, period by period. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, Paging
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, respond
from bridge.domain.access import require_admin
from bridge.domain.reconcile import Reconciliation, Window
from bridge.service.reconcile import reconciliation_report

router = APIRouter(tags=["reconciliations"], route_class=JsonApiRoute)


@router.get("/reconciliations", response_model=s.ReconciliationList)
def list_reconciliations(
    ctx: Ctx,
    bearer: Bearer,
    paging: Paging,
    period: Annotated[str | None, Query(description="periods that started in YYYY-MM")] = None,
    start: Annotated[str | None, Query(alias="from", description="window start, ISO-8601")] = None,
    end: Annotated[str | None, Query(alias="to", description="window end, ISO-8601")] = None,
    sink: Annotated[str | None, Query(description="only this sink")] = None,
    status: Annotated[str | None, Query(description="ok, mismatch or unchecked")] = None,
) -> JsonApiResponse:
    require_admin(bearer)
    window = Window.parse(period, start, end) if (period or start or end) else None
    page = reconciliation_report(ctx.uows, window, sink, status, paging)
    query = {"period": period, "from": start, "to": end, "sink": sink, "status": status}
    extra = {k: v for k, v in query.items() if v is not None}
    data, meta, links = ctx.render.page(page, "/reconciliations", _resource, extra)
    return respond(s.ReconciliationList(data=data, meta=meta, links=links))


def _resource(r: Reconciliation) -> s.ReconciliationResource:
    return s.ReconciliationResource(
        id=f"{r.period_id}:{r.sink}",
        attributes=s.ReconciliationAttributes(
            license_id=r.license_id,
            sink=r.sink,
            period_start=r.period_start,
            period_end=r.period_end,
            status=r.status,
            ledger_total=r.ledger_total,
            ledger_count=r.ledger_count,
            delivered_total=r.delivered_total,
            delivered_count=r.delivered_count,
            undelivered_count=r.undelivered_count,
            platform_total=r.platform_total,
            platform_count=r.platform_count,
            missing=list(r.missing),
            unknown=list(r.unknown),
            repaired=r.repaired,
            unrepairable=r.unrepairable,
            resendable=r.resendable,
            checked_at=r.checked_at,
            late=r.late,
        ),
    )
