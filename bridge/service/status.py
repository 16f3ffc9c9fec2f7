"""What ``meterbridge status`` and the metrics scrape read of the store."""

from __future__ import annotations

from bridge.domain.delivery import OutboxStatus
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
