"""Hand-made hostile input: each answer is a documented 4xx code, never a 500, never a write."""

from __future__ import annotations

import json
from typing import Any

from bridge.testing import FakeClock
from tests.conftest import Api, error_of
from tests.hostile import api_on, dump, engine_of

DEEP: dict[str, Any] = {}
_cursor = DEEP
for _ in range(9):
    _cursor["a"] = {}
    _cursor = _cursor["a"]


def _license(attributes: str) -> str:
    return (
        '{"data":{"type":"licenses","attributes":' + attributes + ","
        '"relationships":{"policy":{"data":{"type":"policies","id":"{policy}"}}}}}'
    )


def _patch(kind: str, attributes: str) -> str:
    return '{"data":{"type":"' + kind + '","attributes":' + attributes + "}}"


def _machine(attributes: str) -> str:
    return (
        '{"data":{"type":"machines","attributes":' + attributes + ","
        '"relationships":{"license":{"data":{"type":"licenses","id":"{license}"}}}}}'
    )


# (method, path, body, status, code, source); {product}, {policy}, {license}, {machine} and
# {key} are filled in. Bodies are raw text (or bytes) so that what JSON libraries refuse to
# write (lone surrogates, NaN, invalid UTF-8) can be sent.
CASES: list[tuple[str, str, str | bytes | None, int, str, dict[str, str] | None]] = [
    # numbers without an upper bound
    (
        "GET",
        "/v1/licenses?page[number]=0",
        None,
        400,
        "PAGE_INVALID",
        {"parameter": "page[number]"},
    ),
    (
        "GET",
        "/v1/licenses?page[number]=abc",
        None,
        400,
        "PAGE_INVALID",
        {"parameter": "page[number]"},
    ),
    (
        "GET",
        "/v1/licenses?page[number]=99999999999999999999",
        None,
        400,
        "PAGE_INVALID",
        {"parameter": "page[number]"},
    ),
    (
        "GET",
        "/v1/licenses?page[number]=2147483648",
        None,
        400,
        "PAGE_INVALID",
        {"parameter": "page[number]"},
    ),
    ("GET", "/v1/machines?page[size]=0", None, 400, "PAGE_INVALID", {"parameter": "page[size]"}),
    (
        "GET",
        "/v1/licenses/{license}/usage?page[size]=101",
        None,
        400,
        "PAGE_INVALID",
        {"parameter": "page[size]"},
    ),
    (
        "POST",
        "/v1/outbox/actions/retry",
        '{"meta":{"ids":[1180591620717411303424]}}',
        400,
        "ID_INVALID",
        {"pointer": "/meta/ids/0"},
    ),
    (
        "POST",
        "/v1/outbox/actions/retry",
        '{"meta":{"ids":[1,-5]}}',
        400,
        "ID_INVALID",
        {"pointer": "/meta/ids/1"},
    ),
    ("GET", "/v1/reconciliations?period=9999-12", None, 400, "RECONCILE_WINDOW_INVALID", None),
    ("GET", "/v1/reconciliations?period=0001-01", None, 400, "RECONCILE_WINDOW_INVALID", None),
    (
        "GET",
        "/v1/reconciliations?from=0001-01-01T00:00:00%2B01:00&to=2020-01-01",
        None,
        400,
        "RECONCILE_WINDOW_INVALID",
        None,
    ),
    (
        "GET",
        "/v1/reconciliations?from=2020-01-01&to=9999-12-31T23:59:59-10:00",
        None,
        400,
        "RECONCILE_WINDOW_INVALID",
        None,
    ),
    (
        "POST",
        "/v1/licenses/{license}/actions/increment-usage",
        '{"meta":{"increment":1180591620717411303424}}',
        400,
        "INTEGER_TOO_LARGE",
        {"pointer": "/meta/increment"},
    ),
    (
        "POST",
        "/v1/machines",
        _machine('{"fingerprint":"f","cores":1180591620717411303424}'),
        422,
        "CORES_INVALID",
        {"pointer": "/data/attributes/cores"},
    ),
    # strings the store cannot encode
    (
        "PATCH",
        "/v1/licenses/{license}",
        _patch("licenses", '{"name":"\\ud800"}'),
        400,
        "STRING_INVALID",
        {"pointer": "/data/attributes/name"},
    ),
    (
        "POST",
        "/v1/licenses",
        _license('{"key":"abcdef\\udfff"}'),
        400,
        "STRING_INVALID",
        {"pointer": "/data/attributes/key"},
    ),
    (
        "POST",
        "/v1/licenses",
        _license('{"metadata":{"a\\udc00":1}}'),
        400,
        "STRING_INVALID",
        {"pointer": "/data/attributes/metadata/a\\udc00"},
    ),
    (
        "POST",
        "/v1/licenses",
        _license('{"metadata":{"a":["x","\\ud83d"]}}'),
        400,
        "STRING_INVALID",
        {"pointer": "/data/attributes/metadata/a/1"},
    ),
    (
        "PATCH",
        "/v1/products/{product}",
        _patch("products", '{"name":"a\\u0000b"}'),
        400,
        "STRING_INVALID",
        {"pointer": "/data/attributes/name"},
    ),
    (
        "POST",
        "/v1/machines",
        _machine('{"fingerprint":"f\\ud800"}'),
        400,
        "STRING_INVALID",
        {"pointer": "/data/attributes/fingerprint"},
    ),
    ("GET", "/v1/licenses/a%00b", None, 400, "STRING_INVALID", None),
    ("GET", "/v1/licenses?policy=a%00b", None, 400, "STRING_INVALID", {"parameter": "policy"}),
    # values the domain cannot represent
    (
        "POST",
        "/v1/licenses",
        _license('{"usagePeriod":{"interval":"month","timezone":"' + "x" * 5000 + '"}}'),
        422,
        "USAGE_PERIOD_INVALID",
        {"pointer": "/data/attributes/usagePeriod"},
    ),
    (
        "POST",
        "/v1/licenses",
        _license('{"usagePeriod":{"interval":"month","timezone":"../../../etc/passwd"}}'),
        422,
        "USAGE_PERIOD_INVALID",
        {"pointer": "/data/attributes/usagePeriod"},
    ),
    (
        "PATCH",
        "/v1/policies/{policy}",
        _patch("policies", '{"usagePeriod":{"interval":"day","timezone":"zone.tab"}}'),
        422,
        "USAGE_PERIOD_INVALID",
        {"pointer": "/data/attributes/usagePeriod"},
    ),
    (
        "POST",
        "/v1/licenses",
        _license('{"expiry":"9999-12-31T23:59:59-10:00"}'),
        422,
        "EXPIRY_INVALID",
        {"pointer": "/data/attributes/expiry"},
    ),
    (
        "PATCH",
        "/v1/licenses/{license}",
        _patch("licenses", '{"expiry":"0001-01-01T00:00:00+10:00"}'),
        422,
        "EXPIRY_INVALID",
        {"pointer": "/data/attributes/expiry"},
    ),
    (
        "POST",
        "/v1/licenses",
        _license('{"periodAnchor":"9999-12-31T00:00:00+00:00"}'),
        422,
        "PERIOD_ANCHOR_INVALID",
        {"pointer": "/data/attributes/periodAnchor"},
    ),
    # structures the renderer cannot render
    (
        "POST",
        "/v1/licenses",
        _license(json.dumps({"metadata": DEEP})),
        422,
        "METADATA_INVALID",
        {"pointer": "/data/attributes/metadata"},
    ),
    (
        "PATCH",
        "/v1/machines/{machine}",
        _patch("machines", json.dumps({"metadata": {"a": "x" * 20_000}})),
        422,
        "METADATA_INVALID",
        {"pointer": "/data/attributes/metadata"},
    ),
    (
        "POST",
        "/v1/products",
        '{"data":{"type":"products","attributes":{"name":"p","metadata":'
        + "[" * 500
        + "]" * 500
        + "}}}",
        400,
        "JSON_INVALID",
        None,
    ),
    ("POST", "/v1/licenses", _license('{"metadata":{"a":NaN}}'), 400, "JSON_INVALID", None),
    ("POST", "/v1/licenses", _license('{"metadata":{"a":-Infinity}}'), 400, "JSON_INVALID", None),
    ("POST", "/v1/licenses", _license('{"metadata":{"a":1e999}}'), 400, "JSON_INVALID", None),
    (
        "POST",
        "/v1/licenses",
        _license('{"metadata":{"a":' + "9" * 5000 + "}}"),
        400,
        "JSON_INVALID",
        None,
    ),
    # a body that is not UTF-8
    (
        "POST",
        "/v1/products",
        b'{"data":{"type":"products","attributes":{"name":"\xff\xfe"}}}',
        400,
        "JSON_INVALID",
        None,
    ),
    (
        "POST",
        "/v1/licenses/actions/validate-key",
        b'{"meta":{"key":"\xc3\x28"}}',
        400,
        "JSON_INVALID",
        None,
    ),
    ("POST", "/v1/licenses", "[" * 100_000, 400, "JSON_INVALID", None),
]

