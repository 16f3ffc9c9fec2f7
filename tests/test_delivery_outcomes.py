"""Delivery outcomes against the fakes: a platform's "wait" pauses its sink, every outcome
belongs to the items it is about, and the outbox keeps each item's reason."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bridge.bootstrap import Container
from bridge.domain.commands import LicensePatch, NewLicense, NewPolicy, NewProduct
from bridge.domain.delivery import (
    OutboxItem,
    PermanentDeliveryError,
    Reason,
    TransientDeliveryError,
)
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.common import PageRequest
from bridge.service.relay import Relay, RelayPolicy, dead_letters, outbox_status
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from connectors.lago import LagoSink
from connectors.m3ter import M3terSink
from tests.builders import outbox_item
from tests.conftest import make_container
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.loopback import LoopbackServer
from tests.fakes.m3ter import API, INGEST, FakeM3ter
from tests.test_lago import ADMIN, KEY, WHEN
from tests.test_lago import settings as lago_settings
from tests.test_m3ter import WHEN as M3TER_WHEN
from tests.test_m3ter import settings as m3ter_settings

PAUSE_S = 30


class Counting:
    """In front of a fake: counts the delivery requests it receives, and answers the first
    ones with ``answers`` instead of the fake (a 503 with Retry-After, say)."""

    def __init__(self, fake: Any, path: str) -> None:
        self.fake = fake
        self.path = path
        self.requests = 0
        self.answers: list[httpx.Response] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(self.path):
            with self._lock:
                self.requests += 1
                if self.answers:
                    return self.answers.pop(0)
        response: httpx.Response = self.fake(request)
        return response


@pytest.fixture
def store(sqlite_url: str, clock: FakeClock) -> Iterator[Container]:
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    container = make_container(sqlite_url, clock)
    yield container
    container.dispose()


def license_with(store: Container, metadata: dict[str, Any]) -> str:
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    return licenses.create_license(
        store.uows, store.clock, ADMIN, NewLicense(policy.id, metadata=metadata)
    ).id


def use(store: Container, license_id: str, sink: str, count: int) -> list[str]:
    usage = UsageService(store.usage_uows, store.clock, [sink])
    change = UsageChange(license_id, UsageKind.INCREMENT, 1)
    return [usage.apply(ADMIN, change).entry_id for _ in range(count)]


def drain(relay: Relay) -> None:
    while any(r.handled for r in relay.run_once().values()):
        pass


def reasons(store: Container) -> dict[tuple[str, str], dict[Reason, int]]:
    return {(r.sink, r.status.value): r.reasons for r in outbox_status(store.uows)}


def counts(store: Container) -> dict[tuple[str, str], int]:
    return {(r.sink, r.status.value): r.count for r in outbox_status(store.uows)}


# -- the pause -------------------------------------------------------------------------------


def wait_out_the_pause(relay: Relay, clock: FakeClock, counting: Counting) -> None:
    """The relay keeps running through the pause; the platform must hear nothing from it."""
    asked = counting.requests
    for _ in range(PAUSE_S - 1):
        clock.advance(seconds=1)
        relay.run_once()
    assert counting.requests == asked, "sent to a sink the platform asked to wait"
    clock.advance(seconds=1.5)


@pytest.mark.parametrize("answer", ["429 X-RateLimit-Reset", "503 Retry-After"])
def test_lago_asking_to_wait_pauses_the_sink(
    store: Container, clock: FakeClock, answer: str
) -> None:
    """After Lago's 429 (X-RateLimit-Reset) or a 503 with Retry-After, over real HTTP, the
    relay sends nothing more to Lago, whatever else is due, until that time has passed; then
    everything is delivered once."""
    lago = FakeLago(KEY)
    counting = Counting(lago, "/events/batch")
    if answer.startswith("429"):
        lago.throttle(reset=PAUSE_S)
    else:
        headers = {"Retry-After": str(PAUSE_S)}
        counting.answers.append(httpx.Response(503, headers=headers, json={"status": 503}))
    ids = use(store, license_with(store, {"lago_subscription_id": "sub_1"}), "lago", 6)
    with LoopbackServer(counting) as server:
        sink = LagoSink(lago_settings(api_url=server.url))
        relay = Relay(store.uows, [sink], clock, RelayPolicy(batch_size=2), random.Random(0))
        relay.run_once()
        assert counting.requests == 1
        assert reasons(store)[("lago", "pending")] == {
            Reason.RATE_LIMITED if answer.startswith("429") else Reason.SERVER_ERROR: 2
        }
        wait_out_the_pause(relay, clock, counting)
        drain(relay)
        sink.close()
    assert sorted(lago.ingested) == sorted(ids)
    assert counts(store) == {("lago", "delivered"): 6}


def test_m3ter_asking_to_wait_pauses_the_sink(store: Container, clock: FakeClock) -> None:
    """The same for m3ter: a 429 with Retry-After pauses its sink, over real HTTP."""
    m3ter = FakeM3ter(clock)
    m3ter.outages.append(429)
    m3ter.retry_after = str(PAUSE_S)
    counting = Counting(m3ter, "/measurements")
    ids = use(store, license_with(store, {"m3ter_account_code": "acme"}), "m3ter", 6)
    with (
        LoopbackServer(counting, as_url=API) as api,
        LoopbackServer(counting, as_url=INGEST) as ingest,
    ):
        config = m3ter_settings(api_url=api.url, ingest_url=ingest.url, default_meter_code="seats")
        sink = M3terSink(config, clock=clock)
        relay = Relay(store.uows, [sink], clock, RelayPolicy(batch_size=2), random.Random(0))
        relay.run_once()
        assert counting.requests == 1
        wait_out_the_pause(relay, clock, counting)
        drain(relay)
        sink.close()
    assert set(m3ter.accepted) == set(ids)
    assert counts(store) == {("m3ter", "delivered"): 6}


# -- outcomes per item, through the relay ------------------------------------------------------


@pytest.mark.parametrize("error", ["permanent", "transient"])
def test_items_waiting_for_a_mapping_keep_their_reason(
    store: Container, clock: FakeClock, error: str
) -> None:
    """A Lago batch with items whose license has no subscription yet: an error on the sent
    part is the sent items' outcome only. The unmapped items stay mapping_missing (not dead,
    not server_error) and go out once the mapping is added."""
    lago = FakeLago(KEY)
    counting = Counting(lago, "/events/batch")
    status = 400 if error == "permanent" else 503
    counting.answers.append(httpx.Response(status, json={"status": status, "error": "x"}))
    mapped = use(store, license_with(store, {"lago_subscription_id": "sub_1"}), "lago", 2)
    unmapped_license = license_with(store, {})
    unmapped = use(store, unmapped_license, "lago", 2)
    sink = LagoSink(lago_settings(), client=httpx.Client(transport=httpx.MockTransport(counting)))
    relay = Relay(store.uows, [sink], clock, RelayPolicy(batch_size=10), random.Random(0))
    relay.run_once()

    sent_reason = Reason.REJECTED if error == "permanent" else Reason.SERVER_ERROR
    sent_status = "dead" if error == "permanent" else "pending"
    found = reasons(store)
    assert found[("lago", sent_status)].get(sent_reason) == 2
    assert found[("lago", "pending")][Reason.MAPPING_MISSING] == 2
    if error == "permanent":
        letters = dead_letters(store.uows, "lago", PageRequest(1, 10))
        assert [(d.item.entry.id, d.reason) for d in letters] == [
            (mapped[0], Reason.REJECTED),
            (mapped[1], Reason.REJECTED),
        ]

    licenses.update_license(
        store.uows,
        clock,
        ADMIN,
        unmapped_license,
        LicensePatch(metadata={"lago_subscription_id": "s2"}),
    )
    clock.advance(seconds=600)
    drain(relay)
    assert set(unmapped) <= set(lago.ingested)
    assert (set(mapped) <= set(lago.ingested)) == (error == "transient")


# -- outcomes per item, at the sinks: each way a batch is split ----------------------------------


def sink_item(sink: str, n: int, **meta: Any) -> OutboxItem:
    """Item ``n`` for ``sink``, its license mapped unless ``meta`` says otherwise."""
    mapped = {"lago_subscription_id": "sub_1"} if sink == "lago" else {"m3ter_account_code": "acme"}
    return outbox_item(
        item_id=n,
        entry_id=str(uuid.UUID(int=n)),
        sink=sink,
        delta=1,
        occurred_at=WHEN if sink == "lago" else M3TER_WHEN,
        license_id="lic",
        policy="pol" if sink == "lago" else "pol-1",
        metadata=meta or mapped,
    )


def lago_item(n: int, **meta: Any) -> OutboxItem:
    return sink_item("lago", n, **meta)


def m3ter_item(n: int, **meta: Any) -> OutboxItem:
    return sink_item("m3ter", n, **meta)


def reason_of(failures: Any) -> dict[int, Reason]:
    return {f.item_id: f.error.reason for f in failures}


def test_lago_chunks_a_permanent_error_fails_its_own_chunk_only() -> None:
    """Split by batch_size: a 400 on the first request dead-letters its chunk; the other
    chunks are still sent and delivered."""
    lago = FakeLago(KEY)
    counting = Counting(lago, "/events/batch")
    counting.answers.append(httpx.Response(400, json={"status": 400, "error": "bad"}))
    client = httpx.Client(transport=httpx.MockTransport(counting))
    items = [lago_item(n) for n in range(1, 6)]
    failures = LagoSink(lago_settings(batch_size=2), client=client).deliver(items)
    assert reason_of(failures) == {1: Reason.REJECTED, 2: Reason.REJECTED}
    assert lago.ingested == [i.entry.id for i in items[2:]]


def test_lago_chunks_a_transient_error_stops_the_batch() -> None:
    """Split by batch_size: a 503 on the second request fails it and the unsent third chunk
    with it (retry later); the first chunk is delivered; unmapped items keep their reason."""
    lago = FakeLago(KEY)
    calls = 0

    def second_fails(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            return httpx.Response(503, json={"status": 503})
        return lago(request)

    client = httpx.Client(transport=httpx.MockTransport(second_fails))
    items = [lago_item(n) for n in range(1, 6)] + [lago_item(6, other="x")]
    failures = LagoSink(lago_settings(batch_size=2), client=client).deliver(items)
    assert reason_of(failures) == {
        6: Reason.MAPPING_MISSING,
        3: Reason.SERVER_ERROR,
        4: Reason.SERVER_ERROR,
        5: Reason.SERVER_ERROR,
    }
    assert calls == 2


def test_lago_a_rejected_event_keeps_its_reason_when_the_resend_fails() -> None:
    """Split by Lago's 422: the rejected event is dead (rejected) even when the resend of the
    others fails transiently; those others are retried."""
    lago = FakeLago(KEY)
    items = [lago_item(n) for n in range(1, 4)]
    lago.reject(items[1].entry.id, {"timestamp": ["invalid_format"]})
    calls = 0

    def resend_fails(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            return httpx.Response(429, headers={"X-RateLimit-Reset": "9"}, json={"status": 429})
        return lago(request)

    client = httpx.Client(transport=httpx.MockTransport(resend_fails))
    failures = LagoSink(lago_settings(), client=client).deliver(items)
    assert reason_of(failures) == {
        2: Reason.REJECTED,
        1: Reason.RATE_LIMITED,
        3: Reason.RATE_LIMITED,
    }
    assert isinstance(failures[0].error, PermanentDeliveryError)
    assert lago.ingested == []


def test_m3ter_each_split_keeps_its_own_outcome(clock: FakeClock) -> None:
    """m3ter splits a batch three ways: not mapped (waits), too large alone (dead, too_large),
    and requests by count (halving on a 403 is in test_m3ter). A 400 on one request fails it;
    a 502 on a later one fails it and the requests not sent yet; the rest is delivered."""
    m3ter = FakeM3ter(clock)
    calls = 0

    def answers(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if request.url.path.endswith("/measurements"):
            calls += 1
            if calls == 1:
                return httpx.Response(400, json={"message": "bad measurement"})
            if calls == 3:
                return httpx.Response(502, text="bad gateway")
        response: httpx.Response = m3ter(request)
        return response

    client = httpx.Client(transport=httpx.MockTransport(answers))
    sink = M3terSink(m3ter_settings(max_measurements=2, max_bytes=2048), client, clock=clock)
    items = [
        m3ter_item(1),
        m3ter_item(2),
        m3ter_item(3, other="no account"),
        m3ter_item(4, m3ter_account_code="x" * 5000),
        m3ter_item(5),
        m3ter_item(6),
        m3ter_item(7),
        m3ter_item(8),
        m3ter_item(9),
    ]
    failures = sink.deliver(items)
    assert reason_of(failures) == {
        3: Reason.MAPPING_MISSING,
        4: Reason.TOO_LARGE,
        1: Reason.REJECTED,  # first request: 400
        2: Reason.REJECTED,
        7: Reason.SERVER_ERROR,  # third request: 502, and the fourth not sent
        8: Reason.SERVER_ERROR,
        9: Reason.SERVER_ERROR,
    }
    assert set(m3ter.accepted) == {items[4].entry.id, items[5].entry.id}
    assert all(
        isinstance(f.error, TransientDeliveryError) for f in failures if f.item_id in (7, 8, 9)
    )
