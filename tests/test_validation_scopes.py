"""Every scope key Keygen's validate actions take: those the bridge has are enforced, the
others answer as Keygen does for a license without them, never VALID."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.test_api_machines import activate, floating


def validate_key(api: Api, key: str, **scope: Any) -> dict[str, Any]:
    body = {"meta": {"key": key, "scope": scope}}
    meta: dict[str, Any] = api.ok(
        "POST", "/v1/licenses/actions/validate-key", json=body, token=None
    )["meta"]
    return meta


@pytest.mark.parametrize(
    ("scope", "code", "detail"),
    [
        (
            {"environment": "production"},
            "ENVIRONMENT_SCOPE_MISMATCH",
            "environment scope does not match",
        ),
        ({"user": "someone@example.com"}, "USER_SCOPE_MISMATCH", "user scope does not match"),
        ({"entitlements": []}, "ENTITLEMENTS_SCOPE_EMPTY", "entitlements scope is empty"),
        (
            {"entitlements": ["PRO"]},
            "ENTITLEMENTS_MISSING",
            "is missing one or more required entitlements",
        ),
        (
            {"fingerprint": "fp-a", "components": ["disk-1"]},
            "COMPONENTS_SCOPE_MISMATCH",
            "one or more component is not activated (does not match any associated components)",
        ),
        (
            {"components": ["disk-1"]},
            "FINGERPRINT_SCOPE_REQUIRED",
            "fingerprint scope is required when using the components scope",
        ),
        (
            {"fingerprint": "fp-a", "components": []},
            "COMPONENTS_SCOPE_EMPTY",
            "components scope is empty",
        ),
        (
            {"checksum": "abc"},
            "CHECKSUM_SCOPE_MISMATCH",
            "checksum scope is not valid (does not match any accessible artifacts)",
        ),
        (
            {"version": "1.0.0"},
            "VERSION_SCOPE_MISMATCH",
            "version scope is not valid (does not match any accessible releases)",
        ),
        ({"fingerprints": []}, "FINGERPRINT_SCOPE_EMPTY", "fingerprint scope is empty"),
        (
            {"fingerprints": ["fp-x", "fp-y"]},
            "FINGERPRINT_SCOPE_MISMATCH",
            "one or more fingerprint is not activated (does not match any associated machines)",
        ),
        (
            {"machine": "no-such-machine"},
            "MACHINE_SCOPE_MISMATCH",
            "machine is not activated (does not match any associated machines)",
        ),
    ],
)
def test_scopes_the_license_cannot_satisfy(
    api: Api, scope: dict[str, Any], code: str, detail: str
) -> None:
    lic = api.license(api.policy(floating=True))
    activate(api, lic["id"], "fp-a")
    meta = validate_key(api, lic["attributes"]["key"], **scope)
    assert (meta["valid"], meta["code"], meta["detail"]) == (False, code, detail)
    assert meta["scope"] == scope  # echoed as sent


def test_scopes_the_license_satisfies(api: Api) -> None:
    lic = floating(api)
    key = api.ok("GET", f"/v1/licenses/{lic}")["data"]["attributes"]["key"]
    machine = activate(api, lic, "fp-a").json()["data"]["id"]
    for scope in [
        {"fingerprints": ["fp-a", "fp-b"]},
        {"machine": machine},
        {"machine": machine, "fingerprint": "fp-a"},
        {"user": None, "environment": None},  # null matches a license without them (Keygen)
    ]:
        meta = validate_key(api, key, **scope)
        assert (meta["valid"], meta["code"]) == (True, "VALID"), scope
        assert meta["scope"] == scope


def test_machine_scope_on_a_license_without_machines(api: Api) -> None:
    lic = api.license(api.policy(floating=False))
    meta = validate_key(api, lic["attributes"]["key"], machine="anything")
    assert (meta["code"], meta["detail"]) == (
        "NO_MACHINE",
        "machine is not activated (has no associated machine)",
    )


def test_an_unknown_scope_key_is_still_unpermitted(api: Api) -> None:
    lic = api.license(api.policy())
    body = {"meta": {"key": lic["attributes"]["key"], "scope": {"galaxy": "far"}}}
    response = api.request("POST", "/v1/licenses/actions/validate-key", json=body, token=None)
    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "PARAMETER_UNPERMITTED"
