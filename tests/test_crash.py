"""Crash safety: a worker killed with SIGKILL in the middle of a delivery loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bridge.domain.access import Principal, Role
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.relay import outbox_status
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from tests.conftest import make_container

ADMIN = Principal(Role.ADMIN, "test")
DEADLINE_S = 30.0


def _worker(db: str, sink: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": db,
        "BRIDGE_SINKS__FILE__PATH": str(sink),
        "BRIDGE_RELAY__LEASE_S": "1",
    }
    env.pop("BRIDGE_CONFIG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "bridge", "worker", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_mid_delivery_loses_nothing_and_sends_nothing_twice(
    sqlite_url: str, tmp_path: Path
) -> None:
    """The first worker claims the batch and blocks writing it (its file is a FIFO nobody
    reads); after SIGKILL, a second worker delivers every change once the lease has run out."""
    store = make_container(sqlite_url, FakeClock(datetime.now(UTC)))  # the workers' time
    product = products.create_product(store.uows, store.clock, ADMIN, {"name": "p"})
    policy = policies.create_policy(store.uows, store.clock, ADMIN, product.id, {"name": "p"})
    lic = licenses.create_license(store.uows, store.clock, ADMIN, policy.id, {})
    usage = UsageService(store.usage_uows, store.clock, ["file"])
    ids = [
        usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)).entry_id for _ in range(5)
    ]

    fifo = tmp_path / "blocked.ndjson"
    os.mkfifo(fifo)
    first = _worker(sqlite_url, fifo)
    deadline = time.monotonic() + DEADLINE_S
    while not any(r.status.value == "inflight" for r in outbox_status(store.uows)):
        assert time.monotonic() < deadline, "the first worker never claimed the batch"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    sink = tmp_path / "usage.ndjson"
    deadline = time.monotonic() + DEADLINE_S
    while True:  # the lease (1 s) must run out before the items can be claimed again
        second = _worker(sqlite_url, sink, "--once")
        assert second.wait(timeout=DEADLINE_S) == 0
        lines = sink.read_text().splitlines() if sink.exists() else []
        if len(lines) == len(ids):
            break
        assert time.monotonic() < deadline, f"delivered {len(lines)} of {len(ids)}"
        time.sleep(0.2)
    assert [json.loads(line)["id"] for line in lines] == ids
    assert {(r.status.value, r.count) for r in outbox_status(store.uows)} == {("delivered", 5)}
    store.dispose()
