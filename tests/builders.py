"""Test data builders shared by the connector tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bridge.domain.delivery import LicenseFacts, OutboxItem
from bridge.domain.model import UsageEntry, UsageKind


def outbox_item(
    *,
    item_id: int,
    entry_id: str,
    sink: str,
    delta: int,
    occurred_at: datetime,
    license_id: str,
    policy: str,
    metadata: dict[str, Any],
    with_license: bool = True,
    actor: str = "test",
) -> OutboxItem:
    """One outbox item for one usage change (a decrement when ``delta`` is negative)."""
    entry = UsageEntry(
        id=entry_id,
        license_id=license_id,
        kind=UsageKind.INCREMENT if delta >= 0 else UsageKind.DECREMENT,
        delta=delta,
        uses_before=0,
        uses_after=max(delta, 0),
        actor=actor,
        idempotency_key=None,
        request_id=None,
        occurred_at=occurred_at,
    )
    facts = LicenseFacts(license_id, "KEY-1", policy, metadata) if with_license else None
    return OutboxItem(id=item_id, sink=sink, attempts=1, entry=entry, license=facts)
