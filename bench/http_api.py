"""Increments per second over HTTP, next to a bare FastAPI endpoint on the same server.

Two servers run side by side, each in a subprocess on 127.0.0.1 and a free port, started by the
same ``uvicorn.Config`` options ``meterbridge serve`` uses (``log_config=None``,
``access_log=False``, logs through ``bridge.logging`` at ``--log-level``, loop and HTTP
implementations ``auto``: uvloop and httptools when installed):
- **bridge**: the FastAPI app ``bridge.bootstrap.build_app`` builds, on a SQLite file (WAL,
  synchronous=FULL), one process, nothing added to it.
- **bare**: its own ``FastAPI()`` app, no middleware, one ``async def`` route at the same path
  that reads the body and returns a small JSON document. The best honest version of "answer an
  HTTP POST with JSON" on this stack; the increment's ratio to it is the bridge's overhead.

The load generator is the same for both and the two alternate in one run: ``wrk`` if it is
installed (a C client that is never the bottleneck here), otherwise a lean asyncio HTTP/1.1
keep-alive client in this process. 32 connections, each request for a random one of 1,000
licenses (admin token).

``--auth database`` authenticates with an admin token stored in the database (what ``serve``
creates when no admin token is configured) instead of the configured one, and adds a third
server alternating with the others: the bridge with its principal cache off
(``auth.cache_ttl_s = 0``), a query and a threadpool hop per request.

``--floor thread|loop`` adds a server that does only an increment's unavoidable work, by hand
(``bench/_floor.py``: the durable write with group commit and Keygen's signature on a bare
FastAPI app): how close to the bare endpoint any implementation gets on this machine.

    python bench/http_api.py [--seconds 10] [--rounds 2] [--connections 32] [--auth database]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _setup as s
from fastapi import FastAPI, Request  # module level: the routes' postponed annotations
from fastapi.responses import JSONResponse
from sqlalchemy import create_engine, text

from bridge.service.auth import ensure_admin_token

TARGETS = {"sqlite": 0.5, "postgres": 0.4}  # issue 15
HOST = "127.0.0.1"


# The servers (run in the subprocess) --------------------------------------------------------
def bare_app() -> FastAPI:
    """A FastAPI app of its own: one async route that reads the body and answers JSON."""
    app = FastAPI()

    @app.post("/v1/licenses/{license_id}/actions/increment-usage")
    async def increment(license_id: str, request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"data": {"type": "licenses", "id": license_id, "bytes": len(body)}})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def bridge_app(
    url: str, access_log: str, fast_usage: str, auth_cache: str = "on", relay: str = "off"
) -> FastAPI:
    """The bridge as ``build_app`` builds it (the bench's outbox sink); ``access_log``: on, off
    or default (the setting unset); ``fast_usage``: off leaves increments to the router;
    ``auth_cache``: off sets ``auth.cache_ttl_s = 0``; ``relay``: in-process runs the outbox
    relay in a thread of the server, as ``meterbridge serve`` does (off: as ``serve`` beside a
    separate ``meterbridge worker``, the production setup)."""
    from bridge.bootstrap import build_app

    extra: dict[str, Any] = {} if access_log == "default" else {"access_log": access_log == "on"}
    if auth_cache == "off":
        extra["auth"] = {"cache_ttl_s": 0}
    container = s.container_for(url, migrate=False, **extra)
    if relay == "in-process":  # a daemon thread: the server's exit ends it
        worker = container.relay()
        threading.Thread(target=worker.run, args=(threading.Event(),), daemon=True).start()
    return build_app(container, fast_usage=fast_usage == "on")


def worker_app() -> FastAPI:
    """One process of a ``--workers N`` server (uvicorn's factory, as ``serve --workers``)."""
    kind, access_log, fast_usage, auth_cache, relay, url = os.environ["BENCH_SERVER"].split("|", 5)
    if kind == "bare":
        return bare_app()
    return bridge_app(url, access_log, fast_usage, auth_cache, relay)


def serve(url: str, port: int, kind: str, args: argparse.Namespace) -> None:
    """Run uvicorn as ``meterbridge serve`` does (``bridge.cli.processes.serve``'s options)."""
    import uvicorn

    from bridge.logging import configure

    _watchdog(args.lifetime)
    configure(args.log_level)  # as serve: uvicorn's records and request_completed via structlog
    options: dict[str, Any] = {
        "host": HOST,
        "port": port,
        "log_level": args.log_level,
        "log_config": None,
        "access_log": False,
        "date_header": False,  # as serve: the signer sets the one Date header it signs
        "loop": args.loop,
        "http": args.http,
    }
    if args.workers > 1:  # as serve --workers: uvicorn's supervisor and a factory
        from uvicorn.supervisors import Multiprocess

        os.environ["BENCH_SERVER"] = (
            f"{kind}|{args.access_log}|{args.fast_usage}|{args.auth_cache}|{args.relay}|{url}"
        )
        config = uvicorn.Config(
            "http_api:worker_app",
            factory=True,
            workers=args.workers,
            timeout_worker_healthcheck=60,  # as serve: slow starts on a busy machine
            **options,
        )
        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
        return
    if kind == "bare":
        app = bare_app()
    elif kind == "floor":
        from _floor import floor_app

        app = floor_app(url, args.floor, args.floor_signature == "on")
    else:
        s.container_for(url).dispose()  # migrates, as serve does
        app = bridge_app(url, args.access_log, args.fast_usage, args.auth_cache, args.relay)
    uvicorn.Server(uvicorn.Config(app, **options)).run()


def _watchdog(lifetime: float) -> None:
    """Stop when the bench that started us is gone, or after ``lifetime`` seconds anyway."""
    parent = os.getppid()
    deadline = time.monotonic() + lifetime

    def watch() -> None:
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down gracefully
        time.sleep(15)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


# Load generators ----------------------------------------------------------------------------
@dataclass
class Load:
    label: str
    requests: int
    seconds: float
    bad: int  # non-2xx answers and socket errors
    p50_ms: float
    p99_ms: float
    cpu_s: float = float("nan")  # the server process's CPU time (all threads) meanwhile

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU per request: the cost, whatever else the shared machine is doing."""
        return self.cpu_s / self.requests * 1e6 if self.requests else float("nan")


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %(token)s"
local paths = {%(paths)s}
local n = #paths
request = function()
  return wrk.format(nil, paths[math.random(n)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\\"requests\\": %%d, \\"duration_us\\": %%d, \\"status\\": %%d, "
    .. "\\"socket\\": %%d, \\"p50_us\\": %%d, \\"p99_us\\": %%d}\\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    label: str, port: int, paths: list[str], seconds: float, args: argparse.Namespace
) -> Load:
    script = Path(args.folder) / "bench.lua"
    quoted = ", ".join(f'"{p}"' for p in paths)
    script.write_text(_WRK_SCRIPT % {"token": args.token, "paths": quoted})
    command = [
        "wrk",
        f"-t{args.client_threads}",
        f"-c{args.connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        f"http://{HOST}:{port}",
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH "))
    got = json.loads(line[len("BENCH ") :])
    return Load(
        label,
        got["requests"],
        got["duration_us"] / 1e6,
        got["status"] + got["socket"],
        got["p50_us"] / 1000,
        got["p99_us"] / 1000,
    )


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one HTTP/1.1 request on a keep-alive connection, read the whole answer; its status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for header in head.split(b"\r\n"):
        if header[:15].lower() == b"content-length:":
            length = int(header[15:])
    if length:
        await reader.readexactly(length)
    return int(head[9:12])


Requests = Callable[[random.Random], bytes]  # the next request of a connection


async def connection(
    port: int,
    make: Requests,
    deadline: float,
    quota: int | None,
    lat: array[float],
    codes: Counter[int],
) -> None:
    """One keep-alive connection sending ``make(rng)`` requests until the deadline (or
    ``quota`` requests), recording each latency and status."""
    reader, writer = await asyncio.open_connection(HOST, port)
    rng = random.Random()
    clock = time.perf_counter
    try:
        done = 0
        while (clock() < deadline) if quota is None else (done < quota):
            done += 1
            request = make(rng)
            t0 = clock()
            status = await exchange(reader, writer, request)
            lat.append(clock() - t0)
            codes[status] += 1
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def empty_posts(port: int, paths: list[str], token: str = s.ADMIN_TOKEN) -> Requests:
    """Body-less POSTs to a random one of ``paths``, as the admin (``token``)."""
    requests = [
        (
            f"POST {p} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for p in paths
    ]
    return lambda rng: rng.choice(requests)


def run_python(
    label: str,
    port: int,
    paths: list[str],
    seconds: float,
    args: argparse.Namespace,
    ops: int | None = None,
) -> Load:
    """``ops`` requests in all if given, else for ``seconds``."""
    lat: array[float] = array("d")
    codes: Counter[int] = Counter()
    n = args.connections

    async def main() -> float:
        start = time.perf_counter()
        deadline = start + seconds
        quotas = [None] * n if ops is None else [ops // n + (i < ops % n) for i in range(n)]
        make = empty_posts(port, paths, getattr(args, "token", s.ADMIN_TOKEN))
        await asyncio.gather(*(connection(port, make, deadline, q, lat, codes) for q in quotas))
        return time.perf_counter() - start

    try:
        import uvloop

        elapsed = uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        elapsed = asyncio.run(main())
    ordered = sorted(lat)
    ok = sum(n for code, n in codes.items() if 200 <= code < 300)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000

    return Load(label, len(lat), elapsed, len(lat) - ok, pct(50), pct(99))


# The bench ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    request = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                sock.sendall(request)
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


PIDS: dict[int, int] = {}  # a running server's port -> its process id


def _stat(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(port: int) -> float:
    """User + system CPU seconds of the server on ``port`` so far, its worker processes
    included (Linux), else NaN."""
    try:
        root = PIDS[port]
        fields = [_stat(root)]
    except (KeyError, OSError):
        return float("nan")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = _stat(entry.name)
                if int(stat[1]) == root:  # a worker process (its parent is the server)
                    fields.append(stat)
    ticks = sum(int(f[11]) + int(f[12]) for f in fields)
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def server(
    db: str, args: argparse.Namespace, kind: str = "bridge", auth_cache: str = "on"
) -> Iterator[int]:
    """A ``kind`` server ("bridge" or "bare") in a subprocess; its port while it runs."""
    port = free_port()
    log = (Path(args.folder) / f"server-{kind}.log").open("wb")
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        db,
        "--kind",
        kind,
        "--port",
        str(port),
        "--log-level",
        args.log_level,
        "--lifetime",
        str(args.lifetime),
        "--loop",
        getattr(args, "loop", "auto"),
        "--http",
        getattr(args, "http", "auto"),
        "--workers",
        str(getattr(args, "workers", 1)),
        "--access-log",
        getattr(args, "access_log", "default"),
        "--fast-usage",
        getattr(args, "fast_usage", "on"),
        "--auth-cache",
        auth_cache,
        "--relay",
        getattr(args, "relay", "off"),
        "--floor",
        getattr(args, "floor", "off"),
        "--floor-signature",
        getattr(args, "floor_signature", "on"),
    ]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
        PIDS[port] = proc.pid
        yield port
    finally:
        PIDS.pop(port, None)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()


def ledger_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            count: int = conn.execute(text("SELECT count(*) FROM usage_ledger")).scalar_one()
            return count
    finally:
        engine.dispose()


def row(load: Load) -> None:
    print(
        f"{load.label:<36} {load.requests:>8} {load.seconds:>6.2f} {load.rate:>9.1f} "
        f"{load.p50_ms:>8.2f} {load.p99_ms:>8.2f} {load.bad:>6}"
        + ("" if load.cpu_us != load.cpu_us else f" {load.cpu_us:>11.0f}"),
        flush=True,
    )


def bench(args: argparse.Namespace) -> None:
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") and args.ops is None else "python"
    if client == "wrk" and args.ops is not None:
        raise SystemExit("--ops needs --client python (wrk runs for a duration)")
    drive = run_wrk if client == "wrk" else run_python
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(s.scratch_dir(args.dir))
        args.folder = str(folder)
        db = folder / "bridge.db"
        if args.database == "postgres":
            url = stack.enter_context(s.scratch_pg(s.pg_base_url(args.pg_url)))
        else:
            url = s.sqlite_url(db)
        seeding = s.container_for(url)
        ids = s.seed(seeding, args.licenses)
        args.token = s.ADMIN_TOKEN
        if args.auth == "database":  # as serve creates when no admin token is configured
            args.token = ensure_admin_token(seeding.uows, seeding.clock)
        seeding.dispose()
        if args.database == "sqlite":
            stack.callback(s.prime_sqlite_wal(db).close)  # a running service's WAL, held open
        paths = [f"/v1/licenses/{i}/actions/increment-usage" for i in ids]
        s.context_line()
        store = "PostgreSQL" if args.database == "postgres" else "SQLite (WAL, synchronous=FULL)"
        print(
            f"servers: uvicorn (loop {args.loop}, http {args.http}, as serve), {args.workers} "
            f"process(es) each: the bridge app on {store} (access log: {args.access_log}, fast "
            f"path: {args.fast_usage}, relay: {args.relay}) and a bare FastAPI app; client: "
            f"{client}, {args.connections} connections; {args.licenses} licenses, sink 'bench'; "
            "token: " + ("configured admin" if args.auth == "admin" else "database admin token")
        )
        results, ports = _servers(stack, url, args)
        before = ledger_count(url)
        _measure(results, ports, paths, drive, args)
        written = ledger_count(url) - before

    kinds = ("increment", "uncached", "floor")  # the servers that write the ledger
    counted = sum(x.requests - x.bad for k in kinds for x in results.get(k, []))
    if written < counted:
        raise SystemExit(f"the ledger has {written} new entries for {counted} increments")
    totals = {name: _total(name, loads) for name, loads in results.items()}
    if args.rounds > 1:
        print()
        for total in totals.values():
            row(total)
    _summary(totals, args)


def _servers(
    stack: contextlib.ExitStack, url: str, args: argparse.Namespace
) -> tuple[dict[str, list[Load]], dict[str, int]]:
    """The servers measured (each started in ``stack``): the bridge, the bare app and, with a
    database token, the bridge with its principal cache off."""
    names = ["increment", "uncached", "bare"] if args.auth == "database" else ["increment", "bare"]
    ports = {
        "increment": stack.enter_context(server(url, args, "bridge")),
        "bare": stack.enter_context(server(url, args, "bare")),
    }
    if args.auth == "database":
        ports["uncached"] = stack.enter_context(server(url, args, "bridge", "off"))
    if args.floor != "off":
        names.append("floor")
        ports["floor"] = stack.enter_context(server(url, args, "floor"))
    return {name: [] for name in names}, ports


def _measure(
    results: dict[str, list[Load]],
    ports: dict[str, int],
    paths: list[str],
    drive: Callable[..., Load],
    args: argparse.Namespace,
) -> None:
    """Each server in turn, the order reversed every other round."""
    print(
        f"\n{'measurement':<36} {'requests':>8} {'secs':>6} {'req/s':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>6} {'cpu us/req':>11}"
    )
    for r in range(args.rounds):
        names = list(results) if r % 2 == 0 else list(reversed(results))
        for name in names:
            drive(f"(warm-up {name})", ports[name], paths, args.warmup, args)
            label = f"{name} (round {r + 1})"
            cpu = cpu_seconds(ports[name])
            if args.ops is None:
                load = drive(label, ports[name], paths, args.seconds, args)
            else:
                load = run_python(label, ports[name], paths, 0, args, ops=args.ops)
            load.cpu_s = cpu_seconds(ports[name]) - cpu
            row(load)
            results[name].append(load)


def _summary(totals: dict[str, Load], args: argparse.Namespace) -> None:
    connections = args.connections
    target = TARGETS[args.database]
    inc, bare = totals["increment"], totals["bare"]
    value = inc.rate / bare.rate if bare.rate else float("nan")
    verdict = "meets" if value >= target else "BELOW"
    print(
        f"\nSummary (issue 15's target on {args.database}: increments >= {target}x the bare "
        f"endpoint; {args.workers} process(es) each)"
    )
    print(
        f"  HTTP x{connections}: increment {inc.rate:.1f} req/s, "
        f"bare FastAPI {bare.rate:.1f} req/s, ratio {value:.2f}x ({verdict} target)"
    )
    cost = bare.cpu_us / inc.cpu_us if inc.cpu_us else float("nan")
    print(
        f"  server CPU per request: increment {inc.cpu_us:.0f} us, bare {bare.cpu_us:.0f} us, "
        f"ratio {cost:.2f}x (one process: its throughput is bound by 1/CPU per request)"
    )
    if "uncached" in totals:
        off = totals["uncached"]
        gain = inc.rate / off.rate if off.rate else float("nan")
        print(
            f"  database token: principal cache on {inc.rate:.1f} req/s ({inc.cpu_us:.0f} us), "
            f"off {off.rate:.1f} req/s ({off.cpu_us:.0f} us), ratio {gain:.2f}x; uncached / "
            f"bare {off.rate / bare.rate if bare.rate else float('nan'):.2f}x"
        )
    if "floor" in totals:
        floor = totals["floor"]
        print(
            f"  the floor (bench/_floor.py: writes {args.floor}, signature "
            f"{args.floor_signature}): "
            f"{floor.rate:.1f} req/s, {floor.cpu_us:.0f} us; floor / bare "
            f"{floor.rate / bare.rate if bare.rate else float('nan'):.2f}x (CPU "
            f"{bare.cpu_us / floor.cpu_us if floor.cpu_us else float('nan'):.2f}x); increment / "
            f"floor {inc.rate / floor.rate if floor.rate else float('nan'):.2f}x (CPU "
            f"{floor.cpu_us / inc.cpu_us if inc.cpu_us else float('nan'):.2f}x)"
        )
    if any(t.bad for t in totals.values()):
        print("  warning: some answers were not 2xx; see the non-2xx column")


def _total(name: str, loads: list[Load]) -> Load:
    if len(loads) == 1:
        return loads[0]
    return Load(
        f"{name} (all rounds)",
        sum(x.requests for x in loads),
        sum(x.seconds for x in loads),
        sum(x.bad for x in loads),
        max(x.p50_ms for x in loads),  # per-round percentiles cannot be merged: the worst
        max(x.p99_ms for x in loads),
        sum(x.cpu_s for x in loads),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each (3)")
    parser.add_argument(
        "--ops", type=int, default=None, help="requests per measurement instead (python client)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds (1)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--client-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--licenses", type=int, default=1000)
    parser.add_argument("--log-level", default="info", help="as serve's default (info)")
    parser.add_argument("--lifetime", type=float, default=600.0, help="server's hard stop (s)")
    parser.add_argument("--dir", default=None, help="where the scratch database goes (on disk)")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default=None,
        help="PostgreSQL server for --database postgres (a scratch "
        "database is made there; default $BRIDGE_BENCH_DATABASE_URL or the local test server)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes each, as serve --workers (1)"
    )
    parser.add_argument(
        "--access-log",
        choices=["default", "on", "off"],
        default="default",
        help="the bridge's access_log setting (default: unset, as serve)",
    )
    parser.add_argument(
        "--fast-usage",
        choices=["on", "off"],
        default="on",
        help="off: increments through FastAPI's router, as before issue 15 (on)",
    )
    parser.add_argument(
        "--auth",
        choices=["admin", "database"],
        default="admin",
        help="database: a token stored in the database (as serve creates), and a third server "
        "with the principal cache off (admin: the configured admin token)",
    )
    parser.add_argument("--auth-cache", default="on", help=argparse.SUPPRESS)
    parser.add_argument(
        "--relay",
        choices=["off", "in-process"],
        default="off",
        help="off: the relay runs elsewhere (a worker), as in production; in-process: in a "
        "thread of the bridge server, as serve's embedded default (off)",
    )
    parser.add_argument(
        "--floor",
        choices=["off", "thread", "loop"],
        default="off",
        help="a third server: an increment's unavoidable work by hand (bench/_floor.py), its "
        "writes in a writer thread or (SQLite) on the loop's thread (off)",
    )
    parser.add_argument(
        "--floor-signature",
        choices=["on", "off"],
        default="on",
        help="off: the floor answers without Keygen's response signature (on)",
    )
    parser.add_argument("--loop", default="auto", help="uvicorn's loop (auto, as serve)")
    parser.add_argument("--http", default="auto", help="uvicorn's HTTP protocol (auto, as serve)")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="bridge", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor != "off" and args.workers > 1:
        parser.error("--floor measures one process")
    if args.floor == "loop" and args.database != "sqlite":
        parser.error("--floor loop is SQLite's (PostgreSQL's driver is not run on the loop)")
    if args.serve is not None:
        serve(args.serve, args.port, args.kind, args)
        return
    bench(args)


if __name__ == "__main__":
    sys.exit(main())
