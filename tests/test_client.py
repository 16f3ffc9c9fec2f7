"""``bridge.client``: the application's meter, against the real app in process (its transport
wrapped in a network that fails on command), with crashes, outages and period boundaries."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bridge.bootstrap import Container, build_app
from bridge.client import AsyncMeterClient, LimitReached, MeterClient, Unreachable
from bridge.store import tables
from bridge.testing import FakeClock
from tests.conftest import Api, make_container

MONTHLY: dict[str, Any] = {"interval": "month", "count": 1, "anchor": "CALENDAR", "timezone": "UTC"}
CHECK_IN: dict[str, Any] = {
    "requireCheckIn": True,
    "checkInInterval": "month",
    "checkInIntervalCount": 1,
}


class Killed(BaseException):
    """The client process dies here: nothing after this point runs (not an Exception, so no
    ``except Exception`` in the client can swallow it)."""


class Network(httpx.BaseTransport):
    """The wire between the client and the bridge: up or down, and one planned fault per
    request (the request lost, the answer lost, the request delivered twice, the client killed
    before or after the bridge handled it)."""

    def __init__(self, inner: Any) -> None:  # the app's in-process transport
        self.inner = inner
        self.up = True
        self.faults: deque[str] = deque()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("network is down", request=request)
        fault = self.faults.popleft() if self.faults else None
        if fault == "lose_request":
            raise httpx.ConnectError("connection reset", request=request)
        if fault == "kill_before":
            raise Killed
        body = request.read()
        response = self.inner.handle_request(request)
        response.read()
        if fault == "duplicate":  # a proxy retried it: the bridge sees it twice
            again = httpx.Request(
                request.method, request.url, headers=request.headers, content=body
            )
            response = self.inner.handle_request(again)
            response.read()
        if fault == "lose_response":
            raise httpx.ReadTimeout("no answer", request=request)
        if fault == "kill_after":
            raise Killed
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )


@pytest.fixture
def served_app(container: Container) -> Iterator[TestClient]:
    with TestClient(build_app(container), raise_server_exceptions=True) as client:
        yield client


def _inner(app: TestClient) -> Any:
    """The test client's transport to the app (what ``Network`` wraps)."""
    return app._transport


def test_client_imports_without_the_server_stack() -> None:
    """``import bridge.client`` loads neither FastAPI, SQLAlchemy nor the settings."""
    code = (
        "import sys, bridge.client\n"
        "heavy = [m for m in ('fastapi', 'sqlalchemy', 'pydantic_settings', 'starlette', "
        "'bridge.settings', 'bridge.store') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    assert (
        "httpx"
        in subprocess.run(
            [sys.executable, "-c", "import sys, bridge.client; print(sorted(sys.modules))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def _license(api: Api, **attributes: Any) -> str:
    policy = api.policy(usagePeriod=MONTHLY, **CHECK_IN, **attributes)
    return str(api.license(policy, key=f"key-{uuid.uuid4()}")["attributes"]["key"])


def _client(
    app: TestClient, key: str, path: Path, network: Network, clock: FakeClock, **kw: Any
) -> MeterClient:
    return MeterClient(
        "http://testserver",
        key,
        path,
        transport=network,
        clock=clock.now,
        monotonic=lambda: 0.0,
        **kw,
    )


def test_offline_counting_then_sync_in_order(
    served_app: TestClient, clock: FakeClock, tmp_path: Path
) -> None:
    """Online a use is counted at once; offline it waits in the buffer (pending) and goes at
    the next sync, oldest first, each with the bridge's answer."""
    api = Api(served_app)
    key = _license(api)
    network = Network(_inner(served_app))
    meter = _client(served_app, key, tmp_path / "buffer.db", network, clock)
    assert meter.increment(2).status == "accepted"
    network.up = False
    offline = [meter.increment(1), meter.increment(3)]
    assert [r.status for r in offline] == ["pending", "pending"]
    assert meter.pending == 2
    with pytest.raises(Unreachable):
        meter.sync()
    network.up = True
    results = meter.sync()
    assert [r["id"] for r in results] == [r.id for r in offline]
    assert [r.status for r in meter.records()] == ["accepted"] * 3
    doc = api.ok("GET", f"/v1/licenses/{key}")["data"]["attributes"]
    assert doc["uses"] == 6
    meter.close()


def test_offline_limit_block_or_allow(
    served_app: TestClient, clock: FakeClock, tmp_path: Path
) -> None:
    """``block`` refuses, offline, a use past the last known maximum (counting what is still
    pending); ``allow`` records it and the bridge's answer reports it rejected."""
    api = Api(served_app)
    key = _license(api, maxUses=3)
    network = Network(_inner(served_app))
    meter = _client(served_app, key, tmp_path / "a.db", network, clock)
    meter.increment(1)
    network.up = False
    meter.increment(2)
    with pytest.raises(LimitReached):
        meter.increment(1)
    clock.advance(days=40)  # a new period: the count starts again
    assert meter.increment(3).status == "pending"
    meter.close()
    network.up = True
    allow = _client(served_app, key, tmp_path / "a.db", network, clock, limit="allow")
    allow.sync()
    late = allow.increment(1)
    assert (late.status, late.code) == ("rejected", "USES_LIMIT_EXCEEDED")
    assert [r.status for r in allow.records()] == ["accepted"] * 3 + ["rejected"]
    allow.close()


def test_async_client_meters_without_blocking_the_loop(
    served_app: TestClient, clock: FakeClock, tmp_path: Path
) -> None:
    """The async twin records, syncs and reports like the blocking client."""
    api = Api(served_app)
    key = _license(api)

    async def handler(request: httpx.Request) -> httpx.Response:
        response = await asyncio.to_thread(_inner(served_app).handle_request, request)
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.read()
        )

    async def run() -> list[str]:
        meter = AsyncMeterClient(
            "http://testserver",
            key,
            tmp_path / "async.db",
            transport=httpx.MockTransport(handler),
            clock=clock.now,
        )
        await meter.increment(2)
        await meter.increment(1)
        statuses = [r.status for r in await meter.records()]
        await meter.aclose()
        return statuses

    assert asyncio.run(run()) == ["accepted", "accepted"]
    assert api.ok("GET", f"/v1/licenses/{key}")["data"]["attributes"]["uses"] == 3


_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("use"), st.integers(1, 5)),
        st.tuples(st.sampled_from(["down", "up", "sync", "crash"]), st.just(0)),
        st.tuples(
            st.just("fault"),
            st.sampled_from(
                ["lose_request", "lose_response", "duplicate", "kill_before", "kill_after"]
            ),
        ),
        st.tuples(st.just("advance"), st.integers(1, 20)),
    ),
    max_size=30,
)


