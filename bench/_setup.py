"""Shared pieces of the benches: scratch databases, seeding through the bridge's own use cases,
a timed runner for threads and processes, and the printing of figures.

Nothing here asserts on time: the benches print what they measure.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
import traceback
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bridge.bootstrap import Container, build
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.service import licenses, policies, products
from bridge.settings import load_settings
from connectors.memory import InMemorySink

ADMIN = Principal(Role.ADMIN, "bench")
ADMIN_TOKEN = "bench-admin-token"  # noqa: S105 - a throwaway token for a scratch database
# One enabled sink, so every increment also writes its outbox row (no relay runs in the benches).
SINKS = (InMemorySink("bench"),)
PG_ENV = "BRIDGE_BENCH_DATABASE_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# A worker's operation and the function that releases what it holds.
Op = Callable[[], None]
Worker = tuple[Op, Callable[[], None]]
# What one worker measured: operations, start, stop (perf_counter) and per-operation latencies.
Part = tuple[int, float, float, "array[float]"]


# Databases ----------------------------------------------------------------------------------
def container_for(url: str, *, migrate: bool = True, **settings: Any) -> Container:
    """The bridge wired as ``meterbridge serve`` wires it, with the bench's outbox sink."""
    container = build(load_settings(database_url=url, admin_token=ADMIN_TOKEN, **settings))
    container.sinks = SINKS
    if migrate:
        container.migrate()
    return container


def seed(container: Container, n_licenses: int, *, max_uses: int | None = None) -> list[str]:
    """One product, one policy (no ``maxUses`` unless given) and ``n_licenses`` licenses,
    created through the bridge's use cases. Returns the license ids."""
    uows, clock = container.uows, container.clock
    product = products.create_product(uows, clock, ADMIN, NewProduct(name="Bench"))
    policy = policies.create_policy(
        uows, clock, ADMIN, NewPolicy(product.id, name="Metered", max_uses=max_uses)
    )
    return [
        licenses.create_license(uows, clock, ADMIN, NewLicense(policy.id)).id
        for _ in range(n_licenses)
    ]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///`` URL (``sqlite_url``'s inverse)."""
    return Path(url.removeprefix("sqlite:///"))


@contextmanager
def scratch_dir(base: str | None = None) -> Iterator[Path]:
    """A temporary folder (on disk, so that fsync is real), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench_", dir=base) as name:
        yield Path(name)


def copy_sqlite(template: Path, target: Path) -> None:
    """Copy a closed (checkpointed) SQLite database, flushed to disk before it is measured:
    dirty pages of a fresh copy would otherwise slow the first fsyncs of the run."""
    shutil.copyfile(template, target)
    _flush(target)
    _flush(target.parent)


def _flush(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prime_sqlite_wal(path: Path, megabytes: int = 8) -> sqlite3.Connection:
    """Bring a SQLite database to the steady state of a running service, and hold it there.

    A fresh WAL grows with every commit, and on ext4 the fsync of a growing file also commits
    the file system journal (milliseconds here); once the WAL has been checkpointed and
    restarted, commits overwrite blocks already allocated and fsync is far cheaper. A service
    that runs for more than a few seconds lives in the second state, so this writes ``megabytes``
    of padding (into a ``bench_pad`` table no bench reads) in a few transactions, lets the
    checkpoints run, and returns the open connection: keep it open for the whole measurement,
    or the last close deletes the WAL again.
    """
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_pad (id INTEGER PRIMARY KEY, pad BLOB)")
    page = b"\0" * 4000
    for _ in range(megabytes):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO bench_pad (pad) VALUES (?)", [(page,)] * 256)
        conn.execute("COMMIT")
    conn.execute("DELETE FROM bench_pad")
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return conn


def pg_base_url(cli_value: str | None) -> str:
    return cli_value or os.environ.get(PG_ENV) or DEFAULT_PG_URL


@contextmanager
def scratch_pg(base_url: str) -> Iterator[str]:
    """A fresh ``bench_<random>`` database on the server of ``base_url``, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg://...`` as a plain libpq URI for ``psycopg.connect``."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


