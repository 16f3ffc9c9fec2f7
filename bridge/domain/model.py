"""Value objects of the limit store: products, policies, licenses and usage ledger entries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class ExpirationBasis(StrEnum):
    FROM_CREATION = "FROM_CREATION"
    FROM_FIRST_USE = "FROM_FIRST_USE"


class OverageStrategy(StrEnum):
    NO_OVERAGE = "NO_OVERAGE"
    ALWAYS_ALLOW_OVERAGE = "ALWAYS_ALLOW_OVERAGE"
    ALLOW_1_25X_OVERAGE = "ALLOW_1_25X_OVERAGE"
    ALLOW_1_5X_OVERAGE = "ALLOW_1_5X_OVERAGE"
    ALLOW_2X_OVERAGE = "ALLOW_2X_OVERAGE"


class UsageKind(StrEnum):
    INCREMENT = "increment"
    DECREMENT = "decrement"
    RESET = "reset"
    # Machine entries: their delta is a change of the license's core total, and their
    # before/after values are that total (see ``UsageEntry``).
    ACTIVATE = "activate"
    CORES = "cores"
    DEACTIVATE = "deactivate"

    @property
    def counts_cores(self) -> bool:
        """Whether the entry is a change of the license's cores, not of its uses."""
        return self in _CORE_KINDS


class LicenseStatus(StrEnum):
    ACTIVE = "ACTIVE"
    EXPIRED = "EXPIRED"
    SUSPENDED = "SUSPENDED"


_CORE_KINDS = frozenset({UsageKind.ACTIVATE, UsageKind.CORES, UsageKind.DEACTIVATE})
USES_KINDS = tuple(k for k in UsageKind if k not in _CORE_KINDS)  # the usage actions

Metadata = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    url: str | None
    metadata: Metadata
    created: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    product_id: str
    name: str
    max_uses: int | None
    max_machines: int | None
    max_cores: int | None
    floating: bool
    strict: bool
    overage_strategy: OverageStrategy
    protected: bool
    duration: int | None  # seconds, as in Keygen
    expiration_basis: ExpirationBasis
    metadata: Metadata
    created: datetime
    updated: datetime
    # A machine that has pinged must ping again within this many seconds, or it is deactivated.
    heartbeat_duration: int | None = None

    def expiry_at_creation(self, now: datetime) -> datetime | None:
        if self.duration is not None and self.expiration_basis is ExpirationBasis.FROM_CREATION:
            return now + timedelta(seconds=self.duration)
        return None


@dataclass(frozen=True, slots=True)
class License:
    id: str
    key: str
    name: str | None
    policy_id: str
    product_id: str
    uses: int
    max_uses_override: int | None
    policy_max_uses: int | None
    # The policy's duration when its expiration basis is FROM_FIRST_USE, else None.
    policy_first_use_duration: int | None
    protected: bool
    suspended: bool
    expiry: datetime | None
    metadata: Metadata
    created: datetime
    updated: datetime
    max_machines_override: int | None = None
    max_cores_override: int | None = None
    policy_max_machines: int | None = None
    policy_max_cores: int | None = None

    @property
    def max_uses(self) -> int | None:
        """Keygen's effective maximum: the override unless null or 0, else the policy's."""
        return self.max_uses_override if self.max_uses_override else self.policy_max_uses

    @property
    def max_machines(self) -> int | None:
        """The same rule for machines (Keygen's getter pattern)."""
        return (
            self.max_machines_override if self.max_machines_override else self.policy_max_machines
        )

    @property
    def max_cores(self) -> int | None:
        return self.max_cores_override if self.max_cores_override else self.policy_max_cores

    def expiry_on_first_use(self, now: datetime) -> datetime | None:
        """The expiry a successful increment sets; an existing expiry never changes."""
        if self.expiry is None and self.policy_first_use_duration is not None:
            return now + timedelta(seconds=self.policy_first_use_duration)
        return None

    def status(self, now: datetime) -> LicenseStatus:
        if self.suspended:
            return LicenseStatus.SUSPENDED
        if self.expiry is not None and self.expiry <= now:
            return LicenseStatus.EXPIRED
        return LicenseStatus.ACTIVE

    def replace(self, **changes: Any) -> License:
        return dataclasses.replace(self, **changes)

    def to_snapshot(self) -> dict[str, Any]:
        """A JSON-able copy, stored with an idempotency key so a replay renders the same answer."""
        data = dataclasses.asdict(self)
        for name in ("expiry", "created", "updated"):
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        return data

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> License:
        values = dict(data)
        for name in ("expiry", "created", "updated"):
            raw = values[name]
            values[name] = datetime.fromisoformat(raw) if raw is not None else None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine activated on a license; ``cores`` None counts as 0 (Keygen)."""

    id: str
    license_id: str
    fingerprint: str
    cores: int | None
    name: str | None
    platform: str | None
    hostname: str | None
    metadata: Metadata
    created: datetime
    updated: datetime
    last_heartbeat: datetime | None = None
    next_heartbeat: datetime | None = None  # past it, the reaper deactivates the machine

    def replace(self, **changes: Any) -> Machine:
        return dataclasses.replace(self, **changes)

    def heartbeat_status(self, now: datetime) -> str:
        """Keygen's names: NOT_STARTED until the first ping, then ALIVE, or DEAD once overdue."""
        if self.last_heartbeat is None:
            return "NOT_STARTED"
        if self.next_heartbeat is not None and self.next_heartbeat < now:
            return "DEAD"
        return "ALIVE"


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One accepted change: a row of the append-only ledger.

    For a usage entry the before/after values are the license's uses; for a machine entry
    (``kind.counts_cores``) they are the license's core total, and ``machine_id`` names the
    machine.
    """

    id: str
    license_id: str
    kind: UsageKind
    delta: int
    uses_before: int
    uses_after: int
    actor: str
    idempotency_key: str | None
    request_id: str | None
    occurred_at: datetime
    seq: int | None = field(default=None, compare=False)
    machine_id: str | None = None
