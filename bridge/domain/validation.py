"""License validation as Keygen answers it (``meta.valid``, ``meta.code``, ``meta.detail``).

Usage never affects validity (Keygen's metered-license docs); machines do, on strict policies
and with a fingerprint scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.domain.machines import MachineLimits, MachineTally, within_overage
from bridge.domain.model import License, LicenseStatus

# Date-times a client may send: convertible to UTC, and far enough from the calendar's ends
# (years 1 and 9999) that period and duration arithmetic on them cannot overflow.
MIN_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)


def instant_in_range(value: datetime) -> bool:
    """An aware date-time within ``MIN_INSTANT``..``MAX_INSTANT`` once converted to UTC."""
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        return False
    return MIN_INSTANT <= utc <= MAX_INSTANT


@dataclass(frozen=True, slots=True)
class ValidationScope:
    product: str | None = None
    policy: str | None = None
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class MachineFacts:
    """What validation needs to know of a license's machines."""

    limits: MachineLimits
    tally: MachineTally
    fingerprint_found: bool = False  # a machine has the scope's fingerprint


@dataclass(frozen=True, slots=True)
class ValidationResult:
    valid: bool
    code: str
    detail: str


NOT_FOUND = ValidationResult(False, "NOT_FOUND", "does not exist")
VALID = ValidationResult(True, "VALID", "is valid")


def validate_license(
    license: License,
    now: datetime,
    scope: ValidationScope,
    machines: MachineFacts | None = None,
) -> ValidationResult:
    """Keygen's order: suspended, expired, scope checks, machine limits (strict), then valid."""
    status = license.status(now)
    if status is LicenseStatus.SUSPENDED:
        return ValidationResult(False, "SUSPENDED", "is suspended")
    if status is LicenseStatus.EXPIRED:
        return ValidationResult(False, "EXPIRED", "is expired")
    if scope.product is not None and scope.product != license.product_id:
        return ValidationResult(False, "PRODUCT_SCOPE_MISMATCH", "product scope does not match")
    if scope.policy is not None and scope.policy != license.policy_id:
        return ValidationResult(False, "POLICY_SCOPE_MISMATCH", "policy scope does not match")
    if machines is None:
        return VALID
    if scope.fingerprint is not None and not machines.fingerprint_found:
        return _fingerprint_not_activated(machines)
    if machines.limits.strict:
        return _machine_limits(machines.limits, machines.tally)
    return VALID


def _fingerprint_not_activated(machines: MachineFacts) -> ValidationResult:
    if machines.tally.machines == 0:
        if machines.limits.floating:
            detail = "fingerprint is not activated (has no associated machines)"
            return ValidationResult(False, "NO_MACHINES", detail)
        detail = "fingerprint is not activated (has no associated machine)"
        return ValidationResult(False, "NO_MACHINE", detail)
    detail = "fingerprint is not activated (does not match any associated machines)"
    return ValidationResult(False, "FINGERPRINT_SCOPE_MISMATCH", detail)


def _machine_limits(limits: MachineLimits, tally: MachineTally) -> ValidationResult:
    """Over a limit, the answer is valid only within the overage allowance, with the limit's
    code either way (Keygen)."""
    if tally.machines == 0:
        if limits.floating:
            return ValidationResult(False, "NO_MACHINES", "must have at least 1 associated machine")
        return ValidationResult(False, "NO_MACHINE", "must have exactly 1 associated machine")
    if limits.max_machines is not None and tally.machines > limits.max_machines:
        valid = within_overage(limits.overage, tally.machines, limits.max_machines)
        return ValidationResult(valid, "TOO_MANY_MACHINES", "has too many associated machines")
    if limits.max_cores is not None and tally.cores > limits.max_cores:
        valid = within_overage(limits.overage, tally.cores, limits.max_cores)
        return ValidationResult(valid, "TOO_MANY_CORES", "has too many associated machine cores")
    return VALID
