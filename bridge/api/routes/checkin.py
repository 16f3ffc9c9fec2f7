"""Keygen's check-in action, with the offline usage records a client sends along."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body

from bridge.api import schemas as s
from bridge.api.deps import Bearer, Ctx, RequestId
from bridge.api.parsing import JsonApiRoute
from bridge.api.render import JsonApiResponse, Rendered
from bridge.domain.checkin import RecordResult
from bridge.domain.commands import CheckIn, RawUsageRecord
from bridge.service.checkin import CheckInOutcome

router = APIRouter(tags=["licenses"], route_class=JsonApiRoute)


class UsageRecordIn(s.Strict):
    id: str
    increment: int
    occurred_at: str


class CheckInMeta(s.Strict):
    usage: list[UsageRecordIn] | None = None


class CheckInIn(s.Strict):
    meta: CheckInMeta | None = None


class RecordResultOut(s.Out):
    id: str
    status: Literal["accepted", "duplicate", "rejected"]
    entry_id: str | None = None
    period_start: datetime | None = None
    late: bool = False
    code: str | None = None
    detail: str | None = None


class CheckInMetaOut(s.Out):
    usage: list[RecordResultOut]


class CheckInDocument(s.Out):
    """The license (Keygen's answer), with ``meta.usage`` when records were sent."""

    data: s.LicenseResource
    meta: CheckInMetaOut | None = None


class _Answer(Rendered[CheckInOutcome]):
    def __call__(self, value: CheckInOutcome) -> None:
        document = self._build(value)
        body = document.model_dump(mode="json", by_alias=True, exclude_none=False)
        if body.get("meta") is None:
            body.pop("meta", None)
        self._response = JsonApiResponse(body, status_code=self._status)


def _result(r: RecordResult) -> RecordResultOut:
    return RecordResultOut(
        id=r.id,
        status=r.status.value,
        entry_id=r.entry_id,
        period_start=r.period_start,
        late=r.late,
        code=r.code,
        detail=r.detail,
    )


@router.post("/licenses/{license_id}/actions/check-in", response_model=CheckInDocument)
def check_in(
    ctx: Ctx,
    bearer: Bearer,
    request_id: RequestId,
    license_id: str,
    body: Annotated[CheckInIn | None, Body()] = None,
) -> JsonApiResponse:
    """Keygen's check-in (sets ``lastCheckIn``), which also takes the offline usage recorded
    since the last one: ``meta.usage``, at most 1000 records of ``id`` (the client's UUID),
    ``increment`` and ``occurredAt``; ``meta.usage`` of the answer says what became of each,
    in order."""
    records = body.meta.usage if body and body.meta else None
    usage = tuple(RawUsageRecord(r.id, r.increment, r.occurred_at) for r in records or ())
    command = CheckIn(license_id, usage, request_id)

    def build(outcome: CheckInOutcome) -> CheckInDocument:
        data = ctx.render.license(outcome.license, ctx.clock.now())
        if records is None:
            return CheckInDocument(data=data)
        results = [_result(r) for r in outcome.results]
        return CheckInDocument(data=data, meta=CheckInMetaOut(usage=results))

    answer = _Answer(build)
    assert ctx.checkins is not None, "the composition root wires check-ins"
    ctx.checkins.check_in(bearer, command, answer)
    return answer.response
