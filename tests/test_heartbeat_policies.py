"""Keygen's policy heartbeat settings (requireHeartbeat, heartbeatBasis, heartbeatCullStrategy,
heartbeatResurrectionStrategy) and expirationStrategy, as Keygen's machine model, heartbeat
controller, validation service and license authentication apply them."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.bootstrap import Container
from bridge.testing import FakeClock
from tests.conftest import Api, error_of
from tests.test_api_machines import activate
from tests.test_validation_scopes import validate_key


def license_of(api: Api, **policy: Any) -> tuple[str, str]:
    lic = api.license(api.policy(floating=True, strict=True, **policy))
    return lic["id"], lic["attributes"]["key"]


def test_policy_settings_defaults_and_checks(api: Api) -> None:
    attrs = api.ok("GET", f"/v1/policies/{api.policy()}")["data"]["attributes"]
    assert (
        attrs["requireHeartbeat"],
        attrs["heartbeatCullStrategy"],
        attrs["heartbeatResurrectionStrategy"],
        attrs["heartbeatBasis"],
        attrs["expirationStrategy"],
    ) == (False, "DEACTIVATE_DEAD", "NO_REVIVE", "FROM_FIRST_PING", "RESTRICT_ACCESS")
    product = api.product()
    for attributes, code, detail in [
        (
            {"expirationStrategy": "NEVER"},
            "EXPIRATION_STRATEGY_NOT_ALLOWED",
            "unsupported expiration strategy",
        ),
        (
            {"heartbeatCullStrategy": "X"},
            "HEARTBEAT_CULL_STRATEGY_NOT_ALLOWED",
            "unsupported heartbeat cull strategy",
        ),
        (
            {"heartbeatResurrectionStrategy": "3_MINUTE_REVIVE"},
            "HEARTBEAT_RESURRECTION_STRATEGY_NOT_ALLOWED",
            "unsupported heartbeat resurrection strategy",
        ),
        (
            {"heartbeatBasis": "FROM_NOW"},
            "HEARTBEAT_BASIS_NOT_ALLOWED",
            "unsupported heartbeat basis",
        ),
        (
            {"heartbeatResurrectionStrategy": "ALWAYS_REVIVE"},
            "HEARTBEAT_CULL_STRATEGY_NOT_ALLOWED",
            "incompatible heartbeat cull strategy (must be KEEP_DEAD when resurrection strategy "
            "is ALWAYS_REVIVE)",
        ),
    ]:
        body = {
            "data": {
                "type": "policies",
                "attributes": {"name": "p", **attributes},
                "relationships": {"product": {"data": {"type": "products", "id": product}}},
            }
        }
        error = error_of(api.request("POST", "/v1/policies", json=body))
        assert (error["code"], error["detail"]) == (code, detail)
    policy = api.policy(requireHeartbeat=True)
    body = {"data": {"type": "policies", "attributes": {"heartbeatCullStrategy": "KEEP_DEAD"}}}
    patched = api.ok("PATCH", f"/v1/policies/{policy}", json=body)["data"]["attributes"]
    assert (patched["requireHeartbeat"], patched["heartbeatCullStrategy"]) == (True, "KEEP_DEAD")


def test_a_required_heartbeat_validates_not_started_then_valid_then_dead_then_culled(
    api: Api, clock: FakeClock, container: Container
) -> None:
    lic, key = license_of(api, requireHeartbeat=True, heartbeatDuration=120)
    machine = activate(api, lic, "fp-hb").json()["data"]
    assert (
        machine["attributes"]["requireHeartbeat"],
        machine["attributes"]["heartbeatStatus"],
    ) == (
        True,
        "NOT_STARTED",
    )
    assert api.ok("GET", f"/v1/licenses/{lic}")["data"]["attributes"]["requireHeartbeat"] is True
    meta = validate_key(api, key, fingerprint="fp-hb")
    assert (meta["valid"], meta["code"], meta["detail"]) == (
        False,
        "HEARTBEAT_NOT_STARTED",
        "machine heartbeat is required",
    )
    machine_scope = validate_key(api, key, machine=machine["id"])
    assert machine_scope["code"] == "HEARTBEAT_NOT_STARTED"
    api.ok("POST", f"/v1/machines/{machine['id']}/actions/ping")
    assert validate_key(api, key, fingerprint="fp-hb")["code"] == "VALID"
    clock.advance(seconds=121)
    meta = validate_key(api, key, fingerprint="fp-hb")
    assert (meta["valid"], meta["code"], meta["detail"]) == (
        False,
        "HEARTBEAT_DEAD",
        "machine heartbeat is dead",
    )
    assert container.machines().reap_dead_machines() == 1
    assert validate_key(api, key, fingerprint="fp-hb")["code"] == "NO_MACHINES"


def test_a_never_pinged_machine_is_culled_after_the_duration(
    api: Api, clock: FakeClock, container: Container
) -> None:
    lic, _ = license_of(api, requireHeartbeat=True, heartbeatDuration=300)
    mid = activate(api, lic, "fp-silent").json()["data"]["id"]
    clock.advance(seconds=299)
    assert container.machines().reap_dead_machines() == 0
    clock.advance(seconds=2)
    status = api.ok("GET", f"/v1/machines/{mid}")["data"]["attributes"]["heartbeatStatus"]
    assert status == "DEAD"
    assert container.machines().reap_dead_machines() == 1
    assert api.request("GET", f"/v1/machines/{mid}").status_code == 404
    # without requireHeartbeat a never-pinged machine is never culled
    other, _ = license_of(api, heartbeatDuration=300)
    kept = activate(api, other, "fp-free").json()["data"]["id"]
    clock.advance(days=30)
    assert container.machines().reap_dead_machines() == 0
    assert (
        api.ok("GET", f"/v1/machines/{kept}")["data"]["attributes"]["heartbeatStatus"]
        == "NOT_STARTED"
    )


@pytest.mark.parametrize(
    ("resurrection", "revived"),
    [("NO_REVIVE", False), ("ALWAYS_REVIVE", True), ("1_MINUTE_REVIVE", False)],
)
def test_a_dead_machine_kept_by_its_policy_is_refused_or_resurrected(
    api: Api, clock: FakeClock, container: Container, resurrection: str, revived: bool
) -> None:
    lic, _ = license_of(
        api,
        heartbeatDuration=60,
        heartbeatCullStrategy="KEEP_DEAD",
        heartbeatResurrectionStrategy=resurrection,
    )
    mid = activate(api, lic, "fp-kept").json()["data"]["id"]
    api.ok("POST", f"/v1/machines/{mid}/actions/ping")
    clock.advance(seconds=200)  # dead for 140 s: past a one-minute revival
    assert container.machines().reap_dead_machines() == 0  # KEEP_DEAD
    response = api.request("POST", f"/v1/machines/{mid}/actions/ping")
    if revived:  # Keygen's answer says RESURRECTED; the machine is ALIVE from then on
        assert response.json()["data"]["attributes"]["heartbeatStatus"] == "RESURRECTED"
        status = api.ok("GET", f"/v1/machines/{mid}")["data"]["attributes"]["heartbeatStatus"]
        assert status == "ALIVE"
    else:
        assert response.status_code == 422
        assert error_of(response) == {
            "title": "Unprocessable resource",
            "detail": "is dead",
            "code": "MACHINE_HEARTBEAT_DEAD",
            "source": {"pointer": "/data"},
        }
        status = api.ok("GET", f"/v1/machines/{mid}")["data"]["attributes"]["heartbeatStatus"]
        assert status == "DEAD"


def test_heartbeat_basis_from_creation(api: Api, clock: FakeClock) -> None:
    lic, _ = license_of(api, heartbeatDuration=60, heartbeatBasis="FROM_CREATION")
    attrs = activate(api, lic, "fp-born").json()["data"]["attributes"]
    assert (attrs["heartbeatStatus"], attrs["requireHeartbeat"]) == ("ALIVE", True)
    assert attrs["lastHeartbeat"] == attrs["created"]


@pytest.mark.parametrize(
    ("strategy", "auth", "valid"),
    [
        ("REVOKE_ACCESS", 403, False),
        ("RESTRICT_ACCESS", 200, False),
        ("MAINTAIN_ACCESS", 200, True),
        ("ALLOW_ACCESS", 200, True),
    ],
)
def test_expiration_strategies(
    api: Api, clock: FakeClock, strategy: str, auth: int, valid: bool
) -> None:
    policy = api.policy(expirationStrategy=strategy, duration=3600)
    lic = api.license(policy)
    key = lic["attributes"]["key"]
    clock.advance(seconds=3601)
    response = api.request("GET", "/v1/me", token=None, headers={"Authorization": f"License {key}"})
    assert response.status_code == auth
    if auth == 403:
        assert error_of(response) == {
            "title": "Access denied",
            "detail": "License is expired",
            "code": "LICENSE_EXPIRED",
        }
    meta = validate_key(api, key)
    assert (meta["valid"], meta["code"], meta["detail"]) == (valid, "EXPIRED", "is expired")
    # REVOKE_ACCESS answers EXPIRED before the scopes; the others after them
    scoped = validate_key(api, key, product="another")["code"]
    assert scoped == ("EXPIRED" if strategy == "REVOKE_ACCESS" else "PRODUCT_SCOPE_MISMATCH")
