"""Policies: the limits a license inherits. Admin, or the owning product."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from bridge.domain.access import Principal, Role, require_admin, require_product_scope
from bridge.domain.errors import (
    DurationInvalid,
    ExpirationBasisNotAllowed,
    HeartbeatDurationInvalid,
    MaxCoresInvalid,
    MaxMachinesInvalid,
    MaxUsesInvalid,
    NameMissing,
    NotFound,
    OverageStrategyNotAllowed,
    PolicyInUse,
    ProductNotFound,
)
from bridge.domain.limits import check_int4
from bridge.domain.machines import check_overage_compatible
from bridge.domain.model import ExpirationBasis, OverageStrategy, Policy
from bridge.domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from bridge.service.common import Answer, Page, PageRequest, ignore, new_id
from bridge.service.periods import open_periods, parse_rule

_DEFAULTS: dict[str, Any] = {
    "max_uses": None,
    "max_machines": None,
    "max_cores": None,
    "floating": False,
    "strict": False,
    "overage_strategy": OverageStrategy.NO_OVERAGE.value,
    "protected": False,
    "duration": None,
    "heartbeat_duration": None,
    "expiration_basis": ExpirationBasis.FROM_CREATION.value,
    "metadata": {},
    "usage_period": None,
}


_NULLABLE = frozenset(
    {
        "max_uses",
        "max_machines",
        "max_cores",
        "duration",
        "heartbeat_duration",
        "metadata",
        "usage_period",
    }
)
MIN_HEARTBEAT_S = 60  # Keygen's minimum heartbeat duration


def _given(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes sent by the client; ``null`` on a non-nullable attribute means the default."""
    return {k: v for k, v in attrs.items() if v is not None or k in _NULLABLE}


def _load(uow: UnitOfWork, principal: Principal, policy_id: str) -> Policy:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    policy = uow.policies.get(policy_id)
    if policy is None or (principal.role is Role.PRODUCT and policy.product_id != principal.id):
        raise NotFound.resource("policy", policy_id)
    return policy


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """Keygen's policy validations, applied to the merged attribute values."""
    if values.get("name") is None or not str(values["name"]).strip():
        raise NameMissing
    if values["max_uses"] is not None:
        check_int4(
            values["max_uses"], minimum=0, pointer="/data/attributes/maxUses", error=MaxUsesInvalid
        )
    if values["max_cores"] is not None:
        check_int4(
            values["max_cores"],
            minimum=1,
            pointer="/data/attributes/maxCores",
            error=MaxCoresInvalid,
        )
    if not values["floating"]:
        # Keygen: a node-locked policy has exactly one machine.
        if values["max_machines"] not in (None, 1):
            raise MaxMachinesInvalid("must be equal to 1 for non-floating policy")
        values["max_machines"] = 1
    elif values["max_machines"] is not None:
        if values["max_machines"] < 1:
            raise MaxMachinesInvalid("must be greater than or equal to 1 for floating policy")
        check_int4(
            values["max_machines"],
            minimum=1,
            pointer="/data/attributes/maxMachines",
            error=MaxMachinesInvalid,
        )
    if values["duration"] is not None:
        check_int4(
            values["duration"],
            minimum=1,
            pointer="/data/attributes/duration",
            error=DurationInvalid,
        )
    if values["heartbeat_duration"] is not None:
        check_int4(
            values["heartbeat_duration"],
            minimum=MIN_HEARTBEAT_S,
            pointer="/data/attributes/heartbeatDuration",
            error=HeartbeatDurationInvalid,
        )
    try:
        values["overage_strategy"] = OverageStrategy(values["overage_strategy"])
    except ValueError:
        raise OverageStrategyNotAllowed from None
    check_overage_compatible(
        values["overage_strategy"],
        values["floating"],
        values["max_machines"],
        values["max_cores"],
    )
    try:
        values["expiration_basis"] = ExpirationBasis(values["expiration_basis"])
    except ValueError:
        raise ExpirationBasisNotAllowed from None
    values["metadata"] = values["metadata"] or {}
    values["usage_period"] = parse_rule(values["usage_period"])
    return values


def create_policy(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    product_id: str | None,
    attrs: Mapping[str, Any],
    answer: Answer[Policy] = ignore,
) -> Policy:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    now = clock.now()
    with uows(write=True) as uow:
        if product_id is None or uow.products.get(product_id) is None:
            raise ProductNotFound
        require_product_scope(principal, product_id)
        values = _checked({**_DEFAULTS, **_given(attrs)})
        policy = Policy(id=new_id(), product_id=product_id, created=now, updated=now, **values)
        uow.policies.add(policy)
        answer(policy)
        uow.commit()
    return policy


def get_policy(uows: UnitOfWorkFactory, principal: Principal, policy_id: str) -> Policy:
    with uows() as uow:
        return _load(uow, principal, policy_id)


def list_policies(
    uows: UnitOfWorkFactory, principal: Principal, page: PageRequest, product_id: str | None
) -> Page[Policy]:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    if principal.role is Role.PRODUCT:
        product_id = principal.id
    with uows() as uow:
        items, total = uow.policies.list(offset=page.offset, limit=page.size, product_id=product_id)
    return Page(items, total, page)


def update_policy(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    policy_id: str,
    changes: Mapping[str, Any],
    answer: Answer[Policy] = ignore,
) -> Policy:
    with uows(write=True) as uow:
        policy = _load(uow, principal, policy_id)
        current = {name: getattr(policy, name) for name in _DEFAULTS} | {"name": policy.name}
        values = _checked({**current, **_given(changes)})
        now = clock.now()
        policy = dataclasses.replace(policy, updated=now, **values)
        uow.policies.update(policy)
        if policy.usage_period is not None:
            # Licenses without a period open one now; a changed rule applies to each license
            # from the end of its open period.
            open_periods(uow.periods, uow.periods.unopened(policy.id), now)
        answer(policy)
        uow.commit()
    return policy


def delete_policy(uows: UnitOfWorkFactory, principal: Principal, policy_id: str) -> None:
    with uows(write=True) as uow:
        _load(uow, principal, policy_id)
        if uow.policies.has_licenses(policy_id):
            raise PolicyInUse
        uow.policies.delete(policy_id)
        uow.commit()
