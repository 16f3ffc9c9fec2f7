"""Policies: the limits a license inherits. Admin, or the owning product."""

from __future__ import annotations

from bridge.domain.access import Principal, Role, require_admin, require_product_scope
from bridge.domain.attributes import blank_policy, policy_with
from bridge.domain.commands import NewPolicy, PolicyPatch
from bridge.domain.errors import NotFound, PolicyInUse, ProductNotFound
from bridge.domain.model import Policy
from bridge.domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from bridge.service.common import Answer, Page, PageRequest, ignore, new_id
from bridge.service.periods import open_periods


def _load(uow: UnitOfWork, principal: Principal, policy_id: str) -> Policy:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    policy = uow.policies.get(policy_id)
    if policy is None or (principal.role is Role.PRODUCT and policy.product_id != principal.id):
        raise NotFound.resource("policy", policy_id)
    return policy


def create_policy(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    command: NewPolicy,
    answer: Answer[Policy] = ignore,
) -> Policy:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    now = clock.now()
    product_id = command.product_id
    with uows(write=True) as uow:
        if product_id is None or uow.products.get(product_id) is None:
            raise ProductNotFound
        require_product_scope(principal, product_id)
        policy = policy_with(blank_policy(new_id(), product_id, now), command, now)
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
    patch: PolicyPatch,
    answer: Answer[Policy] = ignore,
) -> Policy:
    with uows(write=True) as uow:
        policy = _load(uow, principal, policy_id)
        now = clock.now()
        policy = policy_with(policy, patch, now)
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
        if uow.licenses.any_of_policy(policy_id):
            raise PolicyInUse
        uow.policies.delete(policy_id)
        uow.commit()
