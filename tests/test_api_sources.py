"""Domain fields become Keygen's JSON:API sources in one map, and request documents become
typed commands that carry every attribute they were sent."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from bridge.api import schemas as s
from bridge.api.sources import SOURCES, Source
from bridge.domain.commands import UNSET
from bridge.domain.errors import Field
from tests.conftest import Api, error_of

BIG = 2_147_483_648
_WRITE_DOCUMENTS: tuple[type[BaseModel], ...] = (
    s.ProductAttributesIn,
    s.PolicyAttributesIn,
    s.PolicyCreateAttributesIn,
    s.LicenseAttributesIn,
    s.MachineAttributesIn,
    s.MachineUpdateAttributesIn,
)


def test_every_field_has_a_source() -> None:
    """The map is total: an error naming any domain field renders with a source."""
    assert set(SOURCES) == set(Field)


def test_attribute_pointers_name_request_attributes() -> None:
    """Each /data/attributes pointer is spelled as a request schema spells the attribute
    (``uses`` is the one attribute no request may send)."""
    aliases = {
        info.alias or name
        for model in _WRITE_DOCUMENTS
        for name, info in model.model_fields.items()
    }
    for field, source in SOURCES.items():
        if source.pointer and source.pointer.startswith("/data/attributes/"):
            attribute = source.pointer.removeprefix("/data/attributes/")
            assert attribute in aliases or field is Field.USES, (field, attribute)


def _sample(annotation: Any) -> Any:
    """A non-null value of an attribute's type."""
    kind = next(a for a in typing.get_args(annotation) or [annotation] if a is not type(None))
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    kind = typing.get_origin(kind) or kind
    samples: dict[Any, Any] = {
        int: 7,
        bool: True,
        str: "sample-value",
        dict: {"k": "v"},
        datetime: datetime(2030, 1, 1).astimezone(),
    }
    return samples[kind]


def _every_attribute(model: type[BaseModel]) -> dict[str, Any]:
    return {name: _sample(info.annotation) for name, info in model.model_fields.items()}


def _relationship(kind: str) -> dict[str, Any]:
    return {"data": {"type": kind, "id": "ref"}}


@pytest.mark.parametrize(
    ("document", "attributes", "relationships"),
    [
        (s.ProductIn, s.ProductAttributesIn, None),
        (s.PolicyCreate, s.PolicyCreateAttributesIn, {"product": _relationship("products")}),
        (s.PolicyUpdate, s.PolicyAttributesIn, None),
        (s.LicenseCreate, s.LicenseAttributesIn, {"policy": _relationship("policies")}),
        (s.LicenseUpdate, s.LicenseAttributesIn, None),
        (s.MachineCreate, s.MachineAttributesIn, {"license": _relationship("licenses")}),
        (s.MachineUpdate, s.MachineUpdateAttributesIn, None),
    ],
)
def test_commands_carry_every_attribute_sent(
    document: type[BaseModel], attributes: type[BaseModel], relationships: Any
) -> None:
    """Sent in full, a document's command has each attribute's value; sent empty, a patch is
    all UNSET. A renamed command field or attribute fails here, not silently on the wire."""
    values = _every_attribute(attributes)
    sent = {attributes.model_fields[name].alias or name: value for name, value in values.items()}
    data: dict[str, Any] = {"type": "x", "attributes": sent}
    if relationships is not None:
        data["relationships"] = relationships
    empty: dict[str, Any] = {"type": "x", "attributes": {}}
    if relationships is not None:
        empty["relationships"] = relationships
    kind = document.model_fields["data"].annotation
    assert isinstance(kind, type)
    data["type"] = empty["type"] = typing.get_args(kind.model_fields["type"].annotation)[0]
    full_doc = document.model_validate({"data": data}, strict=False)
    empty_doc = document.model_validate({"data": empty}, strict=False)
    builders = ["new", "patch"] if document is s.ProductIn else ["command"]
    for builder in builders:
        full = getattr(full_doc, builder)()
        blank = getattr(empty_doc, builder)()
        carried = {f.name: getattr(full, f.name) for f in dataclasses.fields(full)}
        for name, value in values.items():
            assert carried.pop(name) == value, name
        assert set(carried) <= {"product_id", "policy_id", "license_ref"}  # the relationship
        assert all(value == "ref" for value in carried.values())
        if type(blank).__name__.endswith("Patch"):
            assert all(getattr(blank, f.name) is UNSET for f in dataclasses.fields(blank))


