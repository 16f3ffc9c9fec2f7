"""Admin CRUD of products, policies and licenses, validation, health and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from bridge.api import schemas as s
from bridge.bootstrap import build, build_app
from bridge.settings import load_settings
from tests.conftest import ADMIN_TOKEN, Api, error_of


def test_product_crud(api: Api) -> None:
    """Products are created, read, listed, updated and deleted with Keygen's document shapes."""
    product = api.product("First")
    doc = api.ok("GET", f"/v1/products/{product}")
    assert doc["data"]["type"] == "products"
    assert doc["data"]["links"]["self"] == f"/v1/accounts/default/products/{product}"
    patch = {"data": {"type": "products", "attributes": {"name": "Renamed", "metadata": {"a": 1}}}}
    updated = api.ok("PATCH", f"/v1/products/{product}", json=patch)["data"]["attributes"]
    assert (updated["name"], updated["metadata"]) == ("Renamed", {"a": 1})
    assert api.ok("GET", "/v1/products")["meta"]["pages"]["count"] == 1
    api.ok("DELETE", f"/v1/products/{product}", 204)
    assert api.request("GET", f"/v1/products/{product}").status_code == 404


def test_product_with_policies_cannot_be_deleted(api: Api) -> None:
    """Deleting a product that still has policies is 422 PRODUCT_IN_USE; a policy with
    licenses is 422 POLICY_IN_USE."""
    product = api.product()
    policy = api.policy(product)
    lic = api.license(policy)
    assert error_of(api.request("DELETE", f"/v1/products/{product}"))["code"] == "PRODUCT_IN_USE"
    assert error_of(api.request("DELETE", f"/v1/policies/{policy}"))["code"] == "POLICY_IN_USE"
    api.ok("DELETE", f"/v1/licenses/{lic['id']}", 204)
    api.ok("DELETE", f"/v1/policies/{policy}", 204)
    api.ok("DELETE", f"/v1/products/{product}", 204)


def test_policy_defaults_and_update(api: Api) -> None:
    """A new policy is node-locked, NO_OVERAGE, FROM_CREATION; PATCH changes only what is sent."""
    policy = api.policy(maxUses=5)
    attrs = api.ok("GET", f"/v1/policies/{policy}")["data"]["attributes"]
    assert attrs["maxMachines"] == 1
    assert attrs["overageStrategy"] == "NO_OVERAGE"
    assert attrs["expirationBasis"] == "FROM_CREATION"
    patch = {"data": {"type": "policies", "attributes": {"maxUses": 7, "protected": True}}}
    attrs = api.ok("PATCH", f"/v1/policies/{policy}", json=patch)["data"]["attributes"]
    assert (attrs["maxUses"], attrs["protected"], attrs["name"]) == (7, True, "Metered")


def test_floating_policy_machine_rules(api: Api) -> None:
    """Node-locked policies must have maxMachines 1; floating ones at least 1 (Keygen)."""
    product = api.product()
    for attributes, detail in (
        ({"floating": False, "maxMachines": 2}, "must be equal to 1 for non-floating policy"),
        (
            {"floating": True, "maxMachines": 0},
            "must be greater than or equal to 1 for floating policy",
        ),
    ):
        body = {
            "data": {
                "type": "policies",
                "attributes": {"name": "P", **attributes},
                "relationships": {"product": {"data": {"type": "products", "id": product}}},
            }
        }
        response = api.request("POST", "/v1/policies", json=body)
        assert error_of(response)["code"] == "MAX_MACHINES_INVALID"
        assert error_of(response)["detail"] == detail
    assert api.policy(product, floating=True, maxMachines=5)


def test_license_read_by_key_update_and_list(api: Api) -> None:
    """Licenses are readable by id or key, updatable, and listed with pagination links."""
    policy = api.policy(maxUses=3)
    lic = api.license(policy, key="read-by-key", name="One", metadata={"tier": "gold"})
    by_key = api.ok("GET", "/v1/licenses/read-by-key")["data"]
    assert by_key["id"] == lic["id"]
    assert by_key["relationships"]["policy"]["data"] == {"type": "policies", "id": policy}
    patch = {"data": {"type": "licenses", "attributes": {"name": "Renamed", "key": "new-key-1"}}}
    attrs = api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=patch)["data"]["attributes"]
    assert (attrs["name"], attrs["key"], attrs["metadata"]) == (
        "Renamed",
        "new-key-1",
        {"tier": "gold"},
    )
    for _ in range(4):
        api.license(policy)
    page = api.ok("GET", f"/v1/licenses?policy={policy}&page[size]=2&page[number]=3")
    assert len(page["data"]) == 1
    assert page["meta"]["pages"] == {"count": 5, "pages": 3}
    assert page["links"]["next"] is None
    assert "policy=" in page["links"]["prev"]


def test_generated_keys_are_unique(api: Api) -> None:
    """A license created without a key gets a generated, unique one."""
    policy = api.policy()
    keys = {api.license(policy)["attributes"]["key"] for _ in range(5)}
    assert len(keys) == 5


def test_suspend_and_reinstate(api: Api) -> None:
    """suspend makes validation SUSPENDED; reinstate makes it VALID again."""
    lic = api.license(api.policy())
    path = f"/v1/licenses/{lic['id']}/actions"
    assert api.ok("POST", f"{path}/suspend")["data"]["attributes"]["status"] == "SUSPENDED"
    assert api.ok("POST", f"{path}/validate")["meta"]["code"] == "SUSPENDED"
    assert api.ok("POST", f"{path}/reinstate")["data"]["attributes"]["status"] == "ACTIVE"
    assert api.ok("POST", f"{path}/validate")["meta"]["code"] == "VALID"


