"""The app prepares its routes at startup, not on the first request that reaches them.

FastAPI builds an included route's fields and dependencies lazily, on the first request that
reaches it: about half a second for this API on a process's first request, during which its
event loop serves nothing else. The app's lifespan pays it before the server takes requests.
"""

from __future__ import annotations

from typing import Any

import fastapi.routing
import pytest
from fastapi.testclient import TestClient

from bridge.bootstrap import build_app
from bridge.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, make_container


def test_routes_are_prepared_before_the_first_request(
    sqlite_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = make_container(sqlite_url, clock)
    app = build_app(container)
    prepared: list[str] = []
    original = fastapi.routing._populate_api_route_state

    def counted(route: Any, path: str, *args: Any, **kwargs: Any) -> None:
        prepared.append(path)
        original(route, path, *args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "_populate_api_route_state", counted)
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(app) as client:  # runs the lifespan: the routes are prepared here
        at_startup = len(prepared)
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/products", headers=admin).status_code == 200
        assert client.get("/v1/accounts/default/policies", headers=admin).status_code == 200
        assert client.get("/v1/nothing-here").status_code == 404
    container.dispose()
    assert at_startup > 0
    assert "/v1/licenses/{license_id}" in prepared
    assert "/v1/accounts/{account}/licenses/{license_id}" in prepared
    assert len(prepared) == at_startup  # no request prepared anything more
