"""``Authorization: License <key>`` answers as Keygen's ``http_license_authenticator``."""

from __future__ import annotations

from tests.conftest import Api, error_of


def as_key(key: str) -> dict[str, dict[str, str]]:
    return {"headers": {"Authorization": f"License {key}"}}


def test_an_unknown_key_is_401_license_invalid(api: Api) -> None:
    response = api.request("GET", "/v1/me", **as_key("NO-SUCH-KEY"))
    assert response.status_code == 401
    assert error_of(response) == {
        "title": "Unauthorized",
        "detail": "You must be authenticated to complete the request",
        "code": "LICENSE_INVALID",
    }


def test_a_suspended_licenses_key_is_403_license_suspended_everywhere(api: Api) -> None:
    lic = api.license(api.policy())
    key = lic["attributes"]["key"]
    api.ok("POST", f"/v1/licenses/{lic['id']}/actions/suspend")
    for method, path in [
        ("GET", "/v1/me"),
        ("GET", f"/v1/licenses/{lic['id']}"),
        ("POST", f"/v1/licenses/{lic['id']}/actions/validate"),
        ("POST", f"/v1/licenses/{lic['id']}/actions/increment-usage"),
    ]:
        response = api.request(method, path, token=None, **as_key(key))
        assert response.status_code == 403, path
        assert error_of(response) == {
            "title": "Access denied",
            "detail": "License is suspended",
            "code": "LICENSE_SUSPENDED",
        }
    # validate-key takes the key in the body, not as a bearer: the validation says SUSPENDED
    body = {"meta": {"key": key}}
    meta = api.ok("POST", "/v1/licenses/actions/validate-key", json=body, token=None)["meta"]
    assert (meta["valid"], meta["code"]) == (False, "SUSPENDED")
    api.ok("POST", f"/v1/licenses/{lic['id']}/actions/reinstate")
    assert api.request("GET", "/v1/me", token=None, **as_key(key)).status_code == 200