UNAUTHENTICATED = [
    (
        "POST",
        "/v1/licenses/actions/validate-key",
        '{"meta":{"key":"\\ud800"}}',
        400,
        "STRING_INVALID",
        {"pointer": "/meta/key"},
    ),
    (
        "POST",
        "/v1/licenses/actions/validate-key",
        '{"meta":{"key":"{key}\\u0000"}}',
        400,
        "STRING_INVALID",
        {"pointer": "/meta/key"},
    ),
]


def _world(api: Api) -> dict[str, str]:
    product = api.product()
    policy = api.policy(product, floating=True, maxMachines=5)
    lic = api.license(policy)
    body = {
        "data": {
            "type": "machines",
            "attributes": {"fingerprint": "fp-1"},
            "relationships": {"license": {"data": {"type": "licenses", "id": lic["id"]}}},
        }
    }
    machine = api.ok("POST", "/v1/machines", 201, json=body)["data"]["id"]
    return {
        "product": product,
        "policy": policy,
        "license": lic["id"],
        "key": lic["attributes"]["key"],
        "machine": machine,
    }


def _fill(template: str, world: dict[str, str]) -> str:
    for name, value in world.items():
        template = template.replace("{" + name + "}", value)
    return template


def test_hostile_inputs_get_documented_codes_and_write_nothing(
    db_url: str, clock: FakeClock
) -> None:
    """Each hand-made bad input of issue 9 answers its 4xx code and source, on SQLite and
    PostgreSQL, and leaves the store byte-for-byte unchanged."""
    with api_on(db_url, clock) as api:
        world = _world(api)
        engine = engine_of(api)
        wrong = []
        for method, path, body, status, code, source in CASES + UNAUTHENTICATED:
            token = None if (method, path, body, status, code, source) in UNAUTHENTICATED else "x"
            content = body.encode() if isinstance(body, str) else body
            if isinstance(body, str):
                content = _fill(body, world).encode("utf-8", "surrogatepass")
            before = dump(engine)
            response = api.request(
                method,
                _fill(path, world),
                content=content,
                token=None if token is None else api.auth()["Authorization"].split()[1],
            )
            got = (response.status_code, error_of(response) if response.status_code >= 400 else {})
            if got[0] != status or got[1].get("code") != code or got[1].get("source") != source:
                wrong.append((method, path, str(body)[:60], got))
            elif dump(engine) != before:
                wrong.append((method, path, str(body)[:60], "store changed"))
        assert not wrong, "\n".join(map(str, wrong))


