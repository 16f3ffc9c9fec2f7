"""One writer thread that applies queued usage changes in shared transactions (group commit).

SQLite has one writer at a time, so concurrent changes queue anyway. Each waiting on its own
transaction costs a commit (an fsync) and a thread hand-off per change; under HTTP load the
hand-off alone, waiting for the GIL behind the event loop, cost ~1.5 ms per change (measured with
``bench/http_api.py``). This writer takes every change queued so far, applies them in arrival
order in one transaction, each inside its own savepoint, commits once, and only then answers
every caller. Each answer stays exact (a change sees the ones before it), a rejected change
leaves no trace, and no caller hears of a change before it is durable.

The same writer runs on PostgreSQL (one per API process): a WAL flush, a pooled connection and a
threadpool hop per change cost more than the change. Batches of several processes can meet on
the same rows; a deadlock between them fails one statement (its change runs again alone) or the
whole transaction (every change of it runs again alone: none of it was durable).

Machine activations take the same path (``activate_async``): an activation's transaction is
short next to its commit, and each waiting on its own fsync capped them at the disk's commit
rate. In a batch each one holds its license (``licenses.lock``) from its savepoint to the
batch's commit, and sees the machines activated before it, so the limits are decided exactly
as one transaction per activation decides them.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import structlog

from bridge.domain.access import Principal
from bridge.domain.commands import NewMachine
from bridge.domain.model import Machine
from bridge.domain.ports import StoreConflict, WriterUnitOfWork, WriterUnitOfWorkFactory
from bridge.service.common import Answer, ignore
from bridge.service.machines import MachineService
from bridge.service.usage import RaceLost, UsageChange, UsageOutcome, UsageService

log = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass
class _Job:
    together: Callable[[WriterUnitOfWork], Any]  # the change in the batch's transaction
    alone: Callable[[], Any]  # the same change in a transaction of its own
    future: Future[Any] | None = None  # a thread's, or:
    waiter: asyncio.Future[Any] | None = None  # an event loop's
    # The submitter's context (its request id for the logs): contextvars do not cross threads.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    outcome: Any = None
    error: BaseException | None = None
    done: bool = False
    run_alone: bool = False  # lost a race or a key conflict: run again in its own transaction


_STOP = object()


class BatchWriter:
    """``lanes`` writer threads (1 on SQLite, which has one writer anyway). On PostgreSQL a
    lane spends most of its time waiting for the server's answers, so several work side by
    side; a change goes to the lane of its license reference, so two lanes never wait on each
    other's row locks for the same license."""

    def __init__(
        self,
        uows: WriterUnitOfWorkFactory,
        service: UsageService,
        *,
        max_batch: int = 256,
        lanes: int = 1,
        machines: MachineService | None = None,
    ) -> None:
        self._uows = uows
        self._service = service
        self._machines = machines  # activations take this path only with a machine service
        self._max_batch = max_batch
        self._queues: list[queue.SimpleQueue[_Job | object]] = [
            queue.SimpleQueue() for _ in range(lanes)
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"bridge-writer-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def activates(self) -> bool:
        return self._machines is not None

    def _put(self, lane: str, job: _Job) -> None:
        queues = self._queues
        (queues[0] if len(queues) == 1 else queues[hash(lane) % len(queues)]).put(job)

    def _usage_job(
        self, principal: Principal, change: UsageChange, answer: Answer[UsageOutcome]
    ) -> _Job:
        service = self._service

        def together(uow: WriterUnitOfWork) -> UsageOutcome:
            outcome = service.apply_in(uow, principal, change)
            answer(outcome)  # a failure undoes the savepoint
            return outcome

        return _Job(together, partial(service.apply, principal, change, answer))

    def submit(
        self, principal: Principal, change: UsageChange, answer: Answer[UsageOutcome] = ignore
    ) -> Future[UsageOutcome]:
        job = self._usage_job(principal, change, answer)
        future: Future[UsageOutcome] = Future()
        job.future = future
        self._put(change.license_ref, job)
        return future

    def submit_async(
        self, principal: Principal, change: UsageChange, answer: Answer[UsageOutcome] = ignore
    ) -> asyncio.Future[UsageOutcome]:
        """As ``submit``, for a caller on an event loop: a batch's answers reach each loop in
        one wake-up (``call_soon_threadsafe``) instead of one per change."""
        job = self._usage_job(principal, change, answer)
        job.waiter = waiter = asyncio.get_running_loop().create_future()
        self._put(change.license_ref, job)
        return waiter

    def activate_async(
        self,
        principal: Principal,
        command: NewMachine,
        request_id: str | None = None,
        answer: Answer[Machine] = ignore,
    ) -> asyncio.Future[Machine]:
        """``MachineService.activate`` in a batch (in the lane of its license reference, as
        that license's usage changes); from an event loop, as ``submit_async``."""
        machines = self._machines
        assert machines is not None, "a writer without a machine service"
        job = _Job(
            lambda uow: machines.activate_in(uow, principal, command, request_id, answer),
            partial(machines.activate, principal, command, request_id, answer),
        )
        job.waiter = waiter = asyncio.get_running_loop().create_future()
        self._put(command.license_ref or "", job)
        return waiter

    def close(self) -> None:
        """Finish what is queued, then stop the threads."""
        for q in self._queues:
            q.put(_STOP)
        for thread in self._threads:
            thread.join()

    def _run(self, jobs: queue.SimpleQueue[_Job | object]) -> None:
        stopping = False
        while not stopping:
            batch: list[_Job] = []
            item = jobs.get()
            while True:
                if item is _STOP:
                    stopping = True
                elif isinstance(item, _Job):
                    batch.append(item)
                if stopping or len(batch) >= self._max_batch:
                    break
                try:
                    item = jobs.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._apply(batch)

    def _apply(self, batch: list[_Job]) -> None:
        try:
            self._together(batch)
        except StoreConflict:  # a deadlock with another process's batch (PostgreSQL): nothing
            for job in batch:  # of this one is durable, so each runs again on its own
                job.done, job.run_alone, job.error = False, True, None
        except Exception as exc:  # nothing of the batch is durable: every caller learns it
            for job in batch:
                job.context.run(log.warning, "usage_batch_failed", size=len(batch), error=str(exc))
                job.done, job.run_alone, job.error = False, False, exc
        for job in batch:
            if job.run_alone:
                try:
                    job.outcome = job.context.run(job.alone)
                    job.done = True
                except Exception as exc:
                    job.error = exc
        self._answer(batch)

    def _together(self, batch: list[_Job]) -> None:
        """Every change of the batch in one transaction, each in its own savepoint."""
        with self._uows() as uow:
            for job in batch:
                try:
                    with uow.savepoint():
                        job.outcome = job.context.run(job.together, uow)
                        job.done = True
                except (RaceLost, StoreConflict):
                    job.run_alone = True
                except Exception as exc:  # the caller's to handle, like any rejection
                    job.error = exc
            uow.commit()

    @staticmethod
    def _answer(batch: list[_Job]) -> None:
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[_Job]] = defaultdict(list)
        for job in batch:
            if job.waiter is not None:
                by_loop[job.waiter.get_loop()].append(job)
            elif job.future is not None:
                if job.error is not None:
                    job.future.set_exception(job.error)
                else:
                    job.future.set_result(_outcome(job))
        for loop, jobs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, jobs)
            except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
                log.warning("usage_answers_dropped", count=len(jobs))


def _outcome(job: _Job) -> Any:
    assert job.done, "a job answered without an outcome"
    return job.outcome


def _settle(jobs: list[_Job]) -> None:
    """On the callers' loop: each waiter gets its answer (unless its request was cancelled)."""
    for job in jobs:
        waiter = job.waiter
        if waiter is None or waiter.done():
            continue
        if job.error is not None:
            waiter.set_exception(job.error)
        else:
            waiter.set_result(_outcome(job))
