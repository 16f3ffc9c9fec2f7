"""``meterbridge serve`` end to end: a real server process on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.served import free_port
from tests.waiting import wait_for

DEADLINE_S = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
        "BRIDGE_SINKS__FILE__PATH": str(tmp_path / "usage.ndjson"),
        "BRIDGE_RELAY__IDLE_S": "0.05",
        "COLUMNS": "200",
    }
    env.pop("BRIDGE_ADMIN_TOKEN", None)
    env.pop("BRIDGE_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:  # wait on the condition, not a fixed sleep
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            if proc.poll() is not None:
                pytest.fail(f"serve exited early: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.05)
    else:
        proc.kill()
        proc.wait(timeout=10)
        pytest.fail("serve did not become ready in time")
    yield base, proc, tmp_path
    proc.terminate()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_first_serve_prints_an_admin_token_that_works(
    server: tuple[str, subprocess.Popen[str], Path],
) -> None:
    """The first serve creates an admin token, prints it once, and it authenticates; an
    accepted increment reaches the default file sink through the relay serve runs."""
    base, proc, server_dir = server
    assert proc.stdout is not None
    token = None
    for line in proc.stdout:  # the token is printed before the server starts listening
        match = re.search(r"(admin-[0-9a-f]{64})", line)
        if match:
            token = match.group(1)
            break
    assert token is not None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/vnd.api+json"}
    with httpx.Client(base_url=base, headers=headers, timeout=5) as client:
        product = client.post(
            "/v1/products", json={"data": {"type": "products", "attributes": {"name": "A"}}}
        )
        assert product.status_code == 201
        policy = client.post(
            "/v1/policies",
            json={
                "data": {
                    "type": "policies",
                    "attributes": {"name": "P", "maxUses": 1},
                    "relationships": {
                        "product": {
                            "data": {"type": "products", "id": product.json()["data"]["id"]}
                        }
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
        ).json()["data"]
        path = f"/v1/licenses/{lic['id']}/actions/increment-usage"
        accepted = client.post(path)
        assert accepted.json()["data"]["attributes"]["uses"] == 1
        assert client.post(path).json()["errors"][0]["code"] == "USES_LIMIT_EXCEEDED"
        assert (
            client.get("/v1/licenses", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
    # The relay inside serve forwards the accepted change to the file sink.
    entry_id = accepted.headers["Usage-Entry-Id"]
    forwarded = server_dir / "usage.ndjson"
    wait_for(
        lambda: entry_id in (forwarded.read_text() if forwarded.exists() else ""),
        "the change to reach the file sink",
        DEADLINE_S,
    )
