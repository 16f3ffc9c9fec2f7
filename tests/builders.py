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
    kind: UsageKind | None = None,
    before: int = 0,
    machine_id: str | None = None,
) -> OutboxItem:
    """One outbox item for one usage change (a decrement when ``delta`` is negative), or for a
    machine change (``kind``) moving the core total from ``before`` by ``delta``."""
    entry = UsageEntry(
        id=entry_id,
        license_id=license_id,
        kind=kind or (UsageKind.INCREMENT if delta >= 0 else UsageKind.DECREMENT),
        delta=delta,
        uses_before=before,
        uses_after=before + delta if kind is not None else max(delta, 0),
        actor=actor,
        idempotency_key=None,
        request_id=None,
        occurred_at=occurred_at,
        machine_id=machine_id,
    )
    facts = LicenseFacts(license_id, "KEY-1", policy, metadata) if with_license else None
    return OutboxItem(id=item_id, sink=sink, attempts=1, entry=entry, license=facts)
