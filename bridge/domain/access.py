"""Who may do what: Keygen's role matrix for the three bearers this service knows.

- admin: everything;
- product: the product itself, its policies, licenses of its policies and their machines;
- license: itself only (read, validate, increment, check out) and its own machines (activate,
  read, describe, ping, deactivate, check out; never change their cores). Another license is
  404, not 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bridge.domain.errors import AccessDenied, NotFound
from bridge.domain.model import License


class Role(StrEnum):
    ADMIN = "admin"
    PRODUCT = "product"
    LICENSE = "license"


class LicenseAction(StrEnum):
    READ = "read"
    VALIDATE = "validate"
    UPDATE = "update"
    DELETE = "delete"
    INCREMENT = "increment"
    DECREMENT = "decrement"
    RESET = "reset"
    SUSPEND = "suspend"
    CREATE_TOKEN = "create-token"  # noqa: S105 - an action name, not a secret
    READ_USAGE = "read-usage"
    CHECK_IN = "check-in"  # Keygen: the same role matrix as increment
    CHECK_OUT = "check-out"  # a license file


class MachineAction(StrEnum):
    ACTIVATE = "activate"
    READ = "read"
    UPDATE = "update"  # name, platform, hostname, metadata
    CHANGE_CORES = "change-cores"
    PING = "ping"
    DEACTIVATE = "deactivate"
    CHECK_OUT = "check-out"  # a machine file


# What a license may do to its own machines: everything but change their cores afterwards.
_SELF_MACHINE_ACTIONS = frozenset(MachineAction) - {MachineAction.CHANGE_CORES}

# What a license may do to itself (Keygen LICENSE_PERMISSIONS: only license.usage.increment
# among the usage actions, plus read, validate, check-in and check-out).
_SELF_LICENSE_ACTIONS = frozenset(
    {
        LicenseAction.READ,
        LicenseAction.VALIDATE,
        LicenseAction.INCREMENT,
        LicenseAction.READ_USAGE,
        LicenseAction.CHECK_IN,
        LicenseAction.CHECK_OUT,
    }
)


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    id: str  # "admin", a product id or a license id

    @property
    def actor(self) -> str:
        """How the ledger names this bearer."""
        return f"{self.role}:{self.id}"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


def can_see_license(principal: Principal, license: License) -> bool:
    if principal.role is Role.ADMIN:
        return True
    if principal.role is Role.PRODUCT:
        return license.product_id == principal.id
    return license.id == principal.id


def authorize_license(
    principal: Principal, license: License, action: LicenseAction, requested: str
) -> None:
    """Raise 404 for a license outside the bearer's scope, 403 for an action its role lacks."""
    _authorize(principal, license, "license", requested, action in _SELF_LICENSE_ACTIONS)


def authorize_machine(
    principal: Principal, license: License, action: MachineAction, requested: str
) -> None:
    """The machine's license decides: 404 outside the bearer's scope, 403 for a license
    changing its machine's cores."""
    _authorize(principal, license, "machine", requested, action in _SELF_MACHINE_ACTIONS)


def _authorize(
    principal: Principal, license: License, kind: str, requested: str, self_allowed: bool
) -> None:
    if not can_see_license(principal, license):
        raise NotFound.resource(kind, requested)
    if principal.role is Role.LICENSE and not self_allowed:
        raise AccessDenied(
            "You do not have permission to complete the request (license lacks permission to "
            "perform action)"
        )


def require_admin(principal: Principal) -> None:
    if principal.role is not Role.ADMIN:
        raise AccessDenied(
            f"You do not have permission to complete the request ({principal.role} lacks "
            "permission to perform action)"
        )


def require_product_scope(principal: Principal, product_id: str) -> None:
    """Admin, or the product itself; a license never manages products or policies."""
    if principal.role is Role.ADMIN:
        return
    if principal.role is Role.PRODUCT and principal.id == product_id:
        return
    require_admin(principal)
