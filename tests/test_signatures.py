"""Response signatures, checked the way a Keygen client checks them, with another library.

The bridge signs with ``cryptography``; these tests rebuild the signing string from the
specification (draft-cavage-http-signatures-08, as Keygen uses it) and verify with PyNaCl
(libsodium), over the exact bytes a real ``meterbridge serve`` sent on a socket.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from bridge.bootstrap import build_app
from bridge.testing import FakeClock
from tests.conftest import make_container
from tests.served import RawResponse, Served

TEST_KEY = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"  # RFC 8032 test 1
TEST_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
EMPTY_DIGEST = "sha-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="


def signed_message(method: str, target: str, host: str, date: str, digest: str) -> bytes:
    return (
        f"(request-target): {method.lower()} {target}\nhost: {host}\ndate: {date}\ndigest: {digest}"
    ).encode()


def verify(
    public_key: str,
    method: str,
    target: str,
    host: str,
    headers: list[tuple[str, str]],
    body: bytes,
) -> dict[str, str]:
    """Keygen's verifier steps: the digest of the body, then the signature over the four lines."""

    def one(name: str) -> str:
        values = [v for k, v in headers if k.lower() == name]
        assert len(values) == 1, f"{name}: {values}"
        return values[0]

    date, digest = one("date"), one("digest")
    assert digest == "sha-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert parsedate_to_datetime(date).tzinfo is not None
    assert one("keygen-date") == date
    assert one("keygen-digest") == digest
    params = dict(re.findall(r'(\w+)="([^"]*)"', one("keygen-signature")))
    assert params["keyid"] == "default"
    assert params["headers"] == "(request-target) host date digest"
    message = signed_message(method, target, host, date, digest)
    VerifyKey(bytes.fromhex(public_key)).verify(message, base64.b64decode(params["signature"]))
    return params


def verify_raw(
    served: Served, response: RawResponse, method: str, target: str, host: str | None = None
) -> None:
    verify(
        served.public_key,
        method,
        target,
        host or f"127.0.0.1:{served.port}",
        response.headers,
        response.body,
    )


@pytest.fixture(scope="module")
def license_key(served: Served) -> str:
    with served.admin() as admin:
        product = admin.post(
            "/v1/products", json={"data": {"type": "products", "attributes": {"name": "App"}}}
        ).json()["data"]["id"]
        rel = {"product": {"data": {"type": "products", "id": product}}}
        policy = admin.post(
            "/v1/policies",
            json={"data": {"type": "policies", "attributes": {"name": "P"}, "relationships": rel}},
        ).json()["data"]["id"]
        rel = {"policy": {"data": {"type": "policies", "id": policy}}}
        body = {
            "data": {"type": "licenses", "attributes": {"key": "SIGNED-0001"}, "relationships": rel}
        }
        assert admin.post("/v1/licenses", json=body).status_code == 201
    return "SIGNED-0001"


def admin_headers() -> dict[str, str]:
    from tests.served import ADMIN

    return {"Authorization": f"Bearer {ADMIN}"}


def test_get_is_signed_over_the_bytes_sent(served: Served, license_key: str) -> None:
    """A GET's answer carries one Date, a Digest of the body received and a signature over the
    method, the path and the Host as sent (with its port)."""
    response = served.raw("GET", "/v1/me", headers={"Authorization": f"License {license_key}"})
    assert response.status == 200
    verify_raw(served, response, "GET", "/v1/me")
    assert len(response.all("date")) == 1


def test_the_query_is_signed_as_sent(served: Served, license_key: str) -> None:
    """The request target includes the query string exactly as the client encoded it."""
    target = "/v1/accounts/default/licenses?page%5Bsize%5D=1&page%5Bnumber%5D=1"
    response = served.raw("GET", target, headers=admin_headers())
    assert response.status == 200
    verify_raw(served, response, "GET", target)
    with pytest.raises(BadSignatureError):
        verify_raw(served, response, "GET", "/v1/accounts/default/licenses")


def test_post_is_signed(served: Served, license_key: str) -> None:
    """A POST with a body (a validation) is signed over its answer."""
    target = "/v1/licenses/actions/validate-key"
    response = served.raw("POST", target, body={"meta": {"key": license_key}})
    assert response.status == 200
    verify_raw(served, response, "POST", target)


def test_no_content_is_signed_over_the_empty_body(served: Served) -> None:
    """A 204 has the digest of the empty body and is signed like any other answer."""
    with served.admin() as admin:
        product = admin.post(
            "/v1/products", json={"data": {"type": "products", "attributes": {"name": "Gone"}}}
        ).json()["data"]["id"]
    target = f"/v1/products/{product}"
    response = served.raw("DELETE", target, headers=admin_headers())
    assert response.status == 204
    assert response.body == b""
    assert response.header("digest") == EMPTY_DIGEST
    verify_raw(served, response, "DELETE", target)


