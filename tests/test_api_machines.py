"""Machines over HTTP: Keygen's activation rules, errors, overrides, roles and the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api, error_of


def machine_body(license_id: str, fingerprint: str = "fp-1", **attributes: Any) -> dict[str, Any]:
    return {
        "data": {
            "type": "machines",
            "attributes": {"fingerprint": fingerprint, **attributes},
            "relationships": {"license": {"data": {"type": "licenses", "id": license_id}}},
        }
    }


def create(api: Api, kind: str, attributes: dict[str, Any], parent: str, parent_id: str) -> Any:
    """POST a ``kind`` document whose one relationship is ``parent`` (singular name)."""
    data = {
        "type": kind,
        "attributes": attributes,
        "relationships": {
            parent: {"data": {"type": f"{parent}s".replace("ys", "ies"), "id": parent_id}}
        },
    }
    return api.request("POST", f"/v1/{kind}", json={"data": data})


def activate(api: Api, license_id: str, fingerprint: str = "fp-1", **attrs: Any) -> Any:
    token = attrs.pop("token", None)
    kwargs: dict[str, Any] = {"json": machine_body(license_id, fingerprint, **attrs)}
    if token is not None:
        kwargs["token"] = token
    return api.request("POST", "/v1/machines", **kwargs)


def unprocessable(detail: str, code: str, pointer: str = "/data") -> dict[str, Any]:
    """A 422 error object as Keygen renders it."""
    return {
        "title": "Unprocessable resource",
        "detail": detail,
        "code": code,
        "source": {"pointer": pointer},
    }


def floating(api: Api, **attributes: Any) -> str:
    """A license of a floating policy with these attributes (maxMachines, maxCores, ...)."""
    return str(api.license(api.policy(floating=True, **attributes))["id"])


def test_activate_read_list_update_deactivate(api: Api) -> None:
    """A machine is activated (201), read, listed by license, described and deactivated (204)."""
    lic = floating(api)
    other = floating(api)
    doc = activate(api, lic, "fp-a", cores=4, name="build-1", platform="linux", hostname="b1")
    assert doc.status_code == 201, doc.text
    data = doc.json()["data"]
    attrs = data["attributes"]
    assert data["type"] == "machines"
    assert (attrs["fingerprint"], attrs["cores"], attrs["name"]) == ("fp-a", 4, "build-1")
    assert (attrs["platform"], attrs["hostname"]) == ("linux", "b1")
    assert attrs["heartbeatStatus"] == "NOT_STARTED"
    assert data["relationships"]["license"]["data"] == {"type": "licenses", "id": lic}
    mid = data["id"]
    assert activate(api, other, "fp-b").status_code == 201

    assert api.ok("GET", f"/v1/machines/{mid}")["data"]["id"] == mid
    listed = api.ok("GET", f"/v1/machines?license={lic}")
    assert [m["id"] for m in listed["data"]] == [mid]
    assert listed["meta"]["pages"]["count"] == 1
    assert api.ok("GET", "/v1/accounts/default/machines")["meta"]["pages"]["count"] == 2

    patch = {"data": {"type": "machines", "attributes": {"name": "renamed", "cores": 2}}}
    updated = api.ok("PATCH", f"/v1/machines/{mid}", json=patch)["data"]["attributes"]
    assert (updated["name"], updated["cores"], updated["fingerprint"]) == ("renamed", 2, "fp-a")

    api.ok("DELETE", f"/v1/accounts/default/machines/{mid}", 204)
    assert error_of(api.request("GET", f"/v1/machines/{mid}"))["code"] == "NOT_FOUND"


def test_core_limit_error_is_keygens(api: Api) -> None:
    """Past maxCores: 422 MACHINE_CORE_LIMIT_EXCEEDED with Keygen's detail and pointer /data."""
    lic = floating(api, maxCores=8)
    assert activate(api, lic, "a", cores=6).status_code == 201
    response = activate(api, lic, "b", cores=3)
    assert response.status_code == 422
    assert error_of(response) == unprocessable(
        "machine core count has exceeded maximum allowed for license (8)",
        "MACHINE_CORE_LIMIT_EXCEEDED",
        "/data",
    )
    assert activate(api, lic, "c", cores=2).status_code == 201  # exactly at the maximum


