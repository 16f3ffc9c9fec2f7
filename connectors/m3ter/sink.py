"""Sends usage changes to m3ter's Ingest API as measurements.

Per batch: map each item (a missing account or meter code keeps that item waiting), split the
measurements into requests of at most ``max_measurements`` and ``max_bytes`` of JSON (m3ter's
limits are 1,000 and "less than 512,000 bytes"), and post them in order. m3ter answers an
over-size body with 403, not 413 (reference A.1 "Limits"), so a 403 on a request of several
measurements halves it and tries again; a 403 on a single measurement is a real refusal.
Retries resend the same ``uid`` (the ledger entry id), which m3ter ingests once.

Every outcome belongs to the items it is about: a request's error fails that request's items.
A permanent error (a 400, say) leaves the other requests to be sent; a transient one stops the
batch and the requests not sent yet fail with it (m3ter asked to wait, or is down), and so does
a 403 on a single measurement that fits the size limit (a refusal of the credentials, about
every request). Items failed before sending (a missing mapping, too large) keep their own error.
One error about every item is raised for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from bridge.clock import SystemClock
from bridge.domain.delivery import (
    ItemFailure,
    LicenseFacts,
    OutboxItem,
    PermanentDeliveryError,
    Reason,
    TransientDeliveryError,
    mapping_missing,
)
from bridge.domain.errors import Transient
from bridge.domain.model import UsageEntry
from bridge.domain.ports import Clock
from connectors._http import one_error_for_all, raise_for_delivery, transport_errors
from connectors._template import MappingMissing
from connectors.m3ter.auth import M3terAuth, TokenRequestFailed
from connectors.m3ter.mapping import accepts, body_size, encode, measurement, split
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

    def accepts(self, entry: UsageEntry, license: LicenseFacts | None) -> bool:
        return accepts(entry, license, self.settings)

    def deliver(self, items: Sequence[OutboxItem]) -> Sequence[ItemFailure]:
        failures: list[ItemFailure] = []
        pending: _Pending = []
        for item in items:
            if not self.accepts(item.entry, item.license):
                continue
            try:
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
                f"MEASUREMENT_TOO_LARGE: over {self.settings.max_bytes} bytes on its own",
                reason=Reason.TOO_LARGE,
            )
            failures.append(ItemFailure(item.id, refused))
        if failures:
            log.warning("m3ter_items_not_sent", sink=self.name, count=len(failures))

        queue = self._chunks(fitting)
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
                failures.extend(ItemFailure(i.id, exc) for i, _m in chunk)
                if isinstance(exc, TransientDeliveryError | _Refused):
                    failures.extend(ItemFailure(i.id, exc) for c in queue for i, _m in c)
                    break
        return one_error_for_all(items, failures)

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
        try:
            raise_for_delivery("m3ter", response)
        except PermanentDeliveryError as exc:
            if response.status_code == 403:
                raise _Refused(str(exc)) from exc
            raise


class _OverSize(Exception, Transient):
    """A 403 on a request of several measurements: m3ter's answer to a body too large."""


class _Refused(PermanentDeliveryError):
    """A 403 on a single measurement that fits: m3ter refuses the credentials, for every
    request."""
