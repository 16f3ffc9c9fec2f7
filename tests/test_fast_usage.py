"""The hot writes' fast path (``bridge.api.fast_usage``) answers as the general router does.

Every other test of the usage actions and activations runs through the fast path (``build_app``
installs it); here the same requests go to an app with it and an app without it, on one store,
and the two answers must be equal: status, document and headers, errors included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bridge.api import schemas as s
from bridge.api.routes import machines as machine_routes
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
    policy = api.policy(
        product, maxUses=10, usagePeriod=MONTHLY, floating=True, maxMachines=3, maxCores=8
    )
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


def test_the_fast_path_serves_machine_activations(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the route's answer broken, activations still answer 201: the fast path served them."""

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the general route served an activation")

    monkeypatch.setattr(machine_routes, "RenderedJson", broken)
    lic = api.license(api.policy(floating=True, maxMachines=5))["id"]
    for n, path in enumerate(("/v1/machines", "/v1/accounts/default/machines")):
        body = {
            "data": {
                "type": "machines",
                "attributes": {"fingerprint": f"fp-{n}"},
                "relationships": {"license": {"data": {"type": "licenses", "id": lic}}},
            }
        }
        assert api.request("POST", path, json=body).status_code == 201, path


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


# Machine activations ---------------------------------------------------------------------------
def _activation(fp: str, license_ref: str, **attributes: Any) -> bytes:
    data = {
        "type": "machines",
        "attributes": {"fingerprint": fp, **attributes},
        "relationships": {"license": {"data": {"type": "licenses", "id": license_ref}}},
    }
    return json.dumps({"data": data}).encode()


def _activation_cases(w: dict[str, Any]) -> list[tuple[str, str, dict[str, str], Any]]:
    """Each body is a function of the fingerprint (the two apps activate different ones)."""
    lic, admin = w["license"], f"Bearer {ADMIN_TOKEN}"
    ct = {"content-type": JSON, "authorization": admin}
    ok = lambda fp: _activation(fp, lic)  # noqa: E731 - a table of bodies
    fixed = lambda raw: lambda _fp: raw  # noqa: E731
    bodies = {
        "valid": ok,
        "by key": lambda fp: _activation(fp, w["key"]),
        "all attributes": lambda fp: _activation(
            fp, lic, cores=4, name="n", platform="linux", hostname="h", metadata={"a": [1]}
        ),
        "cores 0": lambda fp: _activation(fp, lic, cores=0),
        "cores -1": lambda fp: _activation(fp, lic, cores=-1),
        "cores text": lambda fp: _activation(fp, lic, cores="x"),
        "cores over the limit": lambda fp: _activation(fp, lic, cores=9),
        "cores huge": lambda fp: _activation(fp, lic, cores=2**40),
        "extra attribute": lambda fp: _activation(fp, lic, memory=1, foo=1),
        "no fingerprint": fixed(
            b'{"data":{"type":"machines","relationships":{"license":{"data":'
            b'{"type":"licenses","id":"' + lic.encode() + b'"}}}}}'
        ),
        "empty fingerprint": lambda _fp: _activation("", lic),
        "NUL fingerprint": lambda _fp: _activation("a\x00b", lic),
        "long fingerprint": lambda _fp: _activation("f" * 10_000, lic),
        "unknown license": lambda fp: _activation(fp, "unknown"),
        "plain license": lambda fp: _activation(fp, w["plain"]),
        "wrong type": fixed(b'{"data":{"type":"licenses","attributes":{"fingerprint":"x"}}}'),
        "no relationships": fixed(b'{"data":{"type":"machines","attributes":{"fingerprint":"x"}}}'),
        "license null": fixed(
            b'{"data":{"type":"machines","attributes":{"fingerprint":"x"},'
            b'"relationships":{"license":{"data":null}}}}'
        ),
        "deep metadata": lambda fp: _activation(fp, lic, metadata={"a": [[[[[[[[[[[1]]]]]]]]]]]}),
        "none": fixed(None),
        "empty": fixed(b""),
        "null": fixed(b"null"),
        "object": fixed(b"{}"),
        "data null": fixed(b'{"data":null}'),
        "array": fixed(b"[]"),
        "broken": fixed(b"nul"),
        "NaN": fixed(b'{"data":NaN}'),
        "bad bytes": fixed(b"\xff\xfe"),
    }
    cases: list[tuple[str, str, dict[str, str], Any]] = []
    for name, body in bodies.items():
        cases.append((name, "/v1/machines", ct, body))
        cases.append((name + " long", "/v1/accounts/default/machines", ct, body))
    for name, headers in {
        "no content type": {"authorization": admin},
        "text/plain": {"content-type": "text/plain", "authorization": admin},
        "json charset": {"content-type": "application/json; charset=utf-8", "authorization": admin},
        "no auth": {"content-type": JSON},
        "wrong token": {"content-type": JSON, "authorization": "Bearer nope"},
        "license key": {"content-type": JSON, "authorization": f"License {w['key']}"},
        "product token": {"content-type": JSON, "authorization": f"Bearer {w['product_token']}"},
        "license token": {"content-type": JSON, "authorization": f"Bearer {w['license_token']}"},
        "other license": {"content-type": JSON, "authorization": f"Bearer {w['other_token']}"},
        "accept rsa": {**ct, "keygen-accept-signature": 'algorithm="rsa-pss-sha256"'},
        "accept malformed": {**ct, "keygen-accept-signature": "ed25519"},
    }.items():
        for body_name in ("valid", "cores text", "none", "broken"):
            cases.append((f"{name}: {body_name}", "/v1/machines", headers, bodies[body_name]))
    for path in (
        "/v1/accounts/other/machines",
        "/v1/machines/",
        "/v1/Machines",
        "/v1/machines?x=1",
        "/v1/machines?x=%00",
        "/v1/machines%00",
    ):
        for body_name in ("valid", "cores text", "broken"):
            cases.append((f"{path}: {body_name}", path, ct, bodies[body_name]))
    # Past the body limit: declared (413 before reading), or over the wire in chunks.
    too_big = lambda fp: _activation(fp, lic, metadata={"pad": "x" * 1_048_576})  # noqa: E731
    chunked = lambda fp: [too_big(fp)[:600_000], too_big(fp)[600_000:]]  # noqa: E731
    cases.append(("declared too big", "/v1/machines", ct, too_big))
    cases.append(("chunked too big", "/v1/machines", ct, chunked))
    cases.append(("chunked", "/v1/machines", ct, lambda fp: [ok(fp)[:20], ok(fp)[20:]]))
    return cases