def test_machine_limit_and_the_first_machine(api: Api) -> None:
    """maxMachines counts activations; the error is Keygen's MACHINE_LIMIT_EXCEEDED."""
    lic = floating(api, maxMachines=2)
    assert activate(api, lic, "a").status_code == 201
    assert activate(api, lic, "b").status_code == 201
    response = activate(api, lic, "c")
    assert response.status_code == 422
    assert error_of(response) == unprocessable(
        "machine count has exceeded maximum allowed for license (2)",
        "MACHINE_LIMIT_EXCEEDED",
        "/data",
    )


def test_node_locked_allows_one_machine(api: Api) -> None:
    """A node-locked policy (maxMachines 1): a second machine is refused; 2X allows two."""
    lic = api.license(api.policy())["id"]
    assert activate(api, lic, "a").status_code == 201
    assert error_of(activate(api, lic, "b"))["code"] == "MACHINE_LIMIT_EXCEEDED"
    doubled = api.license(api.policy(overageStrategy="ALLOW_2X_OVERAGE"))["id"]
    assert activate(api, doubled, "a").status_code == 201
    assert activate(api, doubled, "b").status_code == 201
    assert error_of(activate(api, doubled, "c"))["code"] == "MACHINE_LIMIT_EXCEEDED"


@pytest.mark.parametrize(
    ("strategy", "max_cores_allowed"),
    [
        ("NO_OVERAGE", 8),
        ("ALLOW_1_25X_OVERAGE", 10),
        ("ALLOW_1_5X_OVERAGE", 12),
        ("ALLOW_2X_OVERAGE", 16),
        ("ALWAYS_ALLOW_OVERAGE", 1000),
    ],
)
def test_overage_strategies_at_activation(api: Api, strategy: str, max_cores_allowed: int) -> None:
    """maxCores 8 and maxMachines 4: each strategy admits cores and machines up to its allowance
    (1.25x: 10 cores, 5 machines) and refuses one more."""
    lic = floating(api, maxCores=8, maxMachines=4, overageStrategy=strategy)
    assert activate(api, lic, "big", cores=max_cores_allowed).status_code == 201
    over = activate(api, lic, "one-more", cores=1)
    if strategy == "ALWAYS_ALLOW_OVERAGE":
        assert over.status_code == 201
    else:
        assert error_of(over)["code"] == "MACHINE_CORE_LIMIT_EXCEEDED"
    machines_allowed = {"NO_OVERAGE": 4, "ALLOW_1_25X_OVERAGE": 5, "ALLOW_1_5X_OVERAGE": 6}
    allowed = machines_allowed.get(strategy, 8)
    held = 2 if strategy == "ALWAYS_ALLOW_OVERAGE" else 1
    for n in range(held, allowed):
        assert activate(api, lic, f"m{n}").status_code == 201, n
    last = activate(api, lic, "past-the-allowance")
    if strategy == "ALWAYS_ALLOW_OVERAGE":
        assert last.status_code == 201
    else:
        assert error_of(last)["code"] == "MACHINE_LIMIT_EXCEEDED"


@pytest.mark.parametrize(
    ("attributes", "detail"),
    [
        (
            {"overageStrategy": "ALLOW_1_25X_OVERAGE"},
            "incompatible overage strategy (cannot use ALLOW_1_25X_OVERAGE for node-locked policy)",
        ),
        (
            {"overageStrategy": "ALLOW_1_5X_OVERAGE"},
            "incompatible overage strategy (cannot use ALLOW_1_5X_OVERAGE for node-locked policy)",
        ),
        (
            {"overageStrategy": "ALLOW_1_25X_OVERAGE", "floating": True, "maxMachines": 6},
            "incompatible overage strategy (cannot use ALLOW_1_25X_OVERAGE with a max machines "
            "value not divisible by 4)",
        ),
        (
            {"overageStrategy": "ALLOW_1_25X_OVERAGE", "floating": True, "maxCores": 10},
            "incompatible overage strategy (cannot use ALLOW_1_25X_OVERAGE with a max cores "
            "value not divisible by 4)",
        ),
        (
            {"overageStrategy": "ALLOW_1_5X_OVERAGE", "floating": True, "maxCores": 3},
            "incompatible overage strategy (cannot use ALLOW_1_5X_OVERAGE with a max cores "
            "value not divisible by 2)",
        ),
    ],
)
def test_overage_strategy_divisibility(api: Api, attributes: dict[str, Any], detail: str) -> None:
    """Keygen refuses 1.25x/1.5x on node-locked policies and on maxima it cannot divide."""
    response = create(api, "policies", {"name": "p", **attributes}, "product", api.product())
    assert response.status_code == 422
    assert error_of(response) == unprocessable(
        detail, "OVERAGE_STRATEGY_NOT_ALLOWED", "/data/attributes/overageStrategy"
    )


