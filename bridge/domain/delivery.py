"""The two ways a sink may fail. Retry logic is one ``isinstance`` check."""

from __future__ import annotations


class DeliveryError(Exception):
    """Base of the errors a ``Sink`` may raise."""


class TransientDeliveryError(DeliveryError):
    """Try again later (timeouts, connection errors, 5xx, 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentDeliveryError(DeliveryError):
    """Retrying cannot help (other 4xx): the record goes to dead letter with this reason."""
