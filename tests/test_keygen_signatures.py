"""``POST /v1/webhooks/keygen``: Keygen's real signature scheme (draft-cavage over
``(request-target) host date digest``), with the Digest and the Date checked; anything else is
401 and changes nothing. Also ``meterbridge keygen status|sync`` against the fake over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bridge.bootstrap import Container, build_app
from bridge.cli import app as cli
from bridge.domain.errors import WebhookSignatureInvalid, WebhookTimestampStale
from bridge.testing import FakeClock
from bridge.webhooks.verify import keygen_public_key, verify_keygen
from connectors.keygen import KeygenSettings
from tests.conftest import ADMIN_TOKEN, error_of, make_container
from tests.fakes.keygen import WEBHOOK_URL, FakeKeygen
from tests.fakes.loopback import LoopbackServer

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _check(fake: FakeKeygen, body: bytes, headers: dict[str, str], /, **over: Any) -> None:
    key = over.pop("key", None) or keygen_public_key(
        fake.public_hex if fake.algorithm == "ed25519" else fake.rsa_pem, fake.algorithm
    )
    args: dict[str, Any] = {
        "key": key,
        "algorithm": fake.algorithm,
        "account_id": fake.account_id,
        "method": "POST",
        "target": "/v1/webhooks/keygen",
        "host": "bridge.example.com",
        "tolerance_s": 300.0,
        "headers": {k.lower(): v for k, v in headers.items()},
        "body": body,
        "now": NOW,
    }
    verify_keygen(**(args | over))


@pytest.fixture
def fake() -> FakeKeygen:
    return FakeKeygen(now=lambda: NOW)


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa-pss-sha256", "rsa-sha256"])
def test_keygens_signatures_verify(fake: FakeKeygen, algorithm: str) -> None:
    """A delivery signed as Keygen signs it verifies, with each algorithm Keygen offers."""
    fake.algorithm = algorithm
    _lic, event = fake.create()
    body, headers = fake.delivery(event)
    _check(fake, body, headers)


def test_both_forms_of_the_public_key_are_accepted(fake: FakeKeygen) -> None:
    """The dashboard's hex and the API's base64-of-hex give the same key."""
    body, headers = fake.delivery(fake.create()[1])
    for form in (fake.public_hex, fake.public_base64, fake.public_hex.upper()):
        _check(fake, body, headers, key=keygen_public_key(form, "ed25519"))
    with pytest.raises(ValueError, match="64 hex digits"):
        keygen_public_key("not-a-key", "ed25519")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"body": b'{"data":{}}'}, WebhookSignatureInvalid),  # the Digest no longer matches
        ({"host": "bridge.example.com:8443"}, WebhookSignatureInvalid),  # another host signed
        ({"target": "/v1/webhooks/keygen?x=1"}, WebhookSignatureInvalid),
        ({"method": "PUT"}, WebhookSignatureInvalid),
        ({"account_id": "another-account"}, WebhookSignatureInvalid),  # keyid
        ({"algorithm": "rsa-sha256"}, WebhookSignatureInvalid),
        ({"now": NOW + timedelta(seconds=301)}, WebhookTimestampStale),
        ({"now": NOW - timedelta(seconds=301)}, WebhookTimestampStale),
    ],
)
def test_anything_else_is_refused(
    fake: FakeKeygen, change: dict[str, Any], error: type[Exception]
) -> None:
    """A changed body, host, path, method, account, algorithm or a Date out of tolerance."""
    body, headers = fake.delivery(fake.create()[1])
    with pytest.raises(error):
        _check(fake, body, headers, **change)


def test_a_signature_by_another_key_or_over_fewer_headers_is_refused(fake: FakeKeygen) -> None:
    """Another account's key; a signature that leaves out the digest (the body unbound)."""
    body, headers = fake.delivery(fake.create()[1])
    other = FakeKeygen(now=lambda: NOW)
    with pytest.raises(WebhookSignatureInvalid):
        _check(fake, body, headers, key=keygen_public_key(other.public_hex, "ed25519"))
    weak = dict(headers)
    weak["Keygen-Signature"] = headers["Keygen-Signature"].replace(
        "(request-target) host date digest", "(request-target) host date"
    )
    with pytest.raises(WebhookSignatureInvalid, match="must cover"):
        _check(fake, body, weak)


