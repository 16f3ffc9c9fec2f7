"""Helpers for the hostile-input tests: an API on either database and a dump of the store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect, text

from bridge.bootstrap import build_app
from bridge.testing import FakeClock
from tests.conftest import Api, make_container


@contextmanager
def api_on(url: str, clock: FakeClock, **settings: Any) -> Iterator[Api]:
    container = make_container(url, clock, **settings)
    try:
        with TestClient(build_app(container), raise_server_exceptions=False) as client:
            yield Api(client)
    finally:
        container.dispose()


def engine_of(api: Api) -> Engine:
    engine: Engine = api.client.app.state.context.uows.engine  # type: ignore[attr-defined]
    return engine


def dump(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table, as sorted text: equal dumps mean an unchanged store."""
    tables = sorted(inspect(engine).get_table_names())
    with engine.connect() as conn:
        return {
            name: sorted(repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{name}"')))  # noqa: S608
            for name in tables
        }
