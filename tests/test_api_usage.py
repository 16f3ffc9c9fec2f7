"""Keygen's usage semantics through the HTTP API (reference: shared/reference/keygen.md 1-2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.testing import FakeClock
from tests.conftest import Api, error_of


def uses(response: object) -> int:
    return int(response.json()["data"]["attributes"]["uses"])  # type: ignore[attr-defined]


def test_increment_defaults_to_one_and_accepts_bulk_amounts(api: Api) -> None:
    """An empty body adds 1; meta.increment adds that amount; the license document comes back."""
    lic = api.license(api.policy(maxUses=10))
    first = api.increment(lic["id"])
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/vnd.api+json"
    assert uses(first) == 1
    assert uses(api.increment(lic["id"], 4)) == 5
    assert first.json()["data"]["attributes"]["maxUses"] == 10


def test_null_increment_counts_as_absent(api: Api) -> None:
    """meta.increment null is treated like no parameter: +1 (Keygen's ignore_nil_optionals)."""
    lic = api.license(api.policy())
    response = api.request(
        "POST",
        f"/v1/licenses/{lic['id']}/actions/increment-usage",
        json={"meta": {"increment": None}},
    )
    assert uses(response) == 1


def test_increment_by_key_and_under_the_account_path(api: Api) -> None:
    """The license may be named by key, and routes are served under /v1/accounts/{account}."""
    lic = api.license(api.policy(), key="metered-key-1")
    response = api.request(
        "POST", "/v1/accounts/default/licenses/metered-key-1/actions/increment-usage"
    )
    assert uses(response) == 1
    other = api.request("POST", "/v1/accounts/other/licenses/metered-key-1/actions/increment-usage")
    assert other.status_code == 404
    assert error_of(other)["code"] == "NOT_FOUND"
    assert uses(api.request("GET", f"/v1/licenses/{lic['id']}")) == 1


def test_limit_exceeded_is_keygens_error_and_writes_nothing(api: Api) -> None:
    """Past maxUses: 422 USES_LIMIT_EXCEEDED with Keygen's detail and pointer; no ledger row."""
    lic = api.license(api.policy(maxUses=5))
    assert uses(api.increment(lic["id"], 5)) == 5
    response = api.increment(lic["id"])
    assert response.status_code == 422
    assert error_of(response) == {
        "title": "Unprocessable resource",
        "detail": "usage exceeds maximum allowed for license (5)",
        "code": "USES_LIMIT_EXCEEDED",
        "source": {"pointer": "/data/attributes/uses"},
    }
    history = api.ok("GET", f"/v1/licenses/{lic['id']}/usage")
    assert history["meta"]["pages"]["count"] == 1


def test_max_uses_zero_allows_no_use_and_null_is_unlimited(api: Api) -> None:
    """maxUses 0 rejects the first increment; maxUses null never limits."""
    none = api.license(api.policy(maxUses=0))
    assert error_of(api.increment(none["id"]))["detail"] == (
        "usage exceeds maximum allowed for license (0)"
    )
    unlimited = api.license(api.policy(maxUses=None))
    assert uses(api.increment(unlimited["id"], 2_000_000_000)) == 2_000_000_000


def test_decrement_below_zero_is_uses_invalid(api: Api) -> None:
    """A decrement past 0 is 422 USES_INVALID; negative increments work like decrements."""
    lic = api.license(api.policy(maxUses=10))
    api.increment(lic["id"], 3)
    response = api.decrement(lic["id"], 4)
    assert response.status_code == 422
    assert error_of(response)["code"] == "USES_INVALID"
    assert error_of(response)["detail"] == "must be greater than or equal to 0"
    assert uses(api.increment(lic["id"], -3)) == 0
    assert uses(api.increment(lic["id"], 0)) == 0


def test_negative_decrement_raises_uses_and_is_limited(api: Api) -> None:
    """decrement -3 adds 3 and is checked against maxUses (Keygen has no sign check)."""
    lic = api.license(api.policy(maxUses=4))
    assert uses(api.decrement(lic["id"], -3)) == 3
    assert error_of(api.decrement(lic["id"], -3))["code"] == "USES_LIMIT_EXCEEDED"


def test_integer_too_large_without_a_limit(api: Api) -> None:
    """With no maxUses, a count past 2147483647 is 400 with Keygen's pointer per action."""
    lic = api.license(api.policy())
    response = api.increment(lic["id"], 46116860184273879031)
    assert response.status_code == 400
    assert error_of(response) == {
        "title": "Bad request",
        "detail": "integer is too large",
        "code": "INTEGER_TOO_LARGE",
        "source": {"pointer": "/meta/increment"},
    }
    api.increment(lic["id"], 2_147_483_647)
    assert error_of(api.decrement(lic["id"], -1))["source"] == {"pointer": "/meta/decrement"}


def test_overflow_with_a_limit_reports_the_limit(api: Api) -> None:
    """When a maxUses exists, an overflow is reported as USES_LIMIT_EXCEEDED, not 400."""
    lic = api.license(api.policy(maxUses=2_147_483_647))
    response = api.increment(lic["id"], 46116860184273879031)
    assert response.status_code == 422
    assert error_of(response)["code"] == "USES_LIMIT_EXCEEDED"


def test_over_limit_license_only_accepts_changes_that_land_within(api: Api) -> None:
    """Limit checked only when uses change: 12 with max 10 rejects -1 and +0 passes."""
    policy = api.policy(maxUses=20)
    lic = api.license(policy)
    api.increment(lic["id"], 12)
    api.ok(
        "PATCH",
        f"/v1/policies/{policy}",
        json={"data": {"type": "policies", "attributes": {"maxUses": 10}}},
    )
    assert uses(api.increment(lic["id"], 0)) == 12
    assert error_of(api.decrement(lic["id"], 1))["code"] == "USES_LIMIT_EXCEEDED"
    assert uses(api.decrement(lic["id"], 2)) == 10


def test_license_override_and_keygens_zero_quirk(api: Api) -> None:
    """A license maxUses override wins; null falls back to the policy; 0 is ignored (Keygen)."""
    policy = api.policy(maxUses=100)
    lic = api.license(policy, maxUses=500)
    assert lic["attributes"]["maxUses"] == 500
    patch = {"data": {"type": "licenses", "attributes": {"maxUses": None}}}
    assert (
        api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=patch)["data"]["attributes"]["maxUses"]
        == 100
    )
    patch = {"data": {"type": "licenses", "attributes": {"maxUses": 0}}}
    assert (
        api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=patch)["data"]["attributes"]["maxUses"]
        == 100
    )
    patch = {"data": {"type": "licenses", "attributes": {"maxUses": 1}}}
    api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=patch)
    api.increment(lic["id"])
    assert (
        error_of(api.increment(lic["id"]))["detail"]
        == "usage exceeds maximum allowed for license (1)"
    )


