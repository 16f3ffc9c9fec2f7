"""``meterbridge serve --workers N``: several API processes on PostgreSQL, one port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.conftest import ADMIN_TOKEN
from tests.served import free_port

DEADLINE_S = 60.0
ACCEPTED = "bridge_usage_changes_total"
JSON = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/vnd.api+json"}


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {
        **env,
        "BRIDGE_DATABASE_URL": url,
        "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BRIDGE_SIGNING__KEY_FILE": str(tmp_path / "signing.key"),
        "BRIDGE_SINKS__FILE__PATH": str(tmp_path / "usage.ndjson"),
        "BRIDGE_SCHEDULER__ENABLED": "false",
    }


@pytest.fixture
def served(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--port", str(port), "--workers", "2"],
        # its private metrics directory goes under TMPDIR: here, where the test can read it
        env={**_env(pg_url, tmp_path), "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE_S
    while True:  # wait on the condition, not a fixed sleep
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "serve exited early"
        assert time.monotonic() < deadline, "serve did not become ready in time"
        time.sleep(0.05)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _license(client: httpx.Client, max_uses: int) -> str:
    product = client.post(
        "/v1/products", json={"data": {"type": "products", "attributes": {"name": "A"}}}
    )
    policy = client.post(
        "/v1/policies",
        json={
            "data": {
                "type": "policies",
                "attributes": {"name": "P", "maxUses": max_uses},
                "relationships": {
                    "product": {"data": {"type": "products", "id": product.json()["data"]["id"]}}
                },
            }
        },
    )
    lic = client.post(
        "/v1/licenses",
        json={
            "data": {
                "type": "licenses",
                "relationships": {
                    "policy": {"data": {"type": "policies", "id": policy.json()["data"]["id"]}}
                },
            }
        },
    )
    return str(lic.json()["data"]["id"])


def _accepted_by_process(folder: Path) -> dict[str, float]:
    """Accepted increments in each process's counter file of the metrics directory."""
    found = {}
    for file in folder.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(file)]):
            for sample in metric.samples:
                if sample.name == ACCEPTED and sample.labels["result"] == "accepted":
                    found[file.stem] = found.get(file.stem, 0.0) + sample.value
    return found


def _scrape(client: httpx.Client) -> dict[str, float]:
    """From one scrape: accepted and rejected increments, and the relay's deliveries."""
    found = dict.fromkeys(("accepted", "rejected", "delivered"), 0.0)
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == ACCEPTED and labels["action"] == "increment":
                found["accepted" if labels["result"] == "accepted" else "rejected"] += sample.value
            elif sample.name == "bridge_outbox_deliveries_total" and labels["sink"] == "file":
                found["delivered"] += sample.value if labels["outcome"] == "delivered" else 0
    return found


def test_workers_share_the_port_and_the_limit_and_stop_on_sigterm(
    served: tuple[str, subprocess.Popen[str]], pg_url: str, tmp_path: Path
) -> None:
    """40 concurrent increments over 2 processes against maxUses 25: exactly 25 accepted, the
    rest USES_LIMIT_EXCEEDED, one ledger entry per acceptance. The metrics of both API
    processes and of the relay beside them are summed in one scrape, through a private
    directory removed at exit. SIGTERM stops all, exit 0."""
    base, proc = served
    (folder,) = tmp_path.glob("meterbridge-metrics-*")
    with httpx.Client(base_url=base, headers=JSON, timeout=10) as client:
        license_id = _license(client, max_uses=25)
        path = f"/v1/licenses/{license_id}/actions/increment-usage"
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _i: client.post(path), range(40)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 25 + [422] * 15
    assert {a.json()["errors"][0]["code"] for a in answers if a.status_code == 422} == {
        "USES_LIMIT_EXCEEDED"
    }
    assert sorted(
        a.json()["data"]["attributes"]["uses"] for a in answers if a.status_code == 200
    ) == list(range(1, 26))
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            count = conn.execute(
                text("SELECT count(*) FROM usage_ledger WHERE license_id = :id"), {"id": license_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert count == 25
    with httpx.Client(base_url=base, headers=JSON, timeout=10) as client:
        extra = _license(client, max_uses=1000)
        path = f"/v1/licenses/{extra}/actions/increment-usage"
        accepted = 25
        # until both API processes have accepted some (new connections, 8 at a time: the busy
        # process leaves the next one to the other)
        while len(_accepted_by_process(folder)) < 2:
            assert accepted < 500, "one process took every connection"
            with ThreadPoolExecutor(8) as pool:
                batch = list(pool.map(lambda _i: httpx.post(base + path, headers=JSON), range(8)))
            assert [a.status_code for a in batch] == [200] * 8
            accepted += 8
        # one scrape shows them all (waiting on the condition: a process may buffer its counts
        # for a moment; the deliveries are counted by the relay in the supervising process)
        expected = {"accepted": accepted, "rejected": 15, "delivered": accepted}
        deadline = time.monotonic() + DEADLINE_S
        while True:
            scraped = _scrape(client)
            if scraped == expected or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert scraped == expected
        assert sum(_accepted_by_process(folder).values()) == accepted
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=DEADLINE_S) == 0
    assert not folder.exists()


def test_workers_need_postgresql(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--workers", "2"],
        env=_env(url, tmp_path),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert done.returncode == 2
    assert "--workers needs PostgreSQL" in done.stderr
