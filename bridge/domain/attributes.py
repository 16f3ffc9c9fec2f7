"""Keygen's attribute validations of products, policies, licenses and machines, as pure functions.

Each check raises the domain error of the field it checks (``MaxUsesInvalid`` is about
``Field.MAX_USES``), with Keygen's detail; the API turns the field into its source pointer. Checks
that need the store (a key already taken, a policy that must exist) stay in the use cases, which
call these in Keygen's order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from datetime import datetime
from typing import Any, TypeVar

from bridge.domain.commands import UNSET, Maybe, NewPolicy, PolicyPatch, RawRule
from bridge.domain.errors import (
    INT4_MAX,
    AttributeInvalid,
    CheckInIntervalCountNotAllowed,
    CheckInIntervalNotAllowed,
    DurationInvalid,
    ExpirationBasisNotAllowed,
    ExpirationStrategyNotAllowed,
    ExpiryInvalid,
    Field,
    FingerprintMissing,
    HeartbeatBasisNotAllowed,
    HeartbeatCullStrategyNotAllowed,
    HeartbeatDurationInvalid,
    HeartbeatResurrectionStrategyNotAllowed,
    KeyInvalid,
    MaxCoresInvalid,
    MaxMachinesInvalid,
    MaxUsesInvalid,
    NameMissing,
    OverageStrategyNotAllowed,
    PeriodAnchorInvalid,
    Unprocessable,
)
from bridge.domain.limits import check_int4
from bridge.domain.machines import check_overage_compatible
from bridge.domain.model import (
    CHECK_IN_INTERVALS,
    CULL_STRATEGIES,
    EXPIRATION_STRATEGIES,
    HEARTBEAT_BASES,
    RESURRECTION_STRATEGIES,
    ExpirationBasis,
    OverageStrategy,
    Policy,
)
from bridge.domain.periods import PeriodRule
from bridge.domain.signed_keys import KEY_MAX, check_scheme
from bridge.domain.validation import instant_in_range

T = TypeVar("T")
U = TypeVar("U")

MAX_CHECK_IN_COUNT = 365  # Keygen's checkInIntervalCount range is 1..365
MIN_HEARTBEAT_S = 60  # Keygen's minimum heartbeat duration
KEY_MIN = 6  # Keygen's minimum for a key it does not sign; KEY_MAX (16 KiB) for any key
MAX_TEXT = 255  # machine fingerprint, name, platform and hostname
_RANGE = "must lie between 1900-01-01 and 9000-01-01 UTC"


def given(value: Maybe[T], current: U) -> T | U:
    """A patch's value, or ``current`` when the patch leaves it unset."""
    return current if value is UNSET else value


def given_non_null(value: Maybe[T | None], current: U) -> T | U:
    """As ``given``, for a value that cannot be null: ``null`` leaves it unchanged (Keygen)."""
    return current if value is UNSET or value is None else value


def check_name(name: str | None) -> str:
    if name is None or not name.strip():
        raise NameMissing
    return name


def rule_of(value: PeriodRule | RawRule | None) -> PeriodRule | None:
    """A usage-period rule as sent (an object or null), or one already parsed."""
    if value is None or isinstance(value, PeriodRule):
        return value
    return PeriodRule.parse(value)


# Policies -----------------------------------------------------------------------------------
def blank_policy(policy_id: str, product_id: str, now: datetime) -> Policy:
    """A policy with Keygen's defaults and no name: what a create command is applied to."""
    return Policy(
        id=policy_id,
        product_id=product_id,
        name="",
        max_uses=None,
        max_machines=None,
        max_cores=None,
        floating=False,
        strict=False,
        overage_strategy=OverageStrategy.NO_OVERAGE,
        protected=False,
        duration=None,
        expiration_basis=ExpirationBasis.FROM_CREATION,
        metadata={},
        created=now,
        updated=now,
    )