def test_reset_sets_zero_and_is_recorded(api: Api) -> None:
    """reset-usage sets uses to 0 and writes a ledger entry with the negative delta."""
    lic = api.license(api.policy(maxUses=10))
    api.increment(lic["id"], 7)
    response = api.reset(lic["id"])
    assert uses(response) == 0
    entries = api.ok("GET", f"/v1/licenses/{lic['id']}/usage")["data"]
    assert [e["attributes"]["kind"] for e in entries] == ["reset", "increment"]
    assert entries[0]["attributes"]["delta"] == -7
    assert entries[0]["attributes"]["usesBefore"] == 7
    assert entries[0]["id"] == response.headers["Usage-Entry-Id"]


def test_usage_history_is_newest_first_and_paginated(api: Api) -> None:
    """GET /licenses/{id}/usage pages the ledger newest first with JSON:API links."""
    lic = api.license(api.policy())
    for n in range(1, 6):
        api.increment(lic["id"], n)
    page = api.ok("GET", f"/v1/licenses/{lic['id']}/usage?page[size]=2&page[number]=2")
    assert [e["attributes"]["delta"] for e in page["data"]] == [3, 2]
    assert page["meta"]["pages"] == {"count": 5, "pages": 3}
    assert page["links"]["next"].endswith("page%5Bnumber%5D=3&page%5Bsize%5D=2")
    first = api.ok("GET", f"/v1/licenses/{lic['id']}/usage?page[size]=2")["data"][0]
    assert first["attributes"]["usesAfter"] == 15
    assert first["attributes"]["actor"] == "admin:admin"


def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    """The same Idempotency-Key returns the first answer and changes nothing."""
    lic = api.license(api.policy(maxUses=10))
    headers = {"Idempotency-Key": "retry-1"}
    first = api.increment(lic["id"], 2, headers=headers)
    api.increment(lic["id"], 1)
    again = api.increment(lic["id"], 2, headers=headers)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Usage-Entry-Id"] == first.headers["Usage-Entry-Id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert uses(api.request("GET", f"/v1/licenses/{lic['id']}")) == 3


