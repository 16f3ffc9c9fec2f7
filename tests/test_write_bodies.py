"""Property: any JSON value in any attribute of any write route answers 2xx, or 4xx with a
stable code, and a 4xx leaves the store byte-for-byte unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bridge.domain.errors import all_error_classes
from bridge.testing import FakeClock
from tests.conftest import Api
from tests.hostile import api_on, dump, engine_of

# Over all routes: the body parsers are the same on both databases; PostgreSQL (each example
# dumps its whole store, twice on a 4xx) runs fewer, with a seed of its own so they differ.
EXAMPLES = {"sqlite": 600, "postgresql": 200}
SEEDS = {"sqlite": 20261130, "postgresql": 20261201}
CODES = {cls.code for cls in all_error_classes()} - {"INTERNAL_ERROR"}

_LICENSE = [
    "name",
    "key",
    "expiry",
    "maxUses",
    "maxMachines",
    "maxCores",
    "protected",
    "suspended",
    "usagePeriod",
    "periodAnchor",
    "metadata",
]
_POLICY = [
    "name",
    "maxUses",
    "maxMachines",
    "maxCores",
    "floating",
    "strict",
    "overageStrategy",
    "protected",
    "duration",
    "heartbeatDuration",
    "expirationBasis",
    "usagePeriod",
    "requireCheckIn",
    "checkInInterval",
    "checkInIntervalCount",
    "metadata",
]
_MACHINE = ["fingerprint", "cores", "name", "platform", "hostname", "metadata"]

# (method, path, envelope, type, attributes, relationship): the envelope is "data" (a resource
# document) or "meta" (an action's parameters); None for a body-less action.
ROUTES: list[tuple[str, str, str | None, str, list[str], tuple[str, str] | None]] = [
    ("POST", "/v1/products", "data", "products", ["name", "url", "metadata"], None),
    ("PATCH", "/v1/products/{product}", "data", "products", ["name", "url", "metadata"], None),
    ("POST", "/v1/products/{product}/tokens", None, "", [], None),
    ("POST", "/v1/policies", "data", "policies", _POLICY, ("product", "{product}")),
    ("PATCH", "/v1/policies/{policy}", "data", "policies", _POLICY, None),
    ("POST", "/v1/licenses", "data", "licenses", _LICENSE, ("policy", "{policy}")),
    ("PATCH", "/v1/licenses/{license}", "data", "licenses", _LICENSE, None),
    ("POST", "/v1/licenses/{license}/tokens", None, "", [], None),
    ("POST", "/v1/licenses/{license}/actions/increment-usage", "meta", "", ["increment"], None),
    ("POST", "/v1/licenses/{license}/actions/decrement-usage", "meta", "", ["decrement"], None),
    ("POST", "/v1/licenses/{license}/actions/reset-usage", "meta", "", [], None),
    ("POST", "/v1/licenses/{license}/actions/suspend", "meta", "", [], None),
    ("POST", "/v1/licenses/{license}/actions/reinstate", "meta", "", [], None),
    ("POST", "/v1/licenses/{license}/actions/validate", "meta", "", ["nonce", "scope"], None),
    ("POST", "/v1/licenses/{license}/actions/check-in", "meta", "", ["usage"], None),
    ("POST", "/v1/licenses/actions/validate-key", "meta", "", ["key", "nonce", "scope"], None),
    ("POST", "/v1/machines", "data", "machines", _MACHINE, ("license", "{license}")),
    ("PATCH", "/v1/machines/{machine}", "data", "machines", _MACHINE[1:], None),
    ("POST", "/v1/machines/{machine}/actions/ping", "meta", "", [], None),
    ("POST", "/v1/outbox/actions/retry", "meta", "", ["sink", "ids"], None),
]

_TRICKY_TEXT = [
    "",
    " ",
    "\ud800",
    "a\udfffb",
    "a\x00b",
    "x" * 300,
    "UTC",
    "Europe/Paris",
    "../../etc/passwd",
    "zone.tab",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00",
    "9999-12-31T23:59:59-10:00",
    "0001-01-01T00:00:00+10:00",
    "month",
    "ANNIVERSARY",
    "FROM_FIRST_USE",
    "ALWAYS_ALLOW_OVERAGE",
    "lago",
]
_TRICKY_INTS = [0, 1, -1, 60, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1, 10**30]

texts = st.text(max_size=12) | st.sampled_from(_TRICKY_TEXT)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(_TRICKY_INTS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
usage_periods = st.fixed_dictionaries(
    {"interval": st.sampled_from(["day", "month", "year", "x"])},
    optional={
        "count": st.integers(-2, 1002),
        "anchor": st.sampled_from(["CALENDAR", "ANNIVERSARY", "x"]),
        "timezone": texts,
    },
)

# Offline usage records of a check-in: the documented shape with any values, and near misses.
usage_records = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.uuids().map(str) | texts,
            "increment": st.sampled_from(_TRICKY_INTS) | st.integers(-3, 3),
            "occurredAt": texts | st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        },
        optional={"extra": scalars},
    ),
    max_size=4,
)


def _world(api: Api) -> dict[str, str]:
    product = api.product()
    policy = api.policy(
        product,
        floating=True,
        maxMachines=50,
        maxCores=500,
        requireCheckIn=True,
        checkInInterval="year",
        checkInIntervalCount=1,
    )
    lic = api.license(policy)["id"]
    body = {
        "data": {
            "type": "machines",
            "attributes": {"fingerprint": "fp-1", "cores": 2},
            "relationships": {"license": {"data": {"type": "licenses", "id": lic}}},
        }
    }
    machine = api.ok("POST", "/v1/machines", 201, json=body)["data"]["id"]
    return {"product": product, "policy": policy, "license": lic, "machine": machine}


def _fill(text: str, world: dict[str, str]) -> str:
    for name, value in world.items():
        text = text.replace("{" + name + "}", value)
    return text


def _body(
    route: tuple[str, str, str | None, str, list[str], tuple[str, str] | None],
    attribute: str | None,
    value: Any,
    world: dict[str, str],
) -> Any:
    _, _, envelope, kind, _, relationship = route
    if envelope is None:
        return None
    fields = {attribute: value} if attribute is not None else value  # None: the whole object
    if envelope == "meta":
        return {"meta": fields}
    data: dict[str, Any] = {"type": kind, "attributes": fields}
    if relationship is not None:
        name, ident = relationship
        plural = "policies" if name == "policy" else f"{name}s"
        data["relationships"] = {name: {"data": {"type": plural, "id": _fill(ident, world)}}}
    return {"data": data}


def test_any_json_in_any_attribute_is_2xx_or_a_4xx_that_changed_nothing(
    db_url: str, clock: FakeClock
) -> None:
    """Every write route's body parser, on SQLite and PostgreSQL."""
    with api_on(db_url, clock) as api:
        world = _world(api)
        engine = engine_of(api)
        dialect = engine.dialect.name

        @seed(SEEDS[dialect])
        @settings(
            max_examples=EXAMPLES[dialect],
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def check(data: st.DataObject) -> None:
            route = data.draw(st.sampled_from(ROUTES), label="route")
            names = route[4]
            attribute = data.draw(
                st.sampled_from([*names, None]) | texts if names else st.sampled_from([None]),
                label="attribute",
            )
            values = st.none() | scalars | json_values  # null and scalars drawn more often
            special = {"usagePeriod": usage_periods, "usage": usage_records}.get(str(attribute))
            value = data.draw(special | values if special is not None else values, label="value")
            body = _body(route, attribute, value, world)
            before = dump(engine)
            response = api.request(
                route[0],
                _fill(route[1], world),
                content=None if body is None else json.dumps(body).encode(),
            )
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                code = response.json()["errors"][0]["code"]
                assert code in CODES, response.text
                assert dump(engine) == before, response.text

        check()