def test_validate_key_needs_no_token(api: Api) -> None:
    """validate-key answers with the key alone; an unknown key is NOT_FOUND with data null."""
    lic = api.license(api.policy(), key="validate-me")
    body = {"meta": {"key": "validate-me", "nonce": 42}}
    doc = api.ok("POST", "/v1/licenses/actions/validate-key", json=body, token=None)
    assert doc["data"]["id"] == lic["id"]
    assert (doc["meta"]["valid"], doc["meta"]["code"], doc["meta"]["nonce"]) == (True, "VALID", 42)
    missing = api.ok(
        "POST", "/v1/licenses/actions/validate-key", json={"meta": {"key": "nope"}}, token=None
    )
    assert missing["data"] is None
    assert (missing["meta"]["valid"], missing["meta"]["code"], missing["meta"]["detail"]) == (
        False,
        "NOT_FOUND",
        "does not exist",
    )


def test_validate_with_scope(api: Api) -> None:
    """A policy or product scope that does not match makes the license invalid."""
    product = api.product()
    policy = api.policy(product)
    lic = api.license(policy)
    path = f"/v1/licenses/{lic['id']}/actions/validate"
    ok = api.ok("POST", path, json={"meta": {"scope": {"policy": policy, "product": product}}})
    assert ok["meta"]["valid"] is True
    wrong = api.ok("POST", path, json={"meta": {"scope": {"policy": "other"}}})
    assert (wrong["meta"]["valid"], wrong["meta"]["code"]) == (False, "POLICY_SCOPE_MISMATCH")


def test_health_endpoints(api: Api) -> None:
    """/healthz is up; /readyz checks the database."""
    assert api.ok("GET", "/healthz", token=None) == {"status": "ok"}
    assert api.ok("GET", "/readyz", token=None) == {"status": "ready"}


def test_readyz_reports_an_unreachable_database(tmp_path: Path) -> None:
    """When the database cannot be opened, /readyz is 503 SERVICE_UNAVAILABLE, and API calls
    get 503 rather than a 500."""
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'bridge.db'}"
    container = build(load_settings(database_url=url, admin_token=ADMIN_TOKEN))
    with TestClient(build_app(container), raise_server_exceptions=False) as client:
        api = Api(client)
        response = api.request("GET", "/readyz", token=None)
        assert response.status_code == 503
        assert error_of(response)["code"] == "SERVICE_UNAVAILABLE"
        assert error_of(api.increment("any-license"))["code"] == "SERVICE_UNAVAILABLE"
    container.dispose()


def _openapi_response_schema(doc: dict[str, Any], path: str, method: str, status: str) -> str:
    content = doc["paths"][path][method]["responses"][status]["content"]
    ref: str = next(iter(content.values()))["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    ("path", "method", "status", "model"),
    [
        ("/v1/licenses/{license_id}/actions/increment-usage", "post", "200", s.LicenseDocument),
        ("/v1/licenses/{license_id}/actions/increment-usage", "post", "422", s.ErrorDocument),
        ("/v1/licenses/{license_id}/usage", "get", "200", s.UsageList),
        ("/v1/licenses", "post", "201", s.LicenseDocument),
        ("/v1/licenses/actions/validate-key", "post", "200", s.ValidationDocument),
        (
            "/v1/accounts/{account}/licenses/{license_id}/actions/decrement-usage",
            "post",
            "200",
            s.LicenseDocument,
        ),
    ],
)
def test_openapi_describes_the_routes(
    api: Api, path: str, method: str, status: str, model: type[BaseModel]
) -> None:
    """The generated OpenAPI names the document model each route really returns."""
    doc = api.ok("GET", "/openapi.json", token=None)
    assert _openapi_response_schema(doc, path, method, status) == model.__name__


def test_responses_match_their_documented_models(api: Api) -> None:
    """Real responses validate against the response models the OpenAPI document is built from."""
    product = api.product()
    policy = api.policy(product, maxUses=1)
    lic = api.license(policy)
    s.ProductDocument.model_validate(api.ok("GET", f"/v1/products/{product}"))
    s.PolicyDocument.model_validate(api.ok("GET", f"/v1/policies/{policy}"))
    s.LicenseList.model_validate(api.ok("GET", "/v1/licenses"))
    s.LicenseDocument.model_validate(api.increment(lic["id"]).json())
    s.ErrorDocument.model_validate(api.increment(lic["id"]).json())
    s.UsageList.model_validate(api.ok("GET", f"/v1/licenses/{lic['id']}/usage"))
    s.TokenDocument.model_validate(api.ok("POST", f"/v1/licenses/{lic['id']}/tokens", 201))
    s.ValidationDocument.model_validate(
        api.ok("POST", f"/v1/licenses/{lic['id']}/actions/validate")
    )


def test_every_route_is_served_under_both_prefixes(api: Api) -> None:
    """Each /v1/... resource route also exists under /v1/accounts/{account}/..."""
    paths = set(api.ok("GET", "/openapi.json", token=None)["paths"])
    plain = {p for p in paths if p.startswith("/v1/") and not p.startswith("/v1/accounts/")}
    assert plain
    for path in plain:
        assert "/v1/accounts/{account}" + path[3:] in paths
