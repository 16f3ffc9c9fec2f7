"""What every fault scenario shares: real ``meterbridge`` processes, the fake platforms over
loopback, a concurrent load through the HTTP API, and the audit at the end.

A scenario starts its processes (``Process``), drives ``Load`` through them while it injects its
faults, lets everything drain, and calls ``audit``: each license's counter equals its ledger,
every change the API accepted (a 200 with its ``Usage-Entry-Id``) is in the ledger, and every
ledger entry reached each fake platform exactly once. ``Figures`` is what it prints (and what
``tests/reliability/conftest.py`` sums up at the end of the run).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from bridge.testing import FakeClock
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.loopback import LoopbackServer
from tests.fakes.m3ter import API, CLIENT_ID, CLIENT_SECRET, INGEST, ORG, FakeM3ter
from tests.served import ADMIN, free_port
from tests.waiting import wait_for

DEADLINE_S = 60.0
# Several processes importing at once on a busy 2-core machine may take a while to listen.
STARTUP_S = 180.0
# How many times a scenario repeats its faults, and how long a timed phase lasts: small in CI;
# bench/fault_soak.sh runs the long variants.
ROUNDS = int(os.environ.get("BRIDGE_FAULT_ROUNDS", "2"))
PHASE_S = float(os.environ.get("BRIDGE_FAULT_PHASE_S", "2"))
LAGO_KEY = "lago-reliability-key"
JSON_API = "application/vnd.api+json"


# -- processes --------------------------------------------------------------------------------


def base_env(settings: dict[str, str]) -> dict[str, str]:
    """This environment without any ``BRIDGE_*`` variable, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**env, "BRIDGE_ADMIN_TOKEN": ADMIN, "COLUMNS": "200", **settings}


# What each process logs once its stop handler is installed and it is at work.
_STARTED = {"worker": b"relay_started", "scheduler": b"scheduler running"}


