"""SIGTERM stops ``serve``, ``worker`` and ``scheduler`` gracefully: real processes, a fake Lago
on loopback that holds the delivery in flight.

Decided: on SIGTERM the relay finishes the batch in flight and records it (delivered, sent
once), within ``relay.stop_timeout_s``; past that bound it hands the batch back (pending, due at
once, for the next relay; the platform deduplicates the resend on the entry id). Either way the
process logs that it stopped and exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from bridge.bootstrap import Container
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.model import UsageKind
from bridge.service import licenses, policies, products
from bridge.service.relay import outbox_status
from bridge.service.usage import UsageChange, UsageService
from bridge.testing import FakeClock
from tests.conftest import make_container
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.loopback import LoopbackServer
from tests.test_lago import ADMIN, KEY

DEADLINE_S = 30.0


class Process:
    """A ``meterbridge`` command in its own process, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, text: str) -> None:
        """Until ``text`` is in the output (or fail at the deadline)."""
        deadline = time.monotonic() + DEADLINE_S
        with self._changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    pytest.fail(f"no {text!r} in the output:\n{''.join(self.lines)}")
                self._changed.wait(min(left, 0.5))

    def stop(self) -> int:
        """SIGTERM, then the exit code (the process must end before the deadline)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait()

    def wait(self) -> int:
        code = self.proc.wait(timeout=DEADLINE_S)
        self._reader.join(timeout=DEADLINE_S)
        return code

    def kill(self) -> None:
        """Kill it if it still runs; close its output."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=DEADLINE_S)
        self._reader.join(timeout=DEADLINE_S)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def lago() -> Iterator[tuple[FakeLago, LoopbackServer]]:
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    fake = FakeLago(KEY)
    with LoopbackServer(fake) as server:
        yield fake, server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Container]:
    """A SQLite file with one license mapped to a Lago subscription, shared with the process."""
    clock = FakeClock(datetime.now(UTC) - timedelta(seconds=1))
    container = make_container(f"sqlite:///{tmp_path / 'bridge.db'}", clock)
    yield container
    container.dispose()


def one_change(store: Container) -> str:
    """One accepted increment for Lago; its entry id."""
    product = products.create_product(store.uows, store.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(store.uows, store.clock, ADMIN, NewPolicy(product.id, name="p"))
    meta = {"lago_subscription_id": "sub_1"}
    lic = licenses.create_license(
        store.uows, store.clock, ADMIN, NewLicense(policy.id, metadata=meta)
    )
    usage = UsageService(store.usage_uows, store.clock, ["lago"])
    return usage.apply(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)).entry_id


def environment(store: Container, lago_url: str, stop_timeout_s: float) -> dict[str, str]:
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": store.settings.database_url,
        "BRIDGE_SINKS__FILE__ENABLED": "false",
        "BRIDGE_SINKS__LAGO__ENABLED": "true",
        "BRIDGE_SINKS__LAGO__API_URL": lago_url,
        "BRIDGE_SINKS__LAGO__API_KEY": KEY,
        "BRIDGE_SINKS__LAGO__DEFAULT_METRIC_CODE": "api_calls",
        "BRIDGE_RELAY__IDLE_S": "0.05",
        "BRIDGE_RELAY__STOP_TIMEOUT_S": str(stop_timeout_s),
        "BRIDGE_ADMIN_TOKEN": "admin-shutdown-test",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("BRIDGE_CONFIG", None)
    return env


def command(name: str) -> list[str]:
    if name == "serve":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return ["serve", "--port", str(s.getsockname()[1])]
    return [name]


def counts(store: Container) -> dict[tuple[str, str], int]:
    return {(r.sink, r.status.value): r.count for r in outbox_status(store.uows)}


@pytest.mark.parametrize("name", ["serve", "worker"])
def test_sigterm_finishes_the_batch_in_flight(
    store: Container, lago: tuple[FakeLago, LoopbackServer], name: str
) -> None:
    """SIGTERM while Lago holds the relay's request: the process waits for the answer, records
    the batch delivered (sent once), stops the relay (and serve its scheduler), logs that it
    stopped and exits 0."""
    fake, server = lago
    entry = one_change(store)
    hold = server.hold_next()
    process = Process(command(name), environment(store, server.url, stop_timeout_s=DEADLINE_S))
    try:
        assert hold.arrived.wait(DEADLINE_S), process.output
        process.proc.send_signal(signal.SIGTERM)
        process.wait_for("shutdown_started")  # the stop has begun with the request in flight
        hold.release()
        assert process.wait() == 0, process.output
    finally:
        process.kill()
    assert f"{name}_stopped" in process.output
    assert "relay_stopped" in process.output
    if name == "serve":
        assert "scheduler_stopped" in process.output
    assert counts(store) == {("lago", "delivered"): 1}
    assert fake.ingested == [entry]
    assert len(fake.batches) == 1, "resent"


def test_sigterm_hands_back_a_batch_that_outlasts_the_stop_timeout(
    store: Container, lago: tuple[FakeLago, LoopbackServer]
) -> None:
    """If the platform holds the request past ``relay.stop_timeout_s``, serve hands the batch
    back (pending and due now, not left in flight for a whole lease) and still exits 0."""
    _fake, server = lago
    one_change(store)
    hold = server.hold_next()
    process = Process(command("serve"), environment(store, server.url, stop_timeout_s=0.2))
    try:
        assert hold.arrived.wait(DEADLINE_S), process.output
        assert process.stop() == 0, process.output
    finally:
        process.kill()
        hold.release()
    assert "relay_stop_timed_out" in process.output
    assert "outbox_handed_back" in process.output
    assert "serve_stopped" in process.output
    assert counts(store) == {("lago", "pending"): 1}
    now = datetime.now(UTC)
    with store.uows(write=True) as uow:  # due at once for the next relay
        assert len(uow.outbox.claim("lago", now, now + timedelta(seconds=60), 10)) == 1


def test_sigterm_stops_the_scheduler(store: Container) -> None:
    """``meterbridge scheduler`` stops on SIGTERM, logs it and exits 0."""
    env = environment(store, "http://127.0.0.1:9", stop_timeout_s=1)
    process = Process(["scheduler"], env)
    try:
        process.wait_for("scheduler running")
        assert process.stop() == 0, process.output
    finally:
        process.kill()
    assert "scheduler_stopped" in process.output


def test_readiness_is_not_needed_to_stop(
    store: Container, lago: tuple[FakeLago, LoopbackServer]
) -> None:
    """A serve stopped as soon as it answers exits 0 too (nothing in flight)."""
    _fake, server = lago
    port_args = command("serve")
    process = Process(port_args, environment(store, server.url, stop_timeout_s=1))
    base = f"http://127.0.0.1:{port_args[-1]}"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, process.output
                time.sleep(0.05)
        assert process.stop() == 0, process.output
    finally:
        process.kill()
    assert "serve_stopped" in process.output
