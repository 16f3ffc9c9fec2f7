"""Golden documents: each resource's attributes and relationships, key by key, against Keygen's
serializers (keygen-sh/keygen-api ``app/serializers/*_serializer.rb`` at f70c4f4e, Community
Edition: the ``ee do`` blocks, ``permissions`` and ``environment``, are left out), with the
bridge's own additions named."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import Api
from tests.test_api_machines import activate

# attribute / relationship names in serializer order, as Keygen writes them (snake_case)
KEYGEN_LICENSE = """name key expiry status uses suspended scheme encrypted strict floating
protected version max_machines max_processes max_users max_cores max_memory max_disk max_uses
require_heartbeat require_check_in last_validated last_check_in next_check_in last_check_out
metadata created updated"""
KEYGEN_LICENSE_RELS = "account product policy group owner users machines tokens entitlements"
KEYGEN_MACHINE = """fingerprint cores memory disk ip hostname platform name require_heartbeat
heartbeat_status heartbeat_duration max_processes last_check_out last_heartbeat next_heartbeat
metadata created updated"""
KEYGEN_MACHINE_RELS = "account product group license owner components processes"
KEYGEN_POLICY = """name duration strict floating use_pool max_machines max_processes max_users
max_cores max_memory max_disk max_uses machine_uniqueness_strategy machine_matching_strategy
component_uniqueness_strategy component_matching_strategy expiration_strategy expiration_basis
renewal_basis transfer_strategy authentication_strategy machine_leasing_strategy
process_leasing_strategy overage_strategy scheme encrypted protected require_product_scope
require_policy_scope require_machine_scope require_fingerprint_scope require_components_scope
require_user_scope require_checksum_scope require_version_scope require_check_in
check_in_interval check_in_interval_count heartbeat_duration heartbeat_cull_strategy
heartbeat_resurrection_strategy heartbeat_basis require_heartbeat metadata created updated"""
KEYGEN_POLICY_RELS = "account product pool licenses entitlements"
KEYGEN_PRODUCT = "name code distribution_strategy url platforms metadata created updated"
KEYGEN_PRODUCT_RELS = """account policies licenses machines users tokens platforms channels
releases artifacts"""
# The bridge's usage periods (issue 4), after Keygen's attributes.
BRIDGE_LICENSE = "usage_period period_anchor period_start period_end"
BRIDGE_POLICY = "usage_period"


def camel(names: str) -> list[str]:
    return [re.sub(r"_([a-z])", lambda m: m.group(1).upper(), n) for n in names.split()]


def assert_shape(
    data: dict[str, Any], attributes: str, relationships: str, extra: str = ""
) -> None:
    assert list(data["attributes"]) == camel(attributes) + camel(extra)
    assert list(data["relationships"]) == camel(relationships)
    for name, rel in data["relationships"].items():
        assert rel["links"]["related"].startswith("/v1/accounts/"), name


def test_documents_have_keygens_attributes_and_relationships(api: Api) -> None:
    product = api.product()
    policy = api.policy(product, floating=True, strict=True, heartbeatDuration=120)
    lic = api.license(policy)
    machine = activate(api, lic["id"], "fp-golden", cores=2).json()["data"]

    assert_shape(lic, KEYGEN_LICENSE, KEYGEN_LICENSE_RELS, BRIDGE_LICENSE)
    assert_shape(machine, KEYGEN_MACHINE, KEYGEN_MACHINE_RELS)
    assert_shape(
        api.ok("GET", f"/v1/policies/{policy}")["data"],
        KEYGEN_POLICY,
        KEYGEN_POLICY_RELS,
        BRIDGE_POLICY,
    )
    assert_shape(
        api.ok("GET", f"/v1/products/{product}")["data"], KEYGEN_PRODUCT, KEYGEN_PRODUCT_RELS
    )

    # values the clients read, from the policy and the machine
    attrs = api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]
    assert (attrs["strict"], attrs["floating"], attrs["scheme"]) == (True, True, None)
    assert (attrs["requireHeartbeat"], attrs["lastValidated"]) == (False, None)
    m = machine["attributes"]
    assert (m["requireHeartbeat"], m["heartbeatStatus"], m["heartbeatDuration"]) == (
        False,
        "NOT_STARTED",
        120,
    )
    rels = machine["relationships"]
    assert rels["product"]["data"] == {"type": "products", "id": product}
    assert rels["license"]["data"] == {"type": "licenses", "id": lic["id"]}
    assert rels["owner"]["data"] is None
    assert "data" not in rels["components"]
    assert rels["license"]["links"]["related"].endswith(f"/machines/{machine['id']}/license")
    assert lic["relationships"]["machines"]["links"]["related"].endswith(
        f"/licenses/{lic['id']}/machines"
    )
    pinged = api.ok("POST", f"/v1/machines/{machine['id']}/actions/ping")["data"]["attributes"]
    assert (pinged["requireHeartbeat"], pinged["heartbeatStatus"]) == (True, "ALIVE")


def test_node_locked_license_shows_its_policy_terms(api: Api) -> None:
    attrs = api.license(api.policy(floating=False))["attributes"]
    assert (attrs["strict"], attrs["floating"], attrs["maxMachines"]) == (False, False, 1)


def test_keygen_attributes_the_bridge_does_not_implement_are_unpermitted(api: Api) -> None:
    """Shown in documents, but setting one is Keygen's ``unpermitted parameter``."""
    lic = api.license()["id"]
    machine = activate(api, lic, "fp-unpermitted").json()["data"]["id"]
    cases = [
        ("PATCH", f"/v1/machines/{machine}", "machines", {"ip": "10.0.0.1"}),
        ("PATCH", f"/v1/machines/{machine}", "machines", {"memory": 1024}),
        ("PATCH", f"/v1/licenses/{lic}", "licenses", {"maxProcesses": 2}),
        ("PATCH", f"/v1/licenses/{lic}", "licenses", {"scheme": "ED25519_SIGN"}),
        ("PATCH", f"/v1/policies/{api.policy()}", "policies", {"requireFingerprintScope": True}),
    ]
    for method, path, kind, attributes in cases:
        response = api.request(
            method, path, json={"data": {"type": kind, "attributes": attributes}}
        )
        assert response.status_code == 400, (path, attributes)
        error = response.json()["errors"][0]
        assert (error["code"], error["detail"]) == (
            "PARAMETER_UNPERMITTED",
            "unpermitted parameter",
        )
