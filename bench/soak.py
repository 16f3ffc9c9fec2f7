"""Memory over time: ``meterbridge serve`` on SQLite under steady mixed traffic, its resident
memory (RSS) sampled, next to the same soak with the allocator and cache settings it had before
(the baseline, measured in the same run).

- **bridge**: ``meterbridge serve`` as shipped: glibc's malloc bounded to two arenas (what
  ``serve`` sets before its threads start, unless ``MALLOC_ARENA_MAX`` says otherwise) and
  SQLite's page cache bounded for the whole pool (``sqlite_cache_mib``, 256 MiB).
- **baseline** (``--baseline``, on by default): the same command with ``MALLOC_ARENA_MAX=16``
  (glibc's default on this 2-core machine: 8 per core) and ``BRIDGE_SQLITE_CACHE_MIB=1280``
  (32 MiB for each of the pool's 40 connections, the former setting).

Traffic, open loop at ``--rate`` requests per second (by default about half of what one
``serve`` answers on a 2-core machine), over ``--licenses`` licenses: 45% increments (a third
with an Idempotency-Key), 15% with a license's own token (the database-token path through the
threadpool), 15% license reads, 10% usage history pages, 10% validate-key, 5% decrements. The
relay (file sink) and the scheduler run inside ``serve`` as in production.

At most ``--inflight`` requests are in flight: when the server falls behind, the requests it
could not take are counted as skipped (``-1``) instead of queued in the client.

RSS is read from ``/proc/<pid>/status`` every ``--sample`` seconds. Printed per side: RSS at the
start of the load, at half time, at the end, the peak, and the growth over the second half (a
plateau shows as about zero), then the samples.

    python bench/soak.py [--duration 120] [--rate 60] [--sample 10] [--licenses 200] [--inflight 32]
                         [--no-baseline] [--dir PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _setup as s
import httpx

HOST = "127.0.0.1"
JSONAPI = {"Content-Type": "application/vnd.api+json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def serve(folder: Path, env_extra: dict[str, str]) -> Iterator[tuple[int, int]]:
    """``meterbridge serve`` on a fresh SQLite file in ``folder``: (port, pid) while it runs."""
    port = free_port()
    env = {
        **os.environ,
        "BRIDGE_DATABASE_URL": s.sqlite_url(folder / "soak.db"),
        "BRIDGE_ADMIN_TOKEN": s.ADMIN_TOKEN,
        "BRIDGE_SINKS__FILE__PATH": str(folder / "usage.ndjson"),
        "BRIDGE_SIGNING__KEY_FILE": str(folder / "signing.key"),
        "BRIDGE_SCHEDULER__CLOSE_INTERVAL_S": "5",
        **env_extra,
    }
    env.pop("BRIDGE_CONFIG", None)
    command = [sys.executable, "-m", "bridge", "serve", "--port", str(port)]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("serve did not start")
                time.sleep(0.2)
            yield port, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def seed(client: httpx.AsyncClient, n: int) -> tuple[list[dict[str, str]], list[str]]:
    """A product, a monthly policy, ``n`` licenses; tokens for a fifth of them."""

    async def create(path: str, data: dict[str, Any]) -> dict[str, Any]:
        answer = await client.post(path, json={"data": data}, headers=JSONAPI)
        answer.raise_for_status()
        created: dict[str, Any] = answer.json()["data"]
        return created

    product = await create("/v1/products", {"type": "products", "attributes": {"name": "Soak"}})
    rel = {"product": {"data": {"type": "products", "id": product["id"]}}}
    policy = await create(
        "/v1/policies",
        {
            "type": "policies",
            "attributes": {"name": "Monthly", "usagePeriod": {"interval": "month"}},
            "relationships": rel,
        },
    )
    rel = {"policy": {"data": {"type": "policies", "id": policy["id"]}}}
    licenses = []
    for _ in range(n):
        lic = await create("/v1/licenses", {"type": "licenses", "relationships": rel})
        licenses.append({"id": lic["id"], "key": lic["attributes"]["key"]})
    tokens = []
    for lic in licenses[: max(1, n // 5)]:
        answer = await client.post(f"/v1/licenses/{lic['id']}/tokens", headers=JSONAPI)
        answer.raise_for_status()
        tokens.append(f"{lic['id']} {answer.json()['data']['attributes']['token']}")
    return licenses, tokens


async def one(
    client: httpx.AsyncClient, rng: random.Random, licenses: list[dict[str, str]], tokens: list[str]
) -> int:
    """One request of the mix; its status (0: no answer, a transport error)."""
    try:
        return await _one(client, rng, licenses, tokens)
    except httpx.TransportError:
        return 0


async def _one(
    client: httpx.AsyncClient, rng: random.Random, licenses: list[dict[str, str]], tokens: list[str]
) -> int:
    lic = rng.choice(licenses)
    roll = rng.random()
    base = f"/v1/licenses/{lic['id']}"
    if roll < 0.45:
        headers = dict(JSONAPI)
        if roll < 0.15:
            headers["Idempotency-Key"] = uuid.uuid4().hex
        answer = await client.post(f"{base}/actions/increment-usage", headers=headers)
    elif roll < 0.60:
        license_id, token = rng.choice(tokens).split(" ")
        answer = await client.post(
            f"/v1/licenses/{license_id}/actions/increment-usage",
            headers={**JSONAPI, "Authorization": f"Bearer {token}"},
        )
    elif roll < 0.75:
        answer = await client.get(base)
    elif roll < 0.85:
        answer = await client.get(f"{base}/usage", params={"page[size]": 20})
    elif roll < 0.95:
        body = {"meta": {"key": lic["key"]}}
        answer = await client.post("/v1/licenses/actions/validate-key", json=body, headers=JSONAPI)
    else:
        answer = await client.post(f"{base}/actions/decrement-usage", headers=JSONAPI)
    return answer.status_code


async def soak(
    port: int, pid: int, args: argparse.Namespace
) -> tuple[list[tuple[float, float]], Counter[int]]:
    auth = {"Authorization": f"Bearer {s.ADMIN_TOKEN}"}
    limits = httpx.Limits(max_connections=args.inflight)
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", headers=auth, limits=limits, timeout=30
    ) as client:
        licenses, tokens = await seed(client, args.licenses)
        rng = random.Random(7)
        statuses: Counter[int] = Counter()
        samples = [(0.0, rss_mb(pid))]
        started = time.monotonic()
        next_sample = started + args.sample
        pending: set[asyncio.Task[int]] = set()
        sent = skipped = 0
        while (now := time.monotonic()) < started + args.duration:
            due = int((now - started) * args.rate) - sent
            # At most --inflight requests at once: a server that falls behind gets fewer, and
            # the client does not pile up requests it cannot send (counted as skipped).
            room = args.inflight - len(pending)
            skipped += max(due - room, 0)
            sent += max(due - room, 0)
            for _ in range(max(min(due, room), 0)):
                task = asyncio.create_task(one(client, rng, licenses, tokens))
                pending.add(task)
                task.add_done_callback(pending.discard)
                task.add_done_callback(lambda t: statuses.update([t.result()]))
                sent += 1
            if now >= next_sample:
                samples.append((now - started, rss_mb(pid)))
                next_sample += args.sample
            await asyncio.sleep(0.005)
        await asyncio.gather(*pending)
        samples.append((time.monotonic() - started, rss_mb(pid)))
    if skipped:
        statuses[-1] = skipped  # not sent: the server was behind
    return samples, statuses


def report(label: str, samples: list[tuple[float, float]], statuses: Counter[int]) -> None:
    start, end = samples[0][1], samples[-1][1]
    half = min(samples, key=lambda x: abs(x[0] - samples[-1][0] / 2))[1]
    peak = max(r for _t, r in samples)
    codes = " ".join(f"{code}={n}" for code, n in sorted(statuses.items()))
    print(
        f"{label:9} RSS start {start:6.1f} MB  half {half:6.1f}  end {end:6.1f}  peak {peak:6.1f}"
        f"  second-half growth {end - half:+6.1f} MB   answers: {codes}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (120)")
    parser.add_argument("--rate", type=float, default=60.0, help="requests per second (60)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--licenses", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=32, help="requests at once, at most")
    parser.add_argument("--no-baseline", action="store_true", help="only the bridge as shipped")
    parser.add_argument("--dir", default=None, help="where the scratch SQLite files go")
    args = parser.parse_args()
    s.context_line()
    sides = [("bridge", {})]
    if not args.no_baseline:
        sides.append(("baseline", {"MALLOC_ARENA_MAX": "16", "BRIDGE_SQLITE_CACHE_MIB": "1280"}))
    results = {}
    for label, env in sides:
        with s.scratch_dir(args.dir) as folder, serve(folder, env) as (port, pid):
            results[label] = asyncio.run(soak(port, pid, args))
    print(f"\n{args.duration:.0f} s at {args.rate:.0f} requests/s, {args.licenses} licenses:")
    for label, (samples, statuses) in results.items():
        report(label, samples, statuses)
    for label, (samples, _statuses) in results.items():
        print(f"{label} samples (s: MB): " + ", ".join(f"{t:.0f}: {r:.0f}" for t, r in samples))


if __name__ == "__main__":
    main()