def policy_with(policy: Policy, change: NewPolicy | PolicyPatch, now: datetime) -> Policy:
    """``policy`` with ``change`` applied, checked as Keygen checks a policy, in its order."""
    name = check_name(given_non_null(change.name, policy.name))
    max_uses = given(change.max_uses, policy.max_uses)
    if max_uses is not None:
        check_int4(max_uses, minimum=0, error=MaxUsesInvalid)
    max_cores = given(change.max_cores, policy.max_cores)
    if max_cores is not None:
        check_int4(max_cores, minimum=1, error=MaxCoresInvalid)
    floating = given_non_null(change.floating, policy.floating)
    max_machines = given(change.max_machines, policy.max_machines)
    if not floating:
        # Keygen: a node-locked policy has exactly one machine.
        if max_machines not in (None, 1):
            raise MaxMachinesInvalid("must be equal to 1 for non-floating policy")
        max_machines = 1
    elif max_machines is not None:
        if max_machines < 1:
            raise MaxMachinesInvalid("must be greater than or equal to 1 for floating policy")
        check_int4(max_machines, minimum=1, error=MaxMachinesInvalid)
    duration = given(change.duration, policy.duration)
    if duration is not None:
        check_int4(duration, minimum=1, error=DurationInvalid)
    heartbeat = given(change.heartbeat_duration, policy.heartbeat_duration)
    if heartbeat is not None:
        check_int4(heartbeat, minimum=MIN_HEARTBEAT_S, error=HeartbeatDurationInvalid)
    try:
        overage = OverageStrategy(given_non_null(change.overage_strategy, policy.overage_strategy))
    except ValueError:
        raise OverageStrategyNotAllowed from None
    check_overage_compatible(overage, floating, max_machines, max_cores)
    try:
        basis = ExpirationBasis(given_non_null(change.expiration_basis, policy.expiration_basis))
    except ValueError:
        raise ExpirationBasisNotAllowed from None
    strategies = _strategies(policy, change)
    check_in = _check_in(policy, change)
    scheme = check_scheme(change.scheme) if isinstance(change, NewPolicy) else policy.scheme
    metadata = policy.metadata if change.metadata is UNSET else change.metadata or {}
    usage_period = policy.usage_period
    if change.usage_period is not UNSET:
        usage_period = rule_of(change.usage_period)
    return dataclasses.replace(
        policy,
        name=name,
        max_uses=max_uses,
        max_machines=max_machines,
        max_cores=max_cores,
        floating=floating,
        strict=given_non_null(change.strict, policy.strict),
        overage_strategy=overage,
        protected=given_non_null(change.protected, policy.protected),
        duration=duration,
        heartbeat_duration=heartbeat,
        expiration_basis=basis,
        require_heartbeat=given_non_null(change.require_heartbeat, policy.require_heartbeat),
        expiration_strategy=strategies["expiration_strategy"],
        heartbeat_cull_strategy=strategies["heartbeat_cull_strategy"],
        heartbeat_resurrection_strategy=strategies["heartbeat_resurrection_strategy"],
        heartbeat_basis=strategies["heartbeat_basis"],
        **check_in,
        metadata=metadata,
        usage_period=usage_period,
        scheme=scheme,
        updated=now,
    )


def _strategies(policy: Policy, change: NewPolicy | PolicyPatch) -> dict[str, str]:
    """Keygen's expiration and heartbeat strategies, each one of its values; ALWAYS_REVIVE needs
    KEEP_DEAD (a culled machine cannot come back)."""
    checks: tuple[tuple[str, Collection[str], type[Unprocessable]], ...] = (
        ("expiration_strategy", EXPIRATION_STRATEGIES, ExpirationStrategyNotAllowed),
        ("heartbeat_cull_strategy", CULL_STRATEGIES, HeartbeatCullStrategyNotAllowed),
        (
            "heartbeat_resurrection_strategy",
            tuple(RESURRECTION_STRATEGIES),
            HeartbeatResurrectionStrategyNotAllowed,
        ),
        ("heartbeat_basis", HEARTBEAT_BASES, HeartbeatBasisNotAllowed),
    )
    values: dict[str, str] = {}
    for name, allowed, error in checks:
        value = given_non_null(getattr(change, name), getattr(policy, name))
        if value not in allowed:
            raise error
        values[name] = value
    if (
        values["heartbeat_resurrection_strategy"] == "ALWAYS_REVIVE"
        and values["heartbeat_cull_strategy"] != "KEEP_DEAD"
    ):
        raise HeartbeatCullStrategyNotAllowed(
            "incompatible heartbeat cull strategy (must be KEEP_DEAD when resurrection strategy "
            "is ALWAYS_REVIVE)"
        )
    return values