# Timing -------------------------------------------------------------------------------------
@dataclass
class Result:
    label: str
    ops: int
    seconds: float
    latencies: array[float] = field(default_factory=lambda: array("d"))
    errors: int = 0

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        """Latency in milliseconds at quantile ``q`` (0..100), nearest rank."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000


@dataclass(frozen=True)
class Budget:
    """How long each measurement runs: ``ops`` operations in all if given, else ``seconds``."""

    seconds: float
    ops: int | None
    warmup: float

    def share(self, worker: int, workers: int) -> int | None:
        if self.ops is None:
            return None
        return self.ops // workers + (1 if worker < self.ops % workers else 0)


def _timed_loop(op: Op, budget: Budget, quota: int | None) -> Part:
    lat: array[float] = array("d")
    clock = time.perf_counter
    done = 0
    start = clock()
    if quota is not None:
        for _ in range(quota):
            t0 = clock()
            op()
            lat.append(clock() - t0)
        done = quota
    else:
        deadline = start + budget.seconds
        t1 = start
        while t1 < deadline:
            t0 = clock()
            op()
            t1 = clock()
            lat.append(t1 - t0)
            done += 1
    return done, start, clock(), lat


def _warm(op: Op, budget: Budget) -> None:
    deadline = time.perf_counter() + budget.warmup
    op()  # at least once: connections, compiled statements, prepared statements
    while time.perf_counter() < deadline:
        op()


def _combine(label: str, parts: Sequence[Part]) -> Result:
    ops = sum(p[0] for p in parts)
    # perf_counter is CLOCK_MONOTONIC on Linux: comparable across threads and processes.
    window = max(p[2] for p in parts) - min(p[1] for p in parts)
    lat: array[float] = array("d")
    for p in parts:
        lat.extend(p[3])
    return Result(label, ops, window, lat)


def measure_threads(
    label: str, make_worker: Callable[[int], Worker], workers: int, budget: Budget
) -> Result:
    """Run ``workers`` threads, each with its own worker, from a common start."""
    barrier = threading.Barrier(workers)
    parts: list[Any] = [None] * workers
    failures: list[str] = []

    def run(i: int) -> None:
        close: Callable[[], None] = lambda: None  # noqa: E731
        try:
            op, close = make_worker(i)
            _warm(op, budget)
            barrier.wait(timeout=300)
            parts[i] = _timed_loop(op, budget, budget.share(i, workers))
        except Exception:
            failures.append(traceback.format_exc())
            barrier.abort()
        finally:
            close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"{label}: a worker failed:\n{failures[0]}")
    return _combine(label, parts)


def _team_main(i: int, workers: int, tasks: Any, results: Any, barrier: Any) -> None:
    """A team member: runs measurement after measurement, until told to stop or orphaned."""
    parent = os.getppid()
    while True:
        try:
            task = tasks.get(timeout=2)
        except queue.Empty:
            if os.getppid() != parent:  # the bench is gone: do not linger
                return
            continue
        if task is None:
            return
        factory, params, budget = task
        close: Callable[[], None] = lambda: None  # noqa: E731
        try:
            op, close = factory(i, params)
            _warm(op, budget)
            barrier.wait(timeout=300)
            results.put(("ok", _timed_loop(op, budget, budget.share(i, workers))))
        except Exception:
            barrier.abort()
            results.put(("error", traceback.format_exc()))
        finally:
            close()


class ProcessTeam:
    """``workers`` spawned processes, started once and reused for every measurement (each
    spawn imports the bridge again, which would otherwise cost seconds per measurement)."""

    def __init__(self, workers: int) -> None:
        ctx = mp.get_context("spawn")
        self.workers = workers
        self._barrier = ctx.Barrier(workers)
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(workers)]
        self._procs = [
            ctx.Process(
                target=_team_main,
                args=(i, workers, self._tasks[i], self._results, self._barrier),
                daemon=True,
            )
            for i in range(workers)
        ]
        for p in self._procs:
            p.start()

    def measure(
        self,
        label: str,
        factory: Callable[[int, dict[str, Any]], Worker],
        params: dict[str, Any],
        budget: Budget,
    ) -> Result:
        """Each member builds its worker with ``factory`` (a module-level function), warms
        up, then all run from a common start."""
        for tasks in self._tasks:
            tasks.put((factory, params, budget))
        limit = 300 + budget.warmup + (budget.seconds if budget.ops is None else 600)
        parts: list[Part] = []
        for _ in self._procs:
            status, payload = self._results.get(timeout=limit)
            if status != "ok":
                raise RuntimeError(f"{label}: a worker failed:\n{payload}")
            parts.append(payload)
        return _combine(label, parts)

    def close(self) -> None:
        for tasks in self._tasks:
            tasks.put(None)
        for p in self._procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)

    def __enter__(self) -> ProcessTeam:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Command line and output --------------------------------------------------------------------
def add_budget_args(parser: argparse.ArgumentParser, *, seconds: float, warmup: float) -> None:
    parser.add_argument(
        "--seconds", type=float, default=seconds, help=f"per measurement (default {seconds})"
    )
    parser.add_argument(
        "--ops", type=int, default=None, help="run this many operations per measurement instead"
    )
    parser.add_argument(
        "--warmup", type=float, default=warmup, help=f"seconds of warm-up per worker ({warmup})"
    )


def budget_from(args: argparse.Namespace) -> Budget:
    return Budget(seconds=args.seconds, ops=args.ops, warmup=args.warmup)


def header(title: str) -> None:
    print(f"\n== {title}")
    print(f"{'measurement':<44} {'ops':>8} {'secs':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}")


def row(result: Result) -> None:
    print(
        f"{result.label:<44} {result.ops:>8} {result.seconds:>6.2f} {result.rate:>9.1f} "
        f"{result.percentile(50):>8.2f} {result.percentile(99):>8.2f}",
        flush=True,
    )


def ratio(label: str, bridge: Result, baseline: Result, target: float) -> str:
    value = bridge.rate / baseline.rate if baseline.rate else math.nan
    verdict = "meets" if value >= target else "BELOW"
    line = f"{label}: bridge/baseline = {value:.2f}x ({verdict} target >= {target}x)"
    print(line, flush=True)
    return line


def merge(label: str, results: Sequence[Result]) -> Result:
    """Several measurements of one side as one: all operations over all measured time."""
    lat: array[float] = array("d")
    for r in results:
        lat.extend(r.latencies)
    return Result(
        label,
        sum(r.ops for r in results),
        sum(r.seconds for r in results),
        lat,
        sum(r.errors for r in results),
    )


def context_line() -> None:
    """What else the machine is doing: the benches share it with whatever runs beside them."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (before the run)")