def test_divisible_maxima_are_accepted(api: Api) -> None:
    """1.25x with maxima divisible by 4, and 2x on a node-locked policy, are valid."""
    api.policy(floating=True, maxMachines=8, maxCores=16, overageStrategy="ALLOW_1_25X_OVERAGE")
    api.policy(floating=True, maxMachines=2, maxCores=6, overageStrategy="ALLOW_1_5X_OVERAGE")
    api.policy(maxCores=7, overageStrategy="ALLOW_2X_OVERAGE")


@pytest.mark.parametrize(
    ("cores", "detail"),
    [
        (0, "must be greater than or equal to 1"),
        (-4, "must be greater than or equal to 1"),
        (2147483648, "must be less than or equal to 2147483647"),
    ],
)
def test_cores_invalid(api: Api, cores: int, detail: str) -> None:
    """cores outside 1..2147483647: 422 CORES_INVALID at /data/attributes/cores, nothing
    written."""
    lic = floating(api)
    response = activate(api, lic, cores=cores)
    assert error_of(response) == unprocessable(detail, "CORES_INVALID", "/data/attributes/cores")
    assert api.ok("GET", f"/v1/machines?license={lic}")["data"] == []


def test_largest_cores_without_a_limit(api: Api) -> None:
    """cores 2147483647 with no maxCores is accepted (Keygen's feature)."""
    assert activate(api, floating(api), cores=2147483647).status_code == 201


def test_fingerprint_is_unique_per_license(api: Api) -> None:
    """The same fingerprint twice on a license: 422 FINGERPRINT_TAKEN; on another, fine."""
    lic, other = floating(api), floating(api)
    assert activate(api, lic, "same").status_code == 201
    response = activate(api, lic, "same")
    assert error_of(response) == unprocessable(
        "has already been taken", "FINGERPRINT_TAKEN", "/data/attributes/fingerprint"
    )
    assert activate(api, other, "same").status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "code", "pointer"),
    [
        ({"fingerprint": "  "}, 422, "FINGERPRINT_MISSING", "/data/attributes/fingerprint"),
        ({"fingerprint": None}, 422, "FINGERPRINT_MISSING", "/data/attributes/fingerprint"),
        ({"fingerprint": "x" * 256}, 422, "ATTRIBUTE_INVALID", "/data/attributes/fingerprint"),
        ({"name": "n" * 256}, 422, "ATTRIBUTE_INVALID", "/data/attributes/name"),
        ({"cores": "4"}, 400, "TYPE_MISMATCH", "/data/attributes/cores"),
        ({"cores": 1.5}, 400, "TYPE_MISMATCH", "/data/attributes/cores"),
        ({"uses": 1}, 400, "PARAMETER_UNPERMITTED", "/data/attributes/uses"),
    ],
)
def test_bad_attributes_are_clear_errors(
    api: Api, body: dict[str, Any], status: int, code: str, pointer: str
) -> None:
    """Bad input is a JSON:API error with a stable code and pointer, never a 500."""
    lic = floating(api)
    doc = machine_body(lic)
    doc["data"]["attributes"].update(body)
    response = api.request("POST", "/v1/machines", json=doc)
    assert response.status_code == status, response.text
    error = error_of(response)
    assert (error["code"], error["source"]["pointer"]) == (code, pointer)


def test_missing_or_unknown_license(api: Api) -> None:
    """No license relationship is 400 PARAMETER_MISSING; an unknown one 422 LICENSE_NOT_FOUND."""
    doc = machine_body("x")
    del doc["data"]["relationships"]
    assert error_of(api.request("POST", "/v1/machines", json=doc))["code"] == "PARAMETER_MISSING"
    response = activate(api, "no-such-license")
    assert error_of(response) == unprocessable(
        "must exist", "LICENSE_NOT_FOUND", "/data/relationships/license"
    )


def test_a_license_key_names_the_license(api: Api) -> None:
    """The license relationship may carry the key instead of the id."""
    lic = api.license(api.policy(floating=True), key="ACME-MACHINES")
    response = activate(api, "ACME-MACHINES")
    assert response.json()["data"]["relationships"]["license"]["data"]["id"] == lic["id"]


