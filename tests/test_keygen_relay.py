"""The Keygen relay end to end, against a fake Keygen that signs with a real Ed25519 key: its
usage reaches the sinks exactly once whatever its webhook delivery does, the mirror resolves
the sinks' templates, and Keygen's counters are reset once per closed period."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bridge.bootstrap import Container, build_app
from bridge.domain.delivery import LicenseFacts
from bridge.domain.errors import KeygenRefused, KeygenUnavailable
from bridge.store.tables import keygen_resets, periods
from bridge.testing import FakeClock
from connectors._template import render
from connectors.keygen import KeygenClient
from connectors.memory import InMemorySink
from tests.conftest import ADMIN_TOKEN, error_of, make_container
from tests.fakes.keygen import API, FakeKeygen

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MONTHLY = '{"interval":"month","count":1,"anchor":"CALENDAR","timezone":"UTC"}'


def settings_for(fake: FakeKeygen, **keygen: Any) -> dict[str, Any]:
    return {
        "keygen": {
            "account_id": fake.account_id,
            "public_key": fake.public_hex,
            "token": fake.token,
            "api_url": API,
            "requests_per_s": 50,
            "usage_period": MONTHLY,
            **keygen,
        },
        "sinks": {"file": {"enabled": False}},
    }


class Relay:
    """A bridge wired to the fake Keygen: its app, its worker, its sink."""

    def __init__(
        self, c: Container, fake: FakeKeygen, client: TestClient, clock: FakeClock
    ) -> None:
        self.c, self.fake, self.client, self.clock = c, fake, client, clock
        self.sink = InMemorySink()
        c.sinks = (self.sink,)
        c.keygen_client = KeygenClient(c.settings.keygen, client=fake.client())

    def post(self, event: Any, **sign: Any) -> httpx.Response:
        body = self.fake.body(event)
        return self.client.post(
            "/v1/webhooks/keygen", content=body, headers=self.fake.sign(body, **sign)
        )

    def deliver(self, *events: Any) -> None:
        for event in events:
            response = self.post(event)
            assert response.status_code == 200, response.text
        self.work()

    def work(self) -> None:
        worker = self.c.webhook_worker()
        while worker.run_once():
            pass

    def forwarded(self) -> int:
        relay = self.c.relay()
        while sum(r.handled for r in relay.run_once().values()):
            pass
        return sum(item.entry.delta for item in self.sink.received.values())

    def actors(self) -> list[str]:
        return [item.entry.actor for item in self.sink.received.values()]


@pytest.fixture
def fake(clock: FakeClock) -> FakeKeygen:
    clock.set(datetime(2026, 11, 10, 12, 0, tzinfo=UTC))
    return FakeKeygen(now=clock.now)


def _relay(url: str, clock: FakeClock, fake: FakeKeygen, **keygen: Any) -> Iterator[Relay]:
    c = make_container(url, clock, **settings_for(fake, **keygen))
    with TestClient(
        build_app(c), base_url="https://bridge.example.com", raise_server_exceptions=False
    ) as client:
        yield Relay(c, fake, client, clock)
    c.dispose()


@pytest.fixture
def relay(db_url: str, clock: FakeClock, fake: FakeKeygen) -> Iterator[Relay]:
    yield from _relay(db_url, clock, fake)


@pytest.fixture
def lite(sqlite_url: str, clock: FakeClock, fake: FakeKeygen) -> Iterator[Relay]:
    yield from _relay(sqlite_url, clock, fake)


def test_usage_is_mirrored_and_forwarded_once(relay: Relay) -> None:
    """Created, +3, +2 (each delivered twice): the sink gets 5, the license is mirrored with
    its key and policy, and the sinks' templates resolve both metadata spellings."""
    fake = relay.fake
    lic, created = fake.create(metadata={"lago_subscription_id": "sub-42"}, max_uses=100)
    events = [created, fake.increment(lic.id, 3), fake.increment(lic.id, 2)]
    relay.deliver(*events, *events)
    assert relay.forwarded() == 5
    assert set(relay.actors()) == {"keygen"}
    with relay.c.uows() as uow:
        local = uow.licenses.get(lic.id)
        mirror = uow.keygen.mirror(lic.id)
    assert local is not None
    assert mirror is not None
    assert (local.key, local.policy_id, local.uses) == (lic.key, lic.policy_id, 5)
    assert local.terms.max_uses is None  # Keygen's limit is the one that counts
    assert mirror.max_uses == 100
    facts = LicenseFacts(local.id, local.key, local.policy_id, local.metadata)
    assert render("{license.metadata.lago_subscription_id}", facts, lic.id) == "sub-42"
    assert render("{license.metadata.lagoSubscriptionId}", facts, lic.id) == "sub-42"


