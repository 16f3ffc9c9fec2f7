"""Sends usage changes to Lago's batch endpoint, ``POST /api/v1/events/batch``.

What Lago does (see ../shared/reference/lago.md, section 1):

- A batch is all-or-nothing: if any event is invalid, nothing is stored and the answer is 422
  with ``error_details`` keyed by the event's 0-based index in that request, as a string. A
  value is a dict of field errors (``{"timestamp": ["invalid_format"]}``) or a string
  (``"expression_evaluation_failed: ..."``).
- A ``transaction_id`` already stored is reported the same way, as
  ``{"transaction_id": ["value_already_exist"]}``: that event was ingested before, which is
  success here. Lago before v1.39 reported only the first such index per request, so the sink
  keeps resending the rest until Lago accepts it or names no further index.

So on a 422 the sink drops the duplicates, fails the invalid events one by one
(``PermanentDeliveryError`` carrying Lago's error), and resends the others in a new request.
Any other answer goes through ``connectors._http``: 429 and 5xx are transient (429 waits
``X-RateLimit-Reset``), other 4xx permanent; timeouts and connection errors are transient.

Items the settings do not accept (other policies, decrements when not forwarded) count as
delivered without a request. Items whose mapping is missing fail with a transient
``mapping_missing`` error, so they wait in the outbox until the mapping is added (or the retry
horizon passes).

Every outcome belongs to the items it is about: an error answered to one request fails that
request's items only. A permanent error leaves the other requests to be sent; a transient one
stops the batch, and the requests not sent yet fail with it (the platform asked to wait, or is
down). Items failed before (a missing mapping, a rejected event) keep their own error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import structlog

from bridge.domain.delivery import (
    ItemFailure,
    LicenseFacts,
    OutboxItem,
    PermanentDeliveryError,
    TransientDeliveryError,
    mapping_missing,
)
from bridge.domain.model import UsageEntry
from connectors._http import one_error_for_all, raise_for_delivery, transport_errors
from connectors._template import MappingMissing
from connectors.lago.mapping import accepts, event
from connectors.lago.settings import LagoSinkSettings

log = structlog.get_logger(__name__)

PLATFORM = "lago"
_ALREADY_INGESTED = {"transaction_id": ["value_already_exist"]}
_DETAIL_LIMIT = 500

Pending = list[tuple[OutboxItem, dict[str, Any]]]


def batch_url(api_url: str) -> str:
    """The batch endpoint under ``api_url``, given with or without its ``/api/v1``."""
    base = api_url.rstrip("/")
    if not base.endswith("/api/v1"):
        base += "/api/v1"
    return f"{base}/events/batch"


def index_errors(response: httpx.Response, size: int) -> dict[int, Any] | None:
    """Lago's per-event errors of a 422 answer, by index; None if it is not that kind of 422
    (e.g. ``{"events": ["too_many_events"]}``) or names an index outside the request."""
    if response.status_code != 422:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    details = body.get("error_details") if isinstance(body, dict) else None
    if not isinstance(details, dict) or not details:
        return None
    errors: dict[int, Any] = {}
    for key, value in details.items():
        if not (isinstance(key, str) and key.isdecimal() and int(key) < size):
            return None
        errors[int(key)] = value
    return errors


class LagoSink:
    def __init__(
        self, settings: LagoSinkSettings, client: httpx.Client | None = None, name: str = "lago"
    ) -> None:
        if settings.api_key is None:
            raise ValueError("the Lago sink needs an api_key")
        self.name = name
        self.settings = settings
        self.url = batch_url(settings.api_url)
        self._owns_client = client is None
        self.client = client or httpx.Client(timeout=settings.timeout_s)
        self._headers = {
            "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "Accept": "application/json",
        }

    def close(self) -> None:
        """Close the HTTP client if the sink made it."""
        if self._owns_client:
            self.client.close()

    def accepts(self, entry: UsageEntry, license: LicenseFacts | None) -> bool:
        return accepts(entry, license, self.settings)

    def deliver(self, items: Sequence[OutboxItem]) -> Sequence[ItemFailure]:
        failures: list[ItemFailure] = []
        pending: Pending = []
        for item in items:
            if not self.accepts(item.entry, item.license):
                continue
            try:
                pending.append((item, event(item, self.settings)))
            except MappingMissing as exc:
                error = mapping_missing(str(exc))
                failures.append(ItemFailure(item.id, error))
        if failures:
            log.warning("lago_mapping_missing", sink=self.name, count=len(failures))
        size = self.settings.batch_size
        chunks = [pending[i : i + size] for i in range(0, len(pending), size)]
        for n, chunk in enumerate(chunks):
            stopped = self._send(chunk, failures)
            if stopped is not None:  # the requests not sent yet fail with it
                failures.extend(
                    ItemFailure(item.id, stopped) for rest in chunks[n + 1 :] for item, _ in rest
                )
                break
        return one_error_for_all(items, failures)

    def _send(self, chunk: Pending, failures: list[ItemFailure]) -> TransientDeliveryError | None:
        """One chunk until Lago takes it: duplicates dropped as ingested, invalid events failed,
        the rest resent. An error answer fails what is left of the chunk; a transient one is
        returned, so that the batch stops."""
        while chunk:
            try:
                with transport_errors(PLATFORM):
                    response = self.client.post(
                        self.url, json={"events": [e for _, e in chunk]}, headers=self._headers
                    )
                errors = index_errors(response, len(chunk))
                if errors is None:
                    raise_for_delivery(PLATFORM, response)
            except (TransientDeliveryError, PermanentDeliveryError) as exc:
                failures.extend(ItemFailure(item.id, exc) for item, _ in chunk)
                return exc if isinstance(exc, TransientDeliveryError) else None
            if errors is None:
                log.debug("lago_batch_accepted", sink=self.name, count=len(chunk))
                return None
            duplicates = [i for i, value in errors.items() if value == _ALREADY_INGESTED]
            rejected = {i: value for i, value in errors.items() if value != _ALREADY_INGESTED}
            for i, value in rejected.items():
                item, sent = chunk[i]
                detail = json.dumps(value, separators=(",", ":"))[:_DETAIL_LIMIT]
                message = f"lago rejected event {sent['transaction_id']}: {detail}"
                failures.append(ItemFailure(item.id, PermanentDeliveryError(message)))
            if duplicates or rejected:
                log.info(
                    "lago_batch_split",
                    sink=self.name,
                    already_ingested=len(duplicates),
                    rejected=len(rejected),
                    resent=len(chunk) - len(errors),
                )
            chunk = [pair for i, pair in enumerate(chunk) if i not in errors]
        return None