def test_deactivation_frees_cores(api: Api) -> None:
    """Deactivating a machine frees its cores (and its machine slot) for the next activation."""
    lic = floating(api, maxCores=8, maxMachines=2)
    first = activate(api, lic, "a", cores=8).json()["data"]["id"]
    activate(api, lic, "b")
    assert error_of(activate(api, lic, "c", cores=1))["code"] == "MACHINE_LIMIT_EXCEEDED"
    api.ok("DELETE", f"/v1/machines/{first}", 204)
    assert activate(api, lic, "c", cores=8).status_code == 201


def test_patch_raising_cores_is_checked(api: Api) -> None:
    """A PATCH that raises cores past maxCores is refused and changes nothing; lowering is
    always allowed."""
    lic = floating(api, maxCores=8)
    mid = activate(api, lic, "a", cores=4).json()["data"]["id"]
    activate(api, lic, "b", cores=4)

    def patch(cores: int) -> Any:
        body = {"data": {"type": "machines", "attributes": {"cores": cores}}}
        return api.request("PATCH", f"/v1/machines/{mid}", json=body)

    error = error_of(patch(5))
    assert (error["code"], error["detail"]) == (
        "MACHINE_CORE_LIMIT_EXCEEDED",
        "machine core count has exceeded maximum allowed for license (8)",
    )
    assert api.ok("GET", f"/v1/machines/{mid}")["data"]["attributes"]["cores"] == 4
    assert patch(1).status_code == 200
    assert patch(4).status_code == 200
    assert error_of(patch(0))["code"] == "CORES_INVALID"


def test_license_overrides_machine_limits(api: Api) -> None:
    """A license's maxMachines/maxCores override the policy's (null falls back); a node-locked
    license cannot override maxMachines to anything but 1."""
    policy = api.policy(floating=True, maxMachines=1, maxCores=4)
    lic = api.license(policy, maxMachines=3, maxCores=12)
    assert (lic["attributes"]["maxMachines"], lic["attributes"]["maxCores"]) == (3, 12)
    for n in range(3):
        assert activate(api, lic["id"], f"m{n}", cores=4).status_code == 201
    assert error_of(activate(api, lic["id"], "m3"))["code"] == "MACHINE_LIMIT_EXCEEDED"
    reset = {"data": {"type": "licenses", "attributes": {"maxCores": None}}}
    attrs = api.ok("PATCH", f"/v1/licenses/{lic['id']}", json=reset)["data"]["attributes"]
    assert attrs["maxCores"] == 4

    response = create(api, "licenses", {"maxMachines": 2}, "policy", api.policy())
    assert error_of(response)["code"] == "MAX_MACHINES_INVALID"


def test_ledger_records_every_machine_change(api: Api) -> None:
    """Activation, core change and deactivation are ledger entries carrying the license's core
    total before and after, and the machine."""
    lic = floating(api)
    mid = activate(api, lic, "a", cores=4).json()["data"]["id"]
    activate(api, lic, "b", cores=2)
    body = {"data": {"type": "machines", "attributes": {"cores": 8}}}
    api.ok("PATCH", f"/v1/machines/{mid}", json=body)
    api.ok("DELETE", f"/v1/machines/{mid}", 204)
    entries = api.ok("GET", f"/v1/licenses/{lic}/usage")["data"]
    seen = [
        (
            e["attributes"]["kind"],
            e["attributes"]["delta"],
            e["attributes"]["usesBefore"],
            e["attributes"]["usesAfter"],
        )
        for e in reversed(entries)
    ]
    assert seen == [
        ("activate", 4, 0, 4),
        ("activate", 2, 4, 6),
        ("cores", 4, 6, 10),
        ("deactivate", -8, 10, 2),
    ]
    assert entries[0]["relationships"]["machine"]["data"] == {"type": "machines", "id": mid}
    assert entries[0]["attributes"]["actor"] == "admin:admin"


def test_deleting_a_license_deactivates_its_machines(api: Api) -> None:
    """A deleted license takes its machines with it."""
    lic = floating(api)
    mid = activate(api, lic, cores=2).json()["data"]["id"]
    api.ok("DELETE", f"/v1/licenses/{lic}", 204)
    assert error_of(api.request("GET", f"/v1/machines/{mid}"))["code"] == "NOT_FOUND"