def _check_in(policy: Policy, change: NewPolicy | PolicyPatch) -> dict[str, Any]:
    """Keygen's check-in terms: the interval and its count are validated only when check-ins
    are required (then one of day/week/month/year, and 1..365)."""
    required = given_non_null(change.require_check_in, policy.require_check_in)
    interval = given(change.check_in_interval, policy.check_in_interval)
    count = given(change.check_in_interval_count, policy.check_in_interval_count)
    if required:
        if interval not in CHECK_IN_INTERVALS:
            raise CheckInIntervalNotAllowed
        if count is None or not 1 <= count <= MAX_CHECK_IN_COUNT:
            raise CheckInIntervalCountNotAllowed
    elif count is not None and abs(count) > INT4_MAX:  # unchecked by Keygen, but unstorable
        raise CheckInIntervalCountNotAllowed
    return {
        "require_check_in": required,
        "check_in_interval": interval,
        "check_in_interval_count": count,
    }


# Licenses -----------------------------------------------------------------------------------
def check_key(key: str) -> str:
    if not KEY_MIN <= len(key) <= KEY_MAX or not key.isprintable() or key != key.strip():
        raise KeyInvalid(f"must be {KEY_MIN} to {KEY_MAX} printable characters without padding")
    return key


def check_expiry(expiry: datetime | None) -> datetime | None:
    if expiry is not None and expiry.tzinfo is None:
        raise ExpiryInvalid("must include a timezone offset")
    if expiry is not None and not instant_in_range(expiry):
        raise ExpiryInvalid(_RANGE)
    return expiry


def check_period_anchor(anchor: datetime | None) -> datetime | None:
    if anchor is not None and anchor.tzinfo is None:
        raise PeriodAnchorInvalid
    if anchor is not None and not instant_in_range(anchor):
        raise PeriodAnchorInvalid(_RANGE)
    return anchor


def check_max_uses_override(value: int | None) -> int | None:
    """A license's ``maxUses``: 0..2147483647, or null for the policy's."""
    if value is not None:
        check_int4(value, minimum=0, error=MaxUsesInvalid)
    return value


def check_max_machines_override(policy: Policy, value: int | None) -> int | None:
    """A license's ``maxMachines``, checked as Keygen checks the policy's (node-locked: exactly
    1 machine; floating: at least 1)."""
    if value is not None:
        if not policy.floating and value != 1:
            raise MaxMachinesInvalid("must be equal to 1 for non-floating policy")
        check_int4(value, minimum=1, error=MaxMachinesInvalid)
    return value


def check_max_cores_override(value: int | None) -> int | None:
    if value is not None:
        check_int4(value, minimum=1, error=MaxCoresInvalid)
    return value


# Machines -----------------------------------------------------------------------------------
def check_text(value: str | None, field: Field) -> str | None:
    """A machine's descriptive text: at most ``MAX_TEXT`` characters."""
    if value is not None and len(value) > MAX_TEXT:
        raise AttributeInvalid(f"is too long (maximum is {MAX_TEXT} characters)", field=field)
    return value


def check_fingerprint(fingerprint: str | None) -> str:
    if fingerprint is None or not fingerprint.strip():
        raise FingerprintMissing
    check_text(fingerprint, Field.FINGERPRINT)
    return fingerprint
