"""Classification of platform answers into transient and permanent delivery errors."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from bridge.domain.delivery import PermanentDeliveryError, TransientDeliveryError
from connectors._http import raise_for_delivery, retry_after_seconds, transport_errors


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_raises_nothing(status: int) -> None:
    """2xx is delivered."""
    raise_for_delivery("lago", httpx.Response(status))


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
def test_transient_statuses(status: int) -> None:
    """5xx, 408 and 429 are retried later, with the platform's wait."""
    response = httpx.Response(status, headers={"Retry-After": "7"}, text="busy")
    with pytest.raises(TransientDeliveryError) as caught:
        raise_for_delivery("lago", response)
    assert caught.value.retry_after == 7
    assert "busy" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_permanent_statuses_keep_the_body(status: int) -> None:
    """Other 4xx dead-letter with the platform's error body."""
    response = httpx.Response(status, json={"error": "nope", "code": "validation_errors"})
    with pytest.raises(PermanentDeliveryError, match="validation_errors"):
        raise_for_delivery("m3ter", response)


def test_retry_after_forms() -> None:
    """Seconds, an HTTP date, or Lago's X-RateLimit-Reset; none when absent."""
    now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
    dated = httpx.Response(429, headers={"Retry-After": "Sat, 28 Nov 2026 12:00:30 GMT"})
    assert retry_after_seconds(dated, now) == 30
    assert retry_after_seconds(httpx.Response(429, headers={"X-RateLimit-Reset": "12"})) == 12
    assert retry_after_seconds(httpx.Response(429)) is None


def test_transport_errors_are_transient() -> None:
    """Timeouts and connection errors become transient delivery errors, chained."""
    request = httpx.Request("POST", "https://api.getlago.com/api/v1/events/batch")
    for error in (httpx.ReadTimeout("slow", request=request), httpx.ConnectError("refused")):
        with pytest.raises(TransientDeliveryError) as caught, transport_errors("lago"):
            raise error
        assert caught.value.__cause__ is error
