"""Authentication and Keygen's role matrix (reference 1.5): admin, product, license."""

from __future__ import annotations

import pytest

from tests.conftest import Api, error_of


def test_missing_token_is_401_token_missing(api: Api) -> None:
    """No Authorization header: 401 TOKEN_MISSING with a WWW-Authenticate challenge."""
    lic = api.license(api.policy())
    response = api.increment(lic["id"], token=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert error_of(response) == {
        "title": "Unauthorized",
        "detail": "You must be authenticated to complete the request",
        "code": "TOKEN_MISSING",
    }


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer nope", "TOKEN_INVALID"),
        ("Bearer admin-wrong", "TOKEN_INVALID"),
        ("License nope", "LICENSE_INVALID"),  # Keygen's answer to an unknown key (issue 11)
        ("Basic x", "TOKEN_INVALID"),
    ],
)
def test_bad_credentials_are_401(api: Api, header: str, code: str) -> None:
    """An unknown token or scheme is 401 TOKEN_INVALID, an unknown license key 401
    LICENSE_INVALID, and nothing changes."""
    lic = api.license(api.policy())
    response = api.increment(lic["id"], headers={"Authorization": header})
    assert response.status_code == 401
    assert error_of(response)["code"] == code
    assert api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]["uses"] == 0


def test_product_token_acts_on_its_own_licenses_only(api: Api) -> None:
    """A product may increment, decrement and reset its licenses; another product's is 404."""
    mine, theirs = api.product("Mine"), api.product("Theirs")
    own = api.license(api.policy(mine))
    foreign = api.license(api.policy(theirs))
    token = api.product_token(mine)
    assert api.increment(own["id"], 3, token=token).status_code == 200
    assert api.decrement(own["id"], 1, token=token).status_code == 200
    assert api.reset(own["id"], token=token).status_code == 200
    response = api.increment(foreign["id"], token=token)
    assert response.status_code == 404
    assert error_of(response)["detail"] == f"The requested license '{foreign['id']}' was not found"


def test_license_token_may_only_increment_itself(api: Api) -> None:
    """A license token increments itself; decrement and reset are 403; another license is 404."""
    policy = api.policy(maxUses=10)
    lic, other = api.license(policy), api.license(policy)
    token = api.license_token(lic["id"])
    assert api.increment(lic["id"], token=token).status_code == 200
    for response in (api.decrement(lic["id"], token=token), api.reset(lic["id"], token=token)):
        assert response.status_code == 403
        assert error_of(response)["code"] == "ACCESS_DENIED"
        assert error_of(response)["title"] == "Access denied"
    assert api.increment(other["id"], token=token).status_code == 404
    assert api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]["uses"] == 1


def test_license_key_authentication(api: Api) -> None:
    """Authorization: License <key> acts as that license."""
    policy = api.policy()
    lic = api.license(policy, key="key-auth-1234")
    other = api.license(policy)
    auth = {"Authorization": "License key-auth-1234"}
    assert api.increment(lic["id"], headers=auth).status_code == 200
    assert api.decrement(lic["id"], headers=auth).status_code == 403
    assert api.increment(other["id"], headers=auth).status_code == 404
    assert api.request("GET", "/v1/licenses/key-auth-1234", headers=auth).status_code == 200


def test_authorization_runs_before_the_limit_check(api: Api) -> None:
    """A license at its limit that may not decrement gets 403, not a limit error."""
    lic = api.license(api.policy(maxUses=1))
    api.increment(lic["id"])
    token = api.license_token(lic["id"])
    assert api.decrement(lic["id"], token=token).status_code == 403


def test_license_cannot_manage_other_resources(api: Api) -> None:
    """A license bearer gets 403 on products, policies, license lists and token creation."""
    product = api.product()
    lic = api.license(api.policy(product))
    token = api.license_token(lic["id"])
    for method, path in (
        ("GET", "/v1/products"),
        ("GET", "/v1/policies"),
        ("GET", "/v1/licenses"),
        ("POST", f"/v1/licenses/{lic['id']}/actions/suspend"),
        ("PATCH", f"/v1/licenses/{lic['id']}"),
    ):
        body = (
            {"data": {"type": "licenses", "attributes": {"name": "x"}}}
            if method == "PATCH"
            else None
        )
        response = api.request(method, path, token=token, json=body)
        assert response.status_code == 403, (method, path, response.text)


def test_product_lists_only_its_own_resources(api: Api) -> None:
    """Product tokens see their own policies and licenses in lists, nothing else."""
    mine, theirs = api.product("Mine"), api.product("Theirs")
    api.license(api.policy(mine))
    api.license(api.policy(theirs))
    token = api.product_token(mine)
    licenses = api.ok("GET", "/v1/licenses", token=token)
    policies = api.ok("GET", "/v1/policies", token=token)
    assert licenses["meta"]["pages"]["count"] == 1
    assert policies["meta"]["pages"]["count"] == 1
    assert policies["data"][0]["relationships"]["product"]["data"]["id"] == mine
    assert api.ok("GET", "/v1/licenses")["meta"]["pages"]["count"] == 2


def test_product_cannot_create_licenses_under_another_products_policy(api: Api) -> None:
    """Creating a license on a policy outside the product's scope is 422 POLICY_NOT_FOUND."""
    mine, theirs = api.product("Mine"), api.product("Theirs")
    foreign_policy = api.policy(theirs)
    token = api.product_token(mine)
    body = {
        "data": {
            "type": "licenses",
            "relationships": {"policy": {"data": {"type": "policies", "id": foreign_policy}}},
        }
    }
    response = api.request("POST", "/v1/licenses", token=token, json=body)
    assert response.status_code == 422
    assert error_of(response)["code"] == "POLICY_NOT_FOUND"


def test_only_admin_creates_products_and_product_tokens(api: Api) -> None:
    """Product tokens cannot create products or mint product tokens."""
    product = api.product()
    token = api.product_token(product)
    body = {"data": {"type": "products", "attributes": {"name": "X"}}}
    assert api.request("POST", "/v1/products", token=token, json=body).status_code == 403
    assert api.request("POST", f"/v1/products/{product}/tokens", token=token).status_code == 403


def test_token_secret_is_shown_once(api: Api) -> None:
    """A token's secret is in the creating response; the bridge stores only its digest."""
    product = api.product()
    token = api.product_token(product)
    assert token.startswith("prod-")
    assert api.ok("GET", f"/v1/products/{product}", token=token)["data"]["id"] == product
    with api.client.app.state.context.uows() as uow:  # type: ignore[attr-defined]
        from bridge.service.auth import digest

        assert uow.tokens.find(token) is None
        assert uow.tokens.find(digest(token)) == ("product", product)


def test_deleting_a_license_revokes_its_tokens(api: Api) -> None:
    """After DELETE, the license's token no longer authenticates."""
    lic = api.license(api.policy())
    token = api.license_token(lic["id"])
    api.ok("DELETE", f"/v1/licenses/{lic['id']}", 204)
    assert error_of(api.increment(lic["id"], token=token))["code"] == "TOKEN_INVALID"
