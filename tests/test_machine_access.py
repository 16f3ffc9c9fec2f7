"""Who may do what to machines (Keygen's role matrix), and validation against machines."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, error_of
from tests.test_api_machines import activate, floating


def cores_patch(api: Api, machine_id: str, token: str | None = None, **attrs: Any) -> Any:
    body = {"data": {"type": "machines", "attributes": attrs}}
    kwargs: dict[str, Any] = {"json": body}
    if token is not None:
        kwargs["token"] = token
    return api.request("PATCH", f"/v1/machines/{machine_id}", **kwargs)


def test_a_license_manages_its_own_machines_but_not_their_cores(api: Api) -> None:
    """A license token activates, reads, renames and deactivates its own machines; changing
    cores is 403, and another license's machines are out of scope."""
    lic = floating(api)
    token = api.license_token(lic)
    created = activate(api, lic, "mine", cores=2, token=token)
    assert created.status_code == 201, created.text
    mid = created.json()["data"]["id"]
    assert created.json()["data"]["attributes"]["cores"] == 2
    assert api.request("GET", f"/v1/machines/{mid}", token=token).status_code == 200
    assert cores_patch(api, mid, token, name="laptop").status_code == 200
    denied = cores_patch(api, mid, token, cores=4)
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "ACCESS_DENIED"
    assert api.ok("GET", f"/v1/machines/{mid}")["data"]["attributes"]["cores"] == 2

    other = floating(api)
    theirs = activate(api, other, "theirs").json()["data"]["id"]
    assert error_of(activate(api, other, "x", token=token))["code"] == "LICENSE_NOT_FOUND"
    for method in ("GET", "DELETE"):
        response = api.request(method, f"/v1/machines/{theirs}", token=token)
        assert error_of(response)["code"] == "NOT_FOUND"
    assert cores_patch(api, theirs, token, name="x").status_code == 404
    listed = api.request("GET", "/v1/machines", token=token).json()["data"]
    assert [m["id"] for m in listed] == [mid]
    assert api.request("GET", f"/v1/machines?license={other}", token=token).json()["data"] == []
    assert api.request("DELETE", f"/v1/machines/{mid}", token=token).status_code == 204


def test_license_key_authentication_activates(api: Api) -> None:
    """``Authorization: License <key>`` may activate a machine on that license."""
    lic = api.license(api.policy(floating=True), key="KEY-AUTH-1")
    response = api.request(
        "POST",
        "/v1/machines",
        json={
            "data": {
                "type": "machines",
                "attributes": {"fingerprint": "k"},
                "relationships": {"license": {"data": {"type": "licenses", "id": lic["id"]}}},
            }
        },
        headers={"Authorization": "License KEY-AUTH-1"},
    )
    assert response.status_code == 201, response.text


def test_a_product_manages_its_licenses_machines_only(api: Api) -> None:
    """A product token has the admin's rights over its own licenses' machines, cores included,
    and sees no other product's."""
    product = api.product("Mine")
    token = api.product_token(product)
    lic = api.license(api.policy(product, floating=True, maxCores=4))["id"]
    mid = activate(api, lic, "p", cores=2, token=token).json()["data"]["id"]
    assert cores_patch(api, mid, token, cores=4).status_code == 200
    assert error_of(cores_patch(api, mid, token, cores=5))["code"] == "MACHINE_CORE_LIMIT_EXCEEDED"

    foreign = floating(api)
    foreign_machine = activate(api, foreign, "f").json()["data"]["id"]
    assert error_of(activate(api, foreign, "x", token=token))["code"] == "LICENSE_NOT_FOUND"
    assert api.request("GET", f"/v1/machines/{foreign_machine}", token=token).status_code == 404
    listed = api.request("GET", "/v1/machines", token=token).json()["data"]
    assert [m["id"] for m in listed] == [mid]
    assert api.request("DELETE", f"/v1/machines/{mid}", token=token).status_code == 204


def test_anonymous_is_401(api: Api) -> None:
    """Without credentials every machine route is 401 TOKEN_MISSING."""
    response = api.request("GET", "/v1/machines", token=None)
    assert error_of(response)["code"] == "TOKEN_MISSING"


