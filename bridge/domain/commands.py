"""The inputs of the write use cases: one frozen command per create (``New...``) and update
(``...Patch``).

The API builds them from its request documents, the CLI directly. Values arrive as sent and are
checked by the domain inside the use case (``bridge.domain.attributes``), so the order of the
checks, and of the not-found and access errors around them, is the use case's.

A patch leaves every field it does not name ``UNSET``. ``None`` is JSON's ``null``: it clears a
nullable value; a value that cannot be null keeps its current one (a policy's ``floating``, a
license's ``suspended``, ...) unless a check requires it (a blank ``name`` is ``NAME_MISSING``).
In a create command ``None`` means "not sent": the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Literal, TypeAlias, TypeVar

from bridge.domain.model import Metadata

T = TypeVar("T")


class Unset(Enum):
    """The type of ``UNSET``: a patch field the request did not name."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Literal[Unset.UNSET] = Unset.UNSET
Maybe: TypeAlias = T | Literal[Unset.UNSET]

# A usage-period rule as sent: ``{"interval", "count", "anchor", "timezone"}`` (see PeriodRule).
RawRule: TypeAlias = dict[str, Any]


# Products -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewProduct:
    name: str | None = None
    url: str | None = None
    metadata: Metadata | None = None


@dataclass(frozen=True, slots=True)
class ProductPatch:
    name: Maybe[str | None] = UNSET
    url: Maybe[str | None] = UNSET
    metadata: Maybe[Metadata | None] = UNSET


# Policies -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewPolicy:
    """A policy of ``product_id``; what is not sent takes Keygen's default."""

    product_id: str | None
    name: str | None = None
    max_uses: int | None = None
    max_machines: int | None = None  # node-locked policies: always 1
    max_cores: int | None = None
    floating: bool | None = None  # default False
    strict: bool | None = None  # default False
    overage_strategy: str | None = None  # default NO_OVERAGE
    protected: bool | None = None  # default False
    duration: int | None = None
    heartbeat_duration: int | None = None
    expiration_basis: str | None = None  # default FROM_CREATION
    expiration_strategy: str | None = None  # default RESTRICT_ACCESS
    require_heartbeat: bool | None = None  # default False
    heartbeat_cull_strategy: str | None = None  # default DEACTIVATE_DEAD
    heartbeat_resurrection_strategy: str | None = None  # default NO_REVIVE
    heartbeat_basis: str | None = None  # default FROM_FIRST_PING
    require_check_in: bool | None = None  # default False
    check_in_interval: str | None = None  # day, week, month, year (when check-ins are required)
    check_in_interval_count: int | None = None  # 1..365 (when check-ins are required)
    usage_period: RawRule | None = None
    metadata: Metadata | None = None
    scheme: str | None = None  # ED25519_SIGN: signed license keys; fixed at creation (Keygen)


@dataclass(frozen=True, slots=True)
class PolicyPatch:
    name: Maybe[str | None] = UNSET
    max_uses: Maybe[int | None] = UNSET
    max_machines: Maybe[int | None] = UNSET
    max_cores: Maybe[int | None] = UNSET
    floating: Maybe[bool | None] = UNSET
    strict: Maybe[bool | None] = UNSET
    overage_strategy: Maybe[str | None] = UNSET
    protected: Maybe[bool | None] = UNSET
    duration: Maybe[int | None] = UNSET
    heartbeat_duration: Maybe[int | None] = UNSET
    expiration_basis: Maybe[str | None] = UNSET
    expiration_strategy: Maybe[str | None] = UNSET
    require_heartbeat: Maybe[bool | None] = UNSET
    heartbeat_cull_strategy: Maybe[str | None] = UNSET
    heartbeat_resurrection_strategy: Maybe[str | None] = UNSET
    heartbeat_basis: Maybe[str | None] = UNSET
    require_check_in: Maybe[bool | None] = UNSET
    check_in_interval: Maybe[str | None] = UNSET
    check_in_interval_count: Maybe[int | None] = UNSET
    usage_period: Maybe[RawRule | None] = UNSET
    metadata: Maybe[Metadata | None] = UNSET


# Licenses -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewLicense:
    """A license of ``policy_id``; unset limits and ``protected`` come from the policy."""

    policy_id: str | None
    name: str | None = None
    key: str | None = None  # generated when not sent
    expiry: datetime | None = None
    max_uses: int | None = None
    max_machines: int | None = None
    max_cores: int | None = None
    protected: bool | None = None
    suspended: bool | None = None
    usage_period: RawRule | None = None
    period_anchor: datetime | None = None
    metadata: Metadata | None = None


@dataclass(frozen=True, slots=True)
class LicensePatch:
    """Descriptive fields, expiry, suspension and the limit overrides (``None`` falls back to
    the policy's); never ``uses``."""

    name: Maybe[str | None] = UNSET
    key: Maybe[str] = UNSET
    expiry: Maybe[datetime | None] = UNSET
    max_uses: Maybe[int | None] = UNSET
    max_machines: Maybe[int | None] = UNSET
    max_cores: Maybe[int | None] = UNSET
    protected: Maybe[bool] = UNSET
    suspended: Maybe[bool] = UNSET
    usage_period: Maybe[RawRule | None] = UNSET
    period_anchor: Maybe[datetime | None] = UNSET
    metadata: Maybe[Metadata | None] = UNSET


# Machines -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NewMachine:
    """An activation on the license ``license_ref`` (its id or key)."""

    license_ref: str | None
    fingerprint: str | None = None
    cores: int | None = None
    name: str | None = None
    platform: str | None = None
    hostname: str | None = None
    metadata: Metadata | None = None


@dataclass(frozen=True, slots=True)
class MachinePatch:
    """Descriptive fields and ``cores``; the fingerprint of an activation never changes."""

    cores: Maybe[int | None] = UNSET
    name: Maybe[str | None] = UNSET
    platform: Maybe[str | None] = UNSET
    hostname: Maybe[str | None] = UNSET
    metadata: Maybe[Metadata | None] = UNSET


# Check-ins ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RawUsageRecord:
    """One offline usage record as sent: checked one by one by the check-in
    (``bridge.domain.checkin.parse_record``), so a bad record does not block the others."""

    id: str
    increment: int
    occurred_at: str  # ISO-8601 with an offset


@dataclass(frozen=True, slots=True)
class CheckIn:
    """A check-in of the license ``license_ref`` (id or key), with the offline usage recorded
    since the last one, in the order the client recorded it."""

    license_ref: str
    usage: tuple[RawUsageRecord, ...] = ()
    request_id: str | None = None


# Check-out ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CheckOut:
    """A license or machine file request: the query's parameters under the body's ``meta``.

    ``ttl`` UNSET is Keygen's default (a month); ``None`` (sent as null or blank) is no expiry.
    """

    encrypt: bool = False
    algorithm: str | None = None
    ttl: Maybe[int | None] = UNSET
    include: tuple[str, ...] = ()
