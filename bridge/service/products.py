"""Products: admin-managed; a product token may read its own product."""

from __future__ import annotations

import dataclasses

from bridge.domain.access import Principal, Role, require_admin, require_product_scope
from bridge.domain.attributes import check_name, given
from bridge.domain.commands import UNSET, NewProduct, ProductPatch
from bridge.domain.errors import NotFound, ProductInUse
from bridge.domain.model import Product
from bridge.domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from bridge.service.auth import IssuedToken, issue_token
from bridge.service.common import Answer, Page, PageRequest, ignore, new_id


def _load(uow: UnitOfWork, principal: Principal, product_id: str) -> Product:
    product = uow.products.get(product_id)
    visible = principal.role is Role.ADMIN or (
        principal.role is Role.PRODUCT and principal.id == product_id
    )
    if product is None or not visible:
        if principal.role is Role.LICENSE:
            require_admin(principal)
        raise NotFound.resource("product", product_id)
    return product


def create_product(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    command: NewProduct,
    answer: Answer[Product] = ignore,
) -> Product:
    require_admin(principal)
    now = clock.now()
    product = Product(
        id=new_id(),
        name=check_name(command.name),
        url=command.url,
        metadata=command.metadata or {},
        created=now,
        updated=now,
    )
    with uows(write=True) as uow:
        uow.products.add(product)
        answer(product)
        uow.commit()
    return product


def get_product(uows: UnitOfWorkFactory, principal: Principal, product_id: str) -> Product:
    with uows() as uow:
        return _load(uow, principal, product_id)


def list_products(
    uows: UnitOfWorkFactory, principal: Principal, page: PageRequest
) -> Page[Product]:
    if principal.role is Role.LICENSE:
        require_admin(principal)
    only = principal.id if principal.role is Role.PRODUCT else None
    with uows() as uow:
        items, total = uow.products.list(offset=page.offset, limit=page.size, only=only)
    return Page(items, total, page)


def update_product(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    product_id: str,
    patch: ProductPatch,
    answer: Answer[Product] = ignore,
) -> Product:
    with uows(write=True) as uow:
        product = _load(uow, principal, product_id)
        require_product_scope(principal, product_id)
        product = dataclasses.replace(
            product,
            name=product.name if patch.name is UNSET else check_name(patch.name),
            url=given(patch.url, product.url),
            metadata=product.metadata if patch.metadata is UNSET else patch.metadata or {},
            updated=clock.now(),
        )
        uow.products.update(product)
        answer(product)
        uow.commit()
    return product


def delete_product(uows: UnitOfWorkFactory, principal: Principal, product_id: str) -> None:
    with uows(write=True) as uow:
        _load(uow, principal, product_id)
        require_admin(principal)
        if uow.products.has_policies(product_id):
            raise ProductInUse
        uow.tokens.delete_for(product_id)
        uow.products.delete(product_id)
        uow.commit()


def create_product_token(
    uows: UnitOfWorkFactory,
    clock: Clock,
    principal: Principal,
    product_id: str,
    answer: Answer[IssuedToken] = ignore,
) -> IssuedToken:
    with uows(write=True) as uow:
        _load(uow, principal, product_id)
        require_admin(principal)
        token = issue_token(uow, clock, Role.PRODUCT, product_id)
        answer(token)
        uow.commit()
    return token
