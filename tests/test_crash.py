"""Crash safety: a worker killed with SIGKILL in the middle of a delivery loses nothing, and
(with the platform's dedupe on the ledger entry id) bills nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bridge.bootstrap import build_app
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.relay import outbox_status
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from tests.conftest import Api, make_container
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.loopback import LoopbackServer
from tests.waiting import wait_for

ADMIN = Principal(Role.ADMIN, "test")
DEADLINE_S = 30.0


def _worker(settings: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``meterbridge worker`` configured by ``settings`` alone (no other ``BRIDGE_*`` variable
    of this environment), its output appended to ``log``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker", *args],
            env={**environ, **settings},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _file_worker(db: str, sink: Path, *args: str) -> subprocess.Popen[bytes]:
    settings = {
        "BRIDGE_DATABASE_URL": db,
        "BRIDGE_SINKS__FILE__PATH": str(sink),
        "BRIDGE_RELAY__LEASE_S": "1",
    }
    return _worker(settings, sink.parent / "worker.log", *args)


def test_kill_9_mid_delivery_loses_nothing_and_sends_nothing_twice(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The first worker claims the batch and blocks writing it (its file is a FIFO nobody
    reads); after SIGKILL, a second worker delivers every change once the lease has run out."""
    store = make_container(sqlite_url, FakeClock(datetime.now(UTC)))  # the workers' time
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    lic = licenses.create_license(store.uows, store.clock, ADMIN, NewLicense(policy.id))
    usage = UsageService(store.usage_uows, store.clock, ["file"])
    ids = [
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)).entry_id for _ in range(5)
    ]

    fifo = tmp_path / "blocked.ndjson"
    os.mkfifo(fifo)
    first = _file_worker(sqlite_url, fifo)
    wait_for(
        lambda: any(r.status.value == "inflight" for r in outbox_status(store.uows)),
        "the first worker to claim the batch",
        DEADLINE_S,
    )
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    sink = tmp_path / "usage.ndjson"
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the lease (1 s) must run out before the items can be claimed again
        second = _file_worker(sqlite_url, sink, "--once")
        assert second.wait(timeout=DEADLINE_S) == 0
        lines = sink.read_text().splitlines() if sink.exists() else []
        if len(lines) == len(ids):
            break
        assert time.monotonic() < deadline, f"delivered {len(lines)} of {len(ids)}"
        time.sleep(0.2)
    assert [json.loads(line)["id"] for line in lines] == ids
    assert {(r.status.value, r.count) for r in outbox_status(store.uows)} == {("delivered", 5)}
    store.dispose()


# -- several workers on PostgreSQL, over real HTTP -------------------------------------------

LAGO_KEY = "lago-e2e-key"
BATCH = 25


def test_workers_on_postgresql_bill_each_entry_once_through_a_kill_9(
    pg_url: str, tmp_path: Path
) -> None:
    """Three ``meterbridge worker`` processes drain one PostgreSQL outbox over real HTTP into
    the fake Lago on loopback, while increments keep coming through the HTTP API. One worker
    is SIGKILLed with its batch in flight (Lago stores that batch; the answer never reaches
    the worker). The others take the batch over when its lease ends and resend it: Lago holds
    every ledger entry exactly once, and no transaction id was ever stored twice."""
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    lago = FakeLago(LAGO_KEY)
    lago_settings = {
        "enabled": True,
        "api_key": LAGO_KEY,
        "default_metric_code": "api_calls",
    }
    store = make_container(
        pg_url,
        FakeClock(datetime.now(UTC)),  # the workers' time
        sinks={"file": {"enabled": False}, "lago": lago_settings},
    )
    with LoopbackServer(lago) as server, TestClient(build_app(store)) as client:
        api = Api(client)
        policy = api.policy()
        subscriptions = [f"sub_{n}" for n in range(3)]
        license_ids = [
            api.license(policy, metadata={"lago_subscription_id": sub})["id"]
            for sub in subscriptions
        ]

        def accept(count: int) -> list[str]:
            ids = []
            for n in range(count):
                response = api.increment(license_ids[n % len(license_ids)])
                assert response.status_code == 200, response.text
                ids.append(response.headers["Usage-Entry-Id"])
            return ids

        accepted = accept(300)
        env = {
            "BRIDGE_DATABASE_URL": pg_url,
            "BRIDGE_SINKS__FILE__ENABLED": "false",
            "BRIDGE_SINKS__LAGO__ENABLED": "true",
            "BRIDGE_SINKS__LAGO__API_URL": server.url,
            "BRIDGE_SINKS__LAGO__API_KEY": LAGO_KEY,
            "BRIDGE_SINKS__LAGO__DEFAULT_METRIC_CODE": "api_calls",
            "BRIDGE_RELAY__BATCH_SIZE": str(BATCH),
            "BRIDGE_RELAY__LEASE_S": "2",
            "BRIDGE_RELAY__IDLE_S": "0.05",
            "BRIDGE_RELAY__RETRY_CAP_S": "1",
        }
        held = server.hold_next()  # the first request (the victim's batch) waits in the fake
        victim = _worker(env, tmp_path / "victim.log")
        assert held.arrived.wait(DEADLINE_S), "the first worker never sent a batch"
        with store.uows() as uow:
            (inflight,) = [r for r in uow.outbox.status() if r.status.value == "inflight"]
        assert inflight.count == BATCH  # only the victim has claimed anything yet

        logs = [tmp_path / f"worker{n}.log" for n in (1, 2)]
        others = [_worker(env, log) for log in logs]
        wait_for(lambda: len(lago.ingested) >= 2 * BATCH, "the other workers deliver nothing")
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        held.release()  # the victim's batch reaches Lago after all; its answer is lost
        accepted += accept(60)  # usage keeps coming while the survivors drain

        def all_delivered() -> bool:
            rows = {r.status.value: r.count for r in outbox_status(store.uows)}
            return rows == {"delivered": len(accepted)}

        wait_for(all_delivered, "the outbox never drained")
        for worker, log in zip(others, logs, strict=True):
            assert worker.poll() is None, log.read_text()
            worker.send_signal(signal.SIGTERM)
        assert [w.wait(timeout=DEADLINE_S) for w in others] == [0, 0]

    with store.uows() as uow:
        ledger = {
            e.id for lic in license_ids for e in uow.ledger.history(lic, offset=0, limit=1000)[0]
        }
    store.dispose()
    assert ledger == set(accepted)
    assert lago.violations == []
    assert len(lago.ingested) == len(set(lago.ingested)), "an id was stored twice as new"
    assert set(lago.ingested) == ledger
    sent = Counter(e["transaction_id"] for batch in lago.batches for e in batch)
    resent = [txn for txn, times in sent.items() if times > 1]
    assert len(resent) >= BATCH, "the killed worker's batch was not resent"
    assert {sub for sub, _ in lago.stored} == set(subscriptions)
