"""``meterbridge serve`` handles webhooks by itself: a real process, a signed delivery, and the
license suspended by the webhook worker it runs, then a graceful stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests import webhook_signing as sign
from tests.conftest import ADMIN_TOKEN, Api
from tests.served import free_port
from tests.waiting import wait_for

DEADLINE_S = 30.0
KEY = "serve-hmac-token"


def test_serve_handles_a_delivery_in_the_background(tmp_path: Path) -> None:
    """The 200 comes from the store; the worker thread of serve applies the termination soon
    after, without anyone driving it; SIGTERM then stops serve with exit 0."""
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
        "BRIDGE_ADMIN_TOKEN": ADMIN_TOKEN,
        "BRIDGE_WEBHOOKS__LAGO__HMAC_KEY": KEY,
        "BRIDGE_RELAY__IDLE_S": "0.05",
        "BRIDGE_SCHEDULER__ENABLED": "false",
    }
    env.pop("BRIDGE_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:

            def ready() -> bool:
                try:
                    return http.get("/readyz").status_code == 200
                except httpx.TransportError:
                    assert proc.poll() is None, "serve exited early"
                    return False

            wait_for(ready, "serve to be ready")
            api = Api(http)  # type: ignore[arg-type]
            lic = api.license(metadata={"lago_subscription_id": "sub-1"})["id"]
            body = sign.body_of(
                {
                    "webhook_type": "subscription.terminated",
                    "object_type": "subscription",
                    "organization_id": "o",
                    "subscription": {"external_id": "sub-1"},
                }
            )
            answer = http.post(
                "/v1/webhooks/lago", content=body, headers=sign.lago_hmac(KEY, body, "s-1")
            )
            assert answer.status_code == 200

            def suspended() -> bool:
                doc = api.ok("GET", f"/v1/licenses/{lic}")
                return bool(doc["data"]["attributes"]["suspended"])

            wait_for(suspended, "the webhook worker to suspend the license")
            delivery = api.ok("GET", "/v1/webhook-deliveries")["data"][0]["attributes"]
            assert delivery["status"] == "applied"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=DEADLINE_S)
    assert code == 0
