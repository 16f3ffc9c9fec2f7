"""Delivery of outbox items to sinks: the items, the two ways a sink may fail, and the one
delivery policy every sink and the relay share.

- ``forwarded(entry)``: whether a ledger entry goes to the outbox at all (usage and machine
  changes both ask it); each sink then answers ``accepts(entry, license)`` for its own filters.
- ``Reason``: the stable name of why an item is waiting or dead, stored with the item.
- ``decide(error, item, now, policy)``: delivered, retry at a time for a reason, or dead for a
  reason. A ``Terminal`` error is dead at once; a ``Transient`` one (or an unexpected exception,
  a sink bug) is retried with exponential backoff and full jitter, never before the platform's
  ``Retry-After``, until the item is older than the retry horizon.
- ``pause_until(errors, now)``: when a platform asked to wait (429, or a 503 with
  ``Retry-After``), the time before which nothing more is sent to that sink.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bridge.domain.errors import Terminal, Transient
from bridge.domain.model import UsageEntry, UsageKind


class Reason(StrEnum):
    """Why an item waits for another attempt, or is dead. Stored with the item: an API, so
    add names, never rename them."""

    RATE_LIMITED = "rate_limited"  # 429: the platform asked to wait (Retry-After, reset)
    SERVER_ERROR = "server_error"  # 5xx, 408, 425
    TIMEOUT = "timeout"  # no answer in time: the request may or may not have arrived
    UNREACHABLE = "unreachable"  # connection refused or reset, DNS, TLS
    UNAVAILABLE = "unavailable"  # a sink could not take the items now (a file not writable)
    SINK_ERROR = "sink_error"  # an unexpected exception in a sink (a bug): retried
    REJECTED = "rejected"  # the platform refused the item for good (4xx)
    MAPPING_MISSING = "mapping_missing"  # the license lacks what the sink's mapping needs
    TOO_LARGE = "too_large"  # the item alone is over the platform's request size
    HORIZON_PASSED = "horizon_passed"  # still failing past the sink's retry horizon
    # The platform took the item, then reported (a webhook) that it will not bill it.
    REJECTED_AFTER_ACCEPTANCE = "rejected_after_acceptance"
    # An offline record older than the platform accepts (``bridge.domain.checkin``): never sent.
    LATE_WINDOW_PASSED = "late_window_passed"


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
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """A sink's circuit, pause and last failure, as a relay last recorded them (it records them
    when they change, never per delivered batch)."""

    sink: str
    failures: int  # failed batches in a row
    circuit_open_until: datetime | None
    paused_until: datetime | None  # the platform asked to wait until then
    last_error: str | None
    last_error_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SinkStatus:
    sink: str
    status: OutboxStatus
    count: int
    oldest_created: datetime | None
    reasons: dict[Reason, int] = field(default_factory=dict)  # of ``count``, by reason

    @property
    def mapping_missing(self) -> int:
        """Of ``count``, those waiting for a mapping."""
        return self.reasons.get(Reason.MAPPING_MISSING, 0)


class DeliveryError(Exception):
    """Base of the errors a ``Sink`` may raise; ``reason`` is what the item is stored with."""

    default_reason: Reason = Reason.SINK_ERROR

    def __init__(
        self, message: str, *, reason: Reason | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason
        self.retry_after = retry_after  # seconds the platform asked to wait, if it said


class TransientDeliveryError(DeliveryError, Transient):
    """Try again later (timeouts, connection errors, 5xx, 429, a missing mapping)."""

    default_reason = Reason.UNAVAILABLE


class PermanentDeliveryError(DeliveryError, Terminal):
    """Retrying cannot help (other 4xx): the items go to dead letter with this reason."""

    default_reason = Reason.REJECTED


@dataclass(frozen=True, slots=True)
class Delivered:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    at: datetime
    reason: Reason
    error: str


@dataclass(frozen=True, slots=True)
class Dead:
    reason: Reason
    error: str


Outcome = Delivered | Retry | Dead
DELIVERED = Delivered()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_s: float = 1.0
    cap_s: float = 300.0
    horizon_s: float = 7 * 86400.0  # set it shorter than the platform's dedupe window


def forwarded(entry: UsageEntry) -> bool:
    """Whether a ledger entry goes to the outbox at all. A change of 0 is history, not usage;
    a reset is the end of a count, not usage either (billing platforms reset per period
    themselves)."""
    return entry.delta != 0 and entry.kind is not UsageKind.RESET


def decide(
    error: BaseException | None,
    item: OutboxItem,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Outcome:
    """The outcome of one attempt at ``item``: ``error`` is what the sink reported for it
    (``None``: accepted). Anything not ``Terminal`` is worth another try; an unmarked
    exception is a sink bug, retried so that no item is lost."""
    if error is None:
        return DELIVERED
    reason = error.reason if isinstance(error, DeliveryError) else Reason.SINK_ERROR
    if isinstance(error, Terminal):
        return Dead(reason, f"{type(error).__name__}: {error}")
    message = str(error) if isinstance(error, Transient) else f"{type(error).__name__}: {error}"
    if now - item.entry.occurred_at > timedelta(seconds=policy.horizon_s):
        return Dead(Reason.HORIZON_PASSED, f"retry horizon passed; last error: {message}")
    wait = backoff_seconds(item.attempts, base=policy.base_s, cap=policy.cap_s, rng=rng)
    wait = max(wait, retry_after(error) or 0.0)
    return Retry(now + timedelta(seconds=wait), reason, message)


def retry_after(error: BaseException) -> float | None:
    """The seconds a platform asked to wait before anything more is sent, if it said."""
    if isinstance(error, DeliveryError) and isinstance(error, Transient):
        return error.retry_after
    return None


def pause_until(errors: Iterable[BaseException], now: datetime) -> datetime | None:
    """The end of the longest wait the platform asked for in one batch's errors, or None."""
    waits = [w for w in map(retry_after, errors) if w is not None]
    return now + timedelta(seconds=max(waits)) if waits else None


def backoff_seconds(
    attempts: int, *, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^(attempts-1))]."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    return (rng or random).uniform(0, ceiling)


# The prefix of a missing mapping's message (the reason itself is ``Reason.MAPPING_MISSING``).
MAPPING_MISSING = "MAPPING_MISSING"


def mapping_missing(detail: str) -> TransientDeliveryError:
    """An item waits for its license's mapping: transient, until the mapping is added."""
    return TransientDeliveryError(f"{MAPPING_MISSING}: {detail}", reason=Reason.MAPPING_MISSING)
