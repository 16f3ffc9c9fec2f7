"""``MeterClient``: an application meters its own use through the bridge, online or not.

``increment(n)`` writes the use to the local buffer first (``bridge.client.buffer``: durable
before it returns) and then tries to send everything pending, in the order it was recorded, as
one check-in (``POST /v1/licenses/{key}/actions/check-in`` with ``meta.usage``). When the
bridge cannot be reached the uses stay in the buffer and go at the next successful
``increment``, ``sync()`` or ``check_in()``; failed attempts back off exponentially (with
jitter) so a long outage costs no busy loop. Every record keeps the bridge's answer.

A process killed at any moment loses no recorded use and never has one counted twice: a use is
on disk before ``increment`` returns, a record is only marked once its answer is stored, and a
record sent again (its answer was lost with the process) is answered ``duplicate``.

``AsyncMeterClient`` is the same for asyncio applications (httpx's async client; the buffer's
writes run in a worker thread, never on the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from bridge.client.buffer import Buffer, Record

LimitMode = Literal["block", "allow"]
MAX_BATCH = 1000  # the bridge's limit of records per check-in
_MEDIA = "application/vnd.api+json"


class MeterError(Exception):
    """Base of the client's errors."""


class Unreachable(MeterError):
    """The bridge could not be reached (or answered 5xx/429): the records wait in the buffer."""


