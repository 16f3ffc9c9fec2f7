"""Heartbeats: a machine that stops pinging is deactivated by the reaper and frees its cores."""

from __future__ import annotations

from typing import Any

from bridge.bootstrap import Container
from bridge.testing import FakeClock
from tests.conftest import Api, error_of
from tests.test_api_machines import activate, floating


def ping(api: Api, machine_id: str, **kwargs: Any) -> dict[str, Any]:
    data: dict[str, Any] = api.ok("POST", f"/v1/machines/{machine_id}/actions/ping", **kwargs)[
        "data"
    ]
    return data


def test_a_ping_sets_the_next_heartbeat(api: Api, clock: FakeClock) -> None:
    """A ping records the time and, with heartbeatDuration, when the next one is due."""
    lic = floating(api, heartbeatDuration=600)
    mid = activate(api, lic).json()["data"]["id"]
    attrs = ping(api, mid)["attributes"]
    assert attrs["heartbeatStatus"] == "ALIVE"
    assert attrs["lastHeartbeat"] == "2026-01-01T00:00:00Z"
    assert attrs["nextHeartbeat"] == "2026-01-01T00:10:00Z"
    clock.advance(seconds=601)
    assert api.ok("GET", f"/v1/machines/{mid}")["data"]["attributes"]["heartbeatStatus"] == "DEAD"


def test_the_reaper_deactivates_dead_machines_only(
    api: Api, clock: FakeClock, container: Container
) -> None:
    """Past its heartbeat, a machine that pinged is deactivated and its cores freed, recorded in
    the ledger; machines that never pinged, pinged in time, or have no heartbeat policy stay."""
    lic = floating(api, heartbeatDuration=60, maxCores=8)
    dead = activate(api, lic, "dead", cores=6).json()["data"]["id"]
    alive = activate(api, lic, "alive", cores=1).json()["data"]["id"]
    never = activate(api, lic, "never", cores=1).json()["data"]["id"]
    free = floating(api)
    unbounded = activate(api, free, "x").json()["data"]["id"]
    ping(api, dead)
    ping(api, unbounded)
    clock.advance(seconds=45)
    ping(api, alive)
    clock.advance(seconds=30)  # dead is 15 s overdue; alive has 30 s left

    assert container.machines().reap_dead_machines() == 1
    assert error_of(api.request("GET", f"/v1/machines/{dead}"))["code"] == "NOT_FOUND"
    for kept in (alive, never, unbounded):
        assert api.request("GET", f"/v1/machines/{kept}").status_code == 200
    entry = api.ok("GET", f"/v1/licenses/{lic}/usage")["data"][0]["attributes"]
    assert (entry["kind"], entry["delta"], entry["usesAfter"]) == ("deactivate", -6, 2)
    assert entry["actor"] == "admin:heartbeat"
    assert activate(api, lic, "replacement", cores=6).status_code == 201
    assert container.machines().reap_dead_machines() == 0


def test_a_ping_before_the_sweep_keeps_the_machine(
    api: Api, clock: FakeClock, container: Container
) -> None:
    """An overdue machine that pings before the reaper runs is alive again, when its policy
    resurrects the dead (issue 11: under Keygen's default, NO_REVIVE, that ping is 422
    MACHINE_HEARTBEAT_DEAD, tests/test_heartbeat_policies.py)."""
    lic = floating(api, heartbeatDuration=60, heartbeatResurrectionStrategy="5_MINUTE_REVIVE")
    mid = activate(api, lic).json()["data"]["id"]
    ping(api, mid)
    clock.advance(seconds=120)
    ping(api, mid)
    assert container.machines().reap_dead_machines() == 0


def test_heartbeat_duration_is_checked(api: Api) -> None:
    """heartbeatDuration below 60 seconds is 422 HEARTBEAT_DURATION_INVALID."""
    body = {
        "data": {
            "type": "policies",
            "attributes": {"name": "p", "heartbeatDuration": 59},
            "relationships": {"product": {"data": {"type": "products", "id": api.product()}}},
        }
    }
    error = error_of(api.request("POST", "/v1/policies", json=body))
    assert (error["code"], error["detail"]) == (
        "HEARTBEAT_DURATION_INVALID",
        "must be greater than or equal to 60",
    )


def test_a_license_pings_its_own_machine(api: Api) -> None:
    """The license's own token may ping its machine; another license's is 404."""
    lic, other = floating(api), floating(api)
    mid = activate(api, lic).json()["data"]["id"]
    assert ping(api, mid, token=api.license_token(lic))["id"] == mid
    response = api.request(
        "POST", f"/v1/machines/{mid}/actions/ping", token=api.license_token(other)
    )
    assert response.status_code == 404
