"""Sends usage changes to m3ter's Ingest API as measurements.

Per batch: map each item (a missing account or meter code keeps that item waiting), split the
measurements into requests of at most ``max_measurements`` and ``max_bytes`` of JSON (m3ter's
limits are 1,000 and "less than 512,000 bytes"), and post them in order. m3ter answers an
over-size body with 403, not 413 (reference A.1 "Limits"), so a 403 on a request of several
measurements halves it and tries again; a 403 on a single measurement is a real refusal.
Retries resend the same ``uid`` (the ledger entry id), which m3ter ingests once.

If a request fails after earlier ones were accepted, the accepted items are delivered and the
rest fail one by one with that request's error; if nothing was accepted the batch fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from bridge.clock import SystemClock
from bridge.domain.delivery import (
    ItemFailure,
    OutboxItem,
    PermanentDeliveryError,
    TransientDeliveryError,
    mapping_missing,
)
from bridge.domain.ports import Clock
from connectors._http import raise_for_delivery, transport_errors
from connectors._template import MappingMissing
from connectors.m3ter.auth import M3terAuth, TokenRequestFailed
from connectors.m3ter.mapping import (
    body_size,
    encode,
    measurement,
    split,
    wanted,
)
from connectors.m3ter.settings import M3terSinkSettings

log = structlog.get_logger(__name__)

_Pending = list[tuple[OutboxItem, dict[str, Any]]]


class M3terSink:
    def __init__(
        self,
        settings: M3terSinkSettings,
        client: httpx.Client | None = None,
        clock: Clock | None = None,
        name: str = "m3ter",
    ) -> None:
        self.name = name
        self.settings = settings
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=settings.timeout_s)
        self.url = f"{settings.ingest_url}/organizations/{settings.org_id}/measurements"
        self.auth = M3terAuth(
            token_url=f"{settings.api_url}/oauth/token",
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            client=self.client,
            clock=clock or SystemClock(),
            refresh_margin_s=settings.token_refresh_margin_s,
        )

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def deliver(self, items: Sequence[OutboxItem]) -> Sequence[ItemFailure]:
        failures: list[ItemFailure] = []
        pending: _Pending = []
        for item in items:
            try:
                if wanted(item, self.settings):
                    pending.append((item, measurement(item, self.settings)))
            except MappingMissing as exc:
                error = mapping_missing(str(exc))
                failures.append(ItemFailure(item.id, error))
        fitting: _Pending = []
        for item, m in pending:  # m3ter would refuse it with 403 however it is split
            if body_size([m]) <= self.settings.max_bytes:
                fitting.append((item, m))
                continue
            refused = PermanentDeliveryError(
                f"MEASUREMENT_TOO_LARGE: over {self.settings.max_bytes} bytes on its own"
            )
            failures.append(ItemFailure(item.id, refused))
        if failures:
            log.warning("m3ter_items_not_sent", sink=self.name, count=len(failures))

        queue = self._chunks(fitting)
        accepted = 0
        while queue:
            chunk = queue.pop(0)
            try:
                self._post(chunk)
            except _OverSize:
                half = len(chunk) // 2
                log.warning("m3ter_request_split", sink=self.name, count=len(chunk))
                queue[:0] = [chunk[:half], chunk[half:]]
                continue
            except (TransientDeliveryError, PermanentDeliveryError) as exc:
                if accepted == 0 and not failures:
                    raise
                unsent = [item for c in [chunk, *queue] for item, _m in c]
                return [*failures, *(ItemFailure(i.id, exc) for i in unsent)]
            accepted += len(chunk)
        return failures

    def _chunks(self, pending: _Pending) -> list[_Pending]:
        """``split`` keeps order and contiguity, so its chunks map back to the items."""
        sizes = [
            len(c)
            for c in split(
                [m for _i, m in pending], self.settings.max_measurements, self.settings.max_bytes
            )
        ]
        chunks, start = [], 0
        for size in sizes:
            chunks.append(pending[start : start + size])
            start += size
        return chunks

    def _post(self, chunk: _Pending) -> None:
        body = encode([m for _i, m in chunk])
        with transport_errors("m3ter"):
            try:
                response = self.client.post(
                    self.url,
                    content=body,
                    headers={"Content-Type": "application/json"},
                    auth=self.auth,
                )
            except TokenRequestFailed as exc:
                raise_for_delivery("m3ter token endpoint", exc.response)
                raise TransientDeliveryError(str(exc)) from exc  # 2xx without a usable token
        if response.status_code == 403 and len(chunk) > 1:
            raise _OverSize
        raise_for_delivery("m3ter", response)


class _OverSize(Exception):
    """A 403 on a request of several measurements: m3ter's answer to a body too large."""