@pytest.mark.parametrize(
    ("method", "target", "headers", "status"),
    [
        ("GET", "/v1/me", {}, 401),
        ("GET", "/v1/licenses/NO-SUCH-KEY", "admin", 404),
        ("GET", "/v1/no-such-route", "admin", 404),
        ("POST", "/v1/products", "admin", 400),
    ],
)
def test_errors_are_signed(
    served: Served, method: str, target: str, headers: Any, status: int
) -> None:
    """Error answers (401, 404, an unknown route, a missing body) are signed too."""
    sent = admin_headers() if headers == "admin" else headers
    body: Any = {} if method == "POST" else None
    response = served.raw(method, target, headers=sent, body=body)
    assert response.status == status
    verify_raw(served, response, method, target)


def test_the_host_is_signed_as_received(served: Served, license_key: str) -> None:
    """The Host header is signed as the client sent it: another name for the same server
    verifies under that name only."""
    host = f"localhost:{served.port}"
    response = served.raw(
        "GET", "/v1/me", host=host, headers={"Authorization": f"License {license_key}"}
    )
    verify_raw(served, response, "GET", "/v1/me", host=host)
    with pytest.raises(BadSignatureError):
        verify_raw(served, response, "GET", "/v1/me")


def test_behind_a_proxy_the_public_host_is_signed(tmp_path: Path) -> None:
    """With ``public_host`` set, answers are signed over it, whatever Host the proxy sends."""
    env = {"BRIDGE_PUBLIC_HOST": "licensing.example.com:8443"}
    with Served(tmp_path, env=env) as proxied:
        response = proxied.raw("GET", "/v1/me", host="10.0.0.7:8080")
        assert response.status == 401
        verify_raw(proxied, response, "GET", "/v1/me", host="licensing.example.com:8443")


# In process: Keygen-Accept-Signature, an unexpected 500, a configured key --------------------
@pytest.fixture
def keyed(sqlite_url: str, clock: FakeClock) -> Iterator[TestClient]:
    container = make_container(sqlite_url, clock, signing={"key": TEST_KEY})
    with TestClient(build_app(container), raise_server_exceptions=False) as client:
        yield client
    container.dispose()


def _check(response: Any, target: str = "/v1/me") -> dict[str, str]:
    return verify(
        TEST_PUBLIC, "GET", target, "testserver", list(response.headers.items()), response.content
    )


def test_a_configured_key_signs_and_the_date_is_the_clock(keyed: TestClient) -> None:
    """``signing.key`` is the key used, and the Date is read from the injected clock."""
    response = keyed.get("/v1/me")
    assert response.status_code == 401
    _check(response)
    assert response.headers["date"] == "Thu, 01 Jan 2026 00:00:00 GMT"


@pytest.mark.parametrize(
    ("accept", "algorithm"),
    [
        ('algorithm="ed25519"', "ed25519"),
        ('keyid="default", algorithm="ed25519"', "ed25519"),
        ('ALGORITHM="ED25519"', "ED25519"),
        ("   ", "ed25519"),
    ],
)
def test_accept_signature_is_honoured(keyed: TestClient, accept: str, algorithm: str) -> None:
    """A request accepting ed25519 (with our key id, or none; any case; blank = default) gets
    it, the algorithm named as the client spelled it, as Keygen does."""
    response = keyed.get("/v1/me", headers={"Keygen-Accept-Signature": accept})
    assert _check(response)["algorithm"] == algorithm


@pytest.mark.parametrize(
    ("accept", "reason"),
    [
        ("algorithm=ed25519", "malformed"),
        ('algorithm="ed25519", keyid="default"', "malformed"),
        ('algorithm="rsa-sha256"', "unsupported algorithm"),
        ('algorithm="ecdsa-p256"', "unsupported algorithm"),
        ('keyid="another-account", algorithm="ed25519"', "keyid not found"),
    ],
)
def test_accept_signature_refusals(keyed: TestClient, accept: str, reason: str) -> None:
    """What Keygen refuses is a 400 with Keygen's detail, unsigned but dated and digested."""
    response = keyed.get("/v1/me", headers={"Keygen-Accept-Signature": accept})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == "ACCEPT_SIGNATURE_INVALID"
    assert error["detail"] == f"invalid accept-signature header ({reason})"
    assert "keygen-signature" not in response.headers
    assert response.headers["date"] == "Thu, 01 Jan 2026 00:00:00 GMT"
    digest = base64.b64encode(hashlib.sha256(response.content).digest()).decode()
    assert response.headers["digest"] == f"sha-256={digest}"


def test_an_unexpected_failure_is_signed(
    keyed: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even the 500 of a bug, rendered by Starlette's outermost error middleware, is signed."""
    from bridge.api import errors
    from bridge.service import auth

    def broken(*_args: object) -> None:
        raise RuntimeError("a bug")

    logged: list[str] = []
    monkeypatch.setattr(auth.Authenticator, "authenticate", broken)
    # structlog's default console renderer draws a rich traceback, which takes tens of seconds
    monkeypatch.setattr(
        errors, "log", type("Log", (), {"exception": lambda _s, e, **_k: logged.append(e)})()
    )
    response = keyed.get("/v1/me", headers={"Authorization": "Bearer whatever"})
    assert response.status_code == 500
    assert response.json()["errors"][0]["code"] == "INTERNAL_ERROR"
    _check(response)
    assert logged == ["request_failed"]
