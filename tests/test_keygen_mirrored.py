"""A license mirrored from Keygen is marked as such on the license resource (``meta.mirror``)
and in the CLI, and the bridge's own usage changes on it are refused (409 ``LICENSE_MIRRORED``)
before any write, on the fast path, the router and the CLI: its usage is Keygen's, and only
what Keygen reports (webhooks, the check) changes it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from bridge.api import schemas as s
from bridge.bootstrap import build_app
from bridge.cli import app as cli
from bridge.store import tables
from bridge.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, error_of, make_container
from tests.fakes.keygen import FakeKeygen
from tests.test_keygen_relay import Relay, settings_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
JSON = {**ADMIN, "content-type": "application/vnd.api+json"}
# Every table a usage action or a check-in writes, and the relay's own.
_WRITTEN = (
    tables.licenses,
    tables.ledger,
    tables.outbox,
    tables.IdempotencyRow.__table__,  # type: ignore[attr-defined]
    tables.periods,
    tables.usage_records,
    tables.keygen_licenses,
    tables.keygen_snapshots,
)


@pytest.fixture
def relay(db_url: str, clock: FakeClock) -> Iterator[Relay]:
    fake = FakeKeygen(now=clock.now)
    c = make_container(db_url, clock, **settings_for(fake))
    with TestClient(
        build_app(c), base_url="https://bridge.example.com", raise_server_exceptions=False
    ) as client:
        yield Relay(c, fake, client, clock)
    c.dispose()


def _store(relay: Relay) -> dict[str, list[Any]]:
    with relay.c.engine.connect() as conn:
        return {t.name: sorted(map(repr, conn.execute(select(t)).all()), key=str) for t in _WRITTEN}


def _mirrored(relay: Relay, uses: int = 3) -> str:
    lic, created = relay.fake.create(max_uses=100)
    relay.deliver(created, relay.fake.increment(lic.id, uses))
    return lic.id


def test_the_license_resource_is_marked_as_mirrored(relay: Relay) -> None:
    """``meta.mirror`` (source, Keygen's maxUses, when mirrored and deleted) on every document
    that renders a mirrored license, the usage fast path's hand-built one included; a local
    license's document has no ``meta``."""
    license_id = _mirrored(relay)
    client = relay.client
    body = {"data": {"type": "products", "attributes": {"name": "Local"}}}
    product = client.post("/v1/products", json=body, headers=ADMIN).json()["data"]["id"]
    rel = {"product": {"data": {"type": "products", "id": product}}}
    body = {"data": {"type": "policies", "attributes": {"name": "P"}, "relationships": rel}}
    policy = client.post("/v1/policies", json=body, headers=ADMIN).json()["data"]["id"]
    rel = {"policy": {"data": {"type": "policies", "id": policy}}}
    body = {"data": {"type": "licenses", "attributes": {}, "relationships": rel}}
    local = client.post("/v1/licenses", json=body, headers=ADMIN).json()["data"]["id"]

    doc = client.get(f"/v1/licenses/{license_id}", headers=ADMIN).json()["data"]
    mirror = doc["meta"]["mirror"]
    assert (mirror["source"], mirror["maxUses"], mirror["deletedAt"]) == ("keygen", 100, None)
    assert mirror["mirroredAt"] is not None
    assert (doc["attributes"]["uses"], doc["attributes"]["maxUses"]) == (3, None)
    listed = {d["id"]: d for d in client.get("/v1/licenses", headers=ADMIN).json()["data"]}
    assert listed[license_id]["meta"] == {"mirror": mirror}
    assert "meta" not in listed[local]
    validated = client.post(f"/v1/licenses/{license_id}/actions/validate", headers=ADMIN)
    assert validated.json()["data"]["meta"] == {"mirror": mirror}

    relay.deliver(relay.fake.delete(license_id))
    deleted = client.get(f"/v1/licenses/{license_id}", headers=ADMIN).json()["data"]
    assert deleted["meta"]["mirror"]["deletedAt"] is not None

    context = client.app.state.context  # type: ignore[attr-defined]
    with context.uows() as uow:
        lic = uow.licenses.find(license_id)
    assert lic is not None
    now = context.clock.now()
    expected = s.LicenseDocument(data=context.render.license(lic, now))
    dumped = expected.model_dump(mode="json", by_alias=True)
    assert json.loads(context.render.license_json(lic, now)) == dumped


def _usage_requests(license_id: str) -> list[tuple[str, dict[str, Any] | None, dict[str, str]]]:
    keyed = {**JSON, "idempotency-key": "k-1"}
    cases: list[tuple[str, dict[str, Any] | None, dict[str, str]]] = []
    for action, body in (
        ("increment", None),
        ("increment", {"meta": {"increment": 2}}),
        ("decrement", {"meta": {"decrement": 1}}),
        ("reset", None),
    ):
        for headers in (JSON, keyed):
            cases.append((f"/v1/licenses/{license_id}/actions/{action}-usage", body, headers))
    long = f"/v1/accounts/default/licenses/{license_id}/actions/increment-usage"
    cases.append((long, None, JSON))
    return cases


def test_the_bridges_own_usage_actions_are_refused_before_any_write(relay: Relay) -> None:
    """Increment, decrement and reset (with or without an Idempotency-Key), on the fast path and
    on the router, answer 409 LICENSE_MIRRORED alike and leave the store as it was; the usage
    Keygen then reports is applied and forwarded as before."""
    license_id = _mirrored(relay)
    assert relay.forwarded() == 3
    before = _store(relay)
    general = TestClient(build_app(relay.c, fast_usage=False), raise_server_exceptions=False)
    with general:
        for path, body, headers in _usage_requests(license_id):
            answers = []
            for client in (relay.client, general):
                response = client.post(path, json=body, headers=headers)
                assert response.status_code == 409, (path, response.text)
                error = error_of(response)
                assert error["code"] == "LICENSE_MIRRORED"
                assert "counted by Keygen" in error["detail"]
                answers.append(error)
            assert answers[0] == answers[1]
    assert _store(relay) == before

    relay.deliver(relay.fake.increment(license_id, 4))
    assert relay.forwarded() == 7
    with relay.c.uows() as uow:
        lic = uow.licenses.get(license_id)
    assert lic is not None
    assert lic.uses == 7


def test_a_check_in_with_usage_records_is_refused_before_any_write(
    relay: Relay, clock: FakeClock
) -> None:
    """A check-in carrying usage records is refused whole (409 LICENSE_MIRRORED, nothing
    written); one without records answers as before (the mirrored policy requires none)."""
    license_id = _mirrored(relay)
    before = _store(relay)
    at = (clock.now() - timedelta(minutes=5)).isoformat()
    usage = [{"id": str(uuid.uuid4()), "increment": 2, "occurredAt": at}]
    path = f"/v1/licenses/{license_id}/actions/check-in"
    refused = relay.client.post(path, json={"meta": {"usage": usage}}, headers=JSON)
    assert refused.status_code == 409, refused.text
    assert error_of(refused)["code"] == "LICENSE_MIRRORED"
    plain = relay.client.post(path, headers=JSON)
    assert error_of(plain)["code"] == "CHECK_IN_NOT_REQUIRED"
    assert _store(relay) == before


def test_the_cli_marks_and_refuses_a_mirrored_license(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``license show``/``list`` name the mirror; ``usage increment``, ``decrement`` and
    ``reset`` exit 1 with LICENSE_MIRRORED and change nothing."""
    license_id = _mirrored(relay)
    before = _store(relay)
    monkeypatch.setenv("BRIDGE_DATABASE_URL", relay.c.settings.database_url)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    runner = CliRunner()
    shown = runner.invoke(cli, ["license", "show", license_id, "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["mirror"] == "keygen"
    listed = runner.invoke(cli, ["license", "list"])
    assert listed.exit_code == 0, listed.output
    assert "mirror" in listed.output
    assert "keygen" in listed.output
    for args in (["increment", "--by", "2"], ["decrement"], ["reset"]):
        failed = runner.invoke(cli, ["usage", args[0], license_id, *args[1:]])
        assert failed.exit_code == 1, failed.output
        assert "LICENSE_MIRRORED" in failed.output
    assert _store(relay) == before
