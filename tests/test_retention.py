"""Retention: delivered outbox items and handled webhook deliveries past their window are
purged in small transactions; nothing undelivered, nothing inside its window, and no license
history goes (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.delivery import PermanentDeliveryError
from bridge.domain.model import UsageKind
from bridge.domain.webhooks import DeliveryStatus, NewDelivery, WebhookEffect
from bridge.service import licenses, policies, products
from bridge.service.relay import Relay, RelayPolicy, outbox_status
from bridge.service.retention import purge_outbox, purge_webhooks
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from connectors.memory import InMemorySink
from tests.conftest import make_container

ADMIN = Principal(Role.ADMIN, "test")
SINKS = ("a", "b", "c")


@pytest.fixture
def store(db_url: str, clock: FakeClock) -> Iterator[Container]:
    container = make_container(db_url, clock)
    yield container
    container.dispose()


def counts(store: Container) -> dict[tuple[str, str], int]:
    return {(r.sink, r.status.value): r.count for r in outbox_status(store.uows)}


def test_only_delivered_items_past_their_window_are_purged(
    store: Container, clock: FakeClock
) -> None:
    """Old changes: sink a delivered them, sink b dead-lettered one and still owes the others,
    sink c delivered them but keeps 60 days. 40 days later, with newer deliveries: only a's
    old delivered items go, a range of three ids at a time, and each sink's watermark is
    recorded before."""
    product = products.create_product(store.uows, clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, clock, ADMIN, NewPolicy(product.id, name="p"))
    lic = licenses.create_license(store.uows, clock, ADMIN, NewLicense(policy.id))
    usage = UsageService(store.usage_uows, clock, SINKS)

    def change() -> None:
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1))

    def refuse_first(items: object) -> None:
        raise PermanentDeliveryError("400")

    for _ in range(5):
        change()
    policy_one = RelayPolicy(batch_size=1)
    Relay(store.uows, [InMemorySink("a"), InMemorySink("c")], clock).run_once()
    Relay(store.uows, [InMemorySink("b", refuse_first)], clock, policy_one).run_once()
    clock.advance(days=40)
    for _ in range(4):
        change()
    Relay(store.uows, [InMemorySink("a"), InMemorySink("c")], clock).run_once()
    before = counts(store)
    assert before == {
        ("a", "delivered"): 9,
        ("b", "dead"): 1,
        ("b", "pending"): 8,
        ("c", "delivered"): 9,
    }
    window = {"a": timedelta(days=35), "b": timedelta(days=35), "c": timedelta(days=60)}

    assert purge_outbox(store.uows, clock, window, batch=3) == 5

    assert counts(store) == {**before, ("a", "delivered"): 4}
    with store.uows() as uow:
        marks = uow.outbox.purged_before()
    assert marks == {sink: clock.now() - w for sink, w in window.items()}
    assert purge_outbox(store.uows, clock, window, batch=3) == 0  # nothing more, nothing else
    assert counts(store) == {**before, ("a", "delivered"): 4}


def test_a_purge_of_an_empty_outbox_is_a_no_op(store: Container, clock: FakeClock) -> None:
    """No items: nothing deleted, no error."""
    assert purge_outbox(store.uows, clock, {"a": timedelta(days=1)}) == 0
    assert purge_outbox(store.uows, clock, {}) == 0


def test_only_webhooks_handled_for_good_and_old_are_purged(
    store: Container, clock: FakeClock
) -> None:
    """Of old deliveries, the applied and ignored ones go (their effects stay); unmatched,
    failed and waiting ones stay, and so do recent applied ones."""
    statuses = [
        DeliveryStatus.APPLIED,
        DeliveryStatus.IGNORED,
        DeliveryStatus.UNMATCHED,
        DeliveryStatus.FAILED,
        DeliveryStatus.RECEIVED,
    ]

    def record(n: int, status: DeliveryStatus) -> int:
        with store.uows(write=True) as uow:
            stored = uow.webhooks.record(NewDelivery("lago", f"d{n}", "event", "{}"), clock.now())
            if status is not DeliveryStatus.RECEIVED:
                uow.webhooks.finish(stored.id, status, now=clock.now())
            uow.webhook_licenses.record_effect(
                WebhookEffect("lic", stored.id, "lago", f"d{n}", "suspend", None, clock.now())
            )
            uow.commit()
        return stored.id

    old = {record(n, status): status for n, status in enumerate(statuses)}
    clock.advance(days=31)
    recent = record(99, DeliveryStatus.APPLIED)

    assert purge_webhooks(store.uows, clock, timedelta(days=30), batch=1) == 2

    with store.uows() as uow:
        kept = {d.id for d in uow.webhooks.search(None, None, offset=0, limit=100)}
        effects = uow.webhook_licenses.effects("lic")
    gone = {i for i, s in old.items() if s in (DeliveryStatus.APPLIED, DeliveryStatus.IGNORED)}
    assert kept == (set(old) - gone) | {recent}
    assert len(effects) == 6
