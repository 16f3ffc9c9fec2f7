"""Webhooks in: store a verified delivery (the answer comes from the store, never from the
handler), list and show stored deliveries, and replay one."""

from __future__ import annotations

from bridge.domain.errors import NotFound
from bridge.domain.ports import Clock, UnitOfWorkFactory
from bridge.domain.webhooks import DeliveryStatus, NewDelivery, WebhookDelivery, WebhookEffect
from bridge.observability import metrics
from bridge.service.common import Answer, ignore


def receive(
    uows: UnitOfWorkFactory,
    clock: Clock,
    delivery: NewDelivery,
    answer: Answer[WebhookDelivery] = ignore,
) -> WebhookDelivery:
    """Store ``delivery`` once per (provider, delivery id); a redelivery gets the stored one.
    Handling happens later, in the webhook worker."""
    now = clock.now()
    with uows(write=True) as uow:
        stored = uow.webhooks.record(delivery, now)
        answer(stored)
        uow.commit()
    # Stored by this call if stored at this call's time (a redelivery finds an earlier one).
    metrics.webhook_delivery(
        delivery.provider, "received" if stored.received_at == now else "duplicate"
    )
    return stored


def list_deliveries(
    uows: UnitOfWorkFactory,
    provider: str | None = None,
    status: DeliveryStatus | None = None,
    *,
    offset: int = 0,
    limit: int = 100,
) -> list[WebhookDelivery]:
    with uows() as uow:
        return uow.webhooks.search(provider, status, offset=offset, limit=limit)


def get_delivery(uows: UnitOfWorkFactory, id: int) -> WebhookDelivery:
    with uows() as uow:
        found = uow.webhooks.get(id)
    if found is None:
        raise NotFound.resource("webhook delivery", str(id))
    return found


def replay(uows: UnitOfWorkFactory, clock: Clock, id: int) -> WebhookDelivery:
    """Make a stored delivery due for handling again now (an unmatched one whose license has
    appeared since, or a parked one after the cause is mended)."""
    with uows(write=True) as uow:
        if not uow.webhooks.requeue(id, clock.now()):
            raise NotFound.resource("webhook delivery", str(id))
        stored = uow.webhooks.get(id)
        assert stored is not None
        uow.commit()
    return stored


def reindex(uows: UnitOfWorkFactory, batch: int = 1000) -> int:
    """Rebuild the webhook subject index from every license, a batch per transaction (after
    a template changed, or when webhooks are first configured); returns the licenses read."""
    offset = 0
    while True:
        with uows(write=True) as uow:
            licenses, _ = uow.licenses.list(
                offset=offset, limit=batch, product_id=None, policy_id=None
            )
            uow.webhook_licenses.reindex(licenses)
            uow.commit()
        offset += len(licenses)
        if len(licenses) < batch:
            return offset


def license_effects(uows: UnitOfWorkFactory, ref: str) -> list[WebhookEffect]:
    """What webhooks did to a license (by id or key), oldest first."""
    with uows() as uow:
        license = uow.licenses.find(ref)
        if license is None:
            raise NotFound.resource("license", ref)
        return uow.webhook_licenses.effects(license.id)
