"""Webhooks in, the inbox: verified deliveries stored once, everything else refused unchanged."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bridge.bootstrap import Container, build_app
from bridge.testing import FakeClock
from tests import webhook_signing as sign
from tests.conftest import ADMIN_TOKEN, Api, error_of, make_container
from tests.fakes.lago import FakeLago
from tests.fakes.loopback import LoopbackServer
from tests.webhook_server import ServedApp

LAGO_KEY = "3f2a4b5c-hmac-token"
STRIPE_SECRET = "whsec_" + "s" * 24
OM_SECRET = "whsec_" + base64.b64encode(b"openmeter-secret-bytes!!").decode()
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

SETTINGS: dict[str, Any] = {
    "webhooks": {
        "lago": {"hmac_key": LAGO_KEY},
        "stripe": {"secrets": [STRIPE_SECRET]},
        "standard": {"openmeter": {"secret": OM_SECRET}},
    }
}


def _lago_event(kind: str = "subscription.started") -> bytes:
    return sign.body_of(
        {
            "webhook_type": kind,
            "object_type": "subscription",
            "organization_id": "org-1",
            "subscription": {"external_id": "sub-1"},
        }
    )


@pytest.fixture
def hooks(db_url: str, clock: FakeClock) -> Iterator[Container]:
    c = make_container(db_url, clock, **SETTINGS)
    yield c
    c.dispose()


@pytest.fixture
def client(hooks: Container) -> Iterator[TestClient]:
    with TestClient(build_app(hooks), raise_server_exceptions=False) as c:
        yield c


def _stored(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/v1/webhook-deliveries?page[size]=100", headers=ADMIN)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _rejected(client: TestClient) -> dict[str, dict[str, int]]:
    meta: dict[str, dict[str, int]] = client.get("/v1/webhook-deliveries", headers=ADMIN).json()[
        "meta"
    ]["rejected"]
    return meta


def test_a_verified_lago_delivery_is_stored_and_a_redelivery_answers_the_same(
    client: TestClient,
) -> None:
    """200 from the store with the delivery; the same X-Lago-Unique-Key again: the same row."""
    body = _lago_event()
    first = client.post(
        "/v1/webhooks/lago", content=body, headers=sign.lago_hmac(LAGO_KEY, body, "u-1")
    )
    again = client.post(
        "/v1/webhooks/lago", content=body, headers=sign.lago_hmac(LAGO_KEY, body, "u-1")
    )
    assert first.status_code == 200, first.text
    assert again.status_code == 200
    assert first.json()["data"]["id"] == again.json()["data"]["id"]
    attrs = first.json()["data"]["attributes"]
    assert attrs["provider"] == "lago"
    assert attrs["deliveryId"] == "u-1"
    assert attrs["eventType"] == "subscription.started"
    assert attrs["subject"] == "sub-1"
    assert len(_stored(client)) == 1


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "WEBHOOK_SIGNATURE_MISSING"),
        (
            {"X-Lago-Signature-Algorithm": "hmac", "X-Lago-Signature": "AAAA"},
            "WEBHOOK_SIGNATURE_INVALID",
        ),
        (
            {"X-Lago-Signature-Algorithm": "jwt", "X-Lago-Signature": "a.b.c"},
            "WEBHOOK_SIGNATURE_INVALID",
        ),
    ],
)
def test_unsigned_and_forged_lago_deliveries_are_401_and_change_nothing(
    client: TestClient, headers: dict[str, str], code: str
) -> None:
    """401 with the code; nothing stored; the refusal is counted."""
    response = client.post(
        "/v1/webhooks/lago",
        content=_lago_event(),
        headers={**headers, "X-Lago-Unique-Key": "u-1", "Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert error_of(response)["code"] == code
    assert _stored(client) == []
    assert _rejected(client) == {"lago": {code: 1}}


def test_a_stale_stripe_delivery_is_401_and_a_fresh_one_stored(
    client: TestClient, clock: FakeClock
) -> None:
    """A validly signed Stripe event replayed after the tolerance is refused as stale."""
    body = sign.body_of(
        {
            "id": "evt_1",
            "type": "customer.subscription.deleted",
            "data": {"object": {"object": "subscription", "id": "sub_9"}},
        }
    )
    headers = sign.stripe([STRIPE_SECRET], body, clock.now() - timedelta(seconds=301))
    response = client.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "WEBHOOK_TIMESTAMP_STALE"
    assert _stored(client) == []
    fresh = sign.stripe([STRIPE_SECRET], body, clock.now())
    ok = client.post("/v1/webhooks/stripe", content=body, headers=fresh)
    assert ok.status_code == 200
    assert ok.json()["data"]["attributes"] | {} == ok.json()["data"]["attributes"]
    assert ok.json()["data"]["attributes"]["subject"] == "sub_9"


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"type":"x"}', b'{"id":"", "type":"x"}'])
def test_a_validly_signed_but_unreadable_body_is_400(
    client: TestClient, clock: FakeClock, body: bytes
) -> None:
    """The signature holds, the body is no event: 400 WEBHOOK_PAYLOAD_INVALID, nothing stored."""
    headers = sign.stripe([STRIPE_SECRET], body, clock.now())
    response = client.post("/v1/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert error_of(response)["code"] == "WEBHOOK_PAYLOAD_INVALID"
    assert _stored(client) == []
    assert _rejected(client) == {"stripe": {"WEBHOOK_PAYLOAD_INVALID": 1}}


def test_standard_webhooks_sender_is_stored_under_its_source(
    client: TestClient, clock: FakeClock
) -> None:
    """/v1/webhooks/standard/{source}: keyed on webhook-id; an unknown source is 404."""
    body = sign.body_of({"type": "entitlements.balance.threshold", "data": {}})
    headers = sign.standard(OM_SECRET, "msg_1", body, clock.now())
    ok = client.post("/v1/webhooks/standard/openmeter", content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["data"]["attributes"]["provider"] == "standard/openmeter"
    unknown = client.post("/v1/webhooks/standard/other", content=body, headers=headers)
    assert unknown.status_code == 404


def test_an_unconfigured_provider_is_404(client: TestClient, clock: FakeClock) -> None:
    """m3ter is not configured here: its endpoint does not exist."""
    response = client.post(
        "/v1/webhooks/m3ter", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 404
    assert error_of(response)["code"] == "ROUTE_NOT_FOUND"


def test_the_delivery_list_is_admin_only(client: TestClient) -> None:
    """GET /v1/webhook-deliveries without the admin token is refused."""
    assert client.get("/v1/webhook-deliveries").status_code == 401


def test_secrets_never_reach_the_logs(
    client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused and an accepted delivery log neither the HMAC key nor the signature."""
    body = _lago_event()
    good = sign.lago_hmac(LAGO_KEY, body, "u-1")
    client.post("/v1/webhooks/lago", content=body, headers={**good, "X-Lago-Signature": "AAAA"})
    client.post("/v1/webhooks/lago", content=body, headers=good)
    out = capsys.readouterr()
    assert LAGO_KEY not in out.out + out.err
    assert good["X-Lago-Signature"] not in out.out + out.err


