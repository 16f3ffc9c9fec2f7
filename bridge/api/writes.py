"""Usage changes and machine activations from async routes, without blocking the event loop."""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool

from bridge.domain.access import Principal
from bridge.domain.commands import NewMachine
from bridge.domain.errors import BridgeError
from bridge.domain.model import Machine
from bridge.observability import metrics
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
        try:
            if self._batch is None:
                outcome = await run_in_threadpool(self._service.apply, principal, change, answer)
            else:
                outcome = await self._batch.submit_async(principal, change, answer)
        except BridgeError as exc:
            metrics.usage_change(change.kind.value, exc.code)
            raise
        metrics.usage_change(change.kind.value, None)
        return outcome

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()


class MachineWrites:
    """Activations go to the ``BatchWriter`` too, in the lane of their license: an
    activation's own commit (an fsync on SQLite) cost more than the activation."""

    def __init__(self, batch: BatchWriter) -> None:
        assert batch.activates, "a writer without a machine service"
        self._batch = batch

    async def activate(
        self,
        principal: Principal,
        command: NewMachine,
        request_id: str | None,
        answer: Answer[Machine] = ignore,
    ) -> Machine:
        return await self._batch.activate_async(principal, command, request_id, answer)