def test_a_manual_retry_in_keygen_is_stored_once(lite: Relay) -> None:
    """Keygen's manual retry is a new event id with the same idempotency token: one delivery."""
    fake = lite.fake
    lic, created = fake.create()
    event = fake.increment(lic.id, 4)
    first = lite.post(event)
    second = lite.post(fake.retry(event))
    assert first.status_code == second.status_code == 200
    assert first.json()["data"]["id"] == second.json()["data"]["id"]
    lite.deliver(created)
    lite.work()
    assert lite.forwarded() == 4


def test_duplicated_reordered_and_lost_deliveries_are_repaired_by_the_check(
    relay: Relay,
) -> None:
    """Out of order, duplicated, some never delivered: the check forwards the difference,
    marked as a correction, and the total is Keygen's real net usage."""
    fake = relay.fake
    lic, created = fake.create()
    changes = [fake.increment(lic.id, n) for n in (1, 2, 3, 4)]
    changes.append(fake.decrement(lic.id, 2))
    changes.append(fake.increment(lic.id, 5))  # uses: 13
    arrived = [created, changes[3], changes[1], changes[3], changes[0]]  # 2, 4 and 5 lost
    relay.deliver(*arrived)
    assert relay.forwarded() == 10  # the newest snapshot seen says 10
    summary = relay.c.keygen_relay().check(lic.id)
    assert (summary.checked, summary.corrections, summary.corrected) == (1, 1, 3)
    assert relay.forwarded() == 13
    assert relay.actors().count("keygen:correction") == 1
    relay.deliver(changes[5], changes[4], changes[2])  # the lost ones turn up at last
    assert relay.forwarded() == 13


def test_a_reset_made_in_keygen_ends_a_count(lite: Relay) -> None:
    """+5, a reset in Keygen's dashboard, +2, the reset delivered last: 7, never negative."""
    fake = lite.fake
    lic, created = fake.create()
    five, reset, two = fake.increment(lic.id, 5), fake.reset(lic.id), fake.increment(lic.id, 2)
    lite.deliver(created, five, two, reset)
    assert lite.forwarded() == 7


def test_each_period_close_resets_keygen_once_and_its_echo_is_not_usage(relay: Relay) -> None:
    """At the period's end the bridge checks (a lost +4 lands in the closing period), closes,
    resets Keygen once, records it with the period, and takes the echoed reset as its own."""
    fake, c = relay.fake, relay.c
    lic, created = fake.create()
    relay.deliver(created, fake.increment(lic.id, 6))
    fake.increment(lic.id, 4)  # never delivered
    relay.clock.set(datetime(2026, 12, 1, 0, 0, 5, tzinfo=UTC))
    jobs = c.jobs()
    jobs.close_periods()
    with c.uows() as uow:
        conn = uow._connection()
        closed = (
            conn.execute(select(periods).where(periods.c.license_id == lic.id)).mappings().one()
        )
    assert closed["uses_at_close"] == 10
    assert closed["closed_by"] == "keygen"
    jobs.keygen()
    jobs.keygen()  # a second run resets nothing more
    assert fake.resets == 1
    assert fake.licenses[lic.id].uses == 0
    with c.uows() as uow:
        conn = uow._connection()
        reset = conn.execute(select(keygen_resets)).mappings().one()
    assert reset["status"] == "done"
    assert reset["uses_before"] == 10
    assert reset["reset_at"] == fake.licenses[lic.id].updated
    relay.deliver(fake.events[-1])  # Keygen's license.usage.reset, echoed
    delivery = relay.client.get("/v1/webhook-deliveries", headers=ADMIN).json()["data"][0]
    assert "the bridge's own" in delivery["attributes"]["effects"][0]
    relay.deliver(fake.increment(lic.id, 3))
    assert relay.forwarded() == 13
    with c.uows() as uow:
        assert uow.licenses.get(lic.id).uses == 3  # type: ignore[union-attr]


