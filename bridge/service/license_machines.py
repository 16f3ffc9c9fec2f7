"""What a license's machines mean for the license: its core ledger entries and the machine
facts its validation reads. Shared by the machine and license use cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.domain.delivery import forwarded
from bridge.domain.machines import MachineLimits, MachineTally
from bridge.domain.model import License, Policy, UsageEntry, UsageKind
from bridge.domain.ports import ActivationUnitOfWork, UnitOfWork
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
    uow: ActivationUnitOfWork, change: CoreChange, now: datetime, sinks: Sequence[str]
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


def policy_of(uow: ActivationUnitOfWork, license: License) -> Policy:
    policy = uow.policies.get(license.policy_id)
    if policy is None:  # pragma: no cover - a license's policy cannot be deleted
        raise LookupError(f"policy {license.policy_id} of license {license.id} is gone")
    return policy


def limits_of(uow: ActivationUnitOfWork, license: License) -> MachineLimits:
    return MachineLimits.of(policy_of(uow, license), license)


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
    # The license was read with its machine totals in this transaction (no second count).
    tally = MachineTally(license.machines_count, license.machines_cores)
    return MachineFacts(limits_of(uow, license), tally, scoped, machine)
