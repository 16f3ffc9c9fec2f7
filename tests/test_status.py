"""``meterbridge status``: every part on one screen or in JSON, from a real store on SQLite and
PostgreSQL; ``--watch`` refreshes until SIGTERM and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import app
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.delivery import OutboxItem, TransientDeliveryError
from bridge.domain.model import UsageKind
from bridge.domain.webhooks import NewDelivery
from bridge.service import licenses, policies, products
from bridge.service.relay import Relay, RelayPolicy
from bridge.service.usage import UsageChange
from bridge.testing import FakeClock
from connectors.memory import InMemorySink
from tests.conftest import make_container

ADMIN = Principal(Role.ADMIN, "test")


def status(monkeypatch: pytest.MonkeyPatch, url: str, *args: str, code: int = 0) -> Any:
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["status", *args])
    assert result.exit_code == code, result.output
    return result


def test_status_shows_each_part(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three changes the file sink could not deliver (its circuit opened on the error), a
    webhook delivery: the JSON has the schema, the sink's backlog, circuit and error, the
    jobs, the inbox and the tables' sizes; the screen names them too."""
    clock = FakeClock(datetime.now(UTC))
    c = make_container(db_url, clock)
    try:
        product = products.create_product(c.uows, clock, ADMIN, NewProduct(name="p"))
        policy = policies.create_policy(c.uows, clock, ADMIN, NewPolicy(product.id, name="p"))
        lic = licenses.create_license(c.uows, clock, ADMIN, NewLicense(policy.id))
        for _ in range(3):
            c.usage().apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1))

        def down(_items: Sequence[OutboxItem]) -> None:
            raise TransientDeliveryError("connection refused by the platform")

        relay = Relay(c.uows, [InMemorySink("file", down)], clock, RelayPolicy(breaker_failures=1))
        relay.run_once()
        with c.uows(write=True) as uow:
            uow.webhooks.record(NewDelivery("lago", "d1", "event", "{}"), clock.now())
            uow.commit()
    finally:
        c.dispose()

    data = json.loads(status(monkeypatch, db_url, "--json").stdout)

    assert data["database"]["schema_state"] == "current"
    assert data["database"]["schema"] == data["database"]["head"]
    (sink,) = data["sinks"]
    assert (sink["sink"], sink["circuit"], sink["failures"]) == ("file", "open", 1)
    assert (sink["pending"], sink["inflight"], sink["dead"]) == (3, 0, 0)
    assert sink["oldest_age_s"] >= 0
    assert "connection refused" in sink["last_error"]
    jobs = {j["job"] for j in data["scheduler"]["jobs"]}
    assert {"close-periods", "purge-outbox", "purge-webhooks", "reconcile"} <= jobs
    assert data["webhooks"] == [{"provider": "lago", "status": "received", "count": 1}]
    assert data["reconciliation"] == {"checked_at": None, "findings": []}
    tables = {t["table"]: t for t in data["tables"]}
    assert set(tables) >= {"usage_ledger", "outbox", "webhook_deliveries", "usage_periods"}
    if not tables["usage_ledger"]["estimated"]:  # PostgreSQL estimates (unanalysed: counts)
        assert tables["usage_ledger"]["rows"] == 3
    assert tables["usage_ledger"]["oldest"] is not None

    screen = status(monkeypatch, db_url).stdout
    for text in ("Sinks", "open", "connection refused", "purge-outbox", "Webhook inbox"):
        assert text in screen


def test_an_unreachable_database_is_said_and_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the address: the screen says so, exit 1."""
    url = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"
    data = json.loads(status(monkeypatch, url, "--json", code=1).stdout)
    assert data["database"]["reachable"] is False
    assert data["database"]["error"]


def test_watch_refreshes_until_sigterm_and_exits_0(sqlite_url: str) -> None:
    """``--watch --json`` prints a document per refresh; SIGTERM ends it with exit 0."""
    env = {**os.environ, "BRIDGE_DATABASE_URL": sqlite_url}  # a migrated store
    env.pop("BRIDGE_CONFIG", None)
    with subprocess.Popen(
        [sys.executable, "-m", "bridge", "status", "--watch", "0.5", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            for _ in range(2):  # two refreshes
                document = json.loads(proc.stdout.readline())
                assert document["database"]["schema_state"] == "current"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