def test_a_redelivery_storm_is_stored_and_applied_once(hooks: Container) -> None:
    """The same termination 50 times at once over a real socket: 50 answers 200, one stored
    delivery, and, handled by two workers, one suspension in the license's history."""
    body = _lago_event("subscription.terminated")
    headers = sign.lago_hmac(LAGO_KEY, body, "storm-1")
    with (
        ServedApp(build_app(hooks)) as served,
        httpx.Client(base_url=served.url, timeout=30) as http,
    ):
        api = Api(http)  # type: ignore[arg-type]
        lic = api.license(metadata={"lago_subscription_id": "sub-1"})["id"]

        def post(_: int) -> httpx.Response:
            return http.post("/v1/webhooks/lago", content=body, headers=headers)

        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(post, range(50)))
        assert {a.status_code for a in answers} == {200}
        assert len({a.json()["data"]["id"] for a in answers}) == 1
        listed = http.get("/v1/webhook-deliveries", headers=ADMIN).json()["data"]
        assert len(listed) == 1
        workers = [hooks.webhook_worker(), hooks.webhook_worker()]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda w: w.run_once(), workers))
        with hooks.uows() as uow:
            effects = uow.webhook_licenses.effects(lic)
        assert [(e.action, e.delivery_id) for e in effects] == [("suspend", "storm-1")]
        assert api.ok("GET", f"/v1/licenses/{lic}")["data"]["attributes"]["suspended"] is True


def test_lago_jwt_with_the_key_fetched_once_from_lago(db_url: str, clock: FakeClock) -> None:
    """JWT scheme with public_key_url: the key is read from (the fake) Lago on the first
    delivery and cached; a JWT signed by another key is refused."""
    keys, other = sign.RsaKeys(), sign.RsaKeys()
    lago = FakeLago("lago-key")
    lago.webhook_public_key = keys.public_pem
    with LoopbackServer(lago) as lago_http:
        c = make_container(
            db_url,
            clock,
            sinks={"lago": {"api_url": lago_http.url, "api_key": "lago-key"}},
            webhooks={
                "lago": {
                    "public_key_url": f"{lago_http.url}/api/v1/webhooks/json_public_key",
                    "issuer": "https://lago.example",
                }
            },
        )
        try:
            with TestClient(build_app(c), raise_server_exceptions=False) as client:
                for n in range(3):
                    body = _lago_event()
                    headers = keys.lago_jwt(body, f"jwt-{n}", "https://lago.example")
                    ok = client.post("/v1/webhooks/lago", content=body, headers=headers)
                    assert ok.status_code == 200, ok.text
                forged = other.lago_jwt(_lago_event(), "jwt-x", "https://lago.example")
                refused = client.post("/v1/webhooks/lago", content=_lago_event(), headers=forged)
                assert error_of(refused)["code"] == "WEBHOOK_SIGNATURE_INVALID"
        finally:
            c.dispose()
    assert lago.key_reads == 1