# Validation -----------------------------------------------------------------------------------
def validate(api: Api, license_id: str, **scope: str) -> tuple[bool, str, str]:
    body = {"meta": {"scope": scope}} if scope else None
    meta = api.ok("POST", f"/v1/licenses/{license_id}/actions/validate", json=body)["meta"]
    return meta["valid"], meta["code"], meta["detail"]


def lower(api: Api, license_id: str, **limits: int) -> None:
    body = {"data": {"type": "licenses", "attributes": limits}}
    api.ok("PATCH", f"/v1/licenses/{license_id}", json=body)


def test_strict_policies_need_machines(api: Api) -> None:
    """A strict floating license without machines is NO_MACHINES, node-locked NO_MACHINE; a
    non-strict one is VALID."""
    assert validate(api, floating(api, strict=True)) == (
        False,
        "NO_MACHINES",
        "must have at least 1 associated machine",
    )
    node_locked = api.license(api.policy(strict=True))["id"]
    assert validate(api, node_locked) == (
        False,
        "NO_MACHINE",
        "must have exactly 1 associated machine",
    )
    assert validate(api, floating(api))[:2] == (True, "VALID")


@pytest.mark.parametrize(
    ("strategy", "within", "beyond"),
    [
        ("NO_OVERAGE", None, 9),
        ("ALLOW_1_25X_OVERAGE", 10, 11),
        ("ALLOW_1_5X_OVERAGE", 12, 13),
        ("ALLOW_2X_OVERAGE", 16, 17),
        ("ALWAYS_ALLOW_OVERAGE", 1000, None),
    ],
)
def test_too_many_cores_at_validation(
    api: Api, strategy: str, within: int | None, beyond: int | None
) -> None:
    """With maxCores lowered to 8 under its machines, a strict license is valid with
    TOO_MANY_CORES within the overage allowance and invalid beyond it."""
    for cores, valid in ((within, True), (beyond, False)):
        if cores is None:
            continue
        lic = floating(api, strict=True, overageStrategy=strategy)
        activate(api, lic, "a", cores=cores)
        lower(api, lic, maxCores=8)
        assert validate(api, lic) == (
            valid,
            "TOO_MANY_CORES",
            "has too many associated machine cores",
        )
    lic = floating(api, strict=False, overageStrategy=strategy)
    activate(api, lic, "a", cores=100)
    lower(api, lic, maxCores=8)
    assert validate(api, lic)[:2] == (True, "VALID")


def test_too_many_machines_at_validation(api: Api) -> None:
    """A strict license above maxMachines: valid within 2x, invalid beyond, with
    TOO_MANY_MACHINES either way."""
    for machines, valid in ((4, True), (5, False)):
        lic = floating(api, strict=True, overageStrategy="ALLOW_2X_OVERAGE")
        for n in range(machines):
            activate(api, lic, f"m{n}")
        lower(api, lic, maxMachines=2)
        assert validate(api, lic) == (
            valid,
            "TOO_MANY_MACHINES",
            "has too many associated machines",
        )


def test_fingerprint_scope(api: Api) -> None:
    """scope.fingerprint must match an activated machine (strict or not)."""
    lic = floating(api)
    assert validate(api, lic, fingerprint="fp") == (
        False,
        "NO_MACHINES",
        "fingerprint is not activated (has no associated machines)",
    )
    node_locked = api.license(api.policy())["id"]
    assert validate(api, node_locked, fingerprint="fp")[1] == "NO_MACHINE"
    activate(api, lic, "fp")
    assert validate(api, lic, fingerprint="fp")[:2] == (True, "VALID")
    assert validate(api, lic, fingerprint="other") == (
        False,
        "FINGERPRINT_SCOPE_MISMATCH",
        "fingerprint is not activated (does not match any associated machines)",
    )
    key = api.ok("GET", f"/v1/licenses/{lic}")["data"]["attributes"]["key"]
    body = {"meta": {"key": key, "scope": {"fingerprint": "other"}}}
    meta = api.ok("POST", "/v1/licenses/actions/validate-key", json=body, token=None)["meta"]
    assert meta["code"] == "FINGERPRINT_SCOPE_MISMATCH"
