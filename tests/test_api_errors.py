"""Every bad input gets a JSON:API error with a stable code: never a 500, never a write."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bridge.bootstrap import build, build_app
from bridge.settings import load_settings
from tests.conftest import ADMIN_TOKEN, Api, error_of


@pytest.mark.parametrize(
    ("body", "detail", "pointer"),
    [
        (
            {"meta": {"increment": "5"}},
            "type mismatch (received string expected integer)",
            "/meta/increment",
        ),
        (
            {"meta": {"increment": 1.5}},
            "type mismatch (received float expected integer)",
            "/meta/increment",
        ),
        (
            {"meta": {"increment": True}},
            "type mismatch (received boolean expected integer)",
            "/meta/increment",
        ),
        (
            {"meta": {"increment": {}}},
            "type mismatch (received object expected integer)",
            "/meta/increment",
        ),
        ({"meta": "x"}, "type mismatch (received string expected object)", "/meta"),
    ],
)
def test_type_mismatch_is_400_with_pointer(
    api: Api, body: object, detail: str, pointer: str
) -> None:
    """A wrong JSON type is 400 TYPE_MISMATCH in Keygen's wording, pointing at the value."""
    lic = api.license(api.policy())
    response = api.request("POST", f"/v1/licenses/{lic['id']}/actions/increment-usage", json=body)
    assert response.status_code == 400
    assert error_of(response) == {
        "title": "Bad request",
        "detail": detail,
        "code": "TYPE_MISMATCH",
        "source": {"pointer": pointer},
    }


@pytest.mark.parametrize(
    ("action", "body", "pointer"),
    [
        ("increment-usage", {"meta": {"foo": 1}}, "/meta/foo"),
        ("increment-usage", {"meta": {"decrement": 1}}, "/meta/decrement"),
        ("decrement-usage", {"meta": {"increment": 1}}, "/meta/increment"),
        ("reset-usage", {"meta": {}}, "/meta"),
        ("increment-usage", {"data": {}}, "/data"),
    ],
)
def test_unpermitted_parameter_is_400(api: Api, action: str, body: object, pointer: str) -> None:
    """Unknown keys are 400 PARAMETER_UNPERMITTED ("unpermitted parameter")."""
    lic = api.license(api.policy())
    response = api.request("POST", f"/v1/licenses/{lic['id']}/actions/{action}", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["code"], error["detail"], error["source"]) == (
        "PARAMETER_UNPERMITTED",
        "unpermitted parameter",
        {"pointer": pointer},
    )


def test_malformed_json_is_400_json_invalid(api: Api) -> None:
    """A body that is not JSON is 400 JSON_INVALID and changes nothing."""
    lic = api.license(api.policy())
    response = api.request(
        "POST", f"/v1/licenses/{lic['id']}/actions/increment-usage", content=b'{"meta":'
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "JSON_INVALID"
    assert api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]["uses"] == 0