def test_null_on_attributes_without_a_null_state_is_taken_as_absent(
    db_url: str, clock: FakeClock
) -> None:
    """``key``, ``protected`` and ``suspended`` sent as null are not sent (a generated key, the
    policy's protection, not suspended; no change on update), never a NOT NULL failure."""
    with api_on(db_url, clock) as api:
        policy = api.policy(protected=True)
        lic = api.license(policy, key=None, protected=None, suspended=None)
        attributes = lic["attributes"]
        assert len(attributes["key"]) >= 6
        assert attributes["protected"] is True
        assert attributes["suspended"] is False
        nulls = {"key": None, "protected": None, "suspended": None, "name": None}
        body = {"data": {"type": "licenses", "attributes": nulls}}
        updated = api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=body)["data"]["attributes"]
        assert (updated["key"], updated["protected"], updated["suspended"]) == (
            attributes["key"],
            True,
            False,
        )
        product_body = {"data": {"type": "products", "attributes": {"name": None}}}
        response = api.request("POST", "/v1/products", json=product_body)
        assert (response.status_code, error_of(response)["code"]) == (422, "NAME_MISSING")
        machine = {
            "data": {
                "type": "machines",
                "attributes": {"fingerprint": None},
                "relationships": {"license": {"data": {"type": "licenses", "id": lic["id"]}}},
            }
        }
        response = api.request("POST", "/v1/machines", json=machine)
        assert error_of(response)["source"] == {"pointer": "/data/attributes/fingerprint"}


def test_metadata_at_the_limits_is_accepted_and_rendered(api: Api) -> None:
    """Metadata 8 levels deep and just under 16384 bytes is stored and answered as sent."""
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(7):
        cursor["a"] = {}
        cursor = cursor["a"]
    big = {"x": "é" * 8000}  # 16000 bytes of UTF-8 plus the key
    for metadata in (deep, big):
        lic = api.license(api.policy(), metadata=metadata)
        assert lic["attributes"]["metadata"] == metadata
