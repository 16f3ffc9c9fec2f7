"""Lago's webhook public key (for JWT-signed webhooks), read from the Lago API."""

from __future__ import annotations

import base64
import binascii

import httpx

from bridge.domain.errors import ServiceUnavailable


def fetch_public_key(url: str, api_key: str | None, *, timeout_s: float = 10.0) -> str:
    """Raises ``ServiceUnavailable`` (503: the sender retries) when the key cannot be read.

    The PEM behind ``GET /api/v1/webhooks/json_public_key`` (``{"webhook": {"public_key":
    base64(PEM)}}``) or the legacy ``/public_key`` (the same base64 as text)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"Lago public key: {type(exc).__name__}") from exc
    if response.status_code >= 400:
        raise ServiceUnavailable(f"Lago public key: HTTP {response.status_code}")
    try:
        encoded = response.text
        if "json" in response.headers.get("content-type", ""):
            encoded = response.json()["webhook"]["public_key"]
        return base64.b64decode(encoded).decode()
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ServiceUnavailable("Lago public key: not base64 of a PEM") from exc
