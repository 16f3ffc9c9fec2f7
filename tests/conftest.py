"""Shared fixtures: real SQLite files, real PostgreSQL (when configured) and the HTTP API."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bridge.bootstrap import Container, build, build_app
from bridge.settings import load_settings
from bridge.testing import FakeClock
from tests.served import Served

ADMIN_TOKEN = "admin-test-secret"
PG_ENV = "BRIDGE_TEST_DATABASE_URL"
PG_SKIP = (
    f"PostgreSQL tests need {PG_ENV}, e.g. "
    f"{PG_ENV}=postgresql+psycopg://postgres@127.0.0.1:5432/test (.ci/run sets it)"
)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh database on the configured PostgreSQL server for this test session."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(PG_SKIP)
    name = f"bridge_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real ``meterbridge serve`` (default settings, SQLite) for the whole session: the
    modules that use it each create resources of their own, under keys no other one uses."""
    with Served(tmp_path_factory.mktemp("served")) as server:
        yield server


@pytest.fixture
def pg_url(pg_server_url: str) -> str:
    """The session's PostgreSQL database, migrated and emptied for each test."""
    from bridge.store.engine import make_engine
    from bridge.store.migrate import upgrade

    engine = make_engine(pg_server_url)
    upgrade(engine)
    with engine.begin() as conn:
        tables = (
            conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            .scalars()
            .all()
        )
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return pg_server_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per session; each test gets a copy (migrations take ~0.3 s)."""
    from bridge.store.engine import make_engine
    from bridge.store.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "bridge.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated SQLite file of this test's own."""
    path = tmp_path / "bridge.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Runs a test on a SQLite file and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_container(url: str, clock: FakeClock, **settings: Any) -> Container:
    container = build(
        load_settings(database_url=url, admin_token=ADMIN_TOKEN, **settings), clock=clock
    )
    container.migrate()
    return container


@pytest.fixture
def container(sqlite_url: str, clock: FakeClock) -> Iterator[Container]:
    c = make_container(sqlite_url, clock)
    yield c
    c.dispose()


class Api:
    """A thin client for the HTTP API with helpers that build the usual fixtures."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    @staticmethod
    def auth(token: str = ADMIN_TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def request(
        self, method: str, path: str, *, token: str | None = ADMIN_TOKEN, **kwargs: Any
    ) -> Any:
        headers = {"Content-Type": "application/vnd.api+json", **kwargs.pop("headers", {})}
        if token is not None and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json() if response.content else {}
        return body

    def product(self, name: str = "App") -> str:
        body = {"data": {"type": "products", "attributes": {"name": name}}}
        return str(self.ok("POST", "/v1/products", 201, json=body)["data"]["id"])

    def policy(self, product_id: str | None = None, **attributes: Any) -> str:
        product_id = product_id or self.product()
        body = {
            "data": {
                "type": "policies",
                "attributes": {"name": "Metered", **attributes},
                "relationships": {"product": {"data": {"type": "products", "id": product_id}}},
            }
        }
        return str(self.ok("POST", "/v1/policies", 201, json=body)["data"]["id"])

    def license(self, policy_id: str | None = None, **attributes: Any) -> dict[str, Any]:
        policy_id = policy_id or self.policy()
        body = {
            "data": {
                "type": "licenses",
                "attributes": attributes,
                "relationships": {"policy": {"data": {"type": "policies", "id": policy_id}}},
            }
        }
        data: dict[str, Any] = self.ok("POST", "/v1/licenses", 201, json=body)["data"]
        return data

    def product_token(self, product_id: str) -> str:
        doc = self.ok("POST", f"/v1/products/{product_id}/tokens", 201)
        return str(doc["data"]["attributes"]["token"])

    def license_token(self, license_id: str) -> str:
        doc = self.ok("POST", f"/v1/licenses/{license_id}/tokens", 201)
        return str(doc["data"]["attributes"]["token"])

    def increment(self, license: str, by: int | None = None, **kwargs: Any) -> Any:
        body = {"meta": {"increment": by}} if by is not None else None
        return self.request(
            "POST", f"/v1/licenses/{license}/actions/increment-usage", json=body, **kwargs
        )

    def decrement(self, license: str, by: int | None = None, **kwargs: Any) -> Any:
        body = {"meta": {"decrement": by}} if by is not None else None
        return self.request(
            "POST", f"/v1/licenses/{license}/actions/decrement-usage", json=body, **kwargs
        )

    def reset(self, license: str, **kwargs: Any) -> Any:
        return self.request("POST", f"/v1/licenses/{license}/actions/reset-usage", **kwargs)


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(build_app(container), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


def error_of(response: Any) -> dict[str, Any]:
    """The first error object of a JSON:API error document."""
    body = response.json()
    assert set(body) == {"meta", "errors"}, body
    first: dict[str, Any] = body["errors"][0]
    return first
