"""``meterbridge webhooks list|show|replay|history`` on a stored delivery."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bridge.bootstrap import build_app
from bridge.cli import app
from bridge.testing import FakeClock
from tests import webhook_signing as sign
from tests.conftest import Api, make_container

KEY = "lago-hmac-token"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("BRIDGE_WEBHOOKS__LAGO__HMAC_KEY", KEY)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout) if "--json" in args else result.stdout

    return invoke


def test_an_unmatched_delivery_is_listed_replayed_and_shown_in_the_history(
    run: Any, tmp_path: Path
) -> None:
    """A termination for a subscription no license has yet waits as unmatched; once the
    license exists, ``webhooks replay`` applies it and ``webhooks history`` shows it."""
    c = make_container(
        f"sqlite:///{tmp_path / 'cli.db'}", FakeClock(), webhooks={"lago": {"hmac_key": KEY}}
    )
    body = sign.body_of(
        {
            "webhook_type": "subscription.terminated",
            "object_type": "subscription",
            "organization_id": "o",
            "subscription": {"external_id": "sub-late"},
        }
    )
    with TestClient(build_app(c)) as client:
        client.post("/v1/webhooks/lago", content=body, headers=sign.lago_hmac(KEY, body, "k-1"))
        worker = c.webhook_worker()
        worker.run_once()
        (listed,) = run("webhooks", "list", "--json")
        assert (listed["status"], listed["delivery_id"]) == ("unmatched", "k-1")
        lic = Api(client).license(metadata={"lago_subscription_id": "sub-late"})
    c.dispose()
    assert "applied" in run("webhooks", "replay", str(listed["id"]))
    shown = run("webhooks", "show", str(listed["id"]), "--json")
    assert shown["status"] == "applied"
    assert json.loads(shown["body"])["subscription"]["external_id"] == "sub-late"
    (effect,) = run("webhooks", "history", lic["attributes"]["key"], "--json")
    assert (effect["action"], effect["provider"], effect["delivery_id"]) == (
        "suspend",
        "lago",
        "k-1",
    )
    assert run("webhooks", "list", "--status", "unmatched", "--json") == []
