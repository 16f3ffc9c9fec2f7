"""Retention: what may be deleted once nothing needs it any more.

The ledger and the period records are the history and stay. What goes:

- a **delivered outbox item** once its change is older than its sink's retention, which is at
  least the platform's dedupe window (inside it reconciliation's ``--repair`` re-enqueues the
  item, so it must still exist). Before deleting, each sink's purge watermark is raised in its
  own commit: reconciliation counts a change without an item from before the watermark as
  delivered. Pending, in-flight and dead items are never purged.
- a **webhook delivery** handled for good (applied or ignored) once older than its retention
  (the platforms' redelivery of it would no longer be recognised as a duplicate past that);
  its effects, the licenses' webhook history, stay.

Both delete in small transactions (a range of outbox ids, or ``batch`` deliveries) so that
neither database holds its locks for long while the API keeps writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import structlog

from bridge.domain.ports import Clock, UnitOfWorkFactory
from bridge.observability import metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    outbox: int = 0
    webhooks: int = 0


def purge_outbox(
    uows: UnitOfWorkFactory,
    clock: Clock,
    retention: Mapping[str, timedelta],
    *,
    batch: int = 5000,
) -> int:
    """Delete the delivered items of each sink in ``retention`` older than its window, a range
    of ``batch`` ids per transaction; how many."""
    if not retention:
        return 0
    now = clock.now()
    before = {sink: now - window for sink, window in retention.items()}
    horizon = max(before.values())  # every item created since is kept, whatever its sink
    with uows(write=True) as uow:
        uow.outbox.mark_purged(before)  # committed before any row goes
        bounds = uow.outbox.id_bounds()
        uow.commit()
    if bounds is None:
        return 0
    low, high = bounds
    total = 0
    while low <= high:
        with uows(write=True) as uow:
            total += uow.outbox.purge_delivered(low, low + batch, before)
            oldest = uow.outbox.range_oldest(low, low + batch)
            uow.commit()
        low += batch
        # Ids follow creation: once a range keeps only items newer than every window, the
        # ranges after it hold nothing to purge.
        if oldest is not None and oldest >= horizon:
            break
    metrics.purged("outbox", total)
    log.info("outbox_purged", count=total)
    return total


def purge_webhooks(
    uows: UnitOfWorkFactory, clock: Clock, retention: timedelta, *, batch: int = 5000
) -> int:
    """Delete the webhook deliveries handled for good before the retention; how many."""
    before = clock.now() - retention
    total = 0
    while True:
        with uows(write=True) as uow:
            purged = uow.webhooks.purge_handled(before, batch)
            uow.commit()
        total += purged
        if purged < batch:
            break
    metrics.purged("webhook_deliveries", total)
    log.info("webhook_deliveries_purged", count=total)
    return total