def test_wrong_content_type_is_415(api: Api) -> None:
    """A non-JSON media type is 415 CONTENT_TYPE_UNSUPPORTED; both JSON types are accepted."""
    lic = api.license(api.policy())
    path = f"/v1/licenses/{lic['id']}/actions/increment-usage"
    response = api.request(
        "POST",
        path,
        content=b"increment=1",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert error_of(response)["code"] == "CONTENT_TYPE_UNSUPPORTED"
    plain = api.request(
        "POST", path, json={"meta": {"increment": 2}}, headers={"Content-Type": "application/json"}
    )
    assert plain.json()["data"]["attributes"]["uses"] == 2


def test_oversized_body_is_413(api: Api) -> None:
    """Bodies over 1 MiB are 413 PAYLOAD_TOO_LARGE, declared or streamed."""
    lic = api.license(api.policy())
    path = f"/v1/licenses/{lic['id']}/actions/increment-usage"
    big = b'{"meta":{"increment":1},"pad":"' + b"x" * 1_100_000 + b'"}'
    response = api.request("POST", path, content=big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "PAYLOAD_TOO_LARGE"

    def chunks():  # no Content-Length: the guard counts what arrives
        yield big[:600_000]
        yield big[600_000:]

    streamed = api.request("POST", path, content=chunks())
    assert streamed.status_code == 413
    assert api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]["uses"] == 0


def test_unknown_route_and_method(api: Api) -> None:
    """Unknown routes are 404 ROUTE_NOT_FOUND, wrong methods 405 METHOD_NOT_ALLOWED."""
    assert error_of(api.request("GET", "/v1/nothing-here"))["code"] == "ROUTE_NOT_FOUND"
    assert error_of(api.request("PUT", "/v1/licenses"))["code"] == "METHOD_NOT_ALLOWED"


def test_unknown_license_is_404_not_found(api: Api) -> None:
    """An unknown id or key is Keygen's 404 with the requested id in the detail."""
    response = api.increment("no-such-license")
    assert response.status_code == 404
    assert error_of(response) == {
        "title": "Not found",
        "detail": "The requested license 'no-such-license' was not found",
        "code": "NOT_FOUND",
    }


def test_error_meta_carries_the_request_id(api: Api) -> None:
    """The error document's meta.id is the request id, echoed in X-Request-Id."""
    response = api.increment("missing", headers={"X-Request-Id": "req-123"})
    assert response.json()["meta"]["id"] == "req-123"
    assert response.headers["X-Request-Id"] == "req-123"


@pytest.mark.parametrize(
    ("attributes", "code", "detail", "pointer"),
    [
        (
            {"maxUses": 2147483648},
            "MAX_USES_INVALID",
            "must be less than or equal to 2147483647",
            "/data/attributes/maxUses",
        ),
        (
            {"maxUses": -1},
            "MAX_USES_INVALID",
            "must be greater than or equal to 0",
            "/data/attributes/maxUses",
        ),
        (
            {"overageStrategy": "SOMETIMES"},
            "OVERAGE_STRATEGY_NOT_ALLOWED",
            "unsupported overage strategy",
            "/data/attributes/overageStrategy",
        ),
        (
            {"expirationBasis": "FROM_NOW"},
            "EXPIRATION_BASIS_NOT_ALLOWED",
            "must be one of: FROM_CREATION, FROM_FIRST_USE",
            "/data/attributes/expirationBasis",
        ),
        (
            {"duration": 0},
            "DURATION_INVALID",
            "must be greater than or equal to 1",
            "/data/attributes/duration",
        ),
        ({"name": ""}, "NAME_MISSING", "can't be blank", "/data/attributes/name"),
    ],
)
def test_policy_validation_errors(
    api: Api, attributes: dict[str, object], code: str, detail: str, pointer: str
) -> None:
    """Invalid policy attributes are 422 with Keygen-style codes, and nothing is created."""
    product = api.product()
    body = {
        "data": {
            "type": "policies",
            "attributes": {"name": "P", **attributes},
            "relationships": {"product": {"data": {"type": "products", "id": product}}},
        }
    }
    response = api.request("POST", "/v1/policies", json=body)
    assert response.status_code == 422, response.text
    assert error_of(response) == {
        "title": "Unprocessable resource",
        "detail": detail,
        "code": code,
        "source": {"pointer": pointer},
    }
    assert api.ok("GET", "/v1/policies")["meta"]["pages"]["count"] == 0


def test_policy_max_uses_boundaries_accepted(api: Api) -> None:
    """2147483646 and 2147483647 are valid maxUses values (Keygen feature)."""
    for value in (2147483646, 2147483647):
        policy = api.policy(maxUses=value)
        assert api.ok("GET", f"/v1/policies/{policy}")["data"]["attributes"]["maxUses"] == value


def test_license_key_must_be_unique(api: Api) -> None:
    """A second license with the same key is 422 KEY_TAKEN."""
    policy = api.policy()
    api.license(policy, key="duplicate-key")
    body = {
        "data": {
            "type": "licenses",
            "attributes": {"key": "duplicate-key"},
            "relationships": {"policy": {"data": {"type": "policies", "id": policy}}},
        }
    }
    response = api.request("POST", "/v1/licenses", json=body)
    assert response.status_code == 422
    assert error_of(response)["code"] == "KEY_TAKEN"


def test_missing_relationship_and_body(api: Api) -> None:
    """A license without a policy relationship or without a body is 400 PARAMETER_MISSING."""
    missing = api.request("POST", "/v1/licenses", json={"data": {"type": "licenses"}})
    assert missing.status_code == 400
    assert error_of(missing)["code"] == "PARAMETER_MISSING"
    assert error_of(missing)["source"] == {"pointer": "/data/relationships"}
    empty = api.request("POST", "/v1/licenses")
    assert error_of(empty)["code"] == "PARAMETER_MISSING"


def test_uses_is_not_writable(api: Api) -> None:
    """uses can only change through the usage actions: PATCH uses is unpermitted."""
    lic = api.license(api.policy())
    body = {"data": {"type": "licenses", "attributes": {"uses": 5}}}
    response = api.request("PATCH", f"/v1/licenses/{lic['id']}", json=body)
    assert response.status_code == 400
    assert error_of(response)["source"] == {"pointer": "/data/attributes/uses"}


def test_bad_pagination_is_400(api: Api) -> None:
    """page[size] outside 1..100 is a 400 with the parameter named."""
    response = api.request("GET", "/v1/licenses?page[size]=1000")
    assert response.status_code == 400
    assert error_of(response)["source"] == {"parameter": "page[size]"}


def test_a_broken_database_is_503_not_500(api: Api) -> None:
    """Driver errors on every path (SQLAlchemy's and the hot path's) become 503."""
    lic = api.license(api.policy())
    token = api.license_token(lic["id"])
    engine = api.client.app.state.context.uows.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE tokens")  # the token lookup runs on the driver cursor
        conn.exec_driver_sql("DROP TABLE usage_ledger")  # the usage write path too
    token_response = api.increment(lic["id"], token=token)
    assert token_response.status_code == 503
    assert error_of(token_response)["code"] == "SERVICE_UNAVAILABLE"
    usage_response = api.increment(lic["id"])
    assert usage_response.status_code == 503
    # Clients (and proxies) are told when to try again, on every 503.
    assert token_response.headers["Retry-After"] == usage_response.headers["Retry-After"] == "1"
    assert api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]["uses"] == 0


