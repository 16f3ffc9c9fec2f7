"""What ``meterbridge status`` and the metrics scrape read of the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.domain.delivery import OutboxStatus, SinkHealth
from bridge.domain.ports import Clock, UnitOfWorkFactory

Depth = tuple[str, str, int, float | None]  # sink, status, count, oldest age (s)


def outbox_depth(uows: UnitOfWorkFactory, clock: Clock) -> list[Depth]:
    """Per sink and undelivered status (pending, inflight, dead): how many items and the age of
    the oldest, read off the partial indexes (never the delivered history)."""
    with uows() as uow:
        rows = uow.outbox.status(undelivered=True)
    now = clock.now()
    return [
        (
            r.sink,
            r.status.value,
            r.count,
            (now - r.oldest_created).total_seconds() if r.oldest_created is not None else None,
        )
        for r in rows
        if r.status is not OutboxStatus.DELIVERED
    ]


@dataclass(frozen=True, slots=True)
class SinkOverview:
    """A sink as ``meterbridge status`` shows it."""

    sink: str
    configured: bool
    pending: int = 0
    inflight: int = 0
    dead: int = 0
    oldest_age_s: float | None = None  # of its pending or in-flight items
    health: SinkHealth | None = None


def sinks_overview(
    uows: UnitOfWorkFactory, clock: Clock, configured: Sequence[str]
) -> list[SinkOverview]:
    """Each configured sink (and any other with undelivered items): its backlog, dead letters,
    oldest undelivered item and the health its relay last recorded."""
    with uows() as uow:
        rows = uow.outbox.status(undelivered=True)
        health = {h.sink: h for h in uow.outbox.health()}
    now = clock.now()
    counts: dict[str, dict[str, int]] = {sink: {} for sink in configured}
    oldest: dict[str, datetime] = {}
    for r in rows:
        counts.setdefault(r.sink, {})[r.status.value] = r.count
        if r.status is not OutboxStatus.DEAD and r.oldest_created is not None:
            oldest[r.sink] = min(r.oldest_created, oldest.get(r.sink, r.oldest_created))
    return [
        SinkOverview(
            sink,
            sink in configured,
            by_status.get("pending", 0),
            by_status.get("inflight", 0),
            by_status.get("dead", 0),
            (now - oldest[sink]).total_seconds() if sink in oldest else None,
            health.get(sink),
        )
        for sink, by_status in counts.items()
    ]


def webhook_counts(uows: UnitOfWorkFactory) -> dict[tuple[str, str], int]:
    """Stored webhook deliveries by (provider, status)."""
    with uows() as uow:
        return uow.webhooks.counts()
