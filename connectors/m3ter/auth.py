"""OAuth2 client credentials for m3ter, as an ``httpx.Auth``.

Reference A.2: ``POST {api_url}/oauth/token`` with HTTP Basic (Access Key ID : API Secret) and
``{"grant_type": "client_credentials"}`` answers ``{"access_token", "expires_in": 18000, ...}``;
there is no refresh token, so a new token is requested the same way. The token is cached until
``expires_in`` minus a margin, measured on the injected clock from the moment it was issued (the
official SDK instead computes ``datetime.fromtimestamp(expires_in - 300)``, a date in 1970, and
so asks for a token before every request). A 401 takes a new token once and replays the
request. One refresh runs at a time: concurrent requests wait for it and share its token.

Sync only: the relay delivers on a thread, and the token is fetched with the sink's own
``httpx.Client``.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import structlog
from pydantic import SecretStr

from bridge.domain.errors import Transient
from bridge.domain.ports import Clock

log = structlog.get_logger(__name__)


class TokenRequestFailed(Exception, Transient):
    """The token endpoint did not give a usable token; ``response`` is its answer."""

    def __init__(self, message: str, response: httpx.Response) -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: datetime


class M3terAuth(httpx.Auth):
    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        client: httpx.Client,
        clock: Clock,
        refresh_margin_s: float = 300.0,
    ) -> None:
        self.token_url = token_url
        self._basic = httpx.BasicAuth(client_id, client_secret.get_secret_value())
        self._client = client
        self._clock = clock
        self._margin = refresh_margin_s
        self._lock = threading.Lock()
        self._token: _Token | None = None
        self.token_requests = 0  # tokens asked for, for tests and metrics

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:  # expired or revoked early: one new token, one replay
            token = self.token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise NotImplementedError("M3terAuth is sync only; use it with httpx.Client")
        yield request  # unreachable: makes this an async generator, as httpx expects

    def token(self, *, stale: str | None = None) -> str:
        """The cached token, or a new one if it is due for refresh or is ``stale`` (rejected)."""
        with self._lock:
            cached = self._token
            if (
                cached is not None
                and cached.value != stale
                and self._clock.now() < cached.refresh_at
            ):
                return cached.value
            self._token = self._fetch()
            return self._token.value

    def _fetch(self) -> _Token:
        issued = self._clock.now()
        self.token_requests += 1
        response = self._client.post(
            self.token_url, json={"grant_type": "client_credentials"}, auth=self._basic
        )
        if not response.is_success:
            raise TokenRequestFailed("m3ter token request refused", response)
        try:
            body = response.json()
            value = body["access_token"]
            expires_in = float(body["expires_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise TokenRequestFailed(f"m3ter token answer unusable: {exc!r}", response) from exc
        if not isinstance(value, str) or not value or expires_in <= 0:
            raise TokenRequestFailed("m3ter token answer unusable", response)
        # Refresh ``margin`` early, but never later than halfway through a short-lived token.
        lifetime = max(expires_in - self._margin, expires_in / 2)
        log.info("m3ter_token_issued", expires_in=expires_in)
        return _Token(value, issued + timedelta(seconds=lifetime))
