"""The m3ter connector: measurement mapping, request splitting, OAuth2 tokens, the sink over a
fake m3ter, and delivery through the real relay."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
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
from connectors.m3ter import M3terAuth, M3terSink, M3terSinkSettings, MappingMissing
from connectors.m3ter.auth import TokenRequestFailed
from connectors.m3ter.mapping import accepts, body_size, encode, measurement, split
from tests.builders import outbox_item
from tests.conftest import make_container
from tests.fakes.loopback import LoopbackServer
from tests.fakes.m3ter import API, CLIENT_ID, CLIENT_SECRET, INGEST, ORG, FakeM3ter, problems

ADMIN = Principal(Role.ADMIN, "test")
WHEN = datetime(2025, 12, 31, 23, 59, 58, 123456, tzinfo=UTC)
MEASUREMENTS_URL = f"{INGEST}/organizations/{ORG}/measurements"
Handler = Callable[[httpx.Request], httpx.Response]


def settings(**overrides: Any) -> M3terSinkSettings:
    base: dict[str, Any] = {
        "enabled": True,
        "org_id": ORG,
        "api_url": API,
        "ingest_url": INGEST,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "meter_codes": {"pol-1": "api_calls"},
    }
    return M3terSinkSettings.model_validate({**base, **overrides})


def item(
    n: int = 1,
    delta: int = 1,
    policy: str = "pol-1",
    metadata: dict[str, Any] | None = None,
    *,
    gone: bool = False,
) -> OutboxItem:
    meta = {"m3ter_account_code": "acme"} if metadata is None else metadata
    return outbox_item(
        item_id=n,
        entry_id=str(uuid.UUID(int=n)),
        sink="m3ter",
        delta=delta,
        occurred_at=WHEN,
        license_id="lic-1",
        policy=policy,
        metadata=meta,
        with_license=not gone,
    )


@pytest.fixture
def fake(clock: FakeClock) -> FakeM3ter:
    return FakeM3ter(clock)


def make_sink(
    fake: FakeM3ter, clock: FakeClock, handler: Handler | None = None, **overrides: Any
) -> M3terSink:
    client = httpx.Client(transport=httpx.MockTransport(handler or fake))
    return M3terSink(settings(**overrides), client=client, clock=clock)


def make_auth(fake: FakeM3ter, clock: FakeClock, handler: Handler | None = None) -> M3terAuth:
    return M3terAuth(
        token_url=f"{API}/oauth/token",
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        client=httpx.Client(transport=httpx.MockTransport(handler or fake)),
        clock=clock,
    )


def submit(auth: M3terAuth, n: int = 1) -> httpx.Response:
    body = encode([measurement(item(n), settings())])
    client = auth._client
    return client.post(MEASUREMENTS_URL, content=body, auth=auth)


# --- mapping -------------------------------------------------------------------------------


def test_measurement_has_m3ter_fields() -> None:
    """uid is the ledger entry id, meter by policy, account from metadata, ts in UTC with ms."""
    m = measurement(item(7, delta=3), settings())
    assert m == {
        "uid": str(uuid.UUID(int=7)),
        "meter": "api_calls",
        "account": "acme",
        "ts": "2025-12-31T23:59:58.123Z",
        "measure": {"units": 3},
    }
    assert problems(m) == []


def test_measurement_options() -> None:
    """Default meter code, measure field and a template of id, key and metadata are honoured."""
    s = settings(
        default_meter_code="usage",
        measure_field="calls",
        account_template="{license.metadata.tenant}-{license.key}/{license.id}",
    )
    m = measurement(item(policy="other", metadata={"tenant": 42}), s)
    assert (m["meter"], m["account"], m["measure"]) == ("usage", "42-KEY-1/lic-1", {"calls": 1})


@pytest.mark.parametrize(
    ("it", "overrides"),
    [
        (item(metadata={}), {}),
        (item(metadata={"m3ter_account_code": ""}), {}),
        (item(metadata={"m3ter_account_code": {"nested": 1}}), {}),
        (item(policy="unmapped"), {}),
        (item(gone=True), {"default_meter_code": "usage"}),
    ],
)
def test_missing_mapping_raises(it: OutboxItem, overrides: dict[str, Any]) -> None:
    """No account code, no meter code, or no license: MappingMissing."""
    with pytest.raises(MappingMissing):
        measurement(it, settings(**overrides))


def wanted(it: OutboxItem, config: M3terSinkSettings) -> bool:
    return accepts(it.entry, it.license, config)


def test_policy_filter_and_decrements() -> None:
    """Items outside ``policies`` and, if so configured, decrements are not sent."""
    only = settings(policies=["pol-2"])
    assert not wanted(item(policy="pol-1"), only)
    assert wanted(item(policy="pol-2"), only)
    assert wanted(item(gone=True), only)  # its policy is unknown: it waits for its mapping
    with pytest.raises(MappingMissing):
        measurement(item(gone=True), only)
    assert wanted(item(delta=-2), settings())
    assert measurement(item(delta=-2), settings())["measure"] == {"units": -2}
    assert not wanted(item(delta=-2), settings(forward_decrements=False))


def test_settings_are_checked() -> None:
    """Unknown template placeholders, missing credentials and limits over m3ter's are refused."""
    with pytest.raises(ValidationError, match="unknown placeholder"):
        settings(account_template="{license.name}")
    with pytest.raises(ValidationError, match="client_secret"):
        settings(client_secret="")
    with pytest.raises(ValidationError):
        settings(max_measurements=1001)
    with pytest.raises(ValidationError):
        settings(max_bytes=512_000)
    assert M3terSinkSettings().enabled is False  # disabled needs nothing