def _policy_body(attributes: dict[str, Any], product: str) -> dict[str, Any]:
    return {
        "data": {
            "type": "policies",
            "attributes": {"name": "P", **attributes},
            "relationships": {"product": {"data": {"type": "products", "id": product}}},
        }
    }


def _license_body(attributes: dict[str, Any], policy: str) -> dict[str, Any]:
    return {
        "data": {
            "type": "licenses",
            "attributes": attributes,
            "relationships": {"policy": {"data": {"type": "policies", "id": policy}}},
        }
    }


def _machine_body(attributes: dict[str, Any], license: str) -> dict[str, Any]:
    return {
        "data": {
            "type": "machines",
            "attributes": attributes,
            "relationships": {"license": {"data": {"type": "licenses", "id": license}}},
        }
    }


def _expect(response: Any, status: int, code: str, detail: str, source: Source) -> None:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert (error["code"], error["detail"], error["source"]) == (code, detail, source.document())


GE1 = "must be greater than or equal to 1"
TOO_LONG = "is too long (maximum is 255 characters)"


@pytest.mark.parametrize(
    ("attributes", "code", "detail", "field"),
    [
        (
            {"maxMachines": 2},
            "MAX_MACHINES_INVALID",
            "must be equal to 1 for non-floating policy",
            Field.MAX_MACHINES,
        ),
        (
            {"floating": True, "maxMachines": 0},
            "MAX_MACHINES_INVALID",
            "must be greater than or equal to 1 for floating policy",
            Field.MAX_MACHINES,
        ),
        ({"maxCores": 0}, "MAX_CORES_INVALID", GE1, Field.MAX_CORES),
        (
            {"heartbeatDuration": 59},
            "HEARTBEAT_DURATION_INVALID",
            "must be greater than or equal to 60",
            Field.HEARTBEAT_DURATION,
        ),
        (
            {"usagePeriod": {"interval": "fortnight"}},
            "USAGE_PERIOD_INVALID",
            "interval must be one of day, week, month, quarter, year",
            Field.USAGE_PERIOD,
        ),
    ],
)
def test_policy_errors_point_at_their_attribute(
    api: Api, attributes: dict[str, Any], code: str, detail: str, field: Field
) -> None:
    """Policy checks not covered elsewhere answer Keygen's pointer for their field."""
    response = api.request("POST", "/v1/policies", json=_policy_body(attributes, api.product()))
    _expect(response, 422, code, detail, SOURCES[field])


def test_relationship_errors_point_at_the_relationship(api: Api) -> None:
    """A missing product or policy is 422 ``must exist`` at its relationship."""
    missing_product = api.request("POST", "/v1/policies", json=_policy_body({}, "nope"))
    _expect(missing_product, 422, "PRODUCT_NOT_FOUND", "must exist", SOURCES[Field.PRODUCT])
    missing_policy = api.request("POST", "/v1/licenses", json=_license_body({}, "nope"))
    _expect(missing_policy, 422, "POLICY_NOT_FOUND", "must exist", SOURCES[Field.POLICY])


