"""Value objects of the limit store: products, policies, licenses and usage ledger entries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from bridge.domain.errors import LicenseMirrored
from bridge.domain.periods import PeriodRule, PeriodState, Rollover, advance


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
    RESET = "reset"  # reset-usage, by a caller
    PERIOD_RESET = "period_reset"  # the close of a usage period
    CHECK_IN = "check_in"  # a check-in (delta 0); its offline records are increments
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
class Terms:
    """What a license may do: maxima, when its expiry starts, how its usage resets.

    A policy's terms are its own values; a license's are its effective terms, its overrides over
    its policy's (``Terms.over``). The store reads them with the license in one projection
    (``bridge.store.licenses``), so the license never carries its policy's columns.
    """

    max_uses: int | None = None
    max_machines: int | None = None
    max_cores: int | None = None
    # Seconds from the first increment to the expiry (a FROM_FIRST_USE policy's duration).
    first_use_duration: int | None = None
    usage_period: PeriodRule | None = None
    # The policy's machine terms, which the license's document shows (no license override).
    strict: bool = False
    floating: bool = False
    require_heartbeat: bool = False
    expiration_strategy: str = "RESTRICT_ACCESS"
    # The policy's check-in terms (Keygen's requireCheckIn, checkInInterval(Count)).
    require_check_in: bool = False
    check_in_interval: str | None = None
    check_in_interval_count: int | None = None
    scheme: str | None = None  # the policy's key scheme (ED25519_SIGN), shown by its licenses

    def over(
        self,
        *,
        max_uses: int | None,
        max_machines: int | None,
        max_cores: int | None,
        usage_period: PeriodRule | None,
    ) -> Terms:
        """These (a policy's) terms under a license's overrides, by Keygen's getter rule: an
        override counts unless it is null (or 0, for the maxima)."""
        if not (max_uses or max_machines or max_cores or usage_period):
            return self
        return Terms(
            max_uses or self.max_uses,
            max_machines or self.max_machines,
            max_cores or self.max_cores,
            self.first_use_duration,
            usage_period or self.usage_period,
            self.strict,
            self.floating,
            self.require_heartbeat,
            self.expiration_strategy,
            self.require_check_in,
            self.check_in_interval,
            self.check_in_interval_count,
            self.scheme,
        )

    def to_snapshot(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["usage_period"] = self.usage_period.to_api() if self.usage_period else None
        return data

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Terms:
        rule = data.get("usage_period")
        return cls(**{**data, "usage_period": PeriodRule.parse(rule) if rule else None})


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
    usage_period: PeriodRule | None = None
    # A machine that has pinged must ping again within this many seconds, or it is deactivated.
    heartbeat_duration: int | None = None
    require_heartbeat: bool = False
    heartbeat_cull_strategy: str = "DEACTIVATE_DEAD"
    heartbeat_resurrection_strategy: str = "NO_REVIVE"
    heartbeat_basis: str = "FROM_FIRST_PING"
    expiration_strategy: str = "RESTRICT_ACCESS"
    require_check_in: bool = False
    check_in_interval: str | None = None  # day, week, month, year
    check_in_interval_count: int | None = None  # 1..365
    scheme: str | None = None  # ED25519_SIGN: its licenses' keys are signed (signed_keys.py)

    @property
    def heartbeat(self) -> HeartbeatTerms:
        return HeartbeatTerms(
            self.require_heartbeat,
            self.heartbeat_duration,
            self.heartbeat_cull_strategy,
            self.heartbeat_resurrection_strategy,
            self.heartbeat_basis,
        )

    def expiry_at_creation(self, now: datetime) -> datetime | None:
        if self.duration is not None and self.expiration_basis is ExpirationBasis.FROM_CREATION:
            return now + timedelta(seconds=self.duration)
        return None

    @property
    def terms(self) -> Terms:
        first_use = self.expiration_basis is ExpirationBasis.FROM_FIRST_USE
        return Terms(
            self.max_uses,
            self.max_machines,
            self.max_cores,
            self.duration if first_use else None,
            self.usage_period,
            self.strict,
            self.floating,
            self.require_heartbeat,
            self.expiration_strategy,
            self.require_check_in,
            self.check_in_interval,
            self.check_in_interval_count,
            self.scheme,
        )


@dataclass(frozen=True, slots=True)
class MirrorMark:
    """A license mirrored from another licensing server (the Keygen relay's
    ``keygen_licenses``): its usage is counted there and reaches the bridge from there, and
    its limit (``max_uses``) is that server's."""

    source: str  # "keygen"
    max_uses: int | None
    mirrored_at: datetime
    deleted_at: datetime | None = None  # deleted there; kept here for its history


@dataclass(frozen=True, slots=True)
class License:
    """A license's own columns, and its effective ``terms`` (read with it, never stored on it).

    ``product_id`` is the license's product (its policy's): the scope tokens are checked in.
    """

    id: str
    key: str
    name: str | None
    policy_id: str
    product_id: str
    uses: int
    max_uses_override: int | None
    protected: bool
    suspended: bool
    expiry: datetime | None
    metadata: Metadata
    created: datetime
    updated: datetime
    terms: Terms
    # Usage periods: the license's own rule (else the policy's), the anniversary anchor, and the
    # open period with the count it started from.
    usage_period_override: PeriodRule | None = None
    period_anchor: datetime | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    period_open_uses: int = 0
    max_machines_override: int | None = None
    max_cores_override: int | None = None
    # Keygen's lastValidated: written by validations only (``LicenseRepository.touch_validated``).
    last_validated: datetime | None = None
    # Keygen's lastCheckIn: set at creation under a policy requiring check-ins, and by check-ins.
    last_check_in: datetime | None = None
    # Keygen's lastCheckOut: written by license check-outs only (``touch_checked_out``).
    last_check_out: datetime | None = None
    # The license's machines (Keygen's relationships.machines.meta), read with it, never stored.
    machines_count: int = 0
    machines_cores: int = 0
    # Set when the license is mirrored (read with it, never stored on it).
    mirror: MirrorMark | None = None

    def under(self, policy: Terms) -> License:
        """This license with its effective terms recomputed from its policy's ``policy`` (after
        an override changed)."""
        terms = policy.over(
            max_uses=self.max_uses_override,
            max_machines=self.max_machines_override,
            max_cores=self.max_cores_override,
            usage_period=self.usage_period_override,
        )
        return dataclasses.replace(self, terms=terms)

    @property
    def period_state(self) -> PeriodState:
        return PeriodState(
            self.id,
            self.uses,
            self.terms.usage_period,
            self.period_anchor or self.created,
            self.period_start,
            self.period_end,
            self.period_open_uses,
        )

    def rollover(self, now: datetime) -> Rollover | None:
        """What bringing the usage period up to ``now`` takes; ``None`` when it is current."""
        return self.period_state.rollover(now)

    def rolled_over(self, rollover: Rollover) -> License:
        """This license once ``rollover`` is written."""
        return dataclasses.replace(
            self,
            uses=rollover.uses,
            period_start=rollover.start,
            period_end=rollover.end,
            period_open_uses=rollover.open_uses,
        )

    def current(self, now: datetime) -> License:
        """The license as of ``now``: a due period shows as closed (and the next as open) even
        before the rollover is written (the next change or the scheduler writes it)."""
        rollover = self.rollover(now)
        return self if rollover is None else self.rolled_over(rollover)

    @property
    def max_uses(self) -> int | None:
        """The effective maximum (``terms.max_uses``): the override unless null or 0, else the
        policy's."""
        return self.terms.max_uses

    def expiry_on_first_use(self, now: datetime) -> datetime | None:
        """The expiry a successful increment sets; an existing expiry never changes."""
        if self.expiry is None and self.terms.first_use_duration is not None:
            return now + timedelta(seconds=self.terms.first_use_duration)
        return None

    @property
    def next_check_in(self) -> datetime | None:
        """Keygen's nextCheckIn: the last check-in plus the policy's interval (when required)."""
        terms = self.terms
        if not terms.require_check_in or self.last_check_in is None:
            return None
        return check_in_due(
            self.last_check_in, terms.check_in_interval, terms.check_in_interval_count
        )

    def check_in_overdue(self, now: datetime) -> bool:
        """Keygen's ``check_in_overdue?``: the last check-in is older than the interval (never
        when check-ins are not required or none was recorded)."""
        due = self.next_check_in
        return due is not None and due < now

    def status(self, now: datetime) -> LicenseStatus:
        if self.suspended:
            return LicenseStatus.SUSPENDED
        if self.expiry is not None and self.expiry <= now:
            return LicenseStatus.EXPIRED
        return LicenseStatus.ACTIVE

    def replace(self, **changes: Any) -> License:
        return dataclasses.replace(self, **changes)

    def ensure_counted_here(self) -> None:
        """The bridge's own usage changes (usage actions, a check-in's records) are refused on
        a mirrored license, whose usage only its source may change: one counted here would
        count beside the source's and diverge from it."""
        if self.mirror is not None:
            raise LicenseMirrored

    def to_snapshot(self) -> dict[str, Any]:
        """A JSON-able copy, stored with an idempotency key so a replay renders the same answer."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # A mirrored license never gets here (``ensure_counted_here``); its mark is read anew.
        data.pop("mirror")
        for name in _SNAPSHOT_TIMES:
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        rule = self.usage_period_override
        data["usage_period_override"] = rule.to_api() if rule is not None else None
        data["terms"] = self.terms.to_snapshot()
        return data

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> License:
        values = _snapshot_upgraded(data)
        for name in _SNAPSHOT_TIMES:
            raw = values.get(name)
            values[name] = datetime.fromisoformat(raw) if raw is not None else None
        raw_rule = values.get("usage_period_override")
        values["usage_period_override"] = PeriodRule.parse(raw_rule) if raw_rule else None
        values["terms"] = Terms.from_snapshot(values["terms"])
        return cls(**values)


_SNAPSHOT_TIMES = (
    "expiry",
    "created",
    "updated",
    "period_anchor",
    "period_start",
    "period_end",
    "last_validated",
    "last_check_in",
    "last_check_out",
)
# Snapshots stored before the license carried its terms held its policy's values instead.
_POLICY_SNAPSHOT_FIELDS = {
    "policy_max_uses": "max_uses",
    "policy_max_machines": "max_machines",
    "policy_max_cores": "max_cores",
    "policy_first_use_duration": "first_use_duration",
    "policy_usage_period": "usage_period",
}


def _snapshot_upgraded(data: dict[str, Any]) -> dict[str, Any]:
    """A stored snapshot in the current form (answers are kept for the key retention)."""
    values = dict(data)
    if "terms" in values:
        return values
    policy = {new: values.pop(old, None) for old, new in _POLICY_SNAPSHOT_FIELDS.items()}
    overrides = (
        ("max_uses", "max_uses_override"),
        ("max_machines", "max_machines_override"),
        ("max_cores", "max_cores_override"),
        ("usage_period", "usage_period_override"),
    )
    for name, override in overrides:
        policy[name] = values.get(override) or policy[name]
    values["terms"] = policy
    return values


CHECK_IN_INTERVALS = ("day", "week", "month", "year")


def check_in_due(last: datetime, interval: str | None, count: int | None) -> datetime | None:
    """``last`` plus ``count`` intervals, as Rails adds ``count.interval`` (calendar months and
    years, clamped to the month's end); None for terms Keygen would not compute either."""
    if interval not in CHECK_IN_INTERVALS or count is None:
        return None
    return advance(last, interval, count)


HEARTBEAT_TTL_S = 600  # Keygen's HEARTBEAT_TTL: the duration when the policy sets none
CULL_STRATEGIES = ("DEACTIVATE_DEAD", "KEEP_DEAD")
RESURRECTION_STRATEGIES = {  # Keygen's, with how long after death each may revive (None: ever)
    "ALWAYS_REVIVE": None,
    "15_MINUTE_REVIVE": 15 * 60,
    "10_MINUTE_REVIVE": 10 * 60,
    "5_MINUTE_REVIVE": 5 * 60,
    "2_MINUTE_REVIVE": 2 * 60,
    "1_MINUTE_REVIVE": 60,
    "NO_REVIVE": 0,
}
HEARTBEAT_BASES = ("FROM_CREATION", "FROM_FIRST_PING")
EXPIRATION_STRATEGIES = ("RESTRICT_ACCESS", "REVOKE_ACCESS", "MAINTAIN_ACCESS", "ALLOW_ACCESS")


@dataclass(frozen=True, slots=True)
class HeartbeatTerms:
    """A policy's heartbeat settings, read with each of its machines (Keygen's names)."""

    required: bool = False
    duration: int | None = None
    cull_strategy: str = "DEACTIVATE_DEAD"
    resurrection_strategy: str = "NO_REVIVE"
    basis: str = "FROM_FIRST_PING"

    @property
    def ttl(self) -> timedelta:
        return timedelta(seconds=self.duration or HEARTBEAT_TTL_S)

    def next_due(self, now: datetime) -> datetime | None:
        """When a ping at ``now`` must be followed by the next: the duration, Keygen's default
        when the policy monitors heartbeats without one, or never (no duration, not required)."""
        if self.duration is None and not self.required and self.basis != "FROM_CREATION":
            return None
        return now + self.ttl

    def at_activation(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """A new machine's (last, next) heartbeat: FROM_CREATION counts creation as the first
        ping; a required heartbeat must first come within the duration."""
        if self.basis == "FROM_CREATION":
            return now, self.next_due(now)
        if self.required:
            return None, now + self.ttl
        return None, None

    def may_revive(self, due: datetime | None, now: datetime) -> bool:
        """Whether a machine dead since ``due`` may be resurrected by a ping at ``now``."""
        window = RESURRECTION_STRATEGIES.get(self.resurrection_strategy, 0)
        if window is None:
            return True
        return window > 0 and due is not None and now <= due + timedelta(seconds=window)


@dataclass(frozen=True, slots=True)
class Machine:
    """A machine activated on a license; ``cores`` None counts as 0 (Keygen).

    ``next_heartbeat`` is when the next ping is due (past it the machine is dead, and the reaper
    deactivates it unless its policy keeps the dead): after a ping, the ping plus the policy's
    heartbeatDuration; before the first ping on a policy that requires heartbeats, the deadline
    for that first ping (created plus the duration, Keygen's 600 s without one).
    """

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
    last_check_out: datetime | None = None  # Keygen's lastCheckOut (machine files)
    # Read with the machine: its license's product and its policy's heartbeat terms.
    product_id: str | None = None
    heartbeat: HeartbeatTerms = HeartbeatTerms()
    # Set (never stored) on the machine a ping has just resurrected: its answer says so.
    resurrected: bool = False

    def replace(self, **changes: Any) -> Machine:
        return dataclasses.replace(self, **changes)

    @property
    def requires_heartbeat(self) -> bool:
        """Keygen's ``requires_heartbeat?``: the policy requires it, or the machine has pinged."""
        return self.heartbeat.required or self.last_heartbeat is not None

    def heartbeat_status(self, now: datetime) -> str:
        """Keygen's names: NOT_STARTED until the first ping (DEAD once a required first ping is
        overdue), then ALIVE, or DEAD once overdue."""
        overdue = self.next_heartbeat is not None and self.next_heartbeat < now
        if self.resurrected and not overdue:
            return "RESURRECTED"  # Keygen's heartbeat_status_override, in the ping's answer
        if self.last_heartbeat is None:
            return "DEAD" if self.heartbeat.required and overdue else "NOT_STARTED"
        return "DEAD" if overdue else "ALIVE"


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