class CheckInRefused(MeterError):
    """The bridge refused the whole check-in (a 4xx: a wrong key, a policy without check-ins,
    ...). The records wait in the buffer; retrying will not help until that is fixed."""

    def __init__(self, status: int, code: str | None, detail: str | None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class LimitReached(MeterError):
    """``limit="block"``: the use would pass the license's last known maximum; not recorded."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Backoff:
    base_s: float
    cap_s: float
    failures: int = 0
    not_before: float = 0.0  # time.monotonic() seconds

    def failed(self, now: float, rng: random.Random) -> None:
        self.failures += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
        self.not_before = now + rng.uniform(ceiling / 2, ceiling)

    def succeeded(self) -> None:
        self.failures, self.not_before = 0, 0.0


class _Core:
    """What both clients share: the buffer, the request and the reading of its answer."""

    def __init__(
        self,
        license_key: str,
        buffer_path: str | Path,
        limit: LimitMode,
        clock: Callable[[], datetime],
        backoff_base_s: float,
        backoff_cap_s: float,
    ) -> None:
        if limit not in ("block", "allow"):
            raise ValueError("limit must be 'block' or 'allow'")
        self.buffer = Buffer(buffer_path)
        self.limit = limit
        self.clock = clock
        self.path = f"/v1/licenses/{quote(license_key, safe='')}/actions/check-in"
        self.headers = {
            "Authorization": f"License {license_key}",
            "Content-Type": _MEDIA,
            "Accept": _MEDIA,
        }
        self.backoff = _Backoff(backoff_base_s, backoff_cap_s)
        self.rng = random.Random()  # noqa: S311 - jitter, not a secret

    def over_limit(self, n: int, now: datetime) -> bool:
        """Whether ``n`` more uses would pass the last known maximum of the period ``now`` is
        in, counting the uses not sent yet (a period that ended since starts from 0)."""
        known = self.buffer.license()
        if known is None or known.get("maxUses") is None:
            return False
        end = known.get("periodEnd")
        since = datetime.fromisoformat(end) if end else None
        base = 0 if since is not None and now >= since else int(known.get("uses", 0))
        counted_from = since if since is not None and now >= since else None
        pending = sum(
            r.increment
            for r in self.buffer.pending(10**9)
            if counted_from is None or datetime.fromisoformat(r.occurred_at) >= counted_from
        )
        return base + pending + n > int(known["maxUses"])

    def record(self, n: int) -> Record:
        if n < 1:
            raise ValueError("n must be at least 1")
        now = self.clock()
        if self.limit == "block" and self.over_limit(n, now):
            raise LimitReached(f"{n} more use(s) would pass the license's maximum")
        return self.buffer.record(n, now)

    def body(self, records: list[Record]) -> dict[str, Any]:
        usage = [
            {"id": r.id, "increment": r.increment, "occurredAt": r.occurred_at} for r in records
        ]
        return {"meta": {"usage": usage}}

    def settle(self, response: httpx.Response, now: float) -> list[dict[str, Any]]:
        """Store the answer to one check-in; raise for an answer about the whole request."""
        if response.status_code >= 500 or response.status_code == 429:
            self.backoff.failed(now, self.rng)
            raise Unreachable(f"the bridge answered {response.status_code}")
        if response.status_code != 200:
            error: dict[str, Any] = {}
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                error = response.json()["errors"][0]
            raise CheckInRefused(response.status_code, error.get("code"), error.get("detail"))
        document = response.json()
        results: list[dict[str, Any]] = document.get("meta", {}).get("usage", [])
        self.buffer.settle(results, document["data"]["attributes"])
        self.backoff.succeeded()
        return results

    def unreachable(self, exc: Exception, now: float) -> Unreachable:
        self.backoff.failed(now, self.rng)
        return Unreachable(f"the bridge could not be reached: {exc}")


class MeterClient:
    """Meter an application's uses of the license ``license_key`` through the bridge at
    ``base_url`` (its root, e.g. ``https://licensing.example.com``), buffered in the SQLite
    file ``buffer_path``.

    ``limit``: with ``"block"`` a use that would pass the license's last known ``maxUses``
    (for its usage period) raises ``LimitReached`` and is not recorded, online or offline; with
    ``"allow"`` it is recorded, and the bridge's answer says whether it counted (a record past
    the limit comes back ``rejected`` with ``USES_LIMIT_EXCEEDED``).
    """

    def __init__(
        self,
        base_url: str,
        license_key: str,
        buffer_path: str | Path,
        *,
        limit: LimitMode = "block",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
    ) -> None:
        self._core = _Core(license_key, buffer_path, limit, clock, backoff_base_s, backoff_cap_s)
        self._monotonic = monotonic or time.monotonic
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def increment(self, n: int = 1) -> Record:
        """Record ``n`` uses (durably), then try to send what is pending unless backing off.
        Returns this record as it stands: ``pending`` while the bridge is unreachable."""
        rec = self._core.record(n)
        if self._monotonic() >= self._core.backoff.not_before:
            with contextlib.suppress(Unreachable):
                self.sync()
        return self._core.buffer.get(rec.id) or rec

    def sync(self) -> list[dict[str, Any]]:
        """Send every pending record, oldest first, a check-in per 1000; the bridge's results.
        Raises ``Unreachable`` (the rest waits, with backoff) or ``CheckInRefused``."""
        results: list[dict[str, Any]] = []
        while batch := self._core.buffer.pending(MAX_BATCH):
            results += self._send(batch)
        return results

    def check_in(self) -> list[dict[str, Any]]:
        """Keygen's check-in, with whatever is pending (also when nothing is)."""
        results = self.sync()
        if not results:
            results = self._send([])
        return results

    def _send(self, batch: list[Record]) -> list[dict[str, Any]]:
        try:
            response = self._http.post(
                self._core.path, json=self._core.body(batch), headers=self._core.headers
            )
        except httpx.TransportError as exc:
            raise self._core.unreachable(exc, self._monotonic()) from exc
        return self._core.settle(response, self._monotonic())

    def record(self, record_id: str) -> Record | None:
        """One record and the bridge's answer to it."""
        return self._core.buffer.get(record_id)

    def records(self) -> list[Record]:
        """Every record, in the order it was made, with its status."""
        return self._core.buffer.all()

    @property
    def pending(self) -> int:
        """How many records wait for the bridge's answer."""
        return self._core.buffer.pending_count()

    def close(self) -> None:
        self._http.close()
        self._core.buffer.close()

    def __enter__(self) -> MeterClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncMeterClient:
    """``MeterClient`` for asyncio applications: the same buffer and answers; HTTP through
    ``httpx.AsyncClient`` and the buffer's fsynced writes in a worker thread."""

    def __init__(
        self,
        base_url: str,
        license_key: str,
        buffer_path: str | Path,
        *,
        limit: LimitMode = "block",
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = _utcnow,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
    ) -> None:
        self._core = _Core(license_key, buffer_path, limit, clock, backoff_base_s, backoff_cap_s)
        self._monotonic = time.monotonic
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def increment(self, n: int = 1) -> Record:
        rec = await asyncio.to_thread(self._core.record, n)
        if self._monotonic() >= self._core.backoff.not_before:
            with contextlib.suppress(Unreachable):
                await self.sync()
        return await asyncio.to_thread(self._core.buffer.get, rec.id) or rec

    async def sync(self) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        while batch := await asyncio.to_thread(self._core.buffer.pending, MAX_BATCH):
            results += await self._send(batch)
        return results

    async def check_in(self) -> list[dict[str, Any]]:
        results = await self.sync()
        if not results:
            results = await self._send([])
        return results

    async def _send(self, batch: list[Record]) -> list[dict[str, Any]]:
        try:
            response = await self._http.post(
                self._core.path, json=self._core.body(batch), headers=self._core.headers
            )
        except httpx.TransportError as exc:
            raise self._core.unreachable(exc, self._monotonic()) from exc
        return await asyncio.to_thread(self._core.settle, response, self._monotonic())

    async def record(self, record_id: str) -> Record | None:
        return await asyncio.to_thread(self._core.buffer.get, record_id)

    async def records(self) -> list[Record]:
        return await asyncio.to_thread(self._core.buffer.all)

    async def pending(self) -> int:
        return await asyncio.to_thread(self._core.buffer.pending_count)

    async def aclose(self) -> None:
        await self._http.aclose()
        await asyncio.to_thread(self._core.buffer.close)
