"""Shared by the HTTP connectors: foreign errors become the two delivery errors, here only.

Most specific first, chained with ``from``: timeouts and connection errors, 5xx, 408 and 429 are
transient (with the platform's Retry-After, or Lago's X-RateLimit-Reset, as the earliest retry);
every other 4xx is permanent and carries the platform's error body.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from bridge.domain.delivery import (
    ItemFailure,
    OutboxItem,
    PermanentDeliveryError,
    Reason,
    TransientDeliveryError,
)
from bridge.domain.ports import PlatformUnavailable

_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_BODY_LIMIT = 1000


def retry_after_seconds(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or an HTTP date) or ``X-RateLimit-Reset``
    (seconds until the window resets, as Lago sends it)."""
    for header in ("retry-after", "x-ratelimit-reset"):
        value = response.headers.get(header)
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return None


def raise_for_delivery(platform: str, response: httpx.Response) -> None:
    """Nothing for 2xx; otherwise the delivery error the status calls for."""
    if response.is_success:
        return
    body = response.text[:_BODY_LIMIT]
    message = f"{platform} answered {response.status_code}: {body}"
    if response.status_code >= 500 or response.status_code in _TRANSIENT_STATUSES:
        reason = Reason.RATE_LIMITED if response.status_code == 429 else Reason.SERVER_ERROR
        raise TransientDeliveryError(
            message, reason=reason, retry_after=retry_after_seconds(response)
        )
    raise PermanentDeliveryError(message, reason=Reason.REJECTED)


@contextmanager
def transport_errors(platform: str) -> Iterator[None]:
    """Timeouts and connection failures are transient: the request may not have arrived."""
    try:
        yield
    except httpx.TimeoutException as exc:
        message = f"{platform} timed out: {exc!r}"
        raise TransientDeliveryError(message, reason=Reason.TIMEOUT) from exc
    except httpx.TransportError as exc:
        message = f"{platform} unreachable: {exc!r}"
        raise TransientDeliveryError(message, reason=Reason.UNREACHABLE) from exc


def one_error_for_all(
    items: Sequence[OutboxItem], failures: list[ItemFailure]
) -> list[ItemFailure]:
    """The failures, or the one error they share raised for the batch when it failed every
    item (the Sink contract's whole-batch error)."""
    first = failures[0].error if failures else None
    if (
        first is not None
        and len(failures) == len(items)
        and all(f.error is first for f in failures)
    ):
        raise first
    return failures


def read_json(
    platform: str, client: httpx.Client, method: str, url: str, **kwargs: Any
) -> dict[str, Any]:
    """A read for reconciliation: the JSON object answered, or ``PlatformUnavailable`` for a
    transport error, an error status or a body that is not a JSON object."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise PlatformUnavailable(f"{platform}: {exc!r}") from exc
    if not response.is_success:
        body = response.text[:_BODY_LIMIT]
        raise PlatformUnavailable(f"{platform} answered {response.status_code}: {body}")
    try:
        found = response.json()
    except ValueError as exc:
        raise PlatformUnavailable(f"{platform}: the answer is not JSON: {exc!r}") from exc
    if not isinstance(found, dict):
        raise PlatformUnavailable(f"{platform}: the answer is not a JSON object")
    return found
