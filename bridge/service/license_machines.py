"""What a license's machines mean for the license: its core ledger entries and the machine
facts its validation reads. Shared by the machine and license use cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.domain.delivery import forwarded
from bridge.domain.machines import MachineLimits
from bridge.domain.model import HeartbeatTerms, License, UsageEntry, UsageKind
from bridge.domain.ports import UnitOfWork
from bridge.domain.validation import MachineFacts, ValidationScope
from bridge.service.common import new_id


@dataclass(frozen=True, slots=True)
class CoreChange:
    """A change of a license's core total, caused by one machine."""

    license_id: str
    machine_id: str
    kind: UsageKind
    before: int
    after: int
    actor: str
    request_id: str | None = None


def record_core_change(
    uow: UnitOfWork, change: CoreChange, now: datetime, sinks: Sequence[str]
) -> UsageEntry:
    """One ledger entry, and one outbox row per sink when the total moved: the sinks receive
    the license's new core total (a gauge), so a platform can bill its peak or latest value."""
    entry = UsageEntry(
        id=new_id(),
        license_id=change.license_id,
        kind=change.kind,
        delta=change.after - change.before,
        uses_before=change.before,
        uses_after=change.after,
        actor=change.actor,
        idempotency_key=None,
        request_id=change.request_id,
        occurred_at=now,
        machine_id=change.machine_id,
    )
    uow.ledger.add(entry)
    if forwarded(entry):
        uow.outbox.add(entry, sinks)
    return entry


def limits_of(uow: UnitOfWork, license: License) -> MachineLimits:
    policy = uow.policies.get(license.policy_id)
    if policy is None:  # pragma: no cover - a license's policy cannot be deleted
        raise LookupError(f"policy {license.policy_id} of license {license.id} is gone")
    return MachineLimits.of(policy, license)


def policy_heartbeat(uow: UnitOfWork, license: License) -> HeartbeatTerms:
    policy = uow.policies.get(license.policy_id)
    return policy.heartbeat if policy is not None else HeartbeatTerms()


def machine_facts(uow: UnitOfWork, license: License, scope: ValidationScope) -> MachineFacts:
    """The license's limits, machine count and core total, its machines the scope's
    fingerprints name, and the one its ``machine`` scope names."""
    fingerprints = scope.all_fingerprints or ()
    scoped = tuple(
        machine
        for fingerprint in fingerprints
        if (
            machine := uow.machines.with_fingerprint(
                fingerprint, license_id=license.id, product_id=None
            )
        )
        is not None
    )
    machine = uow.machines.get(scope.machine) if scope.machine is not None else None
    if machine is not None and machine.license_id != license.id:
        machine = None
    return MachineFacts(limits_of(uow, license), uow.machines.tally(license.id), scoped, machine)
