"""GET /me: the bearer's own resource, under both path prefixes, with no ``meta`` object."""

from __future__ import annotations

import pytest

from tests.conftest import Api, error_of

PREFIXES = ["/v1", "/v1/accounts/default"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_license_key_gets_its_license(api: Api, prefix: str) -> None:
    """``License <key>`` names the license itself, rendered as GET /licenses/{id} renders it."""
    license = api.license(key="ME-LICENSE-1")
    headers = {"Authorization": "License ME-LICENSE-1"}
    body = api.ok("GET", f"{prefix}/me", headers=headers)
    assert set(body) == {"data"}  # keygen-rs fails on any meta object here
    assert body["data"]["type"] == "licenses"
    assert body["data"]["id"] == license["id"]
    assert body == api.ok("GET", f"/v1/licenses/{license['id']}")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_license_token_gets_its_license(api: Api, prefix: str) -> None:
    """A license (activation) token names its license."""
    license = api.license()
    token = api.license_token(license["id"])
    body = api.ok("GET", f"{prefix}/me", token=token)
    assert set(body) == {"data"}
    assert (body["data"]["type"], body["data"]["id"]) == ("licenses", license["id"])


@pytest.mark.parametrize("prefix", PREFIXES)
def test_a_product_token_gets_its_product(api: Api, prefix: str) -> None:
    """A product token names its product."""
    product = api.product("Mine")
    body = api.ok("GET", f"{prefix}/me", token=api.product_token(product))
    assert set(body) == {"data"}
    assert (body["data"]["type"], body["data"]["id"]) == ("products", product)
    assert body["data"]["attributes"]["name"] == "Mine"


def test_the_admin_has_no_profile(api: Api) -> None:
    """Keygen's admins are users; the bridge's admin token has no resource: 404."""
    response = api.request("GET", "/v1/me")
    assert response.status_code == 404
    assert error_of(response)["code"] == "NOT_FOUND"


def test_anonymous_and_unknown_keys_are_401(api: Api) -> None:
    """No credential is TOKEN_MISSING; a key that names no license is refused."""
    assert error_of(api.request("GET", "/v1/me", token=None))["code"] == "TOKEN_MISSING"
    response = api.request("GET", "/v1/me", headers={"Authorization": "License NOPE-0000"})
    assert response.status_code == 401


def test_another_account_is_404(api: Api) -> None:
    """Only the configured account id is served."""
    response = api.request("GET", "/v1/accounts/other/me")
    assert response.status_code == 404
