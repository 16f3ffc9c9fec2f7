"""The outbox relay: forwards each outbox item to its sink, at least once, with stable ids.

Per sink and pass: claim a batch of due items under a lease (one short transaction), deliver
them with no transaction open (a slow platform never holds the store's write lock), then record
the outcome (another short transaction). A relay killed between the two transactions loses
nothing: the lease runs out and the items are claimed again, and the platform deduplicates on
the ledger entry id, so nothing is billed twice.

While a backlog drains (a full batch delivered without a failure), the next pass of that sink
follows at once, so the delivered ids are recorded in that pass's claim transaction instead of
one of their own: one commit per batch instead of two. ``run`` records what is still held when
it stops; a relay killed before that resends the batch after its lease, which the platform
deduplicates, exactly as if it had died before its recording transaction.

Outcomes: delivered; a transient error reschedules the items with exponential backoff and full
jitter (at least the platform's Retry-After); a permanent error, or an item older than the
sink's retry horizon (set it shorter than the platform's dedupe window), goes to dead letter.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from bridge.domain.delivery import (
    DeadLetter,
    OutboxItem,
    OutboxStatus,
    PermanentDeliveryError,
    SinkStatus,
    TransientDeliveryError,
    backoff_seconds,
)
from bridge.domain.ports import Clock, Sink, UnitOfWorkFactory
from bridge.service.common import PageRequest

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    batch_size: int = 100
    lease_s: float = 60.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    retry_horizon_s: float = 7 * 86400.0
    idle_s: float = 0.5  # pause when there was nothing to do
    breaker_failures: int = 5  # consecutive failed batches that open a sink's circuit
    breaker_cooldown_s: float = 30.0  # then one trial batch after this long


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: datetime | None = None


@dataclass(slots=True)
class DrainResult:
    delivered: int = 0
    retried: int = 0
    dead: int = 0

    @property
    def handled(self) -> int:
        return self.delivered + self.retried + self.dead


@dataclass
class Relay:
    uows: UnitOfWorkFactory
    sinks: Sequence[Sink]
    clock: Clock
    policy: RelayPolicy = field(default_factory=RelayPolicy)
    rng: random.Random = field(default_factory=random.Random)
    _breakers: dict[str, _Breaker] = field(default_factory=dict, init=False)
    _unrecorded: dict[str, list[int]] = field(default_factory=dict, init=False)  # by sink

    def drain_once(self, sink: Sink) -> DrainResult:
        """One batch of one sink."""
        now = self.clock.now()
        lease_until = now + timedelta(seconds=self.policy.lease_s)
        delivered_before = self._unrecorded.get(sink.name)
        with self.uows(write=True) as uow:
            if delivered_before:
                uow.outbox.mark(delivered_before, OutboxStatus.DELIVERED)
            items = uow.outbox.claim(sink.name, now, lease_until, self.policy.batch_size)
            uow.commit()
        self._unrecorded.pop(sink.name, None)
        if not items:
            return DrainResult()
        # Every line about this batch, the connector's included, carries the same batch id.
        structlog.contextvars.bind_contextvars(batch=uuid.uuid4().hex[:12])
        try:
            failures = sink.deliver(items)
        except PermanentDeliveryError as exc:
            return self._dead(items, f"{type(exc).__name__}: {exc}")
        except TransientDeliveryError as exc:
            return self._retry(items, str(exc), exc.retry_after)
        except Exception as exc:  # a sink bug must not lose items: retry like a transient error
            log.exception("sink_failed", sink=sink.name, count=len(items))
            return self._retry(items, f"{type(exc).__name__}: {exc}", None)
        failed = {f.item_id: f.error for f in failures}
        delivered = [i for i in items if i.id not in failed]
        result = DrainResult(delivered=len(delivered))
        if delivered:
            ids = [i.id for i in delivered]
            if not failed and len(items) == self.policy.batch_size:
                self._unrecorded[sink.name] = ids  # recorded by this sink's next claim
            else:
                self._record_delivered(ids)
            log.info("outbox_delivered", sink=sink.name, count=len(delivered))
        for item in items:  # each failed item keeps its own reason
            error = failed.get(item.id)
            if isinstance(error, PermanentDeliveryError):
                result.dead += self._dead([item], f"{type(error).__name__}: {error}").dead
            elif error is not None:
                outcome = self._retry([item], str(error), error.retry_after)
                result.retried += outcome.retried
                result.dead += outcome.dead
        return result

    def _record_delivered(self, ids: list[int]) -> None:
        with self.uows(write=True) as uow:
            uow.outbox.mark(ids, OutboxStatus.DELIVERED)
            uow.commit()

    def flush(self) -> None:
        """Record the deliveries held for a following claim (``run`` does it when it stops)."""
        for sink in list(self._unrecorded):
            self._record_delivered(self._unrecorded[sink])
            del self._unrecorded[sink]

    def _dead(self, items: Sequence[OutboxItem], reason: str) -> DrainResult:
        with self.uows(write=True) as uow:
            uow.outbox.mark([i.id for i in items], OutboxStatus.DEAD, error=reason[:2000])
            uow.commit()
        log.warning("outbox_dead_lettered", sink=items[0].sink, count=len(items), reason=reason)
        return DrainResult(dead=len(items))

    def _retry(
        self, items: Sequence[OutboxItem], reason: str, retry_after: float | None
    ) -> DrainResult:
        now = self.clock.now()
        horizon = timedelta(seconds=self.policy.retry_horizon_s)
        expired = [i for i in items if now - i.entry.occurred_at > horizon]
        retry = [i for i in items if now - i.entry.occurred_at <= horizon]
        result = DrainResult()
        if expired:
            result.dead = self._dead(expired, f"retry horizon passed; last error: {reason}").dead
        with self.uows(write=True) as uow:
            for item in retry:
                wait = backoff_seconds(
                    item.attempts,
                    base=self.policy.retry_base_s,
                    cap=self.policy.retry_cap_s,
                    rng=self.rng,
                )
                wait = max(wait, retry_after or 0.0)
                uow.outbox.mark(
                    [item.id],
                    OutboxStatus.PENDING,
                    next_attempt_at=now + timedelta(seconds=wait),
                    error=reason[:2000],
                )
            uow.commit()
        if retry:
            log.warning(
                "outbox_retry_scheduled", sink=retry[0].sink, count=len(retry), reason=reason
            )
        result.retried = len(retry)
        return result

    def run_once(self) -> dict[str, DrainResult]:
        """One batch per sink whose circuit is closed: a failing sink never holds up the others
        (and, while its circuit is open, is not even asked)."""
        results: dict[str, DrainResult] = {}
        now = self.clock.now()
        for sink in self.sinks:
            breaker = self._breakers.setdefault(sink.name, _Breaker())
            if breaker.open_until is not None and now < breaker.open_until:
                continue
            with structlog.contextvars.bound_contextvars(sink=sink.name):
                try:
                    result = self.drain_once(sink)
                finally:
                    structlog.contextvars.unbind_contextvars("batch")
            results[sink.name] = result
            self._record(sink.name, breaker, result)
        return results

    def _record(self, sink: str, breaker: _Breaker, result: DrainResult) -> None:
        if result.delivered or not result.handled:
            if breaker.open_until is not None:
                log.info("sink_circuit_closed", sink=sink)
            breaker.failures, breaker.open_until = 0, None
            return
        breaker.failures += 1
        if breaker.failures >= self.policy.breaker_failures:
            cooldown = timedelta(seconds=self.policy.breaker_cooldown_s)
            breaker.open_until = self.clock.now() + cooldown
            log.warning(
                "sink_circuit_opened",
                sink=sink,
                failures=breaker.failures,
                cooldown_s=self.policy.breaker_cooldown_s,
            )

    def run(self, stop: threading.Event) -> None:
        """Drain until ``stop`` is set; pause ``idle_s`` whenever a pass found nothing."""
        log.info("relay_started", sinks=[s.name for s in self.sinks])
        while not stop.is_set():
            try:
                results = self.run_once()
            except Exception:  # the store is down, say: keep the relay alive and try again
                log.exception("relay_pass_failed")
                results = {}
            if not any(r.handled for r in results.values()):
                stop.wait(self.policy.idle_s)
        try:
            self.flush()
        except Exception:  # the store is down: those items are resent after their lease
            log.exception("relay_flush_failed")
        log.info("relay_stopped")


def outbox_status(uows: UnitOfWorkFactory) -> list[SinkStatus]:
    with uows() as uow:
        return uow.outbox.status()


def dead_letters(uows: UnitOfWorkFactory, sink: str | None, page: PageRequest) -> list[DeadLetter]:
    with uows() as uow:
        return uow.outbox.dead_letters(sink, offset=page.offset, limit=page.size)


def retry_dead_letters(
    uows: UnitOfWorkFactory, clock: Clock, sink: str | None, ids: Sequence[int] | None
) -> int:
    """Send dead letters again, with their original ids (the platforms' dedupe keys)."""
    with uows(write=True) as uow:
        count = uow.outbox.requeue_dead(sink, ids, clock.now())
        uow.commit()
    log.info("outbox_dead_letters_requeued", sink=sink, count=count)
    return count
