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
from sqlalchemy import create_engine, text

from tests.conftest import ADMIN_TOKEN
from tests.served import free_port

DEADLINE_S = 60.0
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
        env=_env(pg_url, tmp_path),
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


def test_workers_share_the_port_and_the_limit_and_stop_on_sigterm(
    served: tuple[str, subprocess.Popen[str]], pg_url: str
) -> None:
    """40 concurrent increments over 2 processes against maxUses 25: exactly 25 accepted, the
    rest USES_LIMIT_EXCEEDED, one ledger entry per acceptance; SIGTERM stops all, exit 0."""
    base, proc = served
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
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=DEADLINE_S) == 0


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
