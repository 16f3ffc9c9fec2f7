"""A small client of Keygen's API: read a license, reset its usage.

Keygen's answers become the bridge's errors here, most specific first: a transport error, a
5xx, 409 (Keygen's "failed to increment due to another conflicting update" when a reset races
a change of the same license) and 429 (with ``Retry-After``) are ``KeygenUnavailable`` (try
again, not before ``retry_after``); any other 4xx is ``KeygenRefused`` with Keygen's first
JSON:API error. A read of a license Keygen does not have is ``None``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from bridge.domain.errors import KeygenRefused, KeygenUnavailable
from connectors._http import retry_after_seconds
from connectors.keygen.settings import KeygenSettings

JSONAPI = "application/vnd.api+json"
_RETRY_STATUSES = frozenset({408, 409, 425, 429})


def _first_error(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
    except (ValueError, AttributeError):
        return response.text[:300]
    parts = [str(first.get(k)) for k in ("title", "detail", "code") if first.get(k)]
    return ": ".join(parts)[:300]


class KeygenClient:
    def __init__(self, settings: KeygenSettings, client: httpx.Client | None = None) -> None:
        assert settings.account_id is not None, "a Keygen client needs the account id"
        token = settings.token.get_secret_value() if settings.token else ""
        self._base = f"{settings.api_url}/v1/accounts/{quote(settings.account_id, safe='')}"
        self._owned = client is None
        self.client = client or httpx.Client(timeout=settings.timeout_s)
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": JSONAPI,
            "User-Agent": "meterbridge-keygen-relay",
        }

    def _call(self, method: str, path: str) -> httpx.Response:
        url = f"{self._base}{path}"
        try:
            response = self.client.request(method, url, headers=self._headers)
        except httpx.HTTPError as exc:
            raise KeygenUnavailable(f"Keygen unreachable: {exc!r}") from exc
        status = response.status_code
        if response.is_success or status == 404:
            return response
        detail = f"Keygen answered {status} to {method} {path}: {_first_error(response)}"
        if status >= 500 or status in _RETRY_STATUSES:
            raise KeygenUnavailable(detail, retry_after=retry_after_seconds(response))
        raise KeygenRefused(detail, upstream=status)

    @staticmethod
    def _document(response: httpx.Response) -> dict[str, Any]:
        try:
            found = response.json()
        except ValueError as exc:
            raise KeygenUnavailable("Keygen's answer is not JSON") from exc
        if not isinstance(found, dict):
            raise KeygenUnavailable("Keygen's answer is not a JSON object")
        return found

    def get_license(self, license_id: str) -> dict[str, Any] | None:
        """``GET /v1/accounts/{account}/licenses/{id}``: the license document, or None (404)."""
        response = self._call("GET", f"/licenses/{quote(license_id, safe='')}")
        return None if response.status_code == 404 else self._document(response)

    def reset_usage(self, license_id: str) -> dict[str, Any]:
        """``POST .../licenses/{id}/actions/reset-usage``: the license after the reset."""
        path = f"/licenses/{quote(license_id, safe='')}/actions/reset-usage"
        response = self._call("POST", path)
        if response.status_code == 404:
            raise KeygenRefused(f"Keygen has no license {license_id}", upstream=404)
        return self._document(response)

    def close(self) -> None:
        if self._owned:
            self.client.close()
