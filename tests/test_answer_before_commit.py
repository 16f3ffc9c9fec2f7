"""No error answer ever follows a commit: each write renders its answer before committing, so
an answer that cannot be rendered rolls the whole change back."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from bridge.api.render import Renderer
from bridge.testing import FakeClock
from tests.conftest import Api
from tests.hostile import api_on, dump, engine_of


class RenderingBroke(Exception):
    pass


def _broken(*_args: Any, **_kwargs: Any) -> Any:
    raise RenderingBroke


# An offline usage record of a check-in (dated at the fake clock's start, the license's creation).
_RECORD = {
    "id": "3f0c9e43-5b8e-4f4a-9d1e-2a7b6c5d4e3f",
    "increment": 1,
    "occurredAt": "2026-01-01T00:00:00+00:00",
}


def _writes(world: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    lic, machine = world["license"], world["machine"]

    def doc(kind: str, attributes: dict[str, Any], **relationships: str) -> dict[str, Any]:
        data: dict[str, Any] = {"type": kind, "attributes": attributes}
        if relationships:
            data["relationships"] = {
                name: {"data": {"type": f"{name}s" if name != "policy" else "policies", "id": i}}
                for name, i in relationships.items()
            }
        return {"data": data}

    return [
        # usage actions
        ("POST", f"/v1/licenses/{lic}/actions/increment-usage", {"meta": {"increment": 2}}),
        ("POST", f"/v1/licenses/{lic}/actions/decrement-usage", {"meta": {"decrement": 1}}),
        ("POST", f"/v1/licenses/{lic}/actions/reset-usage", None),
        ("POST", f"/v1/licenses/{lic}/actions/check-in", {"meta": {"usage": [_RECORD]}}),
        # machine actions
        (
            "POST",
            "/v1/machines",
            doc("machines", {"fingerprint": "fp-2", "cores": 2}, license=lic),
        ),
        ("PATCH", f"/v1/machines/{machine}", doc("machines", {"cores": 3, "name": "m"})),
        ("POST", f"/v1/machines/{machine}/actions/ping", None),
        # every create and update
        ("POST", "/v1/products", doc("products", {"name": "Other"})),
        ("PATCH", f"/v1/products/{world['product']}", doc("products", {"name": "Renamed"})),
        ("POST", f"/v1/products/{world['product']}/tokens", None),
        (
            "POST",
            "/v1/policies",
            doc("policies", {"name": "P2", "maxUses": 5}, product=world["product"]),
        ),
        ("PATCH", f"/v1/policies/{world['policy']}", doc("policies", {"maxUses": 50})),
        ("POST", "/v1/licenses", doc("licenses", {"name": "L2"}, policy=world["policy"])),
        ("PATCH", f"/v1/licenses/{lic}", doc("licenses", {"name": "Renamed", "maxUses": 9})),
        ("POST", f"/v1/licenses/{lic}/actions/suspend", None),
        ("POST", f"/v1/licenses/{lic}/actions/reinstate", None),
        ("POST", f"/v1/licenses/{lic}/tokens", None),
        # validations write lastValidated
        ("POST", f"/v1/licenses/{lic}/actions/validate", None),
        ("POST", "/v1/licenses/actions/validate-key", {"meta": {"key": world["key"]}}),
    ]


def _world(api: Api) -> dict[str, str]:
    product = api.product()
    policy = api.policy(
        product,
        floating=True,
        maxMachines=5,
        maxCores=64,
        maxUses=100,
        requireCheckIn=True,
        checkInInterval="year",
        checkInIntervalCount=1,
    )
    created = api.license(policy)
    lic = created["id"]
    api.increment(lic, 5)
    body = {
        "data": {
            "type": "machines",
            "attributes": {"fingerprint": "fp-1", "cores": 1},
            "relationships": {"license": {"data": {"type": "licenses", "id": lic}}},
        }
    }
    machine = api.ok("POST", "/v1/machines", 201, json=body)["data"]["id"]
    return {
        "product": product,
        "policy": policy,
        "license": lic,
        "key": created["attributes"]["key"],
        "machine": machine,
    }


def test_a_write_whose_answer_cannot_render_commits_nothing(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With rendering broken, every usage action, machine action, create, update and validation
    answers 500 and the store (ledger and outbox included) is unchanged; with it mended, each
    succeeds."""
    with api_on(db_url, clock) as api, capture_logs() as logs:
        world = _world(api)
        engine = engine_of(api)
        for name in (
            "product",
            "policy",
            "license",
            "license_json",
            "machine",
            "machine_json",
            "token",
        ):
            monkeypatch.setattr(Renderer, name, _broken)
        for method, path, body in _writes(world):
            before = dump(engine)
            response = api.request(method, path, json=body)
            assert response.status_code == 500, (method, path, response.text)
            assert dump(engine) == before, (method, path)
        monkeypatch.undo()
        for method, path, body in _writes(world):
            response = api.request(method, path, json=body)
            assert response.status_code in (200, 201), (method, path, response.text)
    failures = [entry for entry in logs if entry["event"] == "request_failed"]
    assert len(failures) == len(_writes(world))