# --- split ---------------------------------------------------------------------------------


def test_split_by_count() -> None:
    """2,500 measurements make requests of 1,000, 1,000 and 500, in order."""
    ms = [measurement(item(n), settings()) for n in range(2500)]
    chunks = split(ms, 1000, 10**9)
    assert [len(c) for c in chunks] == [1000, 1000, 500]
    assert [m for c in chunks for m in c] == ms


def test_split_by_bytes() -> None:
    """Every request body fits the byte cap, and no request could have taken one more."""
    ms = [
        measurement(item(n, metadata={"m3ter_account_code": "a" * (n % 50 + 1)}), settings())
        for n in range(300)
    ]
    chunks = split(ms, 1000, 2048)
    assert [m for c in chunks for m in c] == ms
    assert all(len(encode(c)) <= 2048 for c in chunks)
    for chunk, following in itertools.pairwise(chunks):
        assert len(encode([*chunk, following[0]])) > 2048
    assert all(body_size(c) == len(encode(c)) for c in chunks)


def test_split_isolates_an_oversized_measurement() -> None:
    """A measurement larger than the cap on its own travels alone."""
    small = measurement(item(1), settings())
    big = measurement(item(2, metadata={"m3ter_account_code": "x" * 5000}), settings())
    assert split([small, big, small], 1000, 2048) == [[small], [big], [small]]


# --- auth ----------------------------------------------------------------------------------


def test_token_request_uses_basic_auth(fake: FakeM3ter, clock: FakeClock) -> None:
    """The token call sends Basic base64(id:secret) and client_credentials to {api}/oauth/token."""
    seen: list[httpx.Request] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return fake(request)

    assert submit(make_auth(fake, clock, spy)).status_code == 200
    token_call = seen[0]
    assert str(token_call.url) == f"{API}/oauth/token"
    expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
    assert token_call.headers["authorization"] == f"Basic {expected}"
    assert json.loads(token_call.content) == {"grant_type": "client_credentials"}
    assert seen[1].headers["authorization"] == "Bearer jwt-1"


def test_token_is_cached_and_refreshed_before_expiry(fake: FakeM3ter, clock: FakeClock) -> None:
    """One token serves until 300 s before expires_in (18,000 s), then a new one is taken."""
    auth = make_auth(fake, clock)
    for n in range(3):
        assert submit(auth, n).status_code == 200
    assert fake.token_calls == 1
    clock.advance(seconds=18_000 - 301)
    assert submit(auth).status_code == 200
    assert fake.token_calls == 1
    clock.advance(seconds=2)
    assert submit(auth).status_code == 200
    assert fake.token_calls == 2


def test_a_401_refreshes_once_and_replays(fake: FakeM3ter, clock: FakeClock) -> None:
    """A revoked token is replaced once and the request replayed; a second 401 is returned."""
    auth = make_auth(fake, clock)
    submit(auth)
    fake.expire_tokens()
    assert submit(auth).status_code == 200
    assert fake.token_calls == 2

    def always_401(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        return httpx.Response(401) if request.url.path.endswith("measurements") else response

    stubborn = make_auth(fake, clock, always_401)
    assert submit(stubborn).status_code == 401
    assert stubborn.token_requests == 2


def test_bad_credentials_fail_the_token_request(fake: FakeM3ter, clock: FakeClock) -> None:
    """A refused token request raises TokenRequestFailed carrying m3ter's answer."""
    auth = M3terAuth(
        token_url=f"{API}/oauth/token",
        client_id=CLIENT_ID,
        client_secret=SecretStr("wrong"),
        client=httpx.Client(transport=httpx.MockTransport(fake)),
        clock=clock,
    )
    with pytest.raises(TokenRequestFailed) as caught:
        submit(auth)
    assert caught.value.response.status_code == 401


def test_concurrent_requests_share_one_refresh(fake: FakeM3ter, clock: FakeClock) -> None:
    """Eight threads needing a token at once cause one token call (no refresh storm)."""
    threads_n = 8
    entered = threading.Condition()
    waiting = 0
    release = threading.Event()

    def slow_token(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            assert release.wait(5), "never released"
        return fake(request)

    class CountingAuth(M3terAuth):
        def token(self, *, stale: str | None = None) -> str:
            nonlocal waiting
            with entered:
                waiting += 1
                entered.notify_all()
            return super().token(stale=stale)

    auth = CountingAuth(
        token_url=f"{API}/oauth/token",
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        client=httpx.Client(transport=httpx.MockTransport(slow_token)),
        clock=clock,
    )
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda n=n: statuses.append(submit(auth, n).status_code))
        for n in range(threads_n)
    ]
    for t in threads:
        t.start()
    with entered:
        assert entered.wait_for(lambda: waiting == threads_n, timeout=5)
    release.set()
    for t in threads:
        t.join(5)
    assert statuses == [200] * threads_n
    assert fake.token_calls == 1


