"""License and machine files (check-out) against a verifier written here from Keygen's format.

The bridge signs with ``cryptography``; these tests verify with PyNaCl (libsodium) and decrypt
with AES-GCM themselves, from the format Keygen's checkout services write and keygen-rs reads
(``bridge.domain.checkout`` cites both). The published client reads the same files in
``tests/test_checkout_keygen_client.py``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi.testclient import TestClient
from nacl.signing import VerifyKey

from bridge.bootstrap import build_app
from bridge.domain.checkout import expiry_after
from bridge.testing import FakeClock
from tests.conftest import Api, error_of, make_container

TEST_KEY = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"  # RFC 8032 test 1
TEST_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
ISSUED = datetime(2022, 10, 16, 14, 52, 48, tzinfo=UTC)  # Keygen's checkouts.feature
MONTH = 2_629_746


# The verifier --------------------------------------------------------------------------------
def read_certificate(kind: str, text: str) -> dict[str, str]:
    """``{"enc", "sig", "alg"}`` of a certificate, checking its framing byte for byte."""
    begin, end = f"-----BEGIN {kind.upper()} FILE-----\n", f"-----END {kind.upper()} FILE-----\n"
    assert text.startswith(begin), text
    assert text.endswith(end), text
    lines = text[len(begin) : -len(end)].rstrip("\n").split("\n")
    assert all(len(line) == 60 for line in lines[:-1])
    assert 0 < len(lines[-1]) <= 60
    doc: dict[str, str] = json.loads(base64.b64decode("".join(lines), validate=True))
    assert set(doc) == {"enc", "sig", "alg"}
    return doc


def verified_dataset(kind: str, text: str, secret: str | None = None) -> dict[str, Any]:
    """The dataset of a genuine file: signature checked over ``<kind>/<enc>``, then decoded or
    decrypted under the SHA-256 of ``secret``."""
    doc = read_certificate(kind, text)
    signature = base64.b64decode(doc["sig"], validate=True)
    VerifyKey(bytes.fromhex(TEST_PUBLIC)).verify(f"{kind}/{doc['enc']}".encode(), signature)
    if doc["alg"] == "aes-256-gcm+ed25519":
        assert secret is not None
        ciphertext, iv, tag = (
            base64.b64decode(part, validate=True) for part in doc["enc"].split(".")
        )
        assert (len(iv), len(tag)) == (12, 16)
        key = hashlib.sha256(secret.encode()).digest()
        plain = AESGCM(key).decrypt(iv, ciphertext + tag, None)
    else:
        assert doc["alg"] == "base64+ed25519"
        plain = base64.b64decode(doc["enc"], validate=True)
    dataset: dict[str, Any] = json.loads(plain)
    return dataset


# Fixtures ------------------------------------------------------------------------------------
def keyed_api(url: str, clock: FakeClock) -> Iterator[Api]:
    """The API with the RFC 8032 key as the account key (``TEST_PUBLIC`` verifies)."""
    container = make_container(url, clock, signing={"key": TEST_KEY})
    with TestClient(build_app(container), raise_server_exceptions=False) as client:
        yield Api(client)
    container.dispose()


@pytest.fixture
def api(sqlite_url: str, clock: FakeClock) -> Iterator[Api]:
    clock.set(ISSUED)
    yield from keyed_api(sqlite_url, clock)


@pytest.fixture
def any_db_api(db_url: str, clock: FakeClock) -> Iterator[Api]:
    clock.set(ISSUED)
    yield from keyed_api(db_url, clock)


def check_out(api: Api, license: str, query: str = "", **kwargs: Any) -> Any:
    return api.request("POST", f"/v1/licenses/{license}/actions/check-out{query}", **kwargs)


def file_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _expect(response: Any, status: int, code: str, detail: str, parameter: str) -> None:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert (error["code"], error["detail"], error["source"]) == (
        code,
        detail,
        {"parameter": parameter},
    )


# License files -------------------------------------------------------------------------------
def test_a_license_file_is_keygens_document_and_certificate(any_db_api: Api) -> None:
    """Defaults: a month's ttl ending on the same day next month, base64+ed25519, the license
    document inside with Keygen's meta; ``lastCheckOut`` is recorded (the file shows the one
    before, as Keygen's touch comes after rendering)."""
    api = any_db_api
    lic = api.license()
    found = file_of(check_out(api, lic["id"]))
    assert found["type"] == "license-files"
    attributes = found["attributes"]
    assert {k: v for k, v in attributes.items() if k != "certificate"} == {
        "algorithm": "base64+ed25519",
        "includes": [],
        "ttl": MONTH,
        "expiry": "2022-11-16T14:52:48.000Z",
        "issued": "2022-10-16T14:52:48.000Z",
    }
    assert found["relationships"]["license"]["data"] == {"type": "licenses", "id": lic["id"]}
    assert found["relationships"]["account"]["data"] == {"type": "accounts", "id": "default"}
    dataset = verified_dataset("license", attributes["certificate"])
    assert dataset["meta"] == {
        "issued": "2022-10-16T14:52:48.000Z",
        "expiry": "2022-11-16T14:52:48.000Z",
        "ttl": MONTH,
    }
    assert "included" not in dataset
    assert (dataset["data"]["type"], dataset["data"]["id"]) == ("licenses", lic["id"])
    assert dataset["data"]["attributes"]["key"] == lic["attributes"]["key"]
    assert dataset["data"]["attributes"]["lastCheckOut"] is None
    shown = api.ok("GET", f"/v1/licenses/{lic['id']}")["data"]["attributes"]
    assert shown["lastCheckOut"] == "2022-10-16T14:52:48Z"


