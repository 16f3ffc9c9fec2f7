"""End to end: an application meters through ``bridge.client`` against a real ``meterbridge
serve`` on loopback while the network is cut, a usage period ends, the application restarts,
and the network comes back."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.client import MeterClient, Unreachable
from tests.served import Served
from tests.tcp_proxy import TcpProxy
from tests.waiting import wait_for

DEADLINE_S = 30.0


def test_outage_across_a_period_boundary_counts_everything_once(tmp_path: Path) -> None:
    """Uses made offline before and after a period boundary (and across a restart of the
    application) are counted once each, in their own periods, once the network is back; the
    late one reaches the sink with its original time."""
    with Served(tmp_path) as served, served.admin() as admin:
        product = admin.post(
            "/v1/products", json={"data": {"type": "products", "attributes": {"name": "App"}}}
        ).json()["data"]["id"]
        daily = {"interval": "day", "count": 1, "anchor": "ANNIVERSARY", "timezone": "UTC"}
        attributes = {
            "name": "Desktop",
            "maxUses": 100,
            "requireCheckIn": True,
            "checkInInterval": "week",
            "checkInIntervalCount": 1,
            "usagePeriod": daily,
        }
        policy = admin.post(
            "/v1/policies",
            json={
                "data": {
                    "type": "policies",
                    "attributes": attributes,
                    "relationships": {"product": {"data": {"type": "products", "id": product}}},
                }
            },
        ).json()["data"]["id"]
        # The license's daily period ends three seconds from now.
        boundary = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
        license = admin.post(
            "/v1/licenses",
            json={
                "data": {
                    "type": "licenses",
                    "attributes": {
                        "key": "DESKTOP-OFFLINE-1",
                        "periodAnchor": (boundary - timedelta(days=1)).isoformat(),
                    },
                    "relationships": {"policy": {"data": {"type": "policies", "id": policy}}},
                }
            },
        ).json()["data"]
        assert license["attributes"]["periodEnd"] == boundary.isoformat().replace("+00:00", "Z")
        buffer = tmp_path / "buffer.db"
        with TcpProxy(served.port) as proxy:
            meter = MeterClient(proxy.url, "DESKTOP-OFFLINE-1", buffer, timeout=2.0)
            assert meter.increment(2).status == "accepted"
            proxy.cut()
            before = meter.increment(3)
            assert before.status == "pending"
            wait_for(lambda: datetime.now(UTC) > boundary, "the period boundary", DEADLINE_S)
            after = meter.increment(4)
            assert after.status == "pending"
            meter.close()  # the application restarts while still offline
            meter = MeterClient(proxy.url, "DESKTOP-OFFLINE-1", buffer, timeout=2.0)
            with pytest.raises(Unreachable):
                meter.sync()
            proxy.restore()
            results = meter.sync()
            assert [(r["id"], r["status"], r["late"]) for r in results] == [
                (before.id, "accepted", True),
                (after.id, "accepted", False),
            ]
            assert meter.sync() == []  # nothing left to send
            meter.close()
        now = admin.get("/v1/licenses/DESKTOP-OFFLINE-1").json()["data"]["attributes"]
        assert now["uses"] == 4
        with sqlite3.connect(tmp_path / "served.db") as db:
            closed = db.execute(
                "SELECT increments, late_increments, late_entries FROM usage_periods"
            ).fetchall()
        assert closed == [(5, 3, 1)]
        sink = tmp_path / "usage.ndjson"

        def forwarded() -> list[dict[str, object]]:
            if not sink.exists():
                return []
            return [json.loads(line) for line in sink.read_text().splitlines()]

        wait_for(lambda: len(forwarded()) >= 3, "three changes forwarded", DEADLINE_S)
        late = [e for e in forwarded() if e["delta"] == 3]
        assert len(late) == 1
        assert datetime.fromisoformat(str(late[0]["occurred_at"])) == datetime.fromisoformat(
            before.occurred_at
        )
