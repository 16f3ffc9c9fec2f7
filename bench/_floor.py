"""The floor of an HTTP increment: what any implementation must do, written by hand.

Not a baseline for the issue's target (that is the bare endpoint): a measurement of how close
to the bare endpoint an increment can come on this stack at all, so the bridge's gap splits
into what the work itself costs and what the bridge adds on top of it.

One ``FastAPI()`` app, no middleware, one ``async def`` route at the bridge's path. Per request
it does only the work the bridge cannot skip for an admin increment:
- read the body;
- write the change durably with group commit: whatever is queued goes in one transaction, each
  change being the look-up ``SELECT`` (by id or key digest, on the bridge's indexes), the
  conditional counter ``UPDATE ... RETURNING``, the ledger ``INSERT`` and the outbox ``INSERT``
  (the statements of ``store_sqlite.py`` and ``store_postgres.py``). On SQLite (the raw
  ``sqlite3`` driver, WAL, ``synchronous=FULL``, ``BEGIN IMMEDIATE``) two ways (``writer``):
  ``thread``, one writer thread as ``bridge.service.batch_writer`` (the answers settled on the
  loop with one wake-up per batch), or ``loop``, the statements on the event loop's own thread
  and only the ``COMMIT`` (the fsync) in a thread, so no second thread competes for the
  interpreter lock. On PostgreSQL the writer thread's transaction is ``_postgres_batch``'s;
- answer a small JSON document with Keygen's response signature (``Date``, a SHA-256
  ``Digest`` and an Ed25519 signature over the four signed lines, as ``bridge.api.signing``),
  unless ``signed`` is false.
No authentication, validation, idempotency, license document or error handling: each of those
is the bridge's own work above this floor.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import _setup as s
import psycopg
import store_postgres as pg
import store_sqlite as raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.responses import Response

SINK = "bench"
_Job = tuple[str, asyncio.Future[int]]


class _Writer:
    """One thread, one connection: every queued change in one transaction, then one commit."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._batch = _sqlite_batch(url) if url.startswith("sqlite") else _postgres_batch(url)
        self._loop = loop
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, license_id: str) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        self._jobs.put((license_id, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self._jobs.get()]
            while True:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            uses = self._batch([license_id for license_id, _ in batch])
            answers = [(future, n) for (_, future), n in zip(batch, uses, strict=True)]
            self._loop.call_soon_threadsafe(_settle, answers)


def _sqlite_batch(url: str) -> Callable[[list[str]], list[int]]:
    cur = raw.raw_connection(s.sqlite_path(url)).cursor()

    def batch(ids: list[str]) -> list[int]:
        cur.execute("BEGIN IMMEDIATE")
        uses = [_increment(cur, license_id) for license_id in ids]
        cur.execute("COMMIT")
        return uses

    return batch


def _postgres_batch(url: str) -> Callable[[list[str]], list[int]]:
    """The same on PostgreSQL, as a careful hand-written writer would: server-side prepared
    statements, one round trip each for the look-up and the counter (the answer depends on
    them), the batch's ledger and outbox rows pipelined (``executemany``), one commit."""
    conn = psycopg.connect(s.libpq_conninfo(url))
    cur = conn.cursor()
    find = raw.FIND.replace(":ref", "%(ref)s").replace(":digest", "%(digest)s")

    def batch(ids: list[str]) -> list[int]:
        now = datetime.now(UTC)
        uses, entries, rows = [], [], []
        for license_id in ids:
            digest = hashlib.sha256(license_id.encode()).hexdigest()
            cur.execute(find, {"ref": license_id, "digest": digest}, prepare=True)
            if cur.fetchone() is None:
                raise LookupError(license_id)
            cur.execute(pg.UPDATE, {"delta": 1, "now": now, "id": license_id}, prepare=True)
            row = cur.fetchone()
            assert row is not None, "no maxUses in the bench"
            after: int = row[0]
            entry_id = str(uuid.uuid4())
            entries.append((entry_id, license_id, 1, after - 1, after, raw.ACTOR, now))
            rows.append((entry_id, SINK, now, now))
            uses.append(after)
        cur.executemany(pg.LEDGER, entries)
        cur.executemany(pg.OUTBOX, rows)
        conn.commit()
        return uses

    return batch


class _LoopWriter:
    """The statements on the event loop's thread, only the commit (the fsync) in a thread."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._cur = raw.raw_connection(s.sqlite_path(url)).cursor()
        self._loop = loop
        self._pending: list[tuple[str, asyncio.Future[int]]] = []
        self._busy = False  # a batch is between its BEGIN and the end of its COMMIT
        self._pool = concurrent.futures.ThreadPoolExecutor(1)

    def submit(self, license_id: str) -> asyncio.Future[int]:
        future: asyncio.Future[int] = self._loop.create_future()
        self._pending.append((license_id, future))
        if not self._busy:
            self._busy = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._busy = False
            return
        cur = self._cur
        cur.execute("BEGIN IMMEDIATE")
        answers = [(future, _increment(cur, license_id)) for license_id, future in batch]
        done = self._loop.run_in_executor(self._pool, cur.execute, "COMMIT")

        def committed(_: object) -> None:
            _settle(answers)
            self._flush()  # whatever arrived meanwhile

        done.add_done_callback(committed)


def _increment(cur: sqlite3.Cursor, license_id: str) -> int:
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    digest = hashlib.sha256(license_id.encode()).hexdigest()
    cur.execute(raw.FIND, {"ref": license_id, "digest": digest})
    if cur.fetchone() is None:
        raise LookupError(license_id)
    cur.execute(raw.UPDATE, {"delta": 1, "now": now, "id": license_id})
    after: int = cur.fetchone()[0]
    entry_id = str(uuid.uuid4())
    cur.execute(
        raw.LEDGER,
        (entry_id, license_id, "increment", 1, after - 1, after, raw.ACTOR, None, None, now),
    )
    cur.execute(raw.OUTBOX, (entry_id, SINK, now, now))
    return after


def _settle(answers: list[tuple[asyncio.Future[int], int]]) -> None:
    for future, uses in answers:
        if not future.done():
            future.set_result(uses)


def _signed(key: Ed25519PrivateKey, target: str, host: str, body: bytes) -> dict[str, str]:
    date = format_datetime(datetime.now(UTC), usegmt=True)
    digest = "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    signed = f"(request-target): post {target}\nhost: {host}\ndate: {date}\ndigest: {digest}"
    signature = base64.b64encode(key.sign(signed.encode())).decode()
    return {
        "date": date,
        "digest": digest,
        "keygen-signature": (
            f'keyid="bench", algorithm="ed25519", signature="{signature}", '
            'headers="(request-target) host date digest"'
        ),
    }


def floor_app(url: str, writer: str = "thread", signed: bool = True) -> FastAPI:
    app = FastAPI()
    make = {"thread": _Writer, "loop": _LoopWriter}[writer]
    key = Ed25519PrivateKey.generate()
    state: dict[str, Any] = {}

    @app.post("/v1/licenses/{license_id}/actions/increment-usage")
    async def increment(license_id: str, request: Request) -> Response:
        await request.body()
        if "writer" not in state:  # made on the server's loop, at the first request
            state["writer"] = make(url, asyncio.get_running_loop())
        uses = await state["writer"].submit(license_id)
        body = json.dumps({"data": {"type": "licenses", "id": license_id, "uses": uses}}).encode()
        host = request.headers.get("host", "")
        headers = _signed(key, request.url.path, host, body) if signed else {}
        return Response(body, media_type="application/vnd.api+json", headers=headers)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return app
