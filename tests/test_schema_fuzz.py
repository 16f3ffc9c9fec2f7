"""Schemathesis against the served OpenAPI document: no 5xx, and every answer is one the document
declares (status, media type and body), with the admin token and with a product token.

The seed and the example count are fixed here, so a failure reproduces with the same command.
The ``/v1/accounts/{account}/...`` twins of each route share its handler and are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis import GenerationMode, checks

from bridge.testing import FakeClock
from tests.hostile import api_on

SEED = 20261130
# Per operation, positive and negative cases together: the admin token reaches every handler;
# the product token's run fuzzes the same operations again under narrower permissions, fewer.
ADMIN_EXAMPLES = 30
PRODUCT_EXAMPLES = 15
CHECKS: list[Callable[..., Any]] = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def _fuzz(schema: Any, headers: dict[str, str], ids: dict[str, str], examples: int) -> list[str]:
    """Valid requests (path ids pinned to real resources, except for DELETE, so the bodies
    reach the use cases) and invalid ones, per operation."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/v1/accounts/"):
            continue
        names = {p.name for p in operation.path_parameters}
        pinned = {n: v for n, v in ids.items() if n in names and operation.method != "delete"}
        strategy = operation.as_strategy(path_parameters=pinned) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @seed(SEED)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # every operation is tried; all failures are reported
            failures.append(f"{operation.label}: {exc}")
    return failures


def test_the_fuzzer_finds_no_server_error_and_no_undocumented_answer(
    sqlite_url: str, clock: FakeClock
) -> None:
    """Every operation, fuzzed from the document with each token, answers as documented."""
    with api_on(sqlite_url, clock) as api:
        product = api.product()
        policy = api.policy(product, floating=True, maxMachines=100)
        license = api.license(policy)["id"]
        body = {
            "data": {
                "type": "machines",
                "attributes": {"fingerprint": "fp"},
                "relationships": {"license": {"data": {"type": "licenses", "id": license}}},
            }
        }
        machine = api.ok("POST", "/v1/machines", 201, json=body)["data"]["id"]
        ids = {
            "product_id": product,
            "policy_id": policy,
            "license_id": license,
            "machine_id": machine,
        }
        product_token = api.product_token(product)
        schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
        failures = _fuzz(schema, api.auth(), ids, ADMIN_EXAMPLES)
        failures += _fuzz(schema, api.auth(product_token), ids, PRODUCT_EXAMPLES)
    assert not failures, "\n\n".join(failures)