@pytest.mark.parametrize(
    ("attributes", "code", "detail", "field"),
    [
        (
            {"key": "short"},
            "KEY_INVALID",
            "must be 6 to 16384 printable characters without padding",
            Field.KEY,
        ),
        ({"key": "TAKEN-KEY"}, "KEY_TAKEN", "has already been taken", Field.KEY),
        (
            {"expiry": "2030-01-01T00:00:00"},
            "EXPIRY_INVALID",
            "must include a timezone offset",
            Field.EXPIRY,
        ),
        (
            {"maxMachines": 2},
            "MAX_MACHINES_INVALID",
            "must be equal to 1 for non-floating policy",
            Field.MAX_MACHINES,
        ),
        ({"maxCores": 0}, "MAX_CORES_INVALID", GE1, Field.MAX_CORES),
        (
            {"maxUses": BIG},
            "MAX_USES_INVALID",
            "must be less than or equal to 2147483647",
            Field.MAX_USES,
        ),
    ],
)
def test_license_errors_point_at_their_attribute(
    api: Api, attributes: dict[str, Any], code: str, detail: str, field: Field
) -> None:
    """License checks answer the same pointer on create and on update."""
    policy = api.policy()
    lic = api.license(policy, key="TAKEN-KEY")
    created = api.request("POST", "/v1/licenses", json=_license_body(attributes, policy))
    _expect(created, 422, code, detail, SOURCES[field])
    patch = {"data": {"type": "licenses", "attributes": attributes}}
    other = api.license(policy)["id"] if field is Field.KEY else lic["id"]
    updated = api.request("PATCH", f"/v1/licenses/{other}", json=patch)
    _expect(updated, 422, code, detail, SOURCES[field])


@pytest.mark.parametrize("field", [Field.NAME, Field.PLATFORM, Field.HOSTNAME])
def test_machine_text_errors_point_at_their_attribute(api: Api, field: Field) -> None:
    """Too long a machine name, platform or hostname is 422 at that attribute, on activation
    and on update."""
    lic = api.license(api.policy(floating=True))["id"]
    attribute = {field.value: "n" * 256}
    activated = api.request(
        "POST", "/v1/machines", json=_machine_body({"fingerprint": "fp", **attribute}, lic)
    )
    _expect(activated, 422, "ATTRIBUTE_INVALID", TOO_LONG, SOURCES[field])
    machine = api.ok("POST", "/v1/machines", 201, json=_machine_body({"fingerprint": "fp"}, lic))
    patch = {"data": {"type": "machines", "attributes": attribute}}
    updated = api.request("PATCH", f"/v1/machines/{machine['data']['id']}", json=patch)
    _expect(updated, 422, "ATTRIBUTE_INVALID", TOO_LONG, SOURCES[field])


def test_resource_errors_point_at_data(api: Api) -> None:
    """Deleting a product or policy still in use is 422 at ``/data``."""
    product = api.product()
    policy = api.policy(product)
    api.license(policy)
    in_use = api.request("DELETE", f"/v1/policies/{policy}")
    detail = "policy still has licenses; delete or move them first"
    _expect(in_use, 422, "POLICY_IN_USE", detail, Source(pointer="/data"))
    product_in_use = api.request("DELETE", f"/v1/products/{product}")
    detail = "product still has policies; delete them first"
    _expect(product_in_use, 422, "PRODUCT_IN_USE", detail, Source(pointer="/data"))


def test_idempotency_key_error_names_the_header(api: Api) -> None:
    """A malformed Idempotency-Key is 400 with the header as its parameter."""
    lic = api.license(api.policy())["id"]
    response = api.increment(lic, headers={"Idempotency-Key": "k" * 256})
    detail = "Idempotency-Key must be 1 to 255 printable ASCII characters"
    _expect(response, 400, "IDEMPOTENCY_KEY_INVALID", detail, Source(parameter="Idempotency-Key"))


def test_null_on_a_license_flag_leaves_it_unchanged(api: Api) -> None:
    """``protected`` or ``suspended`` null is ignored, as null on a policy's flags is (it was
    a 500): a create takes the policy's value, an update keeps the license's."""
    policy = api.policy(protected=True)
    lic = api.license(policy, protected=None, suspended=None)
    assert (lic["attributes"]["protected"], lic["attributes"]["suspended"]) == (True, False)
    api.ok("POST", f"/v1/licenses/{lic['id']}/actions/suspend")
    patch = {"data": {"type": "licenses", "attributes": {"protected": None, "suspended": None}}}
    kept = api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=patch)["data"]["attributes"]
    assert (kept["protected"], kept["suspended"]) == (True, True)