@pytest.fixture
def any_db_app(db_url: str, clock: FakeClock) -> Iterator[tuple[TestClient, Container]]:
    """The app on SQLite and on PostgreSQL (one database per test; each example of the
    property below uses a license and a buffer of its own)."""
    container = make_container(db_url, clock)
    with TestClient(build_app(container), raise_server_exceptions=True) as client:
        yield client, container
    container.dispose()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS)
def test_any_interleaving_counts_each_use_once_in_its_period(
    any_db_app: tuple[TestClient, Container], clock: FakeClock, tmp_path: Path, steps: list[Any]
) -> None:
    """Whatever happens (outages, lost requests and answers, duplicated requests, the client
    killed between any two steps or mid-request, period boundaries passed offline), once the
    network is back every use made is counted once, in the period its time falls in."""
    served_app, container = any_db_app
    api = Api(served_app)
    key = _license(api)
    license_id = api.ok("GET", f"/v1/licenses/{key}")["data"]["id"]
    path = tmp_path / f"{uuid.uuid4()}.db"
    network = Network(_inner(served_app))

    def open_client() -> MeterClient:
        return _client(served_app, key, path, network, clock)

    meter = open_client()
    for step, value in steps:
        try:
            if step == "use":
                meter.increment(value)
            elif step in ("down", "up"):
                network.up = step == "up"
            elif step == "sync":
                meter.sync()
            elif step == "fault":
                network.faults.append(value)
            elif step == "advance":
                clock.advance(days=value)
            elif step == "crash":
                raise Killed
        except Unreachable:
            pass
        except Killed:
            meter = open_client()  # the old process is gone; its buffer file stays
    network.up, network.faults = True, deque()
    meter.sync()
    made = meter.records()
    assert all(r.status in ("accepted", "duplicate") for r in made)
    meter.close()

    with container.engine.connect() as conn:
        entries = (
            conn.execute(
                select(tables.ledger).where(
                    tables.ledger.c.license_id == license_id, tables.ledger.c.kind == "increment"
                )
            )
            .mappings()
            .all()
        )
        periods = (
            conn.execute(select(tables.periods).where(tables.periods.c.license_id == license_id))
            .mappings()
            .all()
        )
    by_record = {e["idempotency_key"]: e for e in entries}
    assert len(by_record) == len(entries) == len(made)  # each use once, none extra
    for r in made:
        entry = by_record[r.id]
        assert entry["delta"] == r.increment
        assert entry["occurred_at"] == datetime.fromisoformat(r.occurred_at)

    def made_in(start: datetime, end: datetime) -> int:
        return sum(
            r.increment for r in made if start <= datetime.fromisoformat(r.occurred_at) < end
        )

    for period in periods:
        assert period["increments"] == made_in(period["period_start"], period["period_end"])
    doc = api.ok("GET", f"/v1/licenses/{key}")["data"]["attributes"]
    start = datetime.fromisoformat(doc["periodStart"])
    assert doc["uses"] == made_in(start, start + timedelta(days=400))