def test_idempotency_key_with_another_request_is_rejected(api: Api) -> None:
    """Reusing a key for a different amount, action or license is 422 IDEMPOTENCY_KEY_REUSED."""
    policy = api.policy(maxUses=10)
    lic, other = api.license(policy), api.license(policy)
    headers = {"Idempotency-Key": "k"}
    api.increment(lic["id"], 2, headers=headers)
    for response in (
        api.increment(lic["id"], 3, headers=headers),
        api.decrement(lic["id"], 2, headers=headers),
        api.increment(other["id"], 2, headers=headers),
    ):
        assert response.status_code == 422
        assert error_of(response)["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert uses(api.request("GET", f"/v1/licenses/{lic['id']}")) == 2
    assert uses(api.request("GET", f"/v1/licenses/{other['id']}")) == 0


def test_idempotency_keys_are_scoped_per_bearer(api: Api) -> None:
    """Two bearers may use the same key value without seeing each other's answers."""
    product = api.product()
    lic = api.license(api.policy(product, maxUses=10))
    token = api.product_token(product)
    api.increment(lic["id"], 1, headers={"Idempotency-Key": "same"})
    response = api.increment(lic["id"], 1, token=token, headers={"Idempotency-Key": "same"})
    assert "Idempotent-Replayed" not in response.headers
    assert uses(response) == 2


def test_rejected_request_with_a_key_can_be_retried(api: Api) -> None:
    """A rejected change stores nothing, so a retry with the same key is evaluated afresh."""
    lic = api.license(api.policy(maxUses=1))
    api.increment(lic["id"])
    headers = {"Idempotency-Key": "after-reset"}
    assert api.increment(lic["id"], headers=headers).status_code == 422
    api.reset(lic["id"])
    assert uses(api.increment(lic["id"], headers=headers)) == 1


def test_invalid_idempotency_key_is_rejected(api: Api) -> None:
    """An over-long key is 400 IDEMPOTENCY_KEY_INVALID."""
    lic = api.license(api.policy())
    response = api.increment(lic["id"], headers={"Idempotency-Key": "x" * 256})
    assert response.status_code == 400
    assert error_of(response)["code"] == "IDEMPOTENCY_KEY_INVALID"


def test_first_use_sets_expiry_once(api: Api, clock: FakeClock) -> None:
    """FROM_FIRST_USE: the first increment sets expiry = now + duration; later ones keep it."""
    policy = api.policy(expirationBasis="FROM_FIRST_USE", duration=86400)
    lic = api.license(policy)
    assert lic["attributes"]["expiry"] is None
    first = api.increment(lic["id"]).json()["data"]["attributes"]["expiry"]
    assert datetime.fromisoformat(first) == clock.now() + timedelta(days=1)
    clock.advance(hours=1)
    second = api.increment(lic["id"]).json()["data"]["attributes"]["expiry"]
    assert second == first
    stored = api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]["expiry"]
    assert stored == first


def test_from_creation_expiry_and_no_change_on_use(api: Api, clock: FakeClock) -> None:
    """FROM_CREATION sets expiry at create; an increment never moves an existing expiry."""
    lic = api.license(api.policy(duration=3600))
    expiry = lic["attributes"]["expiry"]
    assert datetime.fromisoformat(expiry) == clock.now() + timedelta(hours=1)
    assert api.increment(lic["id"]).json()["data"]["attributes"]["expiry"] == expiry


@pytest.mark.parametrize(
    ("attributes", "status", "code"),
    [
        ({"suspended": True}, "SUSPENDED", "SUSPENDED"),
        ({"expiry": datetime(2020, 1, 1, tzinfo=UTC).isoformat()}, "EXPIRED", "EXPIRED"),
    ],
)
def test_expired_or_suspended_license_still_counts_usage(
    api: Api, attributes: dict[str, object], status: str, code: str
) -> None:
    """Usage never depends on validity: an expired or suspended license can be incremented."""
    lic = api.license(api.policy(maxUses=5), **attributes)
    response = api.increment(lic["id"])
    assert uses(response) == 1
    assert response.json()["data"]["attributes"]["status"] == status
    validation = api.ok("POST", f"/v1/licenses/{lic['id']}/actions/validate")
    assert validation["meta"]["valid"] is False
    assert validation["meta"]["code"] == code


def test_validation_ignores_usage(api: Api) -> None:
    """A license at its usage limit still validates as VALID."""
    lic = api.license(api.policy(maxUses=1))
    api.increment(lic["id"])
    meta = api.ok("POST", f"/v1/licenses/{lic['id']}/actions/validate")["meta"]
    assert (meta["valid"], meta["code"], meta["detail"]) == (True, "VALID", "is valid")


def test_concurrent_requests_get_exact_answers(api: Api) -> None:
    """Twenty concurrent increments on a license with maxUses 10 over HTTP: exactly ten succeed,
    each with a distinct count, and the ledger agrees."""
    from concurrent.futures import ThreadPoolExecutor

    lic = api.license(api.policy(maxUses=10))
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: api.increment(lic["id"]), range(20)))
    ok = [r for r in responses if r.status_code == 200]
    assert len(ok) == 10
    assert sorted(uses(r) for r in ok) == list(range(1, 11))
    assert all(error_of(r)["code"] == "USES_LIMIT_EXCEEDED" for r in responses if r not in ok)
    history = api.ok("GET", f"/v1/licenses/{lic['id']}/usage?page[size]=100")
    assert history["meta"]["pages"]["count"] == 10
