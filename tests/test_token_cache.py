"""Principals of database tokens cached by digest: exact invalidation in this process, within
``auth.cache_check_s`` in another process on the same database, TTL as a safety net, and a
lookup that raced a revocation never stores what it read."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bridge.bootstrap import Container, build_app
from bridge.domain.access import Principal, Role
from bridge.service.auth import Authenticator, digest
from bridge.service.principal_cache import PrincipalCache, RevocationWatch
from bridge.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, Api, error_of, make_container

TTL_S, CHECK_S = 5.0, 0.5


class Ticks:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Process:
    """One API process: its own container (engine, pool, units of work), app and cache."""

    container: Container
    api: Api
    cache: PrincipalCache
    ticks: Ticks
    watch: RevocationWatch

    def status(self, token: str, path: str = "/v1/licenses") -> int:
        code: int = self.api.request("GET", path, token=token).status_code
        return code


def _process(url: str, clock: FakeClock, stack: ExitStack) -> Process:
    container = make_container(url, clock)
    stack.callback(container.dispose)
    app = build_app(container)
    ticks = Ticks()
    # The composition root's authenticator, with a cache whose time the test moves.
    cache = PrincipalCache(TTL_S, CHECK_S, 100, monotonic=ticks)
    container.uows.on_revocation(cache.invalidate)
    ctx = app.state.context
    auth = Authenticator(container.uows, ADMIN_TOKEN, clock, cache)
    app.state.context = dataclasses.replace(ctx, auth=auth)
    client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
    watch = auth.watch()
    assert watch is not None
    return Process(container, Api(client), cache, ticks, watch)


@pytest.fixture
def pair(db_url: str, clock: FakeClock) -> Iterator[tuple[Process, Process]]:
    """Two API processes on one database."""
    with ExitStack() as stack:
        yield _process(db_url, clock, stack), _process(db_url, clock, stack)


def _warm(process: Process, token: str, path: str = "/v1/licenses") -> None:
    """Authenticate once so the principal is cached, and check that it is."""
    assert process.status(token, path) == 200
    assert process.cache.get(digest(token)) is not None


def test_deleted_license_token_is_refused_at_once_here_and_after_the_check_there(
    pair: tuple[Process, Process],
) -> None:
    here, there = pair
    lic = here.api.license(here.api.policy())
    token = here.api.license_token(lic["id"])
    path = f"/v1/licenses/{lic['id']}"
    _warm(here, token, path)
    _warm(there, token, path)

    here.api.ok("DELETE", path, 204)
    response = here.api.request("GET", path, token=token)
    assert response.status_code == 401
    assert error_of(response)["code"] == "TOKEN_INVALID"

    there.ticks.now += CHECK_S  # the documented bound for another process
    response = there.api.request("GET", path, token=token)
    assert response.status_code == 401
    assert error_of(response)["code"] == "TOKEN_INVALID"


def test_deleted_product_token_is_refused_at_once_here_and_after_the_check_there(
    pair: tuple[Process, Process],
) -> None:
    here, there = pair
    product = here.api.product("Gone")
    token = here.api.product_token(product)
    _warm(here, token)
    _warm(there, token)

    here.api.ok("DELETE", f"/v1/products/{product}", 204)
    assert here.status(token) == 401
    there.ticks.now += CHECK_S
    assert there.status(token) == 401


def test_the_watch_refuses_a_revoked_token_in_another_process_without_waiting(
    pair: tuple[Process, Process],
) -> None:
    """The watch thread's step (twice per check interval) reads the moved counter: no clock
    needs to move; and while the counter stays, it keeps cached principals served."""
    here, there = pair
    lic = here.api.license(here.api.policy())
    token = here.api.license_token(lic["id"])
    path = f"/v1/licenses/{lic['id']}"
    _warm(there, token, path)
    there.ticks.now += CHECK_S * 0.6
    there.watch.step()  # nothing revoked: the entry stays good for another interval
    there.ticks.now += CHECK_S * 0.6
    assert there.cache.get(digest(token)) is not None

    here.api.ok("DELETE", path, 204)
    there.watch.step()
    assert there.cache.get(digest(token)) is None
    assert there.status(token, path) == 401


def test_another_process_drops_every_principal_once_the_counter_moves(
    pair: tuple[Process, Process],
) -> None:
    """A revocation anywhere drops the other process's whole cache, not only that token's."""
    here, there = pair
    kept = here.api.license(here.api.policy())
    kept_token = here.api.license_token(kept["id"])
    gone = here.api.license(here.api.policy())
    gone_token = here.api.license_token(gone["id"])
    kept_path, gone_path = f"/v1/licenses/{kept['id']}", f"/v1/licenses/{gone['id']}"
    _warm(there, kept_token, kept_path)
    _warm(there, gone_token, gone_path)

    here.api.ok("DELETE", gone_path, 204)
    there.ticks.now += CHECK_S
    assert there.status(gone_token, gone_path) == 401
    assert there.status(kept_token, kept_path) == 200  # looked up again, still valid
    assert there.cache.get(digest(kept_token)) is not None


def test_suspension_is_read_from_the_database_whichever_process_caches_the_token(
    pair: tuple[Process, Process],
) -> None:
    """Keygen authenticates a suspended license's token (only ``License <key>`` is refused);
    what it may do is decided per request from the database, so a cached principal changes
    nothing: validation says SUSPENDED at once in both processes."""
    here, there = pair
    lic = here.api.license(here.api.policy())
    token = here.api.license_token(lic["id"])
    actions = f"/v1/licenses/{lic['id']}/actions"
    _warm(there, token, f"/v1/licenses/{lic['id']}")

    here.api.ok("POST", f"{actions}/suspend")
    for process in (here, there):
        assert process.api.ok("POST", f"{actions}/validate", token=token)["meta"]["code"] == (
            "SUSPENDED"
        )
    key = lic["attributes"]["key"]
    response = there.api.request(
        "GET", f"/v1/licenses/{lic['id']}", headers={"Authorization": f"License {key}"}
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == "LICENSE_SUSPENDED"


def test_a_cached_principal_needs_no_query_and_the_ttl_bounds_a_missed_revocation(
    pair: tuple[Process, Process],
) -> None:
    """A token removed behind the service's back (no counter bump) is still served from the
    cache until the TTL: the safety net's bound."""
    here, _ = pair
    lic = here.api.license(here.api.policy())
    token = here.api.license_token(lic["id"])
    path = f"/v1/licenses/{lic['id']}"
    _warm(here, token, path)
    with here.container.engine.begin() as conn:
        conn.execute(text("DELETE FROM tokens WHERE bearer_id = :id"), {"id": lic["id"]})
    here.ticks.now += CHECK_S / 2
    assert here.status(token, path) == 200  # from the cache: no query was made
    here.ticks.now += TTL_S
    assert here.status(token, path) == 401


