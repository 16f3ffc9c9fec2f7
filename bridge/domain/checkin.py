"""Check-ins and the offline usage records they carry: the pure rules.

A client that meters while disconnected records each use locally with an id of its own (a UUID)
and the time it happened, and sends the records at its next check-in. The bridge applies each
record at most once ever, keyed by that id, in the usage period its time falls in:

- a record whose id was applied before is a ``duplicate`` (nothing changes), whatever request
  brings it again; the same id with another license, amount or time is refused;
- a record is checked on its own (``parse_record``, ``clock_problem``, then the limit of its
  period) and refused with its own code, without blocking the records around it;
- a record dated in a period that has closed is *late*: it is added to that period's record,
  and forwarded with its original time to each sink whose accepted window still holds it
  (``within_window``); the others keep it as a dead letter with the reason
  ``late_window_passed``, visible and resendable, never dropped in silence.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bridge.domain.commands import RawUsageRecord
from bridge.domain.errors import (
    INT4_MAX,
    BridgeError,
    UsageRecordBeforeLicense,
    UsageRecordIdInvalid,
    UsageRecordIncrementInvalid,
    UsageRecordInFuture,
    UsageRecordTimeInvalid,
)
from bridge.domain.validation import instant_in_range

MAX_RECORDS = 1000  # offline usage records per check-in request
FUTURE_TOLERANCE_S = 300  # the default of ``checkin.future_tolerance_s``


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """A record that passed its own checks: a UUID id, a positive amount, an aware time."""

    id: str
    increment: int
    occurred_at: datetime


def parse_record(raw: RawUsageRecord) -> UsageRecord:
    """The record, or the error of its first bad value (id, increment, then time)."""
    try:
        record_id = str(uuid.UUID(raw.id))
    except ValueError:
        raise UsageRecordIdInvalid from None
    if raw.id.lower() != record_id:  # only the canonical 36-character form
        raise UsageRecordIdInvalid
    if not 1 <= raw.increment <= INT4_MAX:
        raise UsageRecordIncrementInvalid
    try:
        at = datetime.fromisoformat(raw.occurred_at)
    except ValueError:
        raise UsageRecordTimeInvalid from None
    if at.tzinfo is None or at.utcoffset() is None or not instant_in_range(at):
        raise UsageRecordTimeInvalid
    return UsageRecord(record_id, raw.increment, at)


def clock_problem(
    record: UsageRecord, now: datetime, created: datetime, tolerance: timedelta
) -> BridgeError | None:
    """A record from a client clock that cannot be right: in the future beyond ``tolerance``,
    or before the license existed."""
    if record.occurred_at > now + tolerance:
        seconds = int(tolerance.total_seconds())
        return UsageRecordInFuture(f"is in the future (more than {seconds} s ahead of the server)")
    if record.occurred_at < created:
        return UsageRecordBeforeLicense()
    return None


def counted_at(record: UsageRecord, now: datetime) -> datetime:
    """The time a record is counted at: its own, or ``now`` for one a little in the future
    (within the tolerance: a client clock slightly fast), never in a period not yet open."""
    return min(record.occurred_at, now)


def within_window(occurred_at: datetime, now: datetime, window: timedelta | None) -> bool:
    """Whether a sink whose platform accepts changes up to ``window`` old (None: any age)
    is sent a change that happened at ``occurred_at``."""
    return window is None or now - occurred_at <= window


class RecordStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What became of one record, in the check-in's answer (``meta.usage``), in request order."""

    id: str
    status: RecordStatus
    entry_id: str | None = None  # the ledger entry (accepted; a duplicate's first one)
    period_start: datetime | None = None  # the usage period it counts in (None: no period)
    late: bool = False  # that period had closed when the record arrived
    code: str | None = None  # rejected: the error's code and detail
    detail: str | None = None

    @classmethod
    def rejected(cls, record_id: str, error: BridgeError) -> RecordResult:
        return cls(record_id, RecordStatus.REJECTED, code=error.code, detail=error.detail)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """An accepted record as the store keeps it (its id is the key)."""

    id: str
    license_id: str
    increment: int
    occurred_at: datetime
    entry_id: str
    period_start: datetime | None
    late: bool

    def same_as(self, license_id: str, record: UsageRecord) -> bool:
        """Whether ``record`` is this one sent again (else its id is reused: a conflict)."""
        return (
            self.license_id == license_id
            and self.increment == record.increment
            and self.occurred_at == record.occurred_at
        )
