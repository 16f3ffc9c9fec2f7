"""The usage actions: increment, decrement and reset, each one atomic and idempotent.

A change's writes (the counter, its ledger entry, one outbox row per enabled sink and, with an
Idempotency-Key, the stored answer) commit together or not at all: in a unit of work of its own
(``UsageService.apply``), or in a savepoint of a ``BatchWriter`` transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from bridge.domain.access import LicenseAction, Principal
from bridge.domain.delivery import forwarded
from bridge.domain.errors import Field, IdempotencyKeyReused, ServiceUnavailable, Transient
from bridge.domain.limits import next_uses
from bridge.domain.model import License, UsageEntry, UsageKind
from bridge.domain.ports import (
    Clock,
    StoreConflict,
    UnitOfWorkFactory,
    UsageUnitOfWork,
    UsageUnitOfWorkFactory,
)
from bridge.service.common import Answer, Page, PageRequest, ignore
from bridge.service.licenses import load_license
from bridge.service.periods import roll_over

_ACTION = {
    UsageKind.INCREMENT: LicenseAction.INCREMENT,
    UsageKind.DECREMENT: LicenseAction.DECREMENT,
    UsageKind.RESET: LicenseAction.RESET,
}
_AMOUNT = {UsageKind.INCREMENT: Field.INCREMENT, UsageKind.DECREMENT: Field.DECREMENT}


@dataclass(frozen=True, slots=True)
class UsageChange:
    license_ref: str  # id or key
    kind: UsageKind
    amount: int = 1  # ignored for reset; may be 0 or negative, as in Keygen
    idempotency_key: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class UsageOutcome:
    license: License
    entry_id: str
    replayed: bool


class RaceLost(Exception, Transient):
    """The conditional update failed but a fresh read says it would pass: try again."""


class UsageService:
    """Applies usage changes. ``sinks`` are the names of the enabled outbox sinks."""

    def __init__(
        self, uows: UsageUnitOfWorkFactory, clock: Clock, sinks: Sequence[str] = ()
    ) -> None:
        self._uows = uows
        self._clock = clock
        self._sinks = tuple(sinks)

    def apply(
        self, principal: Principal, change: UsageChange, answer: Answer[UsageOutcome] = ignore
    ) -> UsageOutcome:
        # A lost race (the row changed between a failed conditional update and its re-read) or a
        # concurrent first use of the same Idempotency-Key is resolved by running again.
        for _ in range(8):
            try:
                return self._apply_once(principal, change, answer)
            except (RaceLost, StoreConflict):
                continue
        raise ServiceUnavailable("the license is too contended right now; retry")

    def _apply_once(
        self, principal: Principal, change: UsageChange, answer: Answer[UsageOutcome]
    ) -> UsageOutcome:
        with self._uows() as uow:
            outcome = self.apply_in(uow, principal, change)
            answer(outcome)
            uow.commit()
            return outcome

    def apply_in(
        self, uow: UsageUnitOfWork, principal: Principal, change: UsageChange
    ) -> UsageOutcome:
        """Apply one change inside the caller's unit of work, without committing. Besides the
        domain errors it may raise ``StoreConflict`` or ``RaceLost``: run it again alone."""
        license = load_license(uow.licenses, principal, change.license_ref, _ACTION[change.kind])
        structlog.contextvars.bind_contextvars(license_id=license.id)  # known from here on
        license.ensure_counted_here()  # before any write, the idempotency claim included
        now = self._clock.now()
        if license.period_start is not None and now < license.period_start:
            # This clock is behind the one that opened the period: count the change at the
            # period's start rather than inside a period that is already closed.
            now = license.period_start
        if change.idempotency_key is not None:
            fingerprint = _fingerprint(license.id, change)
            stored = uow.idempotency.get(principal.actor, change.idempotency_key)
            if stored is not None:
                if stored[0] != fingerprint:
                    raise IdempotencyKeyReused
                result = stored[1]
                return UsageOutcome(
                    License.from_snapshot(result["license"]), result["entry_id"], True
                )
            # Claim the key before touching the counter, so a concurrent retry with the
            # same key waits for this answer instead of applying the change again.
            uow.idempotency.claim(principal.actor, change.idempotency_key, fingerprint, now)
        license = roll_over(uow.periods, license, now, closed_by="usage")
        before, after = self._change_counter(uow, license, change, now)
        entry = UsageEntry(
            id=str(uuid.uuid4()),
            license_id=license.id,
            kind=change.kind,
            delta=after - before,
            uses_before=before,
            uses_after=after,
            actor=principal.actor,
            idempotency_key=change.idempotency_key,
            request_id=change.request_id,
            occurred_at=now,
        )
        with uow.writes_together():  # the entry and its outbox rows: one round trip
            uow.ledger.add(entry)
            if forwarded(entry):
                uow.outbox.add(entry, self._sinks)
        expiry = license.expiry
        if change.kind is UsageKind.INCREMENT:
            first_use_expiry = license.expiry_on_first_use(now)
            if first_use_expiry is not None:
                uow.licenses.set_expiry_if_unset(license.id, first_use_expiry)
                expiry = first_use_expiry
        updated = license.replace(uses=after, expiry=expiry, updated=now)
        if change.idempotency_key is not None:
            result = {"license": updated.to_snapshot(), "entry_id": entry.id}
            uow.idempotency.record(principal.actor, change.idempotency_key, result)
        return UsageOutcome(updated, entry.id, False)

    def _change_counter(
        self, uow: UsageUnitOfWork, license: License, change: UsageChange, now: datetime
    ) -> tuple[int, int]:
        if change.kind is UsageKind.RESET:
            before = uow.licenses.lock_uses(license.id)
            if before is None:  # deleted since it was read
                raise RaceLost
            if not uow.licenses.set_uses(license.id, 0, now):
                raise RaceLost  # its usage period closed under this change
            return before, 0
        delta = change.amount if change.kind is UsageKind.INCREMENT else -change.amount
        after = uow.licenses.try_add_uses(license.id, delta, now)
        if after is not None:
            return after - delta, after
        # Rejected: re-read inside the same transaction and let the domain name the error.
        current = uow.licenses.find(license.id)
        if current is None:
            raise RaceLost
        next_uses(current.uses, delta, current.terms.max_uses, amount=_AMOUNT[change.kind])
        raise RaceLost


def _fingerprint(license_id: str, change: UsageChange) -> str:
    raw = f"{change.kind.value}|{license_id}|{change.amount}"
    return hashlib.sha256(raw.encode()).hexdigest()


def usage_history(
    uows: UnitOfWorkFactory, principal: Principal, ref: str, page: PageRequest
) -> tuple[License, Page[UsageEntry]]:
    """The ledger of one license, newest first."""
    with uows() as uow:
        license = load_license(uow.licenses, principal, ref, LicenseAction.READ_USAGE)
        items, total = uow.ledger.history(license.id, offset=page.offset, limit=page.size)
    return license, Page(items, total, page)