def test_a_lookup_that_raced_a_revocation_stores_nothing(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is read, then (before the lookup stores it) deleted and committed in this
    process: the lookup still answers with what it read, but the next request is refused."""
    with ExitStack() as stack:
        here = _process(db_url, clock, stack)
        lic = here.api.license(here.api.policy())
        token = here.api.license_token(lic["id"])
        real_put = here.cache.put

        def put_after_revocation(*args: Any) -> None:
            here.api.ok("DELETE", f"/v1/licenses/{lic['id']}", 204)
            real_put(*args)

        monkeypatch.setattr(here.cache, "put", put_after_revocation)
        here.status(token)
        monkeypatch.undo()
        assert here.cache.get(digest(token)) is None
        assert here.status(token) == 401


def test_a_lookup_from_an_older_snapshot_stores_nothing() -> None:
    """A lookup that read generation 3 while another had already seen 4 stores nothing; one
    begun before an invalidation stores nothing either."""
    ticks = Ticks()
    cache = PrincipalCache(TTL_S, CHECK_S, 10, monotonic=ticks)
    principal = Principal(Role.LICENSE, "lic")
    old = cache.begin()
    cache.observe(4, ticks.now)
    cache.observe(3, old[1])
    cache.put("d", principal, old, 3)
    assert cache.get("d") is None
    began = cache.begin()
    cache.invalidate()
    cache.put("d", principal, began, 4)
    assert cache.get("d") is None
    began = cache.begin()
    cache.put("d", principal, began, 4)
    assert cache.get("d") == principal


def test_the_cache_is_a_bounded_lru_and_ttl_zero_turns_it_off(
    sqlite_url: str, clock: FakeClock
) -> None:
    ticks = Ticks()
    cache = PrincipalCache(TTL_S, CHECK_S, 2, monotonic=ticks)
    cache.observe(0, ticks.now)
    for name in ("a", "b"):
        cache.put(name, Principal(Role.LICENSE, name), cache.begin(), 0)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", Principal(Role.LICENSE, "c"), cache.begin(), 0)
    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None

    container = make_container(sqlite_url, clock, auth={"cache_ttl_s": 0})
    try:
        with TestClient(build_app(container), raise_server_exceptions=False) as client:
            api = Api(client)
            lic = api.license(api.policy())
            token = api.license_token(lic["id"])
            path = f"/v1/licenses/{lic['id']}"
            assert api.request("GET", path, token=token).status_code == 200
            # Off: the authenticator holds no cache, so nothing can be served from one.
            assert client.app.state.context.auth._cache is None  # type: ignore[attr-defined]
            api.ok("DELETE", f"/v1/licenses/{lic['id']}", 204)
            assert api.request("GET", path, token=token).status_code == 401
    finally:
        container.dispose()