def test_a_reset_waits_out_409_and_429(lite: Relay) -> None:
    """Keygen's 409 (a racing increment) and 429 with Retry-After leave the reset pending,
    retried no sooner than Keygen asked; then it is made, once."""
    fake, c = lite.fake, lite.c
    lic, created = fake.create()
    lite.deliver(created, fake.increment(lic.id, 2))
    clock = lite.clock
    clock.set(datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    c.jobs().close_periods()
    fake.faults += [(409, None)]
    relay = c.keygen_relay()
    assert relay.reset_due().resets_pending == 1
    fake.faults += [(429, 120.0)]
    clock.advance(seconds=700)
    assert relay.reset_due().resets_pending == 1
    with c.uows() as uow:
        (pending,) = uow.keygen.resets_of(lic.id)
    assert pending.next_attempt_at >= clock.now() + timedelta(seconds=119)
    assert "429" in (pending.last_error or "")
    clock.advance(seconds=121)
    assert relay.reset_due().resets_done == 1
    assert fake.resets == 1


def test_the_status_route_and_commands(lite: Relay, tmp_path: Any) -> None:
    """GET /v1/keygen/status (admin) counts what the relay did."""
    fake = lite.fake
    lic, created = fake.create()
    lite.deliver(created, fake.increment(lic.id, 1))
    fake.increment(lic.id, 1)
    lite.c.keygen_relay().check(lic.id)
    response = lite.client.get("/v1/keygen/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    attributes = response.json()["data"]["attributes"]
    assert attributes["mirrored"] == 1
    assert (attributes["corrections"], attributes["corrected"]) == (1, 1)
    assert attributes["lastDelivery"] is not None
    assert attributes["lastCheck"] is not None
    assert lite.client.get("/v1/keygen/status").status_code == 401


def test_the_status_route_without_keygen(container: Container) -> None:
    """Without a [keygen] account the route answers 404 KEYGEN_NOT_CONFIGURED."""
    with TestClient(build_app(container), raise_server_exceptions=False) as client:
        response = client.get("/v1/keygen/status", headers=ADMIN)
        assert response.status_code == 404
        assert error_of(response)["code"] == "KEYGEN_NOT_CONFIGURED"
        assert client.post("/v1/webhooks/keygen", content=b"{}").status_code == 404


def test_the_client_maps_keygen_errors(fake: FakeKeygen) -> None:
    """429 with Retry-After and 409 are KeygenUnavailable (the wait kept); a bad token is
    KeygenRefused; a license Keygen does not have reads as None."""
    from connectors.keygen import KeygenSettings

    settings = KeygenSettings(account_id=fake.account_id, token=fake.token, api_url=API)
    client = KeygenClient(settings, client=fake.client())
    assert client.get_license("nope") is None
    fake.faults += [(429, 30.0), (409, None)]
    with pytest.raises(KeygenUnavailable) as limited:
        client.get_license("nope")
    assert limited.value.retry_after == 30.0
    with pytest.raises(KeygenUnavailable, match="conflicting update"):
        client.get_license("nope")
    bad = KeygenClient(settings.model_copy(update={"token": None}), client=fake.client())
    with pytest.raises(KeygenRefused) as refused:
        bad.get_license("nope")
    assert refused.value.upstream == 401
    lic, _ = fake.create(uses=3)
    document = client.reset_usage(lic.id)
    assert document["data"]["attributes"]["uses"] == 0
    assert json.loads(fake.events[-1].payload)["data"]["attributes"]["uses"] == 0


deliveries = st.lists(
    st.tuples(st.sampled_from(["inc", "dec", "reset"]), st.integers(1, 5)),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=deliveries, rng=st.randoms(use_true_random=False))
def test_through_the_store_any_delivery_then_the_check_gives_the_true_total(
    lite: Relay, steps: list[tuple[str, int]], rng: Any
) -> None:
    """The property again, through the store's timeline and the worker: a new license per
    example, its events lost, duplicated and reordered by the fake (a foreign reset, and the
    change before it, delivered at least once), then one check; what was forwarded for it is
    Keygen's net usage."""
    fake = lite.fake
    lic, created = fake.create()
    lite.deliver(created)
    net, made, keep = 0, [], set()
    for op, n in steps:
        if op == "inc":
            made.append(fake.increment(lic.id, n))
            net += n
        elif op == "dec" and fake.licenses[lic.id].uses >= n:
            made.append(fake.decrement(lic.id, n))
            net -= n
        elif op == "reset":
            if made:  # the count a foreign reset ends must be known (see the README)
                keep.add(made[-1].id)
            made.append(fake.reset(lic.id))
            keep.add(made[-1].id)
    lite.deliver(*fake.scramble(made, rng, keep=keep))
    lite.c.keygen_relay().check(lic.id)
    with lite.c.uows() as uow:
        mirror = uow.keygen.mirror(lic.id)
    assert mirror is not None
    assert mirror.forwarded == net


def test_the_scheduler_runs_the_keygen_job(lite: Relay) -> None:
    """With [keygen] configured the scheduler has the keygen job (resets, then the check)."""
    from bridge.jobs.scheduler import build_scheduler

    scheduler = build_scheduler(lite.c.jobs(), lite.c.settings, blocking=False)
    assert scheduler.get_job("keygen") is not None
    summary = lite.c.jobs().keygen()
    assert summary is not None
    assert (summary.checked, summary.resets_done) == (0, 0)
