"""License validation as Keygen answers it (``meta.valid``, ``meta.code``, ``meta.detail``).

Usage never affects validity (Keygen's metered-license docs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bridge.domain.model import License, LicenseStatus


@dataclass(frozen=True, slots=True)
class ValidationScope:
    product: str | None = None
    policy: str | None = None


@dataclass(frozen=True, slots=True)
class ValidationResult:
    valid: bool
    code: str
    detail: str


NOT_FOUND = ValidationResult(False, "NOT_FOUND", "does not exist")


def validate_license(license: License, now: datetime, scope: ValidationScope) -> ValidationResult:
    """Keygen's order: suspended, expired, scope checks, then valid."""
    status = license.status(now)
    if status is LicenseStatus.SUSPENDED:
        return ValidationResult(False, "SUSPENDED", "is suspended")
    if status is LicenseStatus.EXPIRED:
        return ValidationResult(False, "EXPIRED", "is expired")
    if scope.product is not None and scope.product != license.product_id:
        return ValidationResult(False, "PRODUCT_SCOPE_MISMATCH", "product scope does not match")
    if scope.policy is not None and scope.policy != license.policy_id:
        return ValidationResult(False, "POLICY_SCOPE_MISMATCH", "policy scope does not match")
    return ValidationResult(True, "VALID", "is valid")
