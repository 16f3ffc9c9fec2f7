"""Licenses: create, read, update, delete, suspend, validate, and their tokens."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from bridge.domain.access import LicenseAction, Principal, Role, authorize_license, require_admin
from bridge.domain.errors import (
    ExpiryInvalid,
    KeyInvalid,
    KeyTaken,
    MaxCoresInvalid,
    MaxMachinesInvalid,
    MaxUsesInvalid,
    NotFound,
    PeriodAnchorInvalid,
    PolicyNotFound,
)
from bridge.domain.limits import check_int4
from bridge.domain.model import ExpirationBasis, License, Policy, UsageKind
from bridge.domain.ports import (
    Clock,
    LicenseLookup,
    StoreConflict,
    UnitOfWork,
    UnitOfWorkFactory,
)
from bridge.domain.validation import (
    NOT_FOUND,
    ValidationResult,
    ValidationScope,
    instant_in_range,
    validate_license,
)
from bridge.service.auth import IssuedToken, issue_token
from bridge.service.common import Answer, Page, PageRequest, ignore, new_id
from bridge.service.license_machines import CoreChange, machine_facts, record_core_change
from bridge.service.periods import parse_rule, roll_period

KEY_MIN, KEY_MAX = 6, 255
_RANGE = "must lie between 1900-01-01 and 9000-01-01 UTC"


def generate_key() -> str:
    """Keygen-like: six dash-separated groups of upper-case hex."""
    raw = secrets.token_hex(15).upper()
    return "-".join(raw[i : i + 5] for i in range(0, 30, 5))


def load_license(
    licenses: LicenseLookup, principal: Principal, ref: str, action: LicenseAction
) -> License:
    """The license named by id or key, if the bearer may act on it (404 / 403 otherwise)."""
    license = licenses.find(ref)
    if license is None:
        raise NotFound.resource("license", ref)
    authorize_license(principal, license, action, ref)
    return license


def _check_key(uow: UnitOfWork, key: str) -> str:
    if not KEY_MIN <= len(key) <= KEY_MAX or not key.isprintable() or key != key.strip():
        raise KeyInvalid(f"must be {KEY_MIN} to {KEY_MAX} printable characters without padding")
    if uow.licenses.key_exists(key):
        raise KeyTaken
    return key


@contextmanager
def _key_race() -> Iterator[None]:
    """A key that races the check into the unique index is ``KEY_TAKEN`` all the same."""
    try:
        yield
    except StoreConflict:
        raise KeyTaken from None


def _check_override(value: int | None) -> int | None:
    if value is not None:
        check_int4(value, minimum=0, pointer="/data/attributes/maxUses", error=MaxUsesInvalid)
    return value


def _check_anchor(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise PeriodAnchorInvalid
    if value is not None and not instant_in_range(value):
        raise PeriodAnchorInvalid(_RANGE)
    return value


def _check_expiry(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ExpiryInvalid("must include a timezone offset")
    if value is not None and not instant_in_range(value):
        raise ExpiryInvalid(_RANGE)
    return value


def _machine_overrides(policy: Policy, attrs: Mapping[str, Any]) -> dict[str, int | None]:
    """The ``maxMachines`` / ``maxCores`` overrides sent, checked as Keygen checks the policy's
    (node-locked: exactly 1 machine; floating: at least 1)."""
    values: dict[str, int | None] = {}
    if "max_machines" in attrs:
        value = attrs["max_machines"]
        if value is not None:
            if not policy.floating and value != 1:
                raise MaxMachinesInvalid("must be equal to 1 for non-floating policy")
            check_int4(
                value,
                minimum=1,
                pointer="/data/attributes/maxMachines",
                error=MaxMachinesInvalid,
            )
        values["max_machines_override"] = value
    if "max_cores" in attrs:
        value = attrs["max_cores"]
        if value is not None:
            check_int4(value, minimum=1, pointer="/data/attributes/maxCores", error=MaxCoresInvalid)
        values["max_cores_override"] = value
    return values


def create_license(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    policy_id: str | None,
    attrs: Mapping[str, Any],
    answer: Answer[License] = ignore,
) -> License:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    now = clock.now()
    with _key_race(), uows(write=True) as uow:
        policy = uow.policies.get(policy_id) if policy_id else None
        if policy is None or (principal.role is Role.PRODUCT and policy.product_id != principal.id):
            raise PolicyNotFound
        key = attrs.get("key")
        expiry = _check_expiry(attrs.get("expiry"))
        machine_overrides = _machine_overrides(policy, attrs)
        license = License(
            id=new_id(),
            key=_check_key(uow, key) if key is not None else generate_key(),
            name=attrs.get("name"),
            policy_id=policy.id,
            product_id=policy.product_id,
            uses=0,
            max_uses_override=_check_override(attrs.get("max_uses")),
            policy_max_uses=policy.max_uses,
            policy_first_use_duration=(
                policy.duration
                if policy.expiration_basis is ExpirationBasis.FROM_FIRST_USE
                else None
            ),
            protected=attrs.get("protected", policy.protected),
            suspended=attrs.get("suspended", False),
            expiry=expiry if expiry is not None else policy.expiry_at_creation(now),
            metadata=attrs.get("metadata") or {},
            created=now,
            updated=now,
            usage_period_override=parse_rule(attrs.get("usage_period")),
            policy_usage_period=policy.usage_period,
            period_anchor=_check_anchor(attrs.get("period_anchor")),
            policy_max_machines=policy.max_machines,
            policy_max_cores=policy.max_cores,
            max_machines_override=machine_overrides.get("max_machines_override"),
            max_cores_override=machine_overrides.get("max_cores_override"),
        )
        license = license.current(now)  # opens its first usage period, if it has a rule
        uow.licenses.add(license)
        answer(license)
        uow.commit()
    return license


def get_license(
    uows: UnitOfWorkFactory, principal: Principal, ref: str, action: LicenseAction
) -> License:
    with uows() as uow:
        return load_license(uow.licenses, principal, ref, action)


def list_licenses(
    uows: UnitOfWorkFactory, principal: Principal, page: PageRequest, policy_id: str | None
) -> Page[License]:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    product_id = principal.id if principal.role is Role.PRODUCT else None
    with uows() as uow:
        items, total = uow.licenses.list(
            offset=page.offset, limit=page.size, product_id=product_id, policy_id=policy_id
        )
    return Page(items, total, page)


def update_license(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    ref: str,
    changes: Mapping[str, Any],
    answer: Answer[License] = ignore,
) -> License:
    """Descriptive fields, expiry, suspension and the ``maxUses`` override; never ``uses``."""
    with _key_race(), uows(write=True) as uow:
        license = load_license(uow.licenses, principal, ref, LicenseAction.UPDATE)
        values: dict[str, Any] = {"updated": clock.now()}
        for name in ("name", "protected", "suspended"):
            if name in changes:
                values[name] = changes[name]
        if "metadata" in changes:
            values["metadata"] = changes["metadata"] or {}
        if "max_uses" in changes:
            # null removes the override and falls back to the policy value (Keygen).
            values["max_uses_override"] = _check_override(changes["max_uses"])
        if "expiry" in changes:
            values["expiry"] = _check_expiry(changes["expiry"])
        if "key" in changes and changes["key"] != license.key:
            values["key"] = _check_key(uow, changes["key"])
        # A changed rule or anchor applies from the end of the open period.
        if "usage_period" in changes:
            values["usage_period_override"] = parse_rule(changes["usage_period"])
        if "period_anchor" in changes:
            values["period_anchor"] = _check_anchor(changes["period_anchor"])
        if "max_machines" in changes or "max_cores" in changes:
            policy = uow.policies.get(license.policy_id)
            assert policy is not None  # a policy with licenses cannot be deleted
            values.update(_machine_overrides(policy, changes))
        license = dataclasses.replace(license, **values)
        uow.licenses.update(license)
        if license.period_end is None:
            license = roll_period(uow.periods, license, values["updated"], closed_by="usage")
        answer(license)
        uow.commit()
    return license


def delete_license(uows: UnitOfWorkFactory, clock: Clock, principal: Principal, ref: str) -> None:
    """Deletes the license, its tokens and its machines; its ledger stays for audit and billing.

    Each machine's deactivation is a ledger entry, not forwarded: with the license gone, the
    sinks have no subscription or account to bill it to.
    """
    with uows(write=True) as uow:
        license = load_license(uow.licenses, principal, ref, LicenseAction.DELETE)
        uow.licenses.lock(license.id)
        total = uow.machines.tally(license.id).cores
        now = clock.now()
        for machine in uow.machines.of_license(license.id):
            after = total - (machine.cores or 0)
            change = CoreChange(
                license.id, machine.id, UsageKind.DEACTIVATE, total, after, principal.actor
            )
            record_core_change(uow, change, now, sinks=())
            total = after
        uow.licenses.delete(license.id)
        uow.commit()


def set_suspended(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    ref: str,
    suspended: bool,
    answer: Answer[License] = ignore,
) -> License:
    return update_license(uows, clock, principal, ref, {"suspended": suspended}, answer)


def validate(
    uows: UnitOfWorkFactory, clock: Clock, principal: Principal, ref: str, scope: ValidationScope
) -> tuple[License, ValidationResult]:
    with uows() as uow:
        license = load_license(uow.licenses, principal, ref, LicenseAction.VALIDATE)
        facts = machine_facts(uow, license, scope)
    return license, validate_license(license, clock.now(), scope, facts)


def validate_key(
    uows: UnitOfWorkFactory, clock: Clock, key: str, scope: ValidationScope
) -> tuple[License | None, ValidationResult]:
    """Keygen's validate-key: no token needed, the key itself is the credential."""
    with uows() as uow:
        license = uow.licenses.find(key)
        if license is None or license.key != key:
            return None, NOT_FOUND
        facts = machine_facts(uow, license, scope)
    return license, validate_license(license, clock.now(), scope, facts)


def create_license_token(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    ref: str,
    answer: Answer[IssuedToken] = ignore,
) -> IssuedToken:
    with uows(write=True) as uow:
        license = load_license(uow.licenses, principal, ref, LicenseAction.CREATE_TOKEN)
        token = issue_token(uow, clock, Role.LICENSE, license.id)
        answer(token)
        uow.commit()
    return token
