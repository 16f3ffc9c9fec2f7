"""The usage actions' fast path (``bridge.api.fast_usage``) answers as the general router does.

Every other test of the usage actions runs through the fast path (``build_app`` installs it);
here the same requests go to an app with it and an app without it, on one store, and the two
answers must be equal: status, document and headers, errors included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bridge.api import schemas as s
from bridge.api.routes import usage as usage_routes
from bridge.bootstrap import Container, build_app
from bridge.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, Api, make_container

MONTHLY = {"interval": "month", "count": 1, "anchor": "CALENDAR", "timezone": "Europe/Paris"}
JSON = "application/vnd.api+json"
# Headers whose values differ from one answer to the next by design.
_VARYING = {"date", "keygen-date", "digest", "keygen-digest", "keygen-signature", "usage-entry-id"}


@pytest.fixture
def both(db_url: str, clock: FakeClock) -> Iterator[tuple[Container, TestClient, TestClient]]:
    container = make_container(db_url, clock)
    fast = TestClient(build_app(container), raise_server_exceptions=False)
    general = TestClient(build_app(container, fast_usage=False), raise_server_exceptions=False)
    with fast, general:
        yield container, fast, general
    container.dispose()


def _world(api: Api) -> dict[str, Any]:
    product = api.product()
    policy = api.policy(product, maxUses=10, usagePeriod=MONTHLY)
    lic = api.license(policy, name="L", metadata={"plan": "pro", "n": 1.5, "deep": {"a": [1]}})
    plain = api.license(api.policy(product))
    other = api.license(policy)
    return {
        "license": lic["id"],
        "key": lic["attributes"]["key"],
        "plain": plain["id"],
        "product_token": api.product_token(product),
        "license_token": api.license_token(lic["id"]),
        "other_token": api.license_token(other["id"]),
    }


Body = bytes | list[bytes] | None  # a list: sent in those chunks (chunked encoding)


def _cases(w: dict[str, Any]) -> list[tuple[str, str, dict[str, str], Body]]:
    lic, admin = w["license"], f"Bearer {ADMIN_TOKEN}"
    inc = f"/v1/licenses/{lic}/actions/increment-usage"
    dec = f"/v1/licenses/{lic}/actions/decrement-usage"
    reset = f"/v1/licenses/{lic}/actions/reset-usage"
    long_inc = f"/v1/accounts/default/licenses/{lic}/actions/increment-usage"
    ct = {"content-type": JSON, "authorization": admin}
    cases: list[tuple[str, str, dict[str, str], Body]] = []
    bodies = [
        None,
        b"",
        b"null",
        b"{}",
        b'{"meta":null}',
        b'{"meta":{}}',
        b'{"meta":{"increment":2}}',
        b'{"meta":{"increment":-3}}',
        b'{"meta":{"increment":0}}',
        b'{"meta":{"increment":11}}',
        b'{"meta":{"increment":"2"}}',
        b'{"meta":{"increment":true}}',
        b'{"meta":{"increment":1.5}}',
        b'{"meta":{"increment":null}}',
        b'{"meta":{"increment":2,"x":1}}',
        b'{"meta":{"decrement":1}}',
        b'{"x":1}',
        b'{"data":{"type":"licenses"}}',
        b"[]",
        b'"text"',
        b"7",
        b"nul",
        b'{"meta":{"increment":NaN}}',
        b'{"meta":{"increment":1e999}}',
        b'{"meta":{"increment":100000000000000000000000}}',
        b'{"meta":{"increment":2147483648}}',
        b'{"a":"\\u0000"}',
        b'{"\\ud800":1}',
        b"[" * 100 + b"]" * 100,
        b"\xff\xfe",
        b'{"meta":{"increment":1}',
    ]
    for body in bodies:
        cases.append(("increment", inc, ct, body))
        cases.append(("increment long", long_inc, ct, body))
    for body in (
        None,
        b'{"meta":{"decrement":2}}',
        b'{"meta":{"decrement":"x"}}',
        b'{"meta":{"increment":1}}',
        b'{"meta":{"decrement":99}}',
    ):
        cases.append(("decrement", dec, ct, body))
    for body in (None, b"{}", b'{"meta":{}}', b'{"x":1}', b"null", b"[]"):
        cases.append(("reset", reset, ct, body))
    for name, headers in {
        "no content type": {"authorization": admin},
        "text/plain": {"content-type": "text/plain", "authorization": admin},
        "json charset": {"content-type": "application/json; charset=utf-8", "authorization": admin},
        "problem+json": {"content-type": "application/problem+json", "authorization": admin},
        "upper case": {"content-type": "Application/JSON", "authorization": admin},
        "no auth": {"content-type": JSON},
        "empty auth": {"content-type": JSON, "authorization": ""},
        "bearer blank": {"content-type": JSON, "authorization": "Bearer "},
        "wrong token": {"content-type": JSON, "authorization": "Bearer nope"},
        "basic": {"content-type": JSON, "authorization": "Basic abc"},
        "license key": {"content-type": JSON, "authorization": f"License {w['key']}"},
        "wrong key": {"content-type": JSON, "authorization": "License nope"},
        "product token": {"content-type": JSON, "authorization": f"Bearer {w['product_token']}"},
        "license token": {"content-type": JSON, "authorization": f"Bearer {w['license_token']}"},
        "other license": {"content-type": JSON, "authorization": f"Bearer {w['other_token']}"},
        "empty key": {**ct, "idempotency-key": ""},
        "long key": {**ct, "idempotency-key": "k" * 256},
        "bad key": {**ct, "idempotency-key": "a\tb"},
        # The signer's check comes first, the guard's next (both ahead of FastAPI here).
        "accept ed25519": {**ct, "keygen-accept-signature": 'keyid="default", algorithm="ed25519"'},
        "accept rsa": {**ct, "keygen-accept-signature": 'algorithm="rsa-pss-sha256"'},
        "accept other key": {**ct, "keygen-accept-signature": 'keyid="x", algorithm="ed25519"'},
        "accept malformed": {**ct, "keygen-accept-signature": "ed25519"},
        "accept blank": {**ct, "keygen-accept-signature": " "},
        "accept + text/plain": {
            "content-type": "text/plain",
            "authorization": admin,
            "keygen-accept-signature": "nope",
        },
    }.items():
        for body in (None, b'{"meta":{"increment":1}}', b'{"meta":{"increment":"x"}}', b"nul"):
            cases.append((name, inc, headers, body))
    for path in (
        f"/v1/accounts/other/licenses/{lic}/actions/increment-usage",
        f"/v1/licenses/{w['key']}/actions/increment-usage",
        f"/v1/licenses/{w['plain']}/actions/increment-usage",
        "/v1/licenses/unknown/actions/increment-usage",
        f"/v1/licenses/{lic}/actions/increment-usage/",
        f"/v1/licenses/{lic}/actions/Increment-usage",
        "/v1/licenses/a%2Fb/actions/increment-usage",
        f"/v1/licenses/{lic}/actions/increment-usage?x=1",
        f"/v1/licenses/{lic}%00/actions/increment-usage",
        f"/v1/licenses/{lic}/actions/increment-usage?x=%00",
        f"/v1/licenses/{lic}/actions/increment-usage?%00=1",
    ):
        for body in (None, b'{"meta":{"increment":"x"}}', b"nul"):
            cases.append(("path", path, ct, body))
    # Past the body limit: declared (413 before reading), or over the wire in chunks.
    too_big = b'{"meta":{"increment":1},"pad":"' + b"x" * 1_048_576 + b'"}'
    cases.append(("declared too big", inc, ct, too_big))
    cases.append(("chunked too big", inc, ct, [too_big[:600_000], too_big[600_000:]]))
    cases.append(("chunked", inc, ct, [b'{"meta":', b'{"increment":2}}']))
    return cases


def _answer(response: Any) -> tuple[int, Any, list[tuple[str, str]]]:
    headers = sorted(
        (name, "*" if name in _VARYING else value)
        for name, value in response.headers.items()
        if name != "x-request-id"
    )
    body = response.json() if response.content else None
    return response.status_code, body, headers


def _send(client: TestClient, path: str, headers: dict[str, str], body: Body) -> Any:
    content = iter(body) if isinstance(body, list) else body
    return client.post(path, headers={**headers, "x-request-id": "fixed"}, content=content)


def test_every_answer_of_the_fast_path_equals_the_routers(
    both: tuple[Container, TestClient, TestClient],
) -> None:
    container, fast, general = both
    w = _world(Api(general))
    cases = _cases(w)
    for name, path, headers, body in cases:
        answers = []
        for client in (general, fast):
            with container.engine.begin() as conn:  # every case starts from the same counters
                conn.execute(text("UPDATE licenses SET uses = 4"))
            answers.append(_answer(_send(client, path, headers, body)))
        assert answers[0] == answers[1], (name, path, headers, repr(body)[:100])
    served = {_answer(_send(fast, path, h, b))[0] for _n, path, h, b in cases}
    assert {200, 400, 401, 404, 413, 415, 422} <= served  # the cases reach every kind of answer


def test_idempotent_replays_and_reuse_answer_alike(
    both: tuple[Container, TestClient, TestClient],
) -> None:
    container, fast, general = both
    w = _world(Api(general))
    inc = f"/v1/licenses/{w['license']}/actions/increment-usage"
    sequence = [
        b'{"meta":{"increment":2}}',
        b'{"meta":{"increment":2}}',
        b'{"meta":{"increment":3}}',
    ]
    runs = []
    for client, key in ((general, "key-general"), (fast, "key-fast")):
        with container.engine.begin() as conn:
            conn.execute(text("UPDATE licenses SET uses = 0"))
        headers = {
            "content-type": JSON,
            "authorization": f"Bearer {ADMIN_TOKEN}",
            "idempotency-key": key,
        }
        runs.append([_answer(_send(client, inc, headers, body)) for body in sequence])
    assert runs[0] == runs[1]
    assert [status for status, _body, _headers in runs[0]] == [200, 200, 422]
    assert ("idempotent-replayed", "true") in runs[0][1][2]


def test_the_fast_path_serves_the_usage_actions(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the routes' own handler broken, the usage actions still answer: the fast path
    served them."""

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the general route served a usage action")

    monkeypatch.setattr(usage_routes, "_apply", broken)
    lic = api.license(api.policy())["id"]
    for path in (
        f"/v1/licenses/{lic}/actions/increment-usage",
        f"/v1/licenses/{lic}/actions/decrement-usage",
        f"/v1/licenses/{lic}/actions/reset-usage",
        f"/v1/accounts/default/licenses/{lic}/actions/increment-usage",
    ):
        assert api.request("POST", path).status_code == 200, path


def test_the_license_document_is_rendered_as_the_models_render_it(api: Api) -> None:
    context = api.client.app.state.context  # type: ignore[attr-defined]
    policy = api.policy(maxUses=7, usagePeriod=MONTHLY, maxMachines=3, floating=True)
    licenses = [
        api.license(policy, name="A", metadata={"x": [1, 2.5, None, {"é": "ü"}]}),
        api.license(api.policy(), expiry="2030-01-02T03:04:05.123456Z"),
        api.license(policy, suspended=True),
        # a check-in policy: requireCheckIn, lastCheckIn and nextCheckIn are set at creation
        api.license(api.policy(requireCheckIn=True, checkInInterval="day", checkInIntervalCount=2)),
    ]
    with context.uows() as uow:
        for created in licenses:
            lic = uow.licenses.find(created["id"])
            assert lic is not None
            now = context.clock.now()
            expected = s.LicenseDocument(data=context.render.license(lic, now)).model_dump(
                mode="json", by_alias=True
            )
            assert json.loads(context.render.license_json(lic, now)) == expected