@pytest.fixture
def served(sqlite_url: str, fake: FakeKeygen) -> Iterator[tuple[Container, TestClient]]:
    settings = {
        "keygen": {"account_id": fake.account_id, "public_key": fake.public_base64},
        "sinks": {"file": {"enabled": False}},
    }
    c = make_container(sqlite_url, FakeClock(NOW), **settings)
    with TestClient(
        build_app(c), base_url="https://bridge.example.com", raise_server_exceptions=False
    ) as client:
        yield c, client
    c.dispose()


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("Keygen-Signature", None, "WEBHOOK_SIGNATURE_MISSING"),
        ("Digest", "sha-256=AAAA", "WEBHOOK_SIGNATURE_INVALID"),
        ("Date", "an hour ago, signed", "WEBHOOK_TIMESTAMP_STALE"),
        (
            "Keygen-Signature",
            'keyid="x", algorithm="ed25519", signature="AA=="',
            "WEBHOOK_SIGNATURE_INVALID",
        ),
    ],
)
def test_a_refused_delivery_is_401_and_stores_nothing(
    served: tuple[Container, TestClient],
    fake: FakeKeygen,
    header: str,
    value: str | None,
    code: str,
) -> None:
    """The stable code, and the inbox is as it was."""
    _, client = served
    body, headers = fake.delivery(fake.create()[1])
    if value is None:
        del headers[header]
    elif value == "an hour ago, signed":
        headers = fake.sign(body, date=NOW - timedelta(hours=1))
    else:
        headers[header] = value
        headers.pop(f"Keygen-{header}", None)
    response = client.post("/v1/webhooks/keygen", content=body, headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == code
    listed = client.get("/v1/webhook-deliveries", headers=ADMIN).json()
    assert listed["data"] == []
    assert listed["meta"]["rejected"]["keygen"] == {code: 1}


def test_behind_a_proxy_the_public_host_is_the_one_checked(
    sqlite_url: str, fake: FakeKeygen
) -> None:
    """Keygen signed its URL's host; the bridge receives another Host from the proxy."""
    settings = {
        "keygen": {
            "account_id": fake.account_id,
            "public_key": fake.public_hex,
            "public_host": "bridge.example.com",
        },
        "sinks": {"file": {"enabled": False}},
    }
    c = make_container(sqlite_url, FakeClock(NOW), **settings)
    body, headers = fake.delivery(fake.create()[1])
    with TestClient(build_app(c), base_url="http://10.0.0.7:8080") as client:
        assert client.post("/v1/webhooks/keygen", content=body, headers=headers).status_code == 200
    c.dispose()
    assert WEBHOOK_URL.startswith("https://bridge.example.com/")


def test_a_webhook_events_body_without_a_license_is_ignored_not_refused(
    served: tuple[Container, TestClient], fake: FakeKeygen
) -> None:
    """A signed body that is not a webhook-events document is 400 WEBHOOK_PAYLOAD_INVALID."""
    _, client = served
    body = json.dumps({"data": {"type": "licenses"}}).encode()
    response = client.post("/v1/webhooks/keygen", content=body, headers=fake.sign(body))
    assert response.status_code == 400
    assert error_of(response)["code"] == "WEBHOOK_PAYLOAD_INVALID"


def test_the_keygen_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``keygen sync --license`` mirrors a license from Keygen's API; ``keygen status`` counts
    it; without ``[keygen]`` both exit 1 with KEYGEN_NOT_CONFIGURED."""
    fake = FakeKeygen(now=lambda: datetime.now(UTC))
    lic, _ = fake.create(uses=7, metadata={"m3ter_account_code": "acme"})
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("BRIDGE_SINKS__FILE__ENABLED", "false")
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    missing = runner.invoke(cli, ["keygen", "status"])
    assert missing.exit_code == 1
    assert "KEYGEN_NOT_CONFIGURED" in missing.output
    with LoopbackServer(fake.handle) as keygen:
        settings = KeygenSettings(
            account_id=fake.account_id,
            public_key=fake.public_hex,
            token=fake.token,
            api_url=keygen.url,
        )
        for name, value in settings.model_dump(mode="json").items():
            if value is not None and name in ("account_id", "public_key", "api_url"):
                monkeypatch.setenv(f"BRIDGE_KEYGEN__{name.upper()}", str(value))
        monkeypatch.setenv("BRIDGE_KEYGEN__TOKEN", fake.token)
        synced = runner.invoke(cli, ["keygen", "sync", "--license", lic.id, "--json"])
        assert synced.exit_code == 0, synced.output
        assert json.loads(synced.stdout)["checked"] == 1
    status = runner.invoke(cli, ["keygen", "status", "--json"])
    assert status.exit_code == 0, status.output
    found = json.loads(status.stdout)
    assert found["mirrored"] == 1
    assert found["forwarded"] == 0  # its 7 uses were made before the bridge listened


def test_the_settings_refuse_a_bad_key_and_take_a_null_period(fake: FakeKeygen) -> None:
    """A malformed public key fails at load, naming the form and no other setting's value;
    ``usage_period = "null"`` turns the per-period resets off."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="64 hex digits") as refused:
        KeygenSettings(account_id=fake.account_id, public_key="zz", token="sekrit-token")
    assert "sekrit" not in str(refused.value)
    assert KeygenSettings(usage_period="null").rule is None
    rsa = KeygenSettings(algorithm="rsa-sha256", public_key=fake.rsa_pem)
    assert rsa.key is not None
