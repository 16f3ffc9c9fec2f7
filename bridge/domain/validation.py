"""License validation as Keygen answers it (``meta.valid``, ``meta.code``, ``meta.detail``).

Usage never affects validity (Keygen's metered-license docs); machines do, on strict policies
and with a fingerprint scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.domain.machines import MachineLimits, MachineTally, within_overage
from bridge.domain.model import License, LicenseStatus, Machine

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
    """Keygen's validation scope; ``given`` names the keys the client sent (``user`` and
    ``environment`` may be sent as null, which Keygen treats apart from leaving them out)."""

    product: str | None = None
    policy: str | None = None
    fingerprint: str | None = None
    fingerprints: tuple[str, ...] | None = None
    machine: str | None = None
    user: str | None = None
    components: tuple[str, ...] | None = None
    entitlements: tuple[str, ...] | None = None
    checksum: str | None = None
    version: str | None = None
    environment: str | None = None
    given: frozenset[str] = frozenset()

    @property
    def all_fingerprints(self) -> tuple[str, ...] | None:
        """Keygen's ``Array(scope[:fingerprint] || scope[:fingerprints]).uniq``, or None when
        neither was sent."""
        if self.fingerprint is None and self.fingerprints is None:
            return None
        values = (self.fingerprint,) if self.fingerprint is not None else self.fingerprints or ()
        return tuple(dict.fromkeys(values))


@dataclass(frozen=True, slots=True)
class MachineFacts:
    """What validation needs to know of a license's machines: its limits and tally, the
    machines the scope's fingerprints name, and the one its ``machine`` scope names."""

    limits: MachineLimits
    tally: MachineTally
    scoped: tuple[Machine, ...] = ()
    machine: Machine | None = None


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
    """Keygen's order: suspended, expired (REVOKE_ACCESS), overdue for check-in, scope checks,
    machine limits (strict), expired (the other strategies), then valid."""
    status = license.status(now)
    if status is LicenseStatus.SUSPENDED:
        return ValidationResult(False, "SUSPENDED", "is suspended")
    expired = status is LicenseStatus.EXPIRED
    strategy = license.terms.expiration_strategy
    if expired and strategy == "REVOKE_ACCESS":  # before anything else (Keygen)
        return _no("EXPIRED", "is expired")
    if license.check_in_overdue(now):
        return _no("OVERDUE", "is overdue for check in")
    found = _unsatisfied_scope(license, scope) or _machine_scopes(scope, machines, now)
    if found is not None:
        return found
    if machines is not None and machines.limits.strict:
        found = _machine_limits(machines.limits, machines.tally)
        if found is not VALID:
            return found
    if expired:  # the other strategies say EXPIRED last; two of them still allow access
        return ValidationResult(strategy in _ACCESS_KEPT, "EXPIRED", "is expired")
    return VALID


_ACCESS_KEPT = ("MAINTAIN_ACCESS", "ALLOW_ACCESS")


def _unsatisfied_scope(license: License, scope: ValidationScope) -> ValidationResult | None:
    """Keygen's scope checks before the machine ones. The bridge has no environments, users or
    entitlements: a license has none, so these scopes fail as Keygen's do for such a license
    (a null ``environment`` or ``user`` matches its absence, as in Keygen)."""
    if "environment" in scope.given and scope.environment is not None:
        return _no("ENVIRONMENT_SCOPE_MISMATCH", "environment scope does not match")
    if scope.product is not None and scope.product != license.product_id:
        return _no("PRODUCT_SCOPE_MISMATCH", "product scope does not match")
    if scope.policy is not None and scope.policy != license.policy_id:
        return _no("POLICY_SCOPE_MISMATCH", "policy scope does not match")
    if "user" in scope.given and scope.user is not None:
        return _no("USER_SCOPE_MISMATCH", "user scope does not match")
    if scope.entitlements is not None:
        if not scope.entitlements:
            return _no("ENTITLEMENTS_SCOPE_EMPTY", "entitlements scope is empty")
        return _no("ENTITLEMENTS_MISSING", "is missing one or more required entitlements")
    return None


def _machine_scopes(
    scope: ValidationScope, machines: MachineFacts | None, now: datetime
) -> ValidationResult | None:
    """``machine``, ``fingerprint(s)`` and ``components`` (Keygen's order and details), then
    ``checksum`` and ``version``, which match nothing: the bridge has no releases."""
    if machines is not None and scope.machine is not None:
        found = _machine_scope(machines, now)
        if found is not None:
            return found
    fingerprints = scope.all_fingerprints
    if machines is not None and fingerprints is not None:
        found = _fingerprint_scope(machines, fingerprints, now)
        if found is not None:
            return found
    if scope.components is not None:
        if scope.fingerprint is None:
            detail = "fingerprint scope is required when using the components scope"
            return _no("FINGERPRINT_SCOPE_REQUIRED", detail)
        if not scope.components:
            return _no("COMPONENTS_SCOPE_EMPTY", "components scope is empty")
        detail = "one or more component is not activated (does not match any associated components)"
        return _no("COMPONENTS_SCOPE_MISMATCH", detail)
    if scope.checksum is not None:
        detail = "checksum scope is not valid (does not match any accessible artifacts)"
        return _no("CHECKSUM_SCOPE_MISMATCH", detail)
    if scope.version is not None:
        detail = "version scope is not valid (does not match any accessible releases)"
        return _no("VERSION_SCOPE_MISMATCH", detail)
    return None


def _no_machines(machines: MachineFacts, what: str) -> ValidationResult | None:
    if machines.tally.machines:
        return None
    if machines.limits.floating:
        return _no("NO_MACHINES", f"{what} is not activated (has no associated machines)")
    return _no("NO_MACHINE", f"{what} is not activated (has no associated machine)")


def _machine_scope(machines: MachineFacts, now: datetime) -> ValidationResult | None:
    found = _no_machines(machines, "machine")
    if found is not None:
        return found
    machine = machines.machine
    if machine is None:
        detail = "machine is not activated (does not match any associated machines)"
        return _no("MACHINE_SCOPE_MISMATCH", detail)
    if machine.heartbeat.required and machine.heartbeat_status(now) == "NOT_STARTED":
        return _no("HEARTBEAT_NOT_STARTED", "machine heartbeat is required")
    if machine.heartbeat_status(now) == "DEAD":
        return _no("HEARTBEAT_DEAD", "machine heartbeat is dead")
    return None


def _fingerprint_scope(
    machines: MachineFacts, fingerprints: tuple[str, ...], now: datetime
) -> ValidationResult | None:
    if not fingerprints:
        return _no("FINGERPRINT_SCOPE_EMPTY", "fingerprint scope is empty")
    found = _no_machines(machines, "fingerprint")
    if found is not None:
        return found
    dead = [m for m in machines.scoped if m.heartbeat_status(now) == "DEAD"]
    if len(dead) == len(fingerprints):
        return _no("HEARTBEAT_DEAD", "machine heartbeat is dead")
    if len(machines.scoped) == len(dead):  # no alive machine: Keygen's MATCH_ANY
        what = "one or more fingerprint is" if len(fingerprints) > 1 else "fingerprint is"
        detail = f"{what} not activated (does not match any associated machines)"
        return _no("FINGERPRINT_SCOPE_MISMATCH", detail)
    if any(
        m.heartbeat.required and m.heartbeat_status(now) == "NOT_STARTED" for m in machines.scoped
    ):
        return _no("HEARTBEAT_NOT_STARTED", "machine heartbeat is required")
    return None


def _no(code: str, detail: str) -> ValidationResult:
    return ValidationResult(False, code, detail)


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
