"""Group commit: usage changes from many threads share one write transaction.

On a store with one writer at a time (SQLite), each change paying for its own BEGIN, COMMIT and
fsync caps throughput at one change per commit. Here the first caller to arrive becomes the
leader: it takes every change queued so far (its own included), runs them in one transaction,
each inside its own savepoint, commits once, hands every caller its own answer, then passes
leadership to the next waiting caller. Every answer stays exact (changes run in arrival order,
each sees the ones before it), a rejected change leaves no trace, and nobody gets an answer before
the batch is durable.

Not used on PostgreSQL, where concurrent transactions on different licenses already run in
parallel and a batch would hold row locks across unrelated requests.
"""

from __future__ import annotations

import threading
from collections import deque

from bridge.domain.access import Principal
from bridge.domain.ports import StoreConflict, UnitOfWorkFactory
from bridge.service.usage import RaceLost, UsageChange, UsageOutcome, UsageService


class _Slot:
    __slots__ = ("change", "done", "error", "lead", "outcome", "principal", "retry", "wake")

    def __init__(self, principal: Principal, change: UsageChange) -> None:
        self.principal = principal
        self.change = change
        self.wake = threading.Event()
        self.lead = False
        self.done = False
        self.retry = False
        self.outcome: UsageOutcome | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """``UsageService.apply`` with one commit per batch of concurrent changes."""

    def __init__(
        self, uows: UnitOfWorkFactory, service: UsageService, *, max_batch: int = 64
    ) -> None:
        self._uows = uows
        self._service = service
        self._max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: deque[_Slot] = deque()
        self._leading = False

    def apply(self, principal: Principal, change: UsageChange) -> UsageOutcome:
        slot = _Slot(principal, change)
        with self._mutex:
            self._queue.append(slot)
            slot.lead = not self._leading
            self._leading = True
        if not slot.lead:
            slot.wake.wait()  # done by a leader, or made the next leader
        if not slot.done:
            self._lead()
        if slot.retry:  # a lost race or key conflict: run alone, as without batching
            return self._service.apply(principal, change)
        if slot.error is not None:
            raise slot.error
        assert slot.outcome is not None
        return slot.outcome

    def _lead(self) -> None:
        with self._mutex:
            batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
        self._run(batch)
        for slot in batch:
            slot.done = True
            slot.wake.set()
        with self._mutex:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.wake.set()
            else:
                self._leading = False

    def _run(self, batch: list[_Slot]) -> None:
        try:
            with self._uows(write=True) as uow:
                for slot in batch:
                    try:
                        with uow.savepoint():
                            slot.outcome = self._service.apply_in(uow, slot.principal, slot.change)
                    except (RaceLost, StoreConflict):
                        slot.retry = True
                    except Exception as exc:  # handed to the caller's thread
                        slot.error = exc
                uow.commit()
        except Exception as exc:  # nothing of the batch is durable: every caller learns it
            for slot in batch:
                slot.outcome = None
                slot.retry = False
                slot.error = exc
