"""Delivery of outbox items to sinks: the items, the two ways a sink may fail, the retry rule."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from bridge.domain.model import UsageEntry


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    INFLIGHT = "inflight"  # claimed by a relay until its lease ends (then claimable again)
    DELIVERED = "delivered"
    DEAD = "dead"  # dead letter: a permanent error, or past the sink's retry horizon


@dataclass(frozen=True, slots=True)
class LicenseFacts:
    """What a sink's mapping may read of the license (``None`` on an item whose license is
    gone: its history is still billable)."""

    id: str
    key: str
    policy_id: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One ledger entry on its way to one sink. ``entry.id`` is the platform's dedupe key."""

    id: int
    sink: str
    attempts: int  # including the one in progress
    entry: UsageEntry
    license: LicenseFacts | None = None


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """One item of a batch that the sink could not deliver; the rest of the batch was."""

    item_id: int
    error: TransientDeliveryError | PermanentDeliveryError


@dataclass(frozen=True, slots=True)
class DeadLetter:
    item: OutboxItem
    error: str | None


@dataclass(frozen=True, slots=True)
class SinkStatus:
    sink: str
    status: OutboxStatus
    count: int
    oldest_created: datetime | None
    mapping_missing: int = 0  # of ``count``, those waiting for a mapping


class DeliveryError(Exception):
    """Base of the errors a ``Sink`` may raise."""


class TransientDeliveryError(DeliveryError):
    """Try again later (timeouts, connection errors, 5xx, 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help (other 4xx): the items go to dead letter with this reason."""


def backoff_seconds(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempts-1))]."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return (rng or random).uniform(0, ceiling)


# The reason an item waits for its license's mapping (a sink reports it as a transient error).
MAPPING_MISSING = "MAPPING_MISSING"


def mapping_missing(detail: str) -> TransientDeliveryError:
    return TransientDeliveryError(f"{MAPPING_MISSING}: {detail}")
