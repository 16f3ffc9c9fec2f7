"""Prometheus metrics: ``/metrics`` for the admin (or on a port of its own), requests counted by
route template, usage changes, deliveries with their lag, the outbox read from the store, and
several processes summed through the multiprocess directory."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bridge.bootstrap import Container, build_app
from bridge.cli.processes import _metrics_port
from bridge.domain.delivery import PermanentDeliveryError
from bridge.observability import metrics
from bridge.service.relay import Relay, RelayPolicy
from bridge.testing import FakeClock
from connectors.memory import InMemorySink
from tests.conftest import ADMIN_TOKEN, Api, make_container
from tests.served import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[s.name, tuple(sorted(s.labels.items()))] = s.value
    return found


def value(name: str, **labels: str) -> float:
    metrics.flush()  # the HTTP counts buffered since the last second
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_are_for_the_admin_only(api: Api) -> None:
    """Without a token /metrics is 401, with a license's token 403, with the admin's 200 in
    Prometheus' text format."""
    lic = api.license()
    assert api.request("GET", "/metrics", token=None).status_code == 401
    token = api.license_token(lic["id"])
    assert api.request("GET", "/metrics", token=token).status_code == 403
    answer = api.request("GET", "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "bridge_http_requests_total" in answer.text


def test_requests_are_counted_by_route_template_and_status(api: Api) -> None:
    """Requests to two licenses count under one route template (never the raw path), by
    status; a refused body (415, before routing) counts as ``unrouted``."""
    route = "/v1/licenses/{license_id}/actions/increment-usage"
    ok = value("bridge_http_requests_total", route=route, method="POST", status="200")
    refused = value("bridge_http_requests_total", route="unrouted", method="POST", status="415")
    a, b = api.license(), api.license()
    assert api.increment(a["id"]).status_code == 200
    assert api.increment(b["attributes"]["key"]).status_code == 200
    bad = api.request(
        "POST",
        f"/v1/licenses/{a['id']}/actions/increment-usage",
        headers={"Content-Type": "x/y"},
        content=b"1",
    )
    assert bad.status_code == 415
    assert value("bridge_http_requests_total", route=route, method="POST", status="200") == ok + 2
    after = value("bridge_http_requests_total", route="unrouted", method="POST", status="415")
    assert after == refused + 1
    text = api.request("GET", "/metrics").text
    assert a["id"] not in text
    assert b["attributes"]["key"] not in text


def test_activations_are_counted_by_route_template_whichever_path_serves_them(
    container: Container, api: Api
) -> None:
    """The fast path counts an activation under the same route templates as the router would:
    both URL forms, a refusal included."""
    lic = api.license(api.policy(floating=True, maxMachines=5))["id"]
    general = TestClient(build_app(container, fast_usage=False))
    forms = {"/v1/machines": "/v1/machines"}
    forms["/v1/accounts/default/machines"] = "/v1/accounts/{account}/machines"
    for client in (api.client, general):
        for n, (path, route) in enumerate(forms.items()):
            before = {
                status: value(
                    "bridge_http_requests_total", route=route, method="POST", status=status
                )
                for status in ("201", "422")
            }
            body = {
                "data": {
                    "type": "machines",
                    "attributes": {"fingerprint": f"{id(client)}-{n}"},
                    "relationships": {"license": {"data": {"type": "licenses", "id": lic}}},
                }
            }
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            assert client.post(path, json=body, headers=headers).status_code == 201
            body["data"]["relationships"]["license"]["data"]["id"] = "unknown"
            assert client.post(path, json=body, headers=headers).status_code == 422
            for status in ("201", "422"):
                now = value("bridge_http_requests_total", route=route, method="POST", status=status)
                assert now == before[status] + 1, (client, path, status)


def test_usage_changes_are_counted_accepted_and_rejected_by_code(api: Api) -> None:
    """An accepted increment and one over the limit: one each, the refusal under its code."""
    accepted = value("bridge_usage_changes_total", action="increment", result="accepted", code="")
    code = "USES_LIMIT_EXCEEDED"
    rejected = value("bridge_usage_changes_total", action="increment", result="rejected", code=code)
    lic = api.license(maxUses=1)
    assert api.increment(lic["id"]).status_code == 200
    assert api.increment(lic["id"]).status_code == 422
    labels = {"action": "increment", "code": ""}
    assert value("bridge_usage_changes_total", result="accepted", **labels) == accepted + 1
    labels["code"] = code
    assert value("bridge_usage_changes_total", result="rejected", **labels) == rejected + 1


def test_outbox_depth_and_deliveries(container: Container, api: Api, clock: FakeClock) -> None:
    """The scrape reads each sink's undelivered items and the oldest one's age from the store;
    once the relay delivers them they are counted delivered, with their lag."""
    lic = api.license()
    for _ in range(3):
        assert api.increment(lic["id"]).status_code == 200
    clock.advance(seconds=90)
    sink = InMemorySink("file")  # stands in for the configured file sink, same name
    found = samples(api.request("GET", "/metrics").text)
    assert found["bridge_outbox_items", (("sink", "file"), ("status", "pending"))] == 3
    assert found["bridge_outbox_oldest_age_seconds", (("sink", "file"),)] == 90
    assert found["bridge_store_up", ()] == 1
    delivered = value("bridge_outbox_deliveries_total", sink="file", outcome="delivered", reason="")
    lagged = value("bridge_delivery_lag_seconds_count", sink="file")
    over_a_minute = value("bridge_delivery_lag_seconds_bucket", sink="file", le="60.0")
    relay = Relay(container.uows, [sink], clock, RelayPolicy(batch_size=10))
    relay.run_once()
    after = value("bridge_outbox_deliveries_total", sink="file", outcome="delivered", reason="")
    assert after == delivered + 3
    assert value("bridge_delivery_lag_seconds_count", sink="file") == lagged + 3
    assert value("bridge_delivery_lag_seconds_bucket", sink="file", le="60.0") == over_a_minute
    found = samples(api.request("GET", "/metrics").text)
    assert found["bridge_outbox_items", (("sink", "file"), ("status", "pending"))] == 0
    assert found["bridge_outbox_oldest_age_seconds", (("sink", "file"),)] == 0


def test_failed_deliveries_are_counted_by_reason(container: Container, api: Api) -> None:
    """A batch the platform refuses for good counts as dead under its reason."""

    def refuse(_items: object) -> None:
        raise PermanentDeliveryError("400 Bad Request")

    api.increment(api.license()["id"])
    before = value("bridge_outbox_deliveries_total", sink="file", outcome="dead", reason="rejected")
    Relay(container.uows, [InMemorySink("file", refuse)], container.clock).run_once()
    after = value("bridge_outbox_deliveries_total", sink="file", outcome="dead", reason="rejected")
    assert after == before + 1


def test_checkin_records_are_counted_by_result(api: Api) -> None:
    """Each offline record of a check-in counts under its result, once."""
    from tests.test_check_in import CHECK_IN, check_in, record

    lic = api.license(api.policy(maxUses=3, **CHECK_IN))
    results = ("accepted", "duplicate", "rejected")
    before = {r: value("bridge_checkin_records_total", result=r) for r in results}
    good = record(2)
    assert check_in(api, lic["id"], [good, record(5)]).status_code == 200
    assert check_in(api, lic["id"], [good]).status_code == 200
    after = {r: value("bridge_checkin_records_total", result=r) for r in results}
    assert {r: after[r] - before[r] for r in results} == {
        "accepted": 1,
        "duplicate": 1,
        "rejected": 1,
    }


@pytest.fixture
def own_port(sqlite_url: str, clock: FakeClock) -> Iterator[tuple[Container, int]]:
    port = free_port()
    c = make_container(sqlite_url, clock, metrics={"port": port})
    yield c, port
    c.dispose()


def test_metrics_on_a_port_of_their_own(own_port: tuple[Container, int]) -> None:
    """With ``metrics.port`` they are served there without a token, and the API's /metrics
    answers 404."""
    c, port = own_port
    url = f"http://127.0.0.1:{port}/metrics"
    with _metrics_port(c), urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    assert "bridge_store_up 1.0" in text
    with TestClient(build_app(c)) as client:
        answer = client.get("/metrics", headers=Api.auth())
    assert answer.status_code == 404


_CHILD = """
import sys
from bridge.observability import metrics
metrics.usage_change("increment", None)
metrics.deliveries("lago", "delivered", "", int(sys.argv[1]))
"""
_SCRAPE = """
from bridge.observability.http import registry, renderer
print(renderer(registry(lambda: []))()[0].decode())
"""


def test_processes_sharing_a_directory_are_summed(tmp_path: Path) -> None:
    """Two processes count into the multiprocess directory; a third one's scrape sums them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in ("2", "5"):
        subprocess.run([sys.executable, "-c", _CHILD, n], env=env, check=True, timeout=60)
    text = subprocess.run(
        [sys.executable, "-c", _SCRAPE],
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    ).stdout
    found = samples(text)
    labels = (("code", ""), ("action", "increment"), ("result", "accepted"))
    assert found["bridge_usage_changes_total", tuple(sorted(labels))] == 2
    key = (("outcome", "delivered"), ("reason", ""), ("sink", "lago"))
    assert found["bridge_outbox_deliveries_total", key] == 7


def test_webhook_deliveries_are_counted_by_provider_and_outcome(
    sqlite_url: str, clock: FakeClock
) -> None:
    """A stored Lago delivery, its redelivery and a forged one: received, duplicate, refused."""
    from tests import webhook_signing as sign
    from tests.test_webhook_inbox import LAGO_KEY, SETTINGS, _lago_event

    def count(outcome: str) -> float:
        return value("bridge_webhook_deliveries_total", provider="lago", outcome=outcome)

    before = {o: count(o) for o in ("received", "duplicate", "refused")}
    c = make_container(sqlite_url, clock, **SETTINGS)
    try:
        with TestClient(build_app(c)) as client:
            body = _lago_event()
            for _ in range(2):
                headers = sign.lago_hmac(LAGO_KEY, body, "u-1")
                assert client.post("/v1/webhooks/lago", content=body, headers=headers).is_success
                clock.advance(seconds=1)
            forged = {"X-Lago-Unique-Key": "u-2", "Content-Type": "application/json"}
            assert client.post("/v1/webhooks/lago", content=body, headers=forged).status_code == 401
    finally:
        c.dispose()
    assert {o: count(o) - n for o, n in before.items()} == {
        "received": 1,
        "duplicate": 1,
        "refused": 1,
    }


def test_a_batch_of_lags_lands_in_the_buckets_observe_would_choose() -> None:
    """Lags observed a batch at a time: each in the first bucket whose bound is at least it
    (a bound itself included, a negative lag as 0), the sum of them, the count of them."""
    sink = "lag-test"
    metrics.delivery_lags(sink, [-1.0, 0.05, 0.1, 3.0, 1e6])

    def bucket(le: str) -> float:
        return value("bridge_delivery_lag_seconds_bucket", sink=sink, le=le)

    assert [bucket(le) for le in ("0.1", "2.5", "5.0", "86400.0", "+Inf")] == [3, 3, 4, 4, 5]
    assert value("bridge_delivery_lag_seconds_count", sink=sink) == 5
    assert value("bridge_delivery_lag_seconds_sum", sink=sink) == 0.05 + 0.1 + 3.0 + 1e6
