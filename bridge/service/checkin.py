"""Check-ins (Keygen's ``check-in`` action) and the offline usage records they carry.

One check-in is one transaction: the license is held, rolled over to now like any usage change,
each record is applied in its own savepoint (a record is all of its writes or none of them),
the check-in itself is a ``check_in`` ledger entry, lastCheckIn is set, the answer is rendered
and everything commits once. A record that is refused leaves no trace and does not stop the
others: the client learns each record's fate in its result and never needs to resend a good
record because a bad one travelled with it. The rules are ``bridge.domain.checkin``'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from bridge.domain.access import LicenseAction, Principal
from bridge.domain.checkin import (
    FUTURE_TOLERANCE_S,
    MAX_RECORDS,
    RecordResult,
    RecordStatus,
    StoredRecord,
    UsageRecord,
    clock_problem,
    counted_at,
    parse_record,
    within_window,
)
from bridge.domain.commands import CheckIn, RawUsageRecord
from bridge.domain.delivery import Reason, forwarded
from bridge.domain.errors import (
    BridgeError,
    CheckInNotRequired,
    Field,
    ServiceUnavailable,
    Terminal,
    UsageBatchTooLarge,
    UsageRecordIdConflict,
)
from bridge.domain.limits import next_uses
from bridge.domain.model import License, UsageEntry, UsageKind
from bridge.domain.ports import CheckInUnitOfWork, CheckInUnitOfWorkFactory, Clock, StoreConflict
from bridge.observability import metrics
from bridge.service.common import Answer, ignore
from bridge.service.licenses import load_license
from bridge.service.periods import roll_over

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CheckInOutcome:
    license: License
    results: tuple[RecordResult, ...]
    entry_id: str  # the check-in's ledger entry


class _Retry(Exception):
    """The counter update lost a race with a rollover: run the whole check-in again."""


class CheckInService:
    """``sinks`` are the enabled outbox sinks; ``windows`` how old a change each accepts
    (a sink not named accepts any age)."""

    def __init__(
        self,
        uows: CheckInUnitOfWorkFactory,
        clock: Clock,
        sinks: Sequence[str] = (),
        windows: Mapping[str, timedelta | None] | None = None,
        future_tolerance: timedelta = timedelta(seconds=FUTURE_TOLERANCE_S),
    ) -> None:
        self._uows = uows
        self._clock = clock
        self._sinks = tuple(sinks)
        self._windows = dict(windows or {})
        self._tolerance = future_tolerance

    def check_in(
        self, principal: Principal, command: CheckIn, answer: Answer[CheckInOutcome] = ignore
    ) -> CheckInOutcome:
        if len(command.usage) > MAX_RECORDS:
            raise UsageBatchTooLarge(f"must hold at most {MAX_RECORDS} usage records")
        # A concurrent check-in that carried the same record first (its id is taken under us),
        # or a rollover racing the counter, is resolved by running again: the rerun finds the
        # record stored and answers it as a duplicate.
        for _ in range(8):
            try:
                return self._once(principal, command, answer)
            except (StoreConflict, _Retry):
                continue
        raise ServiceUnavailable("the license is too contended right now; retry")

    def _once(
        self, principal: Principal, command: CheckIn, answer: Answer[CheckInOutcome]
    ) -> CheckInOutcome:
        with self._uows(write=True) as uow:
            license = load_license(
                uow.licenses, principal, command.license_ref, LicenseAction.CHECK_IN
            )
            structlog.contextvars.bind_contextvars(license_id=license.id)
            if command.usage:
                license.ensure_counted_here()  # the whole check-in, before any write
            if not license.terms.require_check_in:
                raise CheckInNotRequired
            uow.licenses.lock(license.id)
            fresh = uow.licenses.find(license.id)  # as of the lock (PostgreSQL)
            if fresh is None:
                raise _Retry
            license = fresh
            now = self._clock.now()
            if license.period_start is not None and now < license.period_start:
                now = license.period_start  # a clock behind the one that opened the period
            license = roll_over(uow.periods, license, now, closed_by="usage")
            results: list[RecordResult] = []
            for raw in command.usage:
                result, license = self._record(uow, principal, license, raw, now, command)
                results.append(result)
            entry = UsageEntry(
                id=str(uuid.uuid4()),
                license_id=license.id,
                kind=UsageKind.CHECK_IN,
                delta=0,
                uses_before=license.uses,
                uses_after=license.uses,
                actor=principal.actor,
                idempotency_key=None,
                request_id=command.request_id,
                occurred_at=now,
            )
            uow.ledger.add(entry)
            uow.licenses.check_in(license.id, now)
            license = license.replace(last_check_in=now)
            outcome = CheckInOutcome(license, tuple(results), entry.id)
            answer(outcome)
            uow.commit()
        accepted = sum(r.status is RecordStatus.ACCEPTED for r in results)
        log.info("license_checked_in", records=len(results), accepted=accepted)
        for result in results:  # after the commit: counted once, as the client learns them
            late = result.status is RecordStatus.ACCEPTED and result.late
            metrics.checkin_record("late" if late else result.status.value)
        return outcome

    def _record(
        self,
        uow: CheckInUnitOfWork,
        principal: Principal,
        license: License,
        raw: RawUsageRecord,
        now: datetime,
        command: CheckIn,
    ) -> tuple[RecordResult, License]:
        """One record, all of its writes or none (a savepoint): its result, and the license
        as it is afterwards."""
        try:
            record = parse_record(raw)
            stored = uow.records.get(record.id)
            if stored is not None:
                if not stored.same_as(license.id, record):
                    raise UsageRecordIdConflict
                result = RecordResult(
                    record.id,
                    RecordStatus.DUPLICATE,
                    stored.entry_id,
                    stored.period_start,
                    stored.late,
                )
                return result, license
            problem = clock_problem(record, now, license.created, self._tolerance)
            if problem is not None:
                raise problem
            with uow.savepoint():
                return self._apply(uow, principal, license, record, now, command.request_id)
        except BridgeError as exc:
            if not isinstance(exc, Terminal):
                raise
            return RecordResult.rejected(raw.id, exc), license

    def _apply(
        self,
        uow: CheckInUnitOfWork,
        principal: Principal,
        license: License,
        record: UsageRecord,
        now: datetime,
        request_id: str | None,
    ) -> tuple[RecordResult, License]:
        at = counted_at(record, now)
        n = record.increment
        max_uses = license.terms.max_uses
        late = license.period_start is not None and at < license.period_start
        period_start = license.period_start
        if late:
            closed = uow.periods.closed_at(license.id, at)
            period_start = closed.start if closed is not None else None
            before = closed.uses_at_close if closed is not None else 0
            after = next_uses(before, n, max_uses if closed else None, amount=Field.INCREMENT)
            if closed is not None:
                uow.periods.add_late(license.id, closed.start, n)
        else:
            after_or_none = uow.licenses.try_add_uses(license.id, n, now)
            if after_or_none is None:
                next_uses(license.uses, n, max_uses, amount=Field.INCREMENT)  # names the error
                raise _Retry  # the period moved under it: run again
            before, after = after_or_none - n, after_or_none
        entry = UsageEntry(
            id=str(uuid.uuid4()),
            license_id=license.id,
            kind=UsageKind.INCREMENT,
            delta=n,
            uses_before=before,
            uses_after=after,
            actor=principal.actor,
            idempotency_key=record.id,
            request_id=request_id,
            occurred_at=at,
        )
        stored = StoredRecord(
            record.id, license.id, n, record.occurred_at, entry.id, period_start, late
        )
        with uow.writes_together():  # the entry, its outbox rows and the record: one round trip
            uow.ledger.add(entry)
            if forwarded(entry):
                self._forward(uow, entry, now)
            uow.records.add(stored, now)
        if not late:
            license = license.replace(uses=after, updated=now)
        first_use_expiry = license.expiry_on_first_use(at)
        if first_use_expiry is not None:
            uow.licenses.set_expiry_if_unset(license.id, first_use_expiry)
            license = license.replace(expiry=first_use_expiry)
        result = RecordResult(record.id, RecordStatus.ACCEPTED, entry.id, period_start, late)
        return result, license

    def _forward(self, uow: CheckInUnitOfWork, entry: UsageEntry, now: datetime) -> None:
        """To each sink whose platform still accepts a change this old; the others keep it as
        a dead letter (``late_window_passed``), reported and resendable, never dropped."""
        send: list[str] = []
        keep: list[str] = []
        for sink in self._sinks:
            fits = within_window(entry.occurred_at, now, self._windows.get(sink))
            (send if fits else keep).append(sink)
        if send:
            uow.outbox.add(entry, send)
        if keep:
            error = "the change is older than this platform's accepted window"
            uow.outbox.add_dead(entry, keep, Reason.LATE_WINDOW_PASSED, error)