def test_an_encrypted_file_opens_only_under_its_license_key(api: Api) -> None:
    """``encrypt`` (query or meta) gives aes-256-gcm+ed25519 under the SHA-256 of the key, with
    a fresh IV each time; another key cannot open it."""
    lic = api.license(key="OFFLINE-KEY-1")
    first = file_of(check_out(api, lic["id"], json={"meta": {"encrypt": True}}))["attributes"]
    second = file_of(check_out(api, lic["id"], "?encrypt=1"))["attributes"]
    assert first["algorithm"] == second["algorithm"] == "aes-256-gcm+ed25519"
    for attributes in (first, second):
        dataset = verified_dataset("license", attributes["certificate"], "OFFLINE-KEY-1")
        assert dataset["data"]["id"] == lic["id"]
    ivs = {
        read_certificate("license", a["certificate"])["enc"].split(".")[1] for a in (first, second)
    }
    assert len(ivs) == 2
    with pytest.raises(InvalidTag):
        verified_dataset("license", first["certificate"], "OFFLINE-KEY-2")


def test_get_answers_the_certificate_as_a_signed_attachment(api: Api) -> None:
    """GET: the certificate itself, ``application/octet-stream``, named ``<id>.lic``, signed
    like every answer; the query's ttl applies."""
    lic = api.license(key="OFFLINE-KEY-GET")
    response = api.request(
        "GET",
        f"/v1/licenses/{lic['id']}/actions/check-out?encrypt=1&ttl=3600",
        token=None,
        headers={"Authorization": "License OFFLINE-KEY-GET"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{lic["id"]}.lic"'
    assert "keygen-signature" in response.headers
    dataset = verified_dataset("license", response.text, "OFFLINE-KEY-GET")
    assert dataset["meta"]["ttl"] == 3600
    assert dataset["meta"]["expiry"] == "2022-10-16T15:52:48.000Z"


_TTLS: list[tuple[str, dict[str, Any] | None, int | None, str | None]] = [
    ("?ttl=3600", None, 3600, "2022-10-16T15:52:48.000Z"),
    ("", {"ttl": 86_400}, 86_400, "2022-10-17T14:52:48.000Z"),
    ("?ttl=189341712", None, 189_341_712, "2028-10-16T14:52:48.000Z"),  # Keygen's: 6 years
    ("?ttl=", None, None, None),  # blank: no expiry
    ("", {"ttl": None}, None, None),
    ("?ttl=7200", {"ttl": 3600}, 3600, "2022-10-16T15:52:48.000Z"),  # meta wins
]


def test_the_ttl_and_the_expiry_it_gives(api: Api) -> None:
    """Keygen's ttl: seconds, the expiry advanced by calendar years and months first; null or
    blank for a file that never expires; the body's meta wins over the query."""
    lic = api.license()["id"]
    for query, meta, ttl, expiry in _TTLS:
        body = {"meta": meta} if meta is not None else None
        attributes = file_of(check_out(api, lic, query, json=body))["attributes"]
        assert (attributes["ttl"], attributes["expiry"]) == (ttl, expiry), query
        dataset = verified_dataset("license", attributes["certificate"])
        assert (dataset["meta"]["ttl"], dataset["meta"]["expiry"]) == (ttl, expiry)


_SHORT = "must be greater than or equal to 3600 (1 hour)"


def test_a_ttl_out_of_bounds_is_checkout_ttl_invalid(api: Api) -> None:
    """Keygen's 400 CHECKOUT_TTL_INVALID at the ``ttl`` parameter, from the query or meta, and
    ours above 2147483647; nothing is recorded."""
    lic = api.license()["id"]
    cases: list[tuple[str, dict[str, Any] | None, str]] = [
        ("?ttl=3599", None, _SHORT),
        ("", {"ttl": 60}, _SHORT),
        ("?ttl=-1", None, _SHORT),
        ("?ttl=2147483648", None, "must be less than or equal to 2147483647"),
        ("?ttl=" + "9" * 5000, None, "must be less than or equal to 2147483647"),
        ("?ttl=-" + "9" * 5000, None, _SHORT),
        ("", {"ttl": 10**30}, "must be less than or equal to 2147483647"),
    ]
    for query, meta, detail in cases:
        body = {"meta": meta} if meta is not None else None
        response = check_out(api, lic, query, json=body)
        _expect(response, 400, "CHECKOUT_TTL_INVALID", detail, "ttl")
    shown = api.ok("GET", f"/v1/licenses/{lic}")["data"]["attributes"]
    assert shown["lastCheckOut"] is None


def test_a_ttl_that_is_not_an_integer_is_a_type_mismatch(api: Api) -> None:
    """``ttl=abc`` and ``encrypt=maybe`` are 400 TYPE_MISMATCH at their parameter."""
    lic = api.license()["id"]
    detail = "type mismatch (received string expected integer)"
    _expect(check_out(api, lic, "?ttl=abc"), 400, "TYPE_MISMATCH", detail, "ttl")
    _expect(check_out(api, lic, "?ttl=%C2%B2"), 400, "TYPE_MISMATCH", detail, "ttl")  # "²"
    detail = "type mismatch (received string expected boolean)"
    _expect(check_out(api, lic, "?encrypt=maybe"), 400, "TYPE_MISMATCH", detail, "encrypt")


def test_an_algorithm_the_bridge_cannot_sign_with_is_refused(api: Api) -> None:
    """Keygen's encoding and signing checks; its RSA and ECDSA algorithms need keys the bridge
    does not have."""
    lic = api.license()["id"]
    cases = [
        ("foo+ed25519", "invalid encoding algorithm"),
        ("base64+foo", "invalid signing algorithm"),
        ("base64", "invalid signing algorithm"),
        ("base64+rsa-sha256", "signing algorithm is not supported"),
        ("aes-256-gcm+ecdsa-p256", "signing algorithm is not supported"),
    ]
    for algorithm, detail in cases:
        response = check_out(api, lic, json={"meta": {"algorithm": algorithm}})
        _expect(response, 400, "CHECKOUT_ALGORITHM_INVALID", detail, "algorithm")


def test_an_explicit_or_blank_algorithm(api: Api) -> None:
    """An explicit algorithm wins over ``encrypt``; a blank one is the default."""
    lic = api.license()["id"]
    explicit = check_out(api, lic, "?algorithm=aes-256-gcm%2Bed25519&encrypt=0")
    assert file_of(explicit)["attributes"]["algorithm"] == "aes-256-gcm+ed25519"
    blank = check_out(api, lic, "?algorithm=")
    assert file_of(blank)["attributes"]["algorithm"] == "base64+ed25519"


def test_includes_bring_the_product_and_the_policy(api: Api) -> None:
    """``include=product,policy`` adds them to ``included``; the includes of features the bridge
    lacks add nothing; ``user`` is Keygen's old name of ``owner``; others are 400."""
    product = api.product()
    policy = api.policy(product)
    lic = api.license(policy)["id"]
    found = file_of(check_out(api, lic, "?include=product,policy,entitlements,user"))
    assert found["attributes"]["includes"] == ["product", "policy", "entitlements", "owner"]
    dataset = verified_dataset("license", found["attributes"]["certificate"])
    assert [(r["type"], r["id"]) for r in dataset["included"]] == [
        ("products", product),
        ("policies", policy),
    ]
    response = check_out(api, lic, json={"meta": {"include": ["license"]}})
    _expect(response, 400, "CHECKOUT_INCLUDE_INVALID", "invalid includes", "include")


def test_who_may_check_out_a_license(api: Api) -> None:
    """Keygen's ``license.check-out``: admin, the license's product, the license itself; another
    license or product sees 404 (before any parameter error), no credentials 401."""
    product = api.product()
    lic = api.license(api.policy(product), key="WHO-MAY-1")["id"]
    other_lic = api.license(key="WHO-MAY-2")["id"]
    own_product = api.product_token(product)
    other_product = api.product_token(api.product("Other"))
    cases = [
        ({"Authorization": "License WHO-MAY-1"}, 200),
        ({"Authorization": f"Bearer {api.license_token(lic)}"}, 200),
        ({"Authorization": f"Bearer {own_product}"}, 200),
        ({"Authorization": "License WHO-MAY-2"}, 404),
        ({"Authorization": f"Bearer {api.license_token(other_lic)}"}, 404),
        ({"Authorization": f"Bearer {other_product}"}, 404),
        ({}, 401),
    ]
    for headers, status in cases:
        response = check_out(api, lic, "?ttl=1", token=None, headers=headers)
        expected = 400 if status == 200 else status
        assert response.status_code == expected, (headers, response.text)
        assert check_out(api, lic, token=None, headers=headers).status_code == status


# Machine files -------------------------------------------------------------------------------
def _machine(api: Api, license: str, fingerprint: str) -> str:
    body = {
        "data": {
            "type": "machines",
            "attributes": {"fingerprint": fingerprint},
            "relationships": {"license": {"data": {"type": "licenses", "id": license}}},
        }
    }
    return str(api.ok("POST", "/v1/machines", 201, json=body)["data"]["id"])


def test_a_machine_file_is_keygens_and_carries_its_license(any_db_api: Api) -> None:
    """By fingerprint: a ``machine-files`` document, ``machine/`` signature, encrypted under the
    license key and the fingerprint, the license in ``included`` when an include names it; the
    machine's ``lastCheckOut`` is recorded."""
    api = any_db_api
    lic = api.license(key="MACHINE-FILE-1")
    machine = _machine(api, lic["id"], "fp-file-1")
    response = api.request(
        "POST", "/v1/machines/fp-file-1/actions/check-out?encrypt=1&include=license.entitlements"
    )
    found = file_of(response)
    assert found["type"] == "machine-files"
    assert found["relationships"]["machine"]["data"] == {"type": "machines", "id": machine}
    assert found["relationships"]["license"]["data"] == {"type": "licenses", "id": lic["id"]}
    assert found["attributes"]["includes"] == ["license.entitlements"]
    certificate = found["attributes"]["certificate"]
    dataset = verified_dataset("machine", certificate, "MACHINE-FILE-1fp-file-1")
    assert (dataset["data"]["type"], dataset["data"]["id"]) == ("machines", machine)
    assert [(r["type"], r["id"]) for r in dataset["included"]] == [("licenses", lic["id"])]
    assert dataset["meta"]["ttl"] == MONTH
    with pytest.raises(InvalidTag):
        verified_dataset("machine", certificate, "MACHINE-FILE-1")
    shown = api.ok("GET", f"/v1/machines/{machine}")["data"]["attributes"]
    assert shown["lastCheckOut"] == "2022-10-16T14:52:48Z"


def test_a_machine_file_by_get_and_its_includes(api: Api) -> None:
    """GET names the file after the machine; without a license include there is no
    ``included``; a license-file include such as ``product`` is 400 for a machine."""
    lic = api.license(key="MACHINE-FILE-2")["id"]
    machine = _machine(api, lic, "fp-file-2")
    response = api.request("GET", f"/v1/machines/{machine}/actions/check-out")
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == f'attachment; filename="{machine}.lic"'
    assert "included" not in verified_dataset("machine", response.text)
    response = api.request("POST", f"/v1/machines/{machine}/actions/check-out?include=product")
    _expect(response, 400, "CHECKOUT_INCLUDE_INVALID", "invalid includes", "include")
    other = api.license(key="MACHINE-FILE-3")["id"]
    headers = {"Authorization": "License MACHINE-FILE-3"}
    response = api.request(
        "POST", f"/v1/machines/{machine}/actions/check-out", token=None, headers=headers
    )
    assert response.status_code == 404, (other, response.text)


# The expiry rule -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("issued", "ttl", "expiry"),
    [
        (datetime(2023, 1, 31, 12, tzinfo=UTC), MONTH, datetime(2023, 2, 28, 12, tzinfo=UTC)),
        (datetime(2024, 2, 29, tzinfo=UTC), 31_556_952, datetime(2025, 2, 28, tzinfo=UTC)),
        (ISSUED, 3600 + 86_400 * 2 + 5, datetime(2022, 10, 18, 15, 52, 53, tzinfo=UTC)),
        (ISSUED, MONTH + 3600, datetime(2022, 11, 16, 15, 52, 48, tzinfo=UTC)),
    ],
)
def test_the_expiry_follows_rails_duration_arithmetic(
    issued: datetime, ttl: int, expiry: datetime
) -> None:
    """``ActiveSupport::Duration.build(ttl)`` added to a time: calendar years and months
    (clamped to the month's end, as Ruby's ``Date#>>``), then exact seconds."""
    assert expiry_after(issued, ttl) == expiry
