"""The published Keygen client ``keygen-py`` (keygen-rs inside) against a real ``serve``.

The client is configured as its README says (``api_url`` the bridge, ``account``, ``product``,
``license_key``, ``public_key``) with signature verification left on: every 2xx answer it
accepts was verified with ed25519-dalek, a third Ed25519 implementation. What the flow cannot
do yet with today's documents (activation's and ping's machine documents, the license's machine
list) is listed in docs/keygen-clients.md, not tested here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, insert

from bridge.store.tables import keygen_licenses
from tests.served import Served

pytest.importorskip(
    "keygen_sh",
    reason="keygen-py publishes wheels for Linux x86_64 only (a Rust extension): the dev extra "
    "installs it there, and CI runs these tests",
)

DRIVER = Path(__file__).with_name("keygen_client.py")
OTHER_PUBLIC_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


@pytest.fixture(scope="module")
def product(served: Served) -> str:
    with served.admin() as admin:
        body = {"data": {"type": "products", "attributes": {"name": "Desktop App"}}}
        return str(_created(admin.post("/v1/products", json=body))["id"])


def new_license(served: Served, product: str, key: str, **policy: Any) -> dict[str, Any]:
    """A node-locked, strict policy (Keygen's desktop default) and one license of it."""
    with served.admin() as admin:
        rel = {"product": {"data": {"type": "products", "id": product}}}
        attributes = {"name": key, "strict": True, **policy}
        body = {"data": {"type": "policies", "attributes": attributes, "relationships": rel}}
        policy_id = _created(admin.post("/v1/policies", json=body))["id"]
        rel = {"policy": {"data": {"type": "policies", "id": policy_id}}}
        body = {"data": {"type": "licenses", "attributes": {"key": key}, "relationships": rel}}
        return _created(admin.post("/v1/licenses", json=body))


def client(
    served: Served, product: str, key: str, steps: list[dict[str, Any]], **config: Any
) -> list[dict[str, Any]]:
    spec = {
        "config": {
            "api_url": served.url,
            "api_version": "1.7",
            "api_prefix": "v1",
            "account": "default",
            "product": product,
            "license_key": key,
            "public_key": served.public_key,
            **config,
        },
        "steps": steps,
    }
    done = subprocess.run(
        [sys.executable, str(DRIVER), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def activate_as_the_client_does(served: Served, key: str, license_id: str, fp: str) -> str:
    """The request keygen-rs sends to activate, sent directly (the machine is set up)."""
    body = {
        "data": {
            "type": "machines",
            "attributes": {"fingerprint": fp, "cores": 4, "hostname": "desk", "platform": "linux"},
            "relationships": {"license": {"data": {"type": "licenses", "id": license_id}}},
        }
    }
    headers = {"Authorization": f"License {key}", "Content-Type": "application/vnd.api+json"}
    return str(_created(httpx.post(f"{served.url}/v1/machines", json=body, headers=headers))["id"])


def test_validate_activate_deactivate_validate(served: Served, product: str) -> None:
    """validate (GET /me, then validate-key) says the fingerprint is not activated; once it is,
    validation passes with the license's id, key and policy; deactivation (a signed 204) frees
    it, and validation says so again. Every answer passed the client's signature check."""
    license = new_license(served, product, "DESK-FLOW-0001")
    validate = {"op": "validate", "fingerprints": ["fp-desk-1"]}
    before = client(served, product, "DESK-FLOW-0001", [validate])
    assert before == [
        {"op": "validate", "ok": False, "error": "LicenseNotActivated", "code": "NO_MACHINE"}
    ]
    machine = activate_as_the_client_does(served, "DESK-FLOW-0001", license["id"], "fp-desk-1")
    steps = [validate, {"op": "deactivate", "machine": machine}, validate]
    valid, deactivated, after = client(served, product, "DESK-FLOW-0001", steps)
    policy = license["relationships"]["policy"]["data"]["id"]
    assert valid == {
        "op": "validate",
        "ok": True,
        "id": license["id"],
        "key": "DESK-FLOW-0001",
        "status": "ACTIVE",
        "policy": policy,
    }
    assert deactivated == {"op": "deactivate", "ok": True}
    assert after["error"] == "LicenseNotActivated"
    with served.admin() as admin:
        assert admin.get(f"/v1/machines/{machine}").status_code == 404


def test_the_desktop_flow_with_the_clients_own_calls(served: Served, product: str) -> None:
    """validate -> activate -> machines -> machine by fingerprint -> ping -> deactivate ->
    validate, each call keygen-rs's own (``activate_machine``, ``machines()``,
    ``machine(fingerprint)``, ``ping()``, ``deactivate()``), every answer signature-checked."""
    key = "DESK-FULL-0001"
    license = new_license(served, product, key, heartbeatDuration=300)
    fp = "fp-desk-full"
    steps = [
        {"op": "validate", "fingerprints": [fp]},
        {"op": "activate", "license": license["id"], "fingerprint": fp},
    ]
    before, activated = client(served, product, key, steps)
    assert (before["error"], before["code"]) == ("LicenseNotActivated", "NO_MACHINE")
    assert activated["ok"] is True, activated
    machine = activated["id"]
    assert activated == {
        "op": "activate",
        "ok": True,
        "id": machine,
        "fingerprint": fp,
        "require_heartbeat": False,
        "heartbeat_status": "NOT_STARTED",
        "heartbeat_duration": 300,
    }
    steps = [
        {"op": "validate", "fingerprints": [fp]},
        {"op": "machines"},
        {"op": "machine", "machine": fp},  # after a restart, found again by its fingerprint
        {"op": "ping", "machine": fp},
        {"op": "machine_deactivate", "machine": fp},
        {"op": "validate", "fingerprints": [fp]},
    ]
    valid, listed, found, pinged, deactivated, after = client(served, product, key, steps)
    assert (valid["ok"], valid["id"]) == (True, license["id"])
    assert [m["id"] for m in listed["machines"]] == [machine]
    assert (found["ok"], found["id"]) == (True, machine)
    assert (pinged["id"], pinged["heartbeat_status"], pinged["require_heartbeat"]) == (
        machine,
        "ALIVE",
        True,
    )
    assert deactivated == {"op": "machine_deactivate", "ok": True}
    assert (after["error"], after["code"]) == ("LicenseNotActivated", "NO_MACHINE")
    with served.admin() as admin:
        assert admin.get(f"/v1/machines/{machine}").status_code == 404


def test_a_wrong_key(served: Served, product: str) -> None:
    """An unknown key is 401 LICENSE_INVALID at ``GET /me``: the client's LicenseKeyInvalid."""
    results = client(served, product, "NO-SUCH-KEY-01", [{"op": "validate", "fingerprints": []}])
    assert results == [
        {"op": "validate", "ok": False, "error": "LicenseKeyInvalid", "code": "LICENSE_INVALID"}
    ]


def test_the_client_really_verifies_signatures(served: Served, product: str) -> None:
    """With another account's public key the same validation is refused by the client, and it
    passes with verification switched off: the check above is not vacuous."""
    new_license(served, product, "DESK-SIGN-0001", strict=False)  # valid with no machine
    validate = [{"op": "validate", "fingerprints": []}]
    wrong = client(served, product, "DESK-SIGN-0001", validate, public_key=OTHER_PUBLIC_KEY)
    assert wrong == [
        {"op": "validate", "ok": False, "error": "Unknown", "message": "Unknown error"}
    ]
    unchecked = client(
        served,
        product,
        "DESK-SIGN-0001",
        validate,
        public_key=OTHER_PUBLIC_KEY,
        verify_keygen_signature=False,
    )
    right = client(served, product, "DESK-SIGN-0001", validate)
    assert unchecked[0]["ok"] is True
    assert right[0]["ok"] is True


def test_a_mirrored_license_validates_with_its_meta(served: Served, product: str) -> None:
    """A license mirrored from Keygen carries ``meta.mirror`` on its resource (``GET /me`` and
    the validation's document included): the client reads it like any license, signature
    checked."""
    license = new_license(served, product, "DESK-MIRR-0001", strict=False)
    engine = create_engine(f"sqlite:///{served.directory / 'served.db'}")
    now = datetime.now(UTC)
    mirror = {"baseline": 0, "keygen_uses": 0, "forwarded": 0, "corrections": 0, "corrected": 0}
    times = {"keygen_updated": now, "mirrored_at": now, "next_check_at": now}
    with engine.begin() as conn:  # as the relay marks a license it mirrors
        conn.execute(insert(keygen_licenses).values(license_id=license["id"], **mirror, **times))
    engine.dispose()
    with served.admin() as admin:
        doc = admin.get(f"/v1/licenses/{license['id']}").json()["data"]
    assert doc["meta"]["mirror"]["source"] == "keygen"
    results = client(served, product, "DESK-MIRR-0001", [{"op": "validate", "fingerprints": []}])
    assert results[0]["ok"] is True, results
    assert (results[0]["id"], results[0]["key"]) == (license["id"], "DESK-MIRR-0001")


def test_a_suspended_license(served: Served, product: str) -> None:
    """A suspended license's key is refused at ``GET /me`` with 403 LICENSE_SUSPENDED (Keygen's
    authentication), which the client raises as LicenseSuspended."""
    license = new_license(served, product, "DESK-SUSP-0001")
    with served.admin() as admin:
        suspend = admin.post(f"/v1/licenses/{license['id']}/actions/suspend")
        assert suspend.status_code == 200
    results = client(served, product, "DESK-SUSP-0001", [{"op": "validate", "fingerprints": []}])
    assert results == [
        {"op": "validate", "ok": False, "error": "LicenseSuspended", "code": "LICENSE_SUSPENDED"}
    ]


def test_activation_refusals(served: Served, product: str) -> None:
    """On a node-locked license holding a machine, activating the same fingerprint is
    FINGERPRINT_TAKEN (MachineAlreadyActivated) and another one MACHINE_LIMIT_EXCEEDED
    (MachineLimitExceeded); neither takes a seat."""
    license = new_license(served, product, "DESK-LIMIT-001")
    activate_as_the_client_does(served, "DESK-LIMIT-001", license["id"], "fp-one")
    steps = [
        {"op": "activate", "license": license["id"], "fingerprint": "fp-one"},
        {"op": "activate", "license": license["id"], "fingerprint": "fp-two"},
    ]
    taken, limit = client(served, product, "DESK-LIMIT-001", steps)
    assert taken == {
        "op": "activate",
        "ok": False,
        "error": "MachineAlreadyActivated",
        "code": "FINGERPRINT_TAKEN",
    }
    assert limit == {
        "op": "activate",
        "ok": False,
        "error": "MachineLimitExceeded",
        "code": "MACHINE_LIMIT_EXCEEDED",
    }
    with served.admin() as admin:
        machines = admin.get("/v1/machines", params={"license": license["id"]}).json()["data"]
    assert [m["attributes"]["fingerprint"] for m in machines] == ["fp-one"]
