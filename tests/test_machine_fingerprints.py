"""Machines by fingerprint and a license's machines, as Keygen serves them to its clients
(``FindByAliasService ... aliases: :fingerprint``; ``licenses/relationships/machines``)."""

from __future__ import annotations

from tests.conftest import Api, error_of
from tests.test_api_machines import activate, floating


def test_a_machine_is_addressed_by_its_fingerprint_within_the_bearers_scope(api: Api) -> None:
    lic = floating(api)
    other = floating(api)
    mine = activate(api, lic, "fp-shared").json()["data"]["id"]
    theirs = activate(api, other, "fp-shared").json()["data"]["id"]
    token = api.license_token(lic)

    assert api.ok("GET", "/v1/machines/fp-shared", token=token)["data"]["id"] == mine
    other_token = api.license_token(other)
    assert api.ok("GET", "/v1/machines/fp-shared", token=other_token)["data"]["id"] == theirs
    # another license's id is still 404 for this bearer; an unknown fingerprint is 404
    assert api.request("GET", f"/v1/machines/{theirs}", token=token).status_code == 404
    missing = api.request("GET", "/v1/machines/fp-nowhere", token=token)
    assert (missing.status_code, error_of(missing)["code"]) == (404, "NOT_FOUND")

    pinged = api.ok("POST", "/v1/machines/fp-shared/actions/ping", token=token)["data"]
    assert (pinged["id"], pinged["attributes"]["heartbeatStatus"]) == (mine, "ALIVE")
    body = {"data": {"type": "machines", "attributes": {"name": "laptop"}}}
    renamed = api.ok("PATCH", "/v1/machines/fp-shared", json=body, token=token)["data"]
    assert (renamed["id"], renamed["attributes"]["name"]) == (mine, "laptop")
    api.ok("DELETE", "/v1/machines/fp-shared", 204, token=token)
    assert api.request("GET", f"/v1/machines/{mine}").status_code == 404
    assert api.ok("GET", f"/v1/machines/{theirs}")["data"]["id"] == theirs  # untouched


def test_a_licenses_machines_with_limit_page_and_fingerprint(api: Api) -> None:
    lic = floating(api)
    ids = [activate(api, lic, f"fp-{n}").json()["data"]["id"] for n in range(3)]
    activate(api, floating(api), "fp-0")  # another license's machine is not listed
    key = api.ok("GET", f"/v1/licenses/{lic}")["data"]["attributes"]["key"]
    as_license = {"headers": {"Authorization": f"License {key}"}}

    listed = api.ok("GET", f"/v1/licenses/{lic}/machines?limit=100", **as_license)
    assert sorted(m["id"] for m in listed["data"]) == sorted(ids)
    ids = [m["id"] for m in listed["data"]]  # the list's order (created, then id)
    assert listed["meta"]["pages"]["count"] == 3
    assert [m["id"] for m in api.ok("GET", f"/v1/licenses/{key}/machines?limit=2")["data"]] == ids[
        :2
    ]
    second = api.ok("GET", f"/v1/licenses/{lic}/machines?page[number]=2&page[size]=2")
    assert [m["id"] for m in second["data"]] == ids[2:]
    assert second["links"]["prev"].endswith("page%5Bnumber%5D=1&page%5Bsize%5D=2")
    fp1 = next(m["id"] for m in listed["data"] if m["attributes"]["fingerprint"] == "fp-1")
    only = api.ok("GET", f"/v1/licenses/{lic}/machines?fingerprint=fp-1")["data"]
    assert [m["id"] for m in only] == [fp1]
    one = api.ok("GET", f"/v1/licenses/{lic}/machines/fp-1", **as_license)["data"]
    assert one["id"] == fp1

    bad = api.request("GET", f"/v1/licenses/{lic}/machines?limit=101")
    assert (bad.status_code, error_of(bad)["code"]) == (400, "PAGE_INVALID")
    assert error_of(bad)["source"] == {"parameter": "limit"}
    outside = api.request("GET", f"/v1/licenses/{floating(api)}/machines", **as_license)
    assert (outside.status_code, error_of(outside)["code"]) == (404, "NOT_FOUND")
    other_machine = api.request("GET", f"/v1/licenses/{lic}/machines/fp-nowhere")
    assert other_machine.status_code == 404