@dataclass
class Process:
    """One ``meterbridge <command>`` process, restartable; its output appended to ``log``."""

    command: str
    env: dict[str, str]
    log: Path
    port: int | None = None  # serve only
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0
    _logged: int = 0  # the log's size when the current process was spawned

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Process:
        return self.spawn().wait_ready()

    def spawn(self) -> Process:
        argv = [sys.executable, "-m", "bridge", self.command]
        if self.command == "serve":
            self.port = self.port or free_port()
            argv += ["--port", str(self.port)]
        self._logged = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            # In the scenario's directory: on PostgreSQL the signing key file is created in the
            # working directory (shared by the scenario's processes, as replicas must share it).
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.log.parent
            )
        return self

    def wait_ready(self) -> Process:
        """Until it is at work, its SIGTERM handler in place: ``serve`` answers ``/readyz``;
        ``worker`` and ``scheduler`` have said they started (a SIGTERM before that, while
        Python imports, would just end the process)."""
        started = self.ready if self.command == "serve" else self._started
        wait_for(started, f"{self.command} to start ({self.log})", STARTUP_S)
        return self

    def _started(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        with self.log.open("rb") as f:
            f.seek(self._logged)
            return _STARTED[self.command] in f.read()

    def ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM; the exit code (0 is a graceful stop)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0 if self.proc is None else int(self.proc.returncode)
        self.proc.send_signal(signal.SIGTERM)
        return int(self.proc.wait(timeout=DEADLINE_S))


@contextmanager
def running(*processes: Process) -> Iterator[None]:
    """Start them all at once; stop every one (SIGTERM) when the block ends: each must exit 0
    (a graceful stop), unless the block failed (then its error is the one reported)."""
    try:
        for p in processes:
            p.spawn()
        for p in processes:
            p.wait_ready()
        yield
    except BaseException:
        for p in processes:
            p.stop()
        raise
    codes = {p.log.name: p.stop() for p in processes}
    assert set(codes.values()) <= {0}, codes


# -- the platforms ----------------------------------------------------------------------------


class Platforms:
    """The fake Lago and the fake m3ter on loopback. Each can be taken down (its port refuses
    connections) and brought back on the same port; the handlers keep what they stored."""

    def __init__(self) -> None:
        self.lago = FakeLago(LAGO_KEY)
        # The bridge stamps changes with the real time; the fake m3ter refuses future ones.
        self.m3ter = FakeM3ter(FakeClock(datetime.now(UTC) + timedelta(hours=1)))
        self.m3ter_sent: Counter[str] = Counter()  # every uid posted, resends included
        self._servers: dict[str, LoopbackServer] = {}

    def _m3ter(self, request: httpx.Request) -> httpx.Response:
        response = self.m3ter(request)
        if response.status_code == 200 and request.url.path.endswith("/measurements"):
            for m in json.loads(request.content)["measurements"]:
                self.m3ter_sent[m["uid"]] += 1
        return response

    def _make(self, name: str, port: int = 0) -> LoopbackServer:
        if name == "lago":
            return LoopbackServer(self.lago, port=port, hang_s=5)
        as_url = API if name == "m3ter_api" else INGEST
        return LoopbackServer(self._m3ter, as_url=as_url, port=port, hang_s=5)

    def start(self) -> Platforms:
        for name in ("lago", "m3ter_api", "m3ter_ingest"):
            self._servers[name] = self._make(name).start()
        return self

    def stop(self) -> None:
        for server in self._servers.values():
            server.stop()

    def down(self, name: str) -> None:
        """Connections to this platform are refused (nothing listens on its port)."""
        self._servers[name].stop()

    def up(self, name: str) -> None:
        port = int(self._servers[name].url.rsplit(":", 1)[1])
        self._servers[name] = self._make(name, port).start()

    def settings(self, *, timeout_s: float = 2.0) -> dict[str, str]:
        return {
            "BRIDGE_SINKS__LAGO__ENABLED": "true",
            "BRIDGE_SINKS__LAGO__API_URL": self._servers["lago"].url,
            "BRIDGE_SINKS__LAGO__API_KEY": LAGO_KEY,
            "BRIDGE_SINKS__LAGO__DEFAULT_METRIC_CODE": "api_calls",
            "BRIDGE_SINKS__LAGO__TIMEOUT_S": str(timeout_s),
            "BRIDGE_SINKS__M3TER__ENABLED": "true",
            "BRIDGE_SINKS__M3TER__ORG_ID": ORG,
            "BRIDGE_SINKS__M3TER__API_URL": self._servers["m3ter_api"].url,
            "BRIDGE_SINKS__M3TER__INGEST_URL": self._servers["m3ter_ingest"].url,
            "BRIDGE_SINKS__M3TER__CLIENT_ID": CLIENT_ID,
            "BRIDGE_SINKS__M3TER__CLIENT_SECRET": CLIENT_SECRET,
            "BRIDGE_SINKS__M3TER__DEFAULT_METER_CODE": "api_calls",
            "BRIDGE_SINKS__M3TER__TIMEOUT_S": str(timeout_s),
            **relay_settings(),
        }


def relay_settings() -> dict[str, str]:
    """Fast retries, a short breaker and lease: a scenario's outage ends in seconds."""
    return {
        "BRIDGE_RELAY__IDLE_S": "0.05",
        "BRIDGE_RELAY__RETRY_BASE_S": "0.1",
        "BRIDGE_RELAY__RETRY_CAP_S": "0.5",
        "BRIDGE_RELAY__BREAKER_COOLDOWN_S": "0.5",
        "BRIDGE_RELAY__LEASE_S": "3",
    }


@contextmanager
def platforms() -> Iterator[Platforms]:
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    p = Platforms().start()
    try:
        yield p
    finally:
        p.stop()
    assert p.lago.violations == [], p.lago.violations  # (harness.py is not rewritten)


# -- the load ---------------------------------------------------------------------------------


def admin(url: str, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": JSON_API},
        timeout=timeout,
    )


def make_licenses(url: str, count: int) -> list[str]:
    """A product, a policy without a limit and ``count`` licenses mapped to both platforms."""
    with admin(url) as http:
        product = http.post(
            "/v1/products", json={"data": {"type": "products", "attributes": {"name": "App"}}}
        ).json()["data"]["id"]
        policy = http.post(
            "/v1/policies",
            json={
                "data": {
                    "type": "policies",
                    "attributes": {"name": "Metered"},
                    "relationships": {"product": {"data": {"type": "products", "id": product}}},
                }
            },
        ).json()["data"]["id"]
        ids = []
        for n in range(count):
            meta = {"lago_subscription_id": f"sub_{n}", "m3ter_account_code": f"acct_{n}"}
            doc = http.post(
                "/v1/licenses",
                json={
                    "data": {
                        "type": "licenses",
                        "attributes": {"metadata": meta},
                        "relationships": {"policy": {"data": {"type": "policies", "id": policy}}},
                    }
                },
            )
            assert doc.status_code == 201, doc.text
            ids.append(doc.json()["data"]["id"])
    return ids


@dataclass
class Load:
    """``threads`` clients sending increments of 1 to random licenses through ``urls`` (a
    callable, so a restarted process is found), until stopped.

    With ``keys``, every request carries an ``Idempotency-Key`` and is retried with it until it
    is answered 200 (a client that wants each change once). Without, a request that fails
    (503, a connection dropped by a kill) is given up: the change may or may not have been
    applied, and the audit only asks that the ledger and the counters agree.
    """

    urls: Callable[[], list[str]]
    licenses: list[str]
    threads: int = 8
    keys: bool = True
    accepted: list[str] = field(default_factory=list)  # entry ids answered 200
    by_key: dict[str, str] = field(default_factory=dict)  # key -> the entry id answered
    statuses: Counter[int | str] = field(default_factory=Counter)
    missing_retry_after: int = 0
    given_up: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(random.Random(n),), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> None:
        """Stop sending; with keys, a request in flight is still retried until it is 200."""
        self._stop.set()
        for t in self._workers:
            t.join(DEADLINE_S * 2)
            assert not t.is_alive(), "a load thread is stuck"

    def wait_accepted(self, more: int) -> None:
        """Until ``more`` further changes are accepted."""
        target = len(self.accepted) + more
        wait_for(lambda: len(self.accepted) >= target, f"{more} more accepted changes")

    def _run(self, rng: random.Random) -> None:
        clients: dict[str, httpx.Client] = {}
        try:
            while not self._stop.is_set():
                self._one(rng, clients)
        finally:
            for c in clients.values():
                c.close()

    def _one(self, rng: random.Random, clients: dict[str, httpx.Client]) -> None:
        license_id = rng.choice(self.licenses)
        key = uuid.uuid4().hex if self.keys else None
        deadline = time.monotonic() + DEADLINE_S * 2
        while True:
            url = rng.choice(self.urls())
            client = clients.get(url) or clients.setdefault(url, admin(url, timeout=30))
            headers = {"Idempotency-Key": key} if key else {}
            outcome: int | str
            try:
                response = client.post(
                    f"/v1/licenses/{license_id}/actions/increment-usage",
                    json={"meta": {"increment": 1}},
                    headers=headers,
                )
                outcome = response.status_code
            except httpx.TransportError as exc:
                response, outcome = None, type(exc).__name__
            with self._lock:
                self.statuses[outcome] += 1
                if response is not None and outcome == 200:
                    entry = response.headers["Usage-Entry-Id"]
                    self.accepted.append(entry)
                    if key is not None:
                        assert self.by_key.setdefault(key, entry) == entry, "a key replayed"
                    return
                if outcome == 503 and response is not None:
                    self.missing_retry_after += "retry-after" not in response.headers
            if key is None or (self._stop.is_set() and time.monotonic() > deadline):
                self.given_up += 1
                return
            time.sleep(0.05 + rng.random() * 0.1)  # then the same key again

    def unexpected(self) -> dict[int | str, int]:
        """Answers other than 200, 503 and a connection lost to a fault (a 500, a 4xx...)."""
        transport = {"ConnectError", "ReadError", "RemoteProtocolError", "ReadTimeout"}
        return {
            k: v for k, v in self.statuses.items() if k not in {200, 503} and k not in transport
        }


# -- the audit --------------------------------------------------------------------------------


@dataclass
class Figures:
    scenario: str
    load: str
    faults: str
    accepted: int = 0
    ledger: int = 0
    lost: int = 0
    duplicates: int = 0
    resent: int = 0  # sent again and deduplicated by the platform (not billed twice)
    notes: str = ""

    def line(self) -> str:
        return (
            f"{self.scenario}: load {self.load}; faults {self.faults}; accepted {self.accepted} "
            f"(ledger {self.ledger}); lost {self.lost}; duplicates at the platforms "
            f"{self.duplicates}; resent and deduplicated {self.resent}"
            + (f"; {self.notes}" if self.notes else "")
        )


RESULTS: list[Figures] = []


def ledger_rows(db_url: str) -> tuple[dict[str, int], dict[str, int], list[str], list[str]]:
    """(uses per license, ledger sum per license, ledger entry ids, idempotency keys used)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            uses = {r[0]: r[1] for r in conn.execute(text("SELECT id, uses FROM licenses"))}
            sums = {
                r[0]: r[1]
                for r in conn.execute(
                    text("SELECT license_id, SUM(delta) FROM usage_ledger GROUP BY license_id")
                )
            }
            entries = list(conn.execute(text("SELECT id FROM usage_ledger")).scalars())
            keys = list(
                conn.execute(
                    text(
                        "SELECT idempotency_key FROM usage_ledger WHERE idempotency_key IS NOT NULL"
                    )
                ).scalars()
            )
            undelivered = conn.execute(
                text("SELECT COUNT(*) FROM outbox WHERE status <> 'delivered'")
            ).scalar_one()
            assert undelivered == 0, f"{undelivered} outbox items not delivered"
    finally:
        engine.dispose()
    return uses, {k: int(v) for k, v in sums.items()}, entries, keys


def wait_drained(db_url: str, deadline_s: float = DEADLINE_S) -> None:
    """Until every outbox item is delivered."""
    engine = create_engine(db_url)

    def drained() -> bool:
        with engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT COUNT(*) FROM outbox WHERE status <> 'delivered'")
                ).scalar_one()
                == 0
            )

    try:
        wait_for(drained, "the outbox to drain", deadline_s)
    finally:
        engine.dispose()


def audit(
    figures: Figures,
    db_url: str,
    loads: list[Load],
    platforms: Platforms | None = None,
    file_sink: Path | None = None,
) -> Figures:
    """The checks every scenario ends with; fills ``figures``, prints and records them."""
    uses, sums, entries, keys = ledger_rows(db_url)
    ledger = set(entries)
    assert len(ledger) == len(entries)
    accepted = {entry for load in loads for entry in load.accepted}
    figures.accepted = len(accepted)
    figures.ledger = len(ledger)
    figures.lost = len(accepted - ledger)
    assert {k: v for k, v in uses.items() if v} == sums, "a counter differs from its ledger"
    assert len(keys) == len(set(keys)), "an Idempotency-Key was applied twice"
    for load in loads:
        assert set(load.by_key) <= set(keys)
        assert load.unexpected() == {}, load.statuses
        assert load.missing_retry_after == 0, "a 503 without Retry-After"
    duplicates = resent = 0
    if platforms is not None:
        lago, m3ter = platforms.lago, platforms.m3ter
        duplicates += len(lago.ingested) - len(set(lago.ingested))
        sent = Counter(e["transaction_id"] for batch in lago.batches for e in batch)
        resent += sum(n - 1 for n in sent.values())
        resent += sum(n - 1 for n in platforms.m3ter_sent.values())
        assert set(lago.ingested) == ledger, "Lago's events differ from the ledger"
        assert set(m3ter.accepted) == ledger, "m3ter's measurements differ from the ledger"
    if file_sink is not None:
        lines = [json.loads(line)["id"] for line in file_sink.read_text().splitlines()]
        # The file sink is at least once by design (readers deduplicate on the id).
        assert set(lines) == ledger, "the file sink differs from the ledger"
        resent += len(lines) - len(set(lines))
    figures.duplicates, figures.resent = duplicates, resent
    RESULTS.append(figures)
    print(figures.line())
    assert figures.lost == 0, f"accepted changes lost: {accepted - ledger}"
    assert figures.duplicates == 0
    return figures


def sqlite_settings(directory: Path) -> dict[str, str]:
    return {
        "BRIDGE_DATABASE_URL": f"sqlite:///{directory / 'bridge.db'}",
        "BRIDGE_SINKS__FILE__PATH": str(directory / "usage.ndjson"),
        "BRIDGE_SCHEDULER__ENABLED": "false",
    }