def _normalized(response: Any, fp: str) -> tuple[int, Any, list[tuple[str, str]]]:
    """The answer with this activation's own values (its machine id, its fingerprint) masked.
    The tests' fingerprints hold a "p", so no uuid in the document can contain one."""
    status, body, headers = _answer(response)
    text_body = json.dumps(body)
    if status == 201:
        text_body = text_body.replace(body["data"]["id"], "<machine>")
    text_body = text_body.replace(json.dumps(fp)[1:-1], "<fingerprint>") if fp else text_body
    length = [(n, "*" if n == "content-length" else v) for n, v in headers]
    return status, json.loads(text_body), length


def test_every_activation_answer_of_the_fast_path_equals_the_routers(
    both: tuple[Container, TestClient, TestClient],
) -> None:
    container, fast, general = both
    w = _world(Api(general))
    cases = _activation_cases(w)
    served = set()
    for i, (name, path, headers, body) in enumerate(cases):
        answers = []
        for client, side in ((general, "g"), (fast, "f")):
            with container.engine.begin() as conn:  # every case starts with no machines
                conn.execute(text("DELETE FROM machines"))
            fp = f"fp-{i:04d}-{side}"
            answers.append(_normalized(_send(client, path, headers, body(fp)), fp))
        assert answers[0] == answers[1], (name, path, headers)
        served.add(answers[1][0])
    assert {201, 400, 401, 404, 413, 415, 422} <= served  # every kind of answer was compared


def test_a_second_activation_is_refused_alike(
    both: tuple[Container, TestClient, TestClient],
) -> None:
    """The same fingerprint twice, and one machine over the policy's limit: the refusals of
    the store's own checks, answered alike."""
    container, fast, general = both
    w = _world(Api(general))
    ct = {"content-type": JSON, "authorization": f"Bearer {ADMIN_TOKEN}"}
    runs = []
    for client, side in ((general, "g"), (fast, "f")):
        with container.engine.begin() as conn:
            conn.execute(text("DELETE FROM machines"))
        fps = [f"fp-{n}-{side}" for n in ("a", "a", "b", "c", "d")]  # never in a uuid: "p"
        runs.append(
            [
                _normalized(_send(client, "/v1/machines", ct, _activation(fp, w["license"])), fp)
                for fp in fps
            ]
        )
    assert runs[0] == runs[1]
    assert [status for status, _b, _h in runs[0]] == [201, 422, 201, 201, 422]
