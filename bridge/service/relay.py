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

Each item's outcome is ``bridge.domain.delivery.decide`` of the error the sink reported for that
item (or for the whole batch): delivered; retry at a time, for a reason (exponential backoff and
full jitter, at least the platform's Retry-After); or dead for a reason (a permanent error, or
past the sink's retry horizon, which should be shorter than the platform's dedupe window). Items
the sink does not ``accept`` count as delivered without being sent. The reason is stored with
the item.

When a platform asks to wait (a 429, Lago's X-RateLimit-Reset, a 503 with Retry-After), the
sink is paused: nothing more is sent to it until that time has passed, whatever else is due.
After ``breaker_failures`` failed batches in a row its circuit opens for ``breaker_cooldown_s``.

Stopping (``run``'s event): the batch in flight is finished and recorded, then the deliveries
held for a next claim. ``release_held`` hands back a batch whose delivery did not finish in time
(its items due again at once, for whichever relay runs next).
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
    Dead,
    DeadLetter,
    Delivered,
    DeliveryError,
    OutboxItem,
    OutboxStatus,
    Outcome,
    Reason,
    Retry,
    RetryPolicy,
    SinkHealth,
    SinkStatus,
    decide,
    pause_until,
)
from bridge.domain.ports import Clock, Sink, UnitOfWorkFactory
from bridge.observability import metrics
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
    stop_timeout_s: float = 8.0  # how long a stop waits for the batch in flight

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy(self.retry_base_s, self.retry_cap_s, self.retry_horizon_s)


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: datetime | None = None


@dataclass(slots=True)
class DrainResult:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    unmapped: int = 0  # of ``retried``, those waiting for a mapping (not the platform's fault)
    error: str | None = None  # the first error of the batch, if any

    @property
    def handled(self) -> int:
        return self.delivered + self.retried + self.dead

    @property
    def failed(self) -> bool:
        """Whether the platform failed this batch: nothing delivered, something refused or
        retried for another reason than a missing mapping (what the circuit breaker counts)."""
        return not self.delivered and self.handled > self.unmapped


@dataclass
class Relay:
    uows: UnitOfWorkFactory
    sinks: Sequence[Sink]
    clock: Clock
    policy: RelayPolicy = field(default_factory=RelayPolicy)
    rng: random.Random = field(default_factory=random.Random)
    _breakers: dict[str, _Breaker] = field(default_factory=dict, init=False)
    _unrecorded: dict[str, list[int]] = field(default_factory=dict, init=False)  # by sink
    _paused: dict[str, datetime] = field(default_factory=dict, init=False)  # by sink
    _held: dict[str, list[int]] = field(default_factory=dict, init=False)  # claimed, by sink
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _health_changed: set[str] = field(default_factory=set, init=False)  # to record, by sink

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
        with self._lock:
            self._held[sink.name] = [i.id for i in items]
        errors = self._deliver(sink, items)
        now = self.clock.now()
        paused = pause_until(errors.values(), now)
        if paused is not None:
            self._paused[sink.name] = max(paused, self._paused.get(sink.name, paused))
            log.warning("sink_paused", sink=sink.name, until=paused.isoformat())
            self._health_changed.add(sink.name)
        retry = self.policy.retry  # built once per batch, not once per item
        outcomes = {i.id: decide(errors.get(i.id), i, now, retry, self.rng) for i in items}
        return self._record_outcomes(sink.name, items, outcomes)

    def _deliver(self, sink: Sink, items: Sequence[OutboxItem]) -> dict[int, BaseException]:
        """The error each item met (none: delivered). Items the sink does not accept are not
        sent; an error raised for the whole batch is each sent item's."""
        sent: Sequence[OutboxItem] = items
        try:
            sent = [i for i in items if sink.accepts(i.entry, i.license)]
            return {f.item_id: f.error for f in sink.deliver(sent)} if sent else {}
        except Exception as exc:  # a sink bug must not lose items: ``decide`` retries them
            if not isinstance(exc, DeliveryError):
                log.exception("sink_failed", sink=sink.name, count=len(sent))
            return {i.id: exc for i in sent}

    def _record_outcomes(
        self, sink: str, items: Sequence[OutboxItem], outcomes: dict[int, Outcome]
    ) -> DrainResult:
        """One transaction for the batch's outcomes (none for a full batch delivered whole:
        the next claim records it)."""
        delivered = [i.id for i in items if isinstance(outcomes[i.id], Delivered)]
        dead: dict[tuple[Reason, str], list[int]] = {}
        retry = [(i.id, o) for i in items if isinstance(o := outcomes[i.id], Retry)]
        for item in items:
            outcome = outcomes[item.id]
            if isinstance(outcome, Dead):
                dead.setdefault((outcome.reason, outcome.error[:2000]), []).append(item.id)
        held_over = len(delivered) == len(items) == self.policy.batch_size
        if held_over:
            self._unrecorded[sink] = delivered  # recorded by this sink's next claim
        else:
            with self.uows(write=True) as uow:
                if delivered:
                    uow.outbox.mark(delivered, OutboxStatus.DELIVERED)
                for (reason, error), ids in dead.items():
                    uow.outbox.mark(ids, OutboxStatus.DEAD, error=error, reason=reason)
                for item_id, r in retry:
                    uow.outbox.mark(
                        [item_id],
                        OutboxStatus.PENDING,
                        next_attempt_at=r.at,
                        error=r.error[:2000],
                        reason=r.reason,
                    )
                uow.commit()
        with self._lock:
            self._held.pop(sink, None)
        if delivered:
            log.info("outbox_delivered", sink=sink, count=len(delivered))
        _count(sink, items, outcomes, self.clock.now())
        for (reason, error), ids in dead.items():
            log.warning(
                "outbox_dead_lettered", sink=sink, count=len(ids), reason=reason.value, error=error
            )
        by_reason: dict[Reason, int] = {}
        for _id, r in retry:
            by_reason[r.reason] = by_reason.get(r.reason, 0) + 1
        for reason, count in by_reason.items():
            log.warning("outbox_retry_scheduled", sink=sink, count=count, reason=reason.value)
        errors = [error for (_reason, error) in dead] + [r.error for _id, r in retry]
        return DrainResult(
            len(delivered),
            len(retry),
            sum(len(ids) for ids in dead.values()),
            by_reason.get(Reason.MAPPING_MISSING, 0),
            errors[0] if errors else None,
        )

    def _record_delivered(self, ids: list[int]) -> None:
        with self.uows(write=True) as uow:
            uow.outbox.mark(ids, OutboxStatus.DELIVERED)
            uow.commit()

    def release_held(self) -> int:
        """Hand back the batches claimed and not recorded yet (a delivery still in flight when
        a stop ran out of time): due again now, for whichever relay runs next. If the platform
        took them after all, it deduplicates the resend on the entry ids."""
        with self._lock:
            held, self._held = self._held, {}
        ids = [i for batch in held.values() for i in batch]
        if ids:
            with self.uows(write=True) as uow:
                uow.outbox.release(ids, self.clock.now())
                uow.commit()
            log.warning("outbox_handed_back", count=len(ids), sinks=sorted(held))
        return len(ids)

    def flush(self) -> None:
        """Record the deliveries held for a following claim (``run`` does it when it stops)."""
        for sink in list(self._unrecorded):
            self._record_delivered(self._unrecorded[sink])
            del self._unrecorded[sink]

    def run_once(self) -> dict[str, DrainResult]:
        """One batch per sink whose circuit is closed and that no platform asked to wait: a
        failing sink never holds up the others (and, while paused, is not even asked)."""
        results: dict[str, DrainResult] = {}
        now = self.clock.now()
        for sink in self.sinks:
            breaker = self._breakers.setdefault(sink.name, _Breaker())
            if breaker.open_until is not None and now < breaker.open_until:
                continue
            paused = self._paused.get(sink.name)
            if paused is not None:
                if now < paused:
                    continue
                del self._paused[sink.name]
            with structlog.contextvars.bound_contextvars(sink=sink.name):
                try:
                    result = self.drain_once(sink)
                finally:
                    structlog.contextvars.unbind_contextvars("batch")
            results[sink.name] = result
            self._record(sink.name, breaker, result)
        return results

    def _record(self, sink: str, breaker: _Breaker, result: DrainResult) -> None:
        if not result.failed:
            recovered = breaker.failures > 0 or breaker.open_until is not None
            if breaker.open_until is not None:
                log.info("sink_circuit_closed", sink=sink)
            breaker.failures, breaker.open_until = 0, None
            if recovered or sink in self._health_changed:
                self._save_health(sink, breaker, None)
            return
        breaker.failures += 1
        if breaker.failures >= self.policy.breaker_failures:
            cooldown = timedelta(seconds=self.policy.breaker_cooldown_s)
            breaker.open_until = self.clock.now() + cooldown
            metrics.circuit_opened(sink)
            log.warning(
                "sink_circuit_opened",
                sink=sink,
                failures=breaker.failures,
                cooldown_s=self.policy.breaker_cooldown_s,
            )
        self._save_health(sink, breaker, result.error)

    def _save_health(self, sink: str, breaker: _Breaker, error: str | None) -> None:
        """Record the sink's circuit, pause and error for ``meterbridge status``: only when
        they change (a failed batch, a pause, a recovery), never per delivered batch."""
        self._health_changed.discard(sink)
        now = self.clock.now()
        health = SinkHealth(
            sink,
            breaker.failures,
            breaker.open_until,
            self._paused.get(sink),
            error[:2000] if error is not None else None,
            now if error is not None else None,
            now,
        )
        try:
            with self.uows(write=True) as uow:
                uow.outbox.save_health(health)
                uow.commit()
        except Exception:  # the store is down: the next change records it
            log.exception("sink_health_not_saved", sink=sink)

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


def _count(
    sink: str, items: Sequence[OutboxItem], outcomes: dict[int, Outcome], now: datetime
) -> None:
    """The batch's outcomes in the metrics, and each delivery's lag since its change."""
    counts: dict[tuple[str, str], int] = {}
    lags = []
    for item in items:
        outcome = outcomes[item.id]
        if isinstance(outcome, Delivered):
            key = ("delivered", "")
            lags.append((now - item.entry.occurred_at).total_seconds())
        elif isinstance(outcome, Retry):
            key = ("retried", outcome.reason.value)
        else:
            key = ("dead", outcome.reason.value)
        counts[key] = counts.get(key, 0) + 1
    for (outcome_name, reason), count in counts.items():
        metrics.deliveries(sink, outcome_name, reason, count)
    if lags:
        metrics.delivery_lags(sink, lags)


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
