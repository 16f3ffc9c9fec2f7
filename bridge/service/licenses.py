"""Licenses: create, read, update, delete, suspend, validate, and their tokens."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from bridge.domain.access import LicenseAction, Principal, Role, authorize_license, require_admin
from bridge.domain.attributes import (
    check_expiry,
    check_key,
    check_max_cores_override,
    check_max_machines_override,
    check_max_uses_override,
    check_period_anchor,
    given,
    rule_of,
)
from bridge.domain.commands import UNSET, LicensePatch, NewLicense
from bridge.domain.errors import KeyInvalid, KeyTaken, NotFound, PolicyNotFound
from bridge.domain.model import License, UsageKind
from bridge.domain.ports import (
    Clock,
    LicenseLookup,
    StoreConflict,
    UnitOfWork,
    UnitOfWorkFactory,
)
from bridge.domain.validation import (
    NOT_FOUND,
    MachineFacts,
    ValidationResult,
    ValidationScope,
    validate_license,
)
from bridge.service.auth import IssuedToken, issue_token
from bridge.service.common import Answer, Page, PageRequest, ignore, new_id
from bridge.service.license_machines import CoreChange, machine_facts, record_core_change
from bridge.service.periods import roll_over
from bridge.service.signed_keys import KeyMint, require_mint


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


def _new_key(uow: UnitOfWork, key: str) -> str:
    check_key(key)
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


def create_license(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    command: NewLicense,
    answer: Answer[License] = ignore,
    *,
    mint: KeyMint | None = None,
) -> License:
    """``mint`` signs the key of a license whose policy has a scheme (``ED25519_SIGN``)."""
    if principal.role is Role.LICENSE:
        require_admin(principal)
    now = clock.now()
    with _key_race(), uows(write=True) as uow:
        policy = uow.policies.get(command.policy_id) if command.policy_id else None
        if policy is None or (principal.role is Role.PRODUCT and policy.product_id != principal.id):
            raise PolicyNotFound
        # Keygen's order: expiry, machine limits, key, maxUses, usage period, anchor.
        expiry = check_expiry(command.expiry)
        max_machines = check_max_machines_override(policy, command.max_machines)
        max_cores = check_max_cores_override(command.max_cores)
        license_id = new_id()
        expiry = expiry if expiry is not None else policy.expiry_at_creation(now)
        if policy.scheme is not None:
            key = require_mint(mint).key_for(
                policy, license_id=license_id, sent=command.key, created=now, expiry=expiry
            )
            if uow.licenses.key_exists(key):
                raise KeyTaken
        else:
            key = _new_key(uow, command.key) if command.key is not None else generate_key()
        max_uses = check_max_uses_override(command.max_uses)
        usage_period = rule_of(command.usage_period)
        license = License(
            id=license_id,
            key=key,
            name=command.name,
            policy_id=policy.id,
            product_id=policy.product_id,
            uses=0,
            max_uses_override=max_uses,
            protected=policy.protected if command.protected is None else command.protected,
            suspended=bool(command.suspended),
            expiry=expiry,
            metadata=command.metadata or {},
            created=now,
            updated=now,
            terms=policy.terms,
            usage_period_override=usage_period,
            period_anchor=check_period_anchor(command.period_anchor),
            max_machines_override=max_machines,
            max_cores_override=max_cores,
            # Keygen's set_first_check_in: a license that must check in starts checked in.
            last_check_in=now if policy.require_check_in else None,
        ).under(policy.terms)
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
    patch: LicensePatch,
    answer: Answer[License] = ignore,
) -> License:
    """Descriptive fields, expiry, suspension and the limit overrides; never ``uses``."""
    with _key_race(), uows(write=True) as uow:
        license = load_license(uow.licenses, principal, ref, LicenseAction.UPDATE)
        now = clock.now()
        # Checked in Keygen's order; null removes an override (the policy's value applies).
        max_uses = license.max_uses_override
        if patch.max_uses is not UNSET:
            max_uses = check_max_uses_override(patch.max_uses)
        expiry = license.expiry if patch.expiry is UNSET else check_expiry(patch.expiry)
        key = license.key
        if patch.key is not UNSET and patch.key != license.key:
            if license.terms.scheme is not None:
                raise KeyInvalid("cannot be changed for a license whose policy signs its keys")
            key = _new_key(uow, patch.key)
        # A changed rule or anchor applies from the end of the open period.
        usage_period = license.usage_period_override
        if patch.usage_period is not UNSET:
            usage_period = rule_of(patch.usage_period)
        anchor = license.period_anchor
        if patch.period_anchor is not UNSET:
            anchor = check_period_anchor(patch.period_anchor)
        max_machines, max_cores = license.max_machines_override, license.max_cores_override
        if patch.max_machines is not UNSET or patch.max_cores is not UNSET:
            policy = uow.policies.get(license.policy_id)
            assert policy is not None  # a policy with licenses cannot be deleted
            if patch.max_machines is not UNSET:
                max_machines = check_max_machines_override(policy, patch.max_machines)
            if patch.max_cores is not UNSET:
                max_cores = check_max_cores_override(patch.max_cores)
        changed = dataclasses.replace(
            license,
            name=given(patch.name, license.name),
            protected=given(patch.protected, license.protected),
            suspended=given(patch.suspended, license.suspended),
            metadata=license.metadata if patch.metadata is UNSET else patch.metadata or {},
            max_uses_override=max_uses,
            expiry=expiry,
            key=key,
            usage_period_override=usage_period,
            period_anchor=anchor,
            max_machines_override=max_machines,
            max_cores_override=max_cores,
            updated=now,
        )
        uow.licenses.update(changed)
        # Read back through the projection: the effective terms follow the new overrides.
        updated = uow.licenses.get(license.id)
        assert updated is not None, "the license is held by this write transaction"
        license = updated
        if license.period_end is None:
            license = roll_over(uow.periods, license, now, closed_by="usage")
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
            uow.machines.delete(machine.id)
            total = after
        uow.tokens.delete_for(license.id)
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
    patch = LicensePatch(suspended=suspended)
    return update_license(uows, clock, principal, ref, patch, answer)


Validated = tuple[License | None, ValidationResult]


def validate(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    ref: str,
    scope: ValidationScope,
    answer: Answer[Validated] = ignore,
) -> Validated:
    with uows() as uow:
        license = load_license(uow.licenses, principal, ref, LicenseAction.VALIDATE)
        facts = machine_facts(uow, license, scope)
    return _validated(uows, clock, license, scope, facts, answer)


def validate_key(
    uows: UnitOfWorkFactory,
    clock: Clock,
    key: str,
    scope: ValidationScope,
    answer: Answer[Validated] = ignore,
) -> Validated:
    """Keygen's validate-key: no token needed, the key itself is the credential."""
    with uows() as uow:
        license = uow.licenses.find(key)
        if license is None or license.key != key:
            answer((None, NOT_FOUND))
            return None, NOT_FOUND
        facts = machine_facts(uow, license, scope)
    return _validated(uows, clock, license, scope, facts, answer)


def _validated(
    uows: UnitOfWorkFactory,
    clock: Clock,
    license: License,
    scope: ValidationScope,
    facts: MachineFacts,
    answer: Answer[Validated],
) -> Validated:
    """The validation, and Keygen's touch: every validation of an existing license, valid or
    not, sets its lastValidated, here in a short write transaction of its own after the read,
    with the answer rendered before its commit."""
    now = clock.now()
    result = validate_license(license, now, scope, facts)
    validated: Validated = (dataclasses.replace(license, last_validated=now), result)
    with uows(write=True) as uow:
        uow.licenses.touch_validated(license.id, now)
        answer(validated)
        uow.commit()
    return validated


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