# --- sink over the fake --------------------------------------------------------------------


def test_sink_delivers_and_splits_on_size(fake: FakeM3ter, clock: FakeClock) -> None:
    """Forty items under a 2,048-byte cap go in several requests and all arrive."""
    items = [item(n) for n in range(40)]
    assert make_sink(fake, clock, max_bytes=2048).deliver(items) == []
    assert len(fake.requests) > 1
    assert sum(fake.requests) == 40
    assert set(fake.accepted) == {i.entry.id for i in items}


def test_over_size_403_halves_the_request(fake: FakeM3ter, clock: FakeClock) -> None:
    """When m3ter's byte limit is lower than the setting, its 403 halves the request until
    every measurement is accepted."""
    fake.max_bytes = 1500
    items = [item(n) for n in range(20)]
    assert make_sink(fake, clock, max_bytes=100_000).deliver(items) == []
    assert set(fake.accepted) == {i.entry.id for i in items}
    assert max(fake.requests) < 20


def test_a_403_on_one_measurement_is_permanent(fake: FakeM3ter, clock: FakeClock) -> None:
    """A 403 that halving cannot cure dead-letters the batch after a few requests, no storm."""
    fake.max_bytes = 50
    attempts = 0

    def count(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += request.url.path.endswith("measurements")
        return fake(request)

    with pytest.raises(PermanentDeliveryError, match="403"):
        make_sink(fake, clock, count).deliver([item(n) for n in range(64)])
    assert attempts == 7  # 64, 32, 16, 8, 4, 2, 1
    assert fake.accepted == {}


def test_duplicates_are_counted_once(fake: FakeM3ter, clock: FakeClock) -> None:
    """Delivering the same items again sends the same uids, which m3ter ingests once."""
    sink = make_sink(fake, clock)
    items = [item(n) for n in range(5)]
    sink.deliver(items)
    sink.deliver(items)
    assert fake.submitted == 10
    assert len(fake.accepted) == 5


@pytest.mark.parametrize("outage", [429, 500, 503, "timeout"])
def test_outages_are_transient(fake: FakeM3ter, clock: FakeClock, outage: int | str) -> None:
    """429, 5xx and timeouts fail the batch transiently, with m3ter's Retry-After."""
    fake.outages.append(outage)
    fake.retry_after = "2"
    with pytest.raises(TransientDeliveryError) as caught:
        make_sink(fake, clock).deliver([item()])
    if outage != "timeout":
        assert caught.value.retry_after == 2
    assert fake.accepted == {}


def test_other_4xx_is_permanent(fake: FakeM3ter, clock: FakeClock) -> None:
    """A 400 (here a future ts, which m3ter rejects) dead-letters the batch with the reason."""
    clock.set(datetime(2025, 1, 1, tzinfo=UTC))  # the entries are "in the future"
    with pytest.raises(PermanentDeliveryError, match="future"):
        make_sink(fake, clock).deliver([item()])


def test_token_endpoint_errors_are_classified(fake: FakeM3ter, clock: FakeClock) -> None:
    """Bad credentials are permanent; a token endpoint outage is transient."""
    with pytest.raises(PermanentDeliveryError, match="401"):
        make_sink(fake, clock, client_secret="wrong").deliver([item()])

    def token_down(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(503)
        return fake(request)

    with pytest.raises(TransientDeliveryError, match="503"):
        make_sink(fake, clock, token_down).deliver([item()])


def test_unmapped_items_wait_and_skipped_items_count_as_delivered(
    fake: FakeM3ter, clock: FakeClock
) -> None:
    """A license without an account code fails alone (transient, MAPPING_MISSING); a
    decrement that is not forwarded is delivered without being sent."""
    sink = make_sink(fake, clock, forward_decrements=False)
    failures = sink.deliver([item(1), item(2, metadata={}), item(3, delta=-1)])
    assert [f.item_id for f in failures] == [2]
    assert isinstance(failures[0].error, TransientDeliveryError)
    assert str(failures[0].error).startswith("MAPPING_MISSING:")
    assert list(fake.accepted) == [str(uuid.UUID(int=1))]


def test_a_measurement_too_large_alone_is_dead_lettered(fake: FakeM3ter, clock: FakeClock) -> None:
    """A measurement over the byte cap on its own fails permanently; the others are sent."""
    huge = item(2, metadata={"m3ter_account_code": "x" * 5000})
    failures = make_sink(fake, clock, max_bytes=2048).deliver([item(1), huge])
    assert [f.item_id for f in failures] == [2]
    assert isinstance(failures[0].error, PermanentDeliveryError)
    assert str(failures[0].error).startswith("MEASUREMENT_TOO_LARGE")
    assert list(fake.accepted) == [str(uuid.UUID(int=1))]


def test_a_failure_after_accepted_requests_fails_only_the_rest(
    fake: FakeM3ter, clock: FakeClock
) -> None:
    """If the second request fails, the first one's items are delivered and the rest retried."""
    calls = 0

    def second_fails(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if request.url.path.endswith("measurements"):
            calls += 1
            if calls == 2:
                return httpx.Response(502, text="bad gateway")
        return fake(request)

    items = [item(n) for n in range(6)]
    failures = make_sink(fake, clock, second_fails, max_measurements=2).deliver(items)
    assert [f.item_id for f in failures] == [2, 3, 4, 5]
    assert all(isinstance(f.error, TransientDeliveryError) for f in failures)
    assert set(fake.accepted) == {items[0].entry.id, items[1].entry.id}


# --- end to end through the relay ---------------------------------------------------------


@pytest.fixture
def store(sqlite_url: str, clock: FakeClock) -> Iterator[Container]:
    container = make_container(sqlite_url, clock)
    yield container
    container.dispose()


def counts(store: Container) -> dict[tuple[str, str], int]:
    return {(r.sink, r.status.value): r.count for r in outbox_status(store.uows)}


@pytest.fixture
def m3ter_http(fake: FakeM3ter) -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    """The fake m3ter over real HTTP on loopback: its token host and its ingest host."""
    with LoopbackServer(fake, as_url=API) as api, LoopbackServer(fake, as_url=INGEST) as ingest:
        yield api, ingest


def test_relay_delivers_each_uid_once_through_outage_and_redelivery(
    store: Container,
    clock: FakeClock,
    fake: FakeM3ter,
    m3ter_http: tuple[LoopbackServer, LoopbackServer],
) -> None:
    """Over real HTTP to the fake on loopback (its token and ingest hosts), usage on a license
    with an m3ter account code reaches m3ter once per ledger entry, after a 503 and a relay
    crash that makes it send a batch twice."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    lic = licenses.create_license(
        store.uows,
        store.clock,
        ADMIN,
        NewLicense(policy.id, metadata={"m3ter_account_code": "acme"}),
    )
    usage = UsageService(store.usage_uows, store.clock, ["m3ter"])
    ids = [
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 2)).entry_id for _ in range(6)
    ]
    api, ingest = m3ter_http
    config = settings(
        api_url=api.url, ingest_url=ingest.url, meter_codes={policy.id: "seats"}, max_measurements=2
    )
    sink = M3terSink(config, clock=clock)
    relay = Relay(store.uows, [sink], store.clock, RelayPolicy(batch_size=4, lease_s=60))

    def drain() -> None:
        while any(r.handled for r in relay.run_once().values()):
            pass

    fake.outages.extend([503] * 10)  # m3ter is down
    drain()
    assert fake.accepted == {}
    assert counts(store) == {("m3ter", "pending"): 6}
    fake.outages.clear()
    clock.advance(seconds=400)  # past the backoff cap

    with store.uows(write=True) as uow:  # a relay claims a batch, delivers it, then dies
        claimed = uow.outbox.claim("m3ter", clock.now(), clock.now() + timedelta(seconds=60), 4)
        uow.commit()
    assert sink.deliver(claimed) == []
    drain()
    assert counts(store) == {("m3ter", "delivered"): 2, ("m3ter", "inflight"): 4}
    clock.advance(seconds=61)  # the dead relay's lease ends: the batch is sent again
    drain()

    assert set(fake.accepted) == set(ids)
    assert fake.submitted == len(ids) + 4  # the crashed batch arrived twice, counted once
    assert {m["account"] for m in fake.accepted.values()} == {"acme"}
    assert {m["meter"] for m in fake.accepted.values()} == {"seats"}
    assert all(m["measure"] == {"units": 2} for m in fake.accepted.values())
    assert counts(store) == {("m3ter", "delivered"): 6}
    sink.close()
