"""Usage periods and reconciliation findings through the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridge.bootstrap import Container
from bridge.domain.reconcile import Window
from bridge.service.periods import close_due_periods
from bridge.testing import FakeClock
from tests.conftest import Api, error_of

MONTHLY = {"interval": "month", "count": 1, "anchor": "CALENDAR", "timezone": "Europe/Paris"}


@pytest.fixture
def api(client: TestClient, clock: FakeClock) -> Api:
    clock.set(datetime(2026, 1, 10, 12, tzinfo=UTC))
    return Api(client)


def attrs(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["attributes"]
    return result


def test_policy_period_applies_to_its_licenses(api: Api, clock: FakeClock) -> None:
    policy = api.policy(usagePeriod=MONTHLY, maxUses=5)
    shown = api.ok("GET", f"/v1/policies/{policy}")["data"]
    assert attrs(shown)["usagePeriod"] == MONTHLY
    lic = api.license(policy)
    a = attrs(lic)
    assert a["usagePeriod"] == MONTHLY
    assert a["periodStart"] == "2026-01-10T12:00:00Z"  # opened at creation
    assert a["periodEnd"] == "2026-01-31T23:00:00Z"  # 1 February 00:00 in Paris
    assert api.increment(lic["id"], 5).status_code == 200
    assert error_of(api.increment(lic["id"], 1))["code"] == "USES_LIMIT_EXCEEDED"

    clock.set(datetime(2026, 2, 1, tzinfo=UTC))  # past the boundary; nothing written yet
    a = attrs(api.ok("GET", f"/v1/licenses/{lic['id']}")["data"])
    assert (a["uses"], a["periodStart"], a["periodEnd"]) == (
        0,
        "2026-01-31T23:00:00Z",
        "2026-02-28T23:00:00Z",
    )
    after = api.increment(lic["id"], 2)
    assert after.status_code == 200
    assert attrs(after.json()["data"])["uses"] == 2


def test_license_overrides_the_rule_and_anchor(api: Api) -> None:
    policy = api.policy(usagePeriod=MONTHLY)
    rule = {"interval": "week", "count": 2, "anchor": "ANNIVERSARY"}
    lic = api.license(policy, usagePeriod=rule, periodAnchor="2026-01-01T08:00:00+00:00")
    a = attrs(lic)
    assert a["usagePeriod"] == {**rule, "timezone": "UTC"}
    assert (a["periodStart"], a["periodEnd"]) == ("2026-01-10T12:00:00Z", "2026-01-15T08:00:00Z")


def test_a_policy_gaining_a_rule_opens_periods_for_its_licenses(api: Api) -> None:
    policy = api.policy()
    lic = api.license(policy)
    assert attrs(lic)["periodStart"] is None
    body = {"data": {"type": "policies", "attributes": {"usagePeriod": {"interval": "day"}}}}
    api.ok("PATCH", f"/v1/policies/{policy}", json=body)
    a = attrs(api.ok("GET", f"/v1/licenses/{lic['id']}")["data"])
    assert (a["periodStart"], a["periodEnd"]) == ("2026-01-10T12:00:00Z", "2026-01-11T00:00:00Z")


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        ("monthly", "must be an object"),
        ({"interval": "fortnight"}, "interval must be one of"),
        ({"interval": "month", "count": 0}, "count must be"),
        ({"interval": "month", "timezone": "Mars/Base"}, "IANA"),
    ],
)
def test_bad_rules_are_422_with_a_pointer(api: Api, rule: Any, detail: str) -> None:
    product = api.product()
    body = {
        "data": {
            "type": "policies",
            "attributes": {"name": "P", "usagePeriod": rule},
            "relationships": {"product": {"data": {"type": "products", "id": product}}},
        }
    }
    response = api.request("POST", "/v1/policies", json=body)
    if isinstance(rule, str):
        assert response.status_code == 400  # not an object: the document's type check
        return
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "USAGE_PERIOD_INVALID"
    assert detail in error["detail"]
    assert error["source"] == {"pointer": "/data/attributes/usagePeriod"}


def test_a_naive_period_anchor_is_refused(api: Api) -> None:
    policy = api.policy()
    body = {
        "data": {
            "type": "licenses",
            "attributes": {"periodAnchor": "2026-01-01T08:00:00"},
            "relationships": {"policy": {"data": {"type": "policies", "id": policy}}},
        }
    }
    error = error_of(api.request("POST", "/v1/licenses", json=body))
    assert (error["code"], error["source"]) == (
        "PERIOD_ANCHOR_INVALID",
        {"pointer": "/data/attributes/periodAnchor"},
    )


def test_reconciliations_are_listed_for_admins_only(
    api: Api, container: Container, clock: FakeClock
) -> None:
    product = api.product()
    policy = api.policy(product, usagePeriod={"interval": "month"})
    lic = api.license(policy)
    api.increment(lic["id"], 3)
    clock.set(datetime(2026, 2, 3, tzinfo=UTC))
    close_due_periods(container.uows, clock)
    # The default file sink cannot be read back: the ledger is compared with its deliveries,
    # and the relay has not run, so the change is still undelivered.
    container.reconciler().run(Window.parse("2026-01"))

    listed = api.ok("GET", "/v1/reconciliations?period=2026-01&sink=file")
    assert listed["meta"]["pages"]["count"] == 1
    found = attrs(listed["data"][0])
    assert (found["licenseId"], found["status"], found["ledgerTotal"]) == (lic["id"], "mismatch", 3)
    assert (found["undeliveredCount"], found["platformTotal"]) == (1, None)
    assert api.ok("GET", "/v1/reconciliations?status=ok")["data"] == []
    assert api.ok("GET", "/v1/reconciliations?from=2026-02-01&to=2026-03-01")["data"] == []

    bad = api.request("GET", "/v1/reconciliations?period=2026-13")
    assert (bad.status_code, error_of(bad)["code"]) == (400, "RECONCILE_WINDOW_INVALID")
    token = api.product_token(product)
    denied = api.request("GET", "/v1/reconciliations", token=token)
    assert denied.status_code == 403