def test_a_pool_with_no_free_connection_is_503(tmp_path: Path) -> None:
    """Every pooled connection busy past ``db_pool_timeout_s`` is a 503 with ``Retry-After``
    (SQLAlchemy's pool timeout is no driver error; it was a 500)."""
    url = f"sqlite:///{tmp_path / 'bridge.db'}"
    container = build(
        load_settings(database_url=url, admin_token=ADMIN_TOKEN, db_pool_timeout_s=0.1)
    )
    container.migrate()
    engine = container.uows.engine
    held = [engine.raw_connection() for _ in range(40)]  # the SQLite pool: 20 + 20 overflow
    with TestClient(build_app(container), raise_server_exceptions=False) as client:
        response = Api(client).increment("any-license")
    for conn in held:
        conn.close()
    container.dispose()
    assert response.status_code == 503
    assert error_of(response)["code"] == "SERVICE_UNAVAILABLE"
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    ("sqlite_says", "detail"),
    [
        ("database or disk is full", "the database's disk is full"),
        ("attempt to write a readonly database", "the database file is read-only"),
        ("unable to open database file", "the database file cannot be opened (or created)"),
    ],
)
def test_a_failing_disk_is_named_in_the_503(sqlite_says: str, detail: str) -> None:
    """SQLite's file-system failures become 503s that say what is wrong (the operator's fix)."""
    import sqlite3

    from bridge.domain.errors import ServiceUnavailable
    from bridge.store.errors import raise_translated

    with pytest.raises(ServiceUnavailable) as raised:
        raise_translated(sqlite3.OperationalError(sqlite_says), sqlite3)
    assert raised.value.detail == f"{detail}; retry with the same Idempotency-Key"
