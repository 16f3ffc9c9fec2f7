"""Usage changes from async routes, without blocking the event loop."""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool

from bridge.domain.access import Principal
from bridge.service.batch_writer import BatchWriter
from bridge.service.common import Answer, ignore
from bridge.service.usage import UsageChange, UsageOutcome, UsageService


class UsageWrites:
    """Changes go to the ``BatchWriter`` thread, which commits them in groups (both databases);
    without one (``batch=None``) each runs in the threadpool in a transaction of its own."""

    def __init__(self, service: UsageService, batch: BatchWriter | None) -> None:
        self._service = service
        self._batch = batch

    async def apply(
        self, principal: Principal, change: UsageChange, answer: Answer[UsageOutcome] = ignore
    ) -> UsageOutcome:
        if self._batch is None:
            return await run_in_threadpool(self._service.apply, principal, change, answer)
        return await self._batch.submit_async(principal, change, answer)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
