"""The Lago sink: event mapping, the batch endpoint's answers, and delivery through the relay."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.delivery import (
    OutboxItem,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.relay import Relay, RelayPolicy, outbox_status
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from connectors.lago import LagoSink, LagoSinkSettings, MappingMissing, accepts, event
from connectors.lago.mapping import timestamp
from tests.builders import outbox_item
from tests.conftest import make_container
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.loopback import LoopbackServer

KEY = "lago-test-key"
ADMIN = Principal(Role.ADMIN, "test")
WHEN = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def settings(**overrides: Any) -> LagoSinkSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "api_key": SecretStr(KEY),
        "default_metric_code": "api_calls",
        **overrides,
    }
    return LagoSinkSettings(**values)


def item(
    n: int = 1,
    *,
    delta: int = 1,
    policy: str = "pol",
    metadata: dict[str, Any] | None = None,
    license: bool = True,
    occurred_at: datetime = WHEN,
) -> OutboxItem:
    meta = {"lago_subscription_id": "sub_1"} if metadata is None else metadata
    return outbox_item(
        item_id=n,
        entry_id=str(uuid.UUID(int=n)),
        sink="lago",
        delta=delta,
        occurred_at=occurred_at,
        license_id="lic",
        policy=policy,
        metadata=meta,
        with_license=license,
    )


@pytest.fixture
def lago() -> Iterator[FakeLago]:
    """A fake Lago; every request it got must have matched the spec."""
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    fake = FakeLago(KEY)
    yield fake
    assert fake.violations == []


@pytest.fixture
def lago_http(lago: FakeLago) -> Iterator[LoopbackServer]:
    """The fake Lago over real HTTP on loopback."""
    with LoopbackServer(lago) as server:
        yield server


def sink_on(fake: FakeLago, **overrides: Any) -> LagoSink:
    return LagoSink(settings(**overrides), client=fake.client())


# -- mapping -----------------------------------------------------------------------------------


def test_event_maps_an_item() -> None:
    """One item is one Lago event keyed by its ledger entry id, with the delta as a property."""
    assert event(item(7, delta=3), settings()) == {
        "transaction_id": "00000000-0000-0000-0000-000000000007",
        "external_subscription_id": "sub_1",
        "code": "api_calls",
        "timestamp": "1767225600.123",
        "properties": {"units": 3},
    }


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "1767225600.000"),
        (datetime(2026, 1, 1, 0, 0, 0, 999999, tzinfo=UTC), "1767225600.999"),
        (
            datetime(2026, 1, 1, 1, 0, 0, 5000, tzinfo=timezone(timedelta(hours=1))),
            "1767225600.005",
        ),
        (datetime(1970, 1, 1, 0, 0, 1, 1000, tzinfo=UTC), "1.001"),
    ],
)
def test_timestamp_is_unix_seconds_with_milliseconds(when: datetime, expected: str) -> None:
    """The timestamp is a decimal string of UTC Unix seconds, floored to milliseconds."""
    assert timestamp(when) == expected


def test_timestamp_is_the_same_on_every_attempt() -> None:
    """A redelivered item gets the same timestamp (Lago's ClickHouse store dedupes on it)."""
    assert event(item(1), settings()) == event(item(1), settings())


@pytest.mark.parametrize(
    ("template", "metadata", "expected"),
    [
        ("{license.id}", {}, "lic"),
        ("{license.key}", {}, "KEY-1"),
        ("{license.metadata.lago_subscription_id}", {"lago_subscription_id": "s9"}, "s9"),
        ("acct-{license.metadata.account}-{license.key}", {"account": 42}, "acct-42-KEY-1"),
        ("{license.id}{license.key}/x", {}, "licKEY-1/x"),
    ],
)
def test_subscription_template_placeholders(
    template: str, metadata: dict[str, Any], expected: str
) -> None:
    """The template fills in the license id, key or a metadata value."""
    mapped = event(item(metadata=metadata), settings(subscription_template=template))
    assert mapped["external_subscription_id"] == expected


def test_metric_code_per_policy() -> None:
    """A policy's own metric code wins over the default."""
    config = settings(metric_codes={"gold": "gold_calls"})
    assert event(item(policy="gold"), config)["code"] == "gold_calls"
    assert event(item(policy="other"), config)["code"] == "api_calls"


@pytest.mark.parametrize(
    ("built", "config"),
    [
        (item(metadata={}), settings()),
        (item(metadata={"lago_subscription_id": ""}), settings()),
        (item(metadata={"lago_subscription_id": None}), settings()),
        (item(metadata={"lago_subscription_id": {"nested": 1}}), settings()),
        (item(license=False), settings()),
        (item(), settings(default_metric_code=None)),
    ],
    ids=["metadata-absent", "empty", "null", "not-scalar", "no-license", "no-metric-code"],
)
def test_missing_mapping_raises(built: OutboxItem, config: LagoSinkSettings) -> None:
    """An item without subscription id, metric code or license cannot be mapped."""
    with pytest.raises(MappingMissing):
        event(built, config)


def sends(it: OutboxItem, config: LagoSinkSettings) -> bool:
    return accepts(it.entry, it.license, config)


def test_skip_rules() -> None:
    """Other policies, and decrements when not forwarded, are skipped; by default decrements go
    as negative deltas."""
    assert sends(item(policy="a"), settings(policies=["a"]))
    assert not sends(item(policy="b"), settings(policies=["a"]))
    assert sends(item(policy="b"), settings())
    assert not sends(item(delta=-2), settings(forward_decrements=False))
    assert sends(item(delta=-2), settings())
    assert event(item(delta=-2), settings())["properties"] == {"units": -2}


def test_settings_are_checked() -> None:
    """Unknown placeholders, a missing key when enabled, and batch sizes out of range are
    refused; self-hosted batches up to 1000 are allowed."""
    with pytest.raises(ValidationError, match="unknown placeholder"):
        settings(subscription_template="{license.name}")
    with pytest.raises(ValidationError, match="api_key"):
        LagoSinkSettings(enabled=True)
    for size in (0, 1001):
        with pytest.raises(ValidationError):
            settings(batch_size=size)
    assert settings(batch_size=1000).batch_size == 1000
    assert LagoSinkSettings().enabled is False


# -- the sink over the fake --------------------------------------------------------------------


def test_batches_split_at_batch_size(lago: FakeLago) -> None:
    """250 items go as requests of 100, 100 and 50 events to the batch endpoint."""
    items = [item(n) for n in range(1, 251)]
    assert sink_on(lago).deliver(items) == []
    assert [len(b) for b in lago.batches] == [100, 100, 50]
    assert lago.ingested == [i.entry.id for i in items]


def test_duplicates_are_already_ingested(lago: FakeLago) -> None:
    """A 422 naming only already-stored transaction ids is success; new events in the same
    batch are resent and stored once."""
    sink = sink_on(lago)
    assert sink.deliver([item(1), item(2)]) == []
    assert sink.deliver([item(1), item(2), item(3)]) == []
    assert lago.ingested == [item(n).entry.id for n in (1, 2, 3)]
    assert [len(b) for b in lago.batches] == [2, 3, 1]


def test_partial_rejection_fails_only_the_bad_events(lago: FakeLago) -> None:
    """Lago's per-index 422: the good events are resent in a new request, the bad ones fail
    permanently with Lago's error, by outbox id."""
    items = [item(n) for n in range(1, 6)]
    lago.reject(items[1].entry.id, {"properties": ["invalid_value"]})
    lago.reject(items[3].entry.id, "expression_evaluation_failed: Variable: b not found")
    failures = sink_on(lago).deliver(items)
    assert [f.item_id for f in failures] == [2, 4]
    assert all(isinstance(f.error, PermanentDeliveryError) for f in failures)
    assert "invalid_value" in str(failures[0].error)
    assert "expression_evaluation_failed" in str(failures[1].error)
    assert lago.ingested == [items[n].entry.id for n in (0, 2, 4)]
    assert [len(b) for b in lago.batches] == [5, 3]


def test_older_lago_naming_one_duplicate_per_answer(lago: FakeLago) -> None:
    """Lago before v1.39 names only the first duplicate per request; the sink keeps resending
    the rest until every event is in."""
    lago.first_duplicate_only = True
    sink = sink_on(lago)
    sink.deliver([item(1), item(3)])
    assert sink.deliver([item(n) for n in (1, 2, 3, 4)]) == []
    assert sorted(lago.ingested) == [item(n).entry.id for n in (1, 2, 3, 4)]


def test_throttled_batch_waits_for_the_reset(lago: FakeLago) -> None:
    """429 is transient and carries X-RateLimit-Reset as the earliest retry."""
    lago.throttle(reset=17)
    with pytest.raises(TransientDeliveryError) as caught:
        sink_on(lago).deliver([item(1)])
    assert caught.value.retry_after == 17
    assert lago.ingested == []


def test_server_errors_are_transient(lago: FakeLago) -> None:
    """A 5xx answer is retried later."""
    lago.fail(status=502)
    with pytest.raises(TransientDeliveryError, match="502"):
        sink_on(lago).deliver([item(1)])


def test_a_wrong_key_is_permanent(lago: FakeLago) -> None:
    """401 dead-letters the batch with Lago's answer."""
    sink = LagoSink(settings(api_key=SecretStr("wrong")), client=lago.client())
    with pytest.raises(PermanentDeliveryError, match="401"):
        sink.deliver([item(1)])


def test_a_timeout_is_transient(lago: FakeLago) -> None:
    """A request with no answer is retried later, chained to the timeout."""
    lago.time_out()
    with pytest.raises(TransientDeliveryError, match="timed out"):
        sink_on(lago).deliver([item(1)])


def test_a_batch_too_large_for_the_server_is_permanent(lago: FakeLago) -> None:
    """A 422 that names no event (too_many_events) fails the whole batch with Lago's error."""
    lago.max_batch = 2
    with pytest.raises(PermanentDeliveryError, match="too_many_events"):
        sink_on(lago).deliver([item(n) for n in range(1, 4)])


def test_an_outage_after_a_chunk_fails_only_the_rest(lago: FakeLago) -> None:
    """When a later request fails, the chunks already accepted count as delivered and the rest
    fail item by item with the same error."""
    calls = 0

    def throttle_the_second(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 2:
            lago.throttle(reset=5)
        return lago(request)

    client = httpx.Client(transport=httpx.MockTransport(throttle_the_second))
    failures = LagoSink(settings(batch_size=2), client=client).deliver(
        [item(n) for n in range(1, 6)]
    )
    assert [f.item_id for f in failures] == [3, 4, 5]
    for failure in failures:
        assert isinstance(failure.error, TransientDeliveryError)
        assert failure.error.retry_after == 5
    assert lago.ingested == [item(n).entry.id for n in (1, 2)]


def test_unmapped_and_skipped_items(lago: FakeLago) -> None:
    """A missing mapping fails that item transiently (MAPPING_MISSING); skipped items are not
    sent and not failed; the others are delivered."""
    items = [item(1), item(2, metadata={}), item(3, policy="free"), item(4, delta=-1)]
    failures = sink_on(lago, policies=["pol"], forward_decrements=False).deliver(items)
    assert [f.item_id for f in failures] == [2]
    assert isinstance(failures[0].error, TransientDeliveryError)
    assert str(failures[0].error).startswith("MAPPING_MISSING: ")
    assert lago.ingested == [items[0].entry.id]


def test_nothing_to_send_makes_no_request(lago: FakeLago) -> None:
    """A batch of skipped items is delivered without calling Lago."""
    assert sink_on(lago, policies=[]).deliver([item(1), item(2)]) == []
    assert lago.batches == []


# -- through the relay -------------------------------------------------------------------------


@pytest.fixture
def store(sqlite_url: str, clock: FakeClock) -> Iterator[Container]:
    container = make_container(sqlite_url, clock)
    yield container
    container.dispose()


def billed_changes(store: Container, count: int) -> list[str]:
    """``count`` increments on a license linked to Lago subscription sub_1; their entry ids."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    attrs = {"metadata": {"lago_subscription_id": "sub_1"}}
    lic = licenses.create_license(store.uows, store.clock, ADMIN, NewLicense(policy.id, **attrs))
    usage = UsageService(store.usage_uows, store.clock, ["lago"])
    return [
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)).entry_id
        for _ in range(count)
    ]


def drain(r: Relay) -> None:
    while any(result.handled for result in r.run_once().values()):
        pass


def counts(store: Container) -> dict[tuple[str, str], int]:
    return {(r.sink, r.status.value): r.count for r in outbox_status(store.uows)}


def test_relay_delivers_each_change_once_through_outages(
    store: Container, clock: FakeClock, lago: FakeLago, lago_http: LoopbackServer
) -> None:
    """Over real HTTP to the fake on loopback, through a 5xx outage, a lost answer (the fake
    stores the batch and never answers) and a relay that died after sending, Lago stores each
    ledger entry id exactly once and every outbox item ends delivered."""
    ids = billed_changes(store, 6)
    sink = LagoSink(settings(batch_size=3, api_url=lago_http.url, timeout_s=0.5))
    relay = Relay(
        store.uows, [sink], store.clock, RelayPolicy(batch_size=4, lease_s=60), random.Random(0)
    )

    lago.fail(times=10)  # outage: nothing gets in
    drain(relay)
    assert lago.ingested == []
    assert counts(store) == {("lago", "pending"): 6}

    lago.faults = []
    lago.time_out(after_storing=True)  # Lago stores the first chunk but the answer is lost
    clock.advance(seconds=301)
    drain(relay)
    # Retried items are claimed in the order they fall due (their backoff is jittered), so
    # which five got in first varies; that five did, once each, does not.
    assert len(lago.ingested) == len(set(lago.ingested)) == 5
    assert set(lago.ingested) <= set(ids)
    assert counts(store) == {("lago", "pending"): 4, ("lago", "delivered"): 2}
    clock.advance(seconds=301)
    drain(relay)  # the lost chunk is resent: 422 value_already_exist counts as delivered
    assert counts(store) == {("lago", "delivered"): 6}

    more = billed_changes(store, 2)
    with store.uows(write=True) as uow:  # a relay claims and sends, then dies before recording
        claimed = uow.outbox.claim("lago", clock.now(), clock.now() + timedelta(seconds=60), 10)
        uow.commit()
    assert sink.deliver(claimed) == []
    drain(relay)
    assert counts(store)[("lago", "inflight")] == 2, "claimed again before the lease ended"
    clock.advance(seconds=61)
    drain(relay)

    assert sorted(lago.ingested) == sorted(ids + more)
    assert len(lago.ingested) == len(set(lago.ingested)) == 8
    sent = [e["transaction_id"] for batch in lago.batches for e in batch]
    assert len(sent) > 8, "some events were redelivered"
    assert {e["external_subscription_id"] for b in lago.batches for e in b} == {"sub_1"}
    assert counts(store) == {("lago", "delivered"): 8}
    sink.close()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"external_subscription_id": None}, "external_subscription_id"),
        ({"timestamp": 1767225600.5}, "timestamp"),
        ({"properties": {"units": {"nested": 1}}}, "units"),
        ({"external_customer_id": "c"}, "not in the spec"),
    ],
)
def test_the_fake_holds_requests_to_the_spec(
    lago: FakeLago, change: dict[str, Any], problem: str
) -> None:
    """The fake answers 400 and records a violation for a body the spec does not allow."""
    body = {**event(item(1), settings()), **change}
    response = lago.client().post(
        "https://lago.test/api/v1/events/batch",
        json={"events": [{k: v for k, v in body.items() if v is not None}]},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 400
    assert problem in lago.violations[0]
    lago.violations.clear()
