"""License files, machine files and signed keys with the published client ``keygen-py``.

keygen-rs inside it checks out with ``POST .../actions/check-out?encrypt=1&include=...`` (the
answer signature-checked like any other), reads the certificate back with
``LicenseFile.build_from_cert`` / ``MachineFile.from_cert`` (AES-256-GCM under the SHA-256 of the
license key, and of the key and fingerprint for a machine file), verifies its Ed25519 signature
with the account's public key, and verifies signed keys offline with ``keygen_sh.verify``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.served import Served
from tests.test_keygen_clients import (
    OTHER_PUBLIC_KEY,
    _created,
    activate_as_the_client_does,
    client,
    new_license,
)

pytest.importorskip(
    "keygen_sh",
    reason="keygen-py publishes wheels for Linux x86_64 only (a Rust extension): the dev extra "
    "installs it there, and CI runs these tests",
)


@pytest.fixture(scope="module")
def product(served: Served) -> str:
    with served.admin() as admin:
        body = {"data": {"type": "products", "attributes": {"name": "Offline App"}}}
        return str(_created(admin.post("/v1/products", json=body))["id"])


def test_the_client_checks_out_verifies_and_decrypts_a_license_file(
    served: Served, product: str
) -> None:
    """``license.checkout()`` (its defaults: encrypted, ``include=entitlements``, Keygen's ttl)
    gives a file the client verifies and decrypts into the license, with issued, expiry and
    ttl; ``lastCheckOut`` is recorded."""
    key = "OFFLINE-FILE-0001"
    license = new_license(served, product, key, strict=False)
    validate = {"op": "validate", "fingerprints": []}
    _, checked = client(served, product, key, [validate, {"op": "checkout"}])
    assert checked["ok"], checked
    assert checked["license"] == license["id"]
    assert checked["key"] == key
    assert checked["ttl"] == checked["file_ttl"] == 2_629_746
    assert checked["certificate"].startswith("-----BEGIN LICENSE FILE-----\n")
    with served.admin() as admin:
        shown = admin.get(f"/v1/licenses/{license['id']}").json()["data"]["attributes"]
    assert shown["lastCheckOut"] is not None


def test_a_file_from_another_account_or_for_another_key_is_refused(
    served: Served, product: str
) -> None:
    """The same certificate fails the client's signature check under another public key, and
    its decryption under another license key."""
    key = "OFFLINE-FILE-0002"
    new_license(served, product, key, strict=False)
    steps = [{"op": "validate", "fingerprints": []}, {"op": "checkout", "ttl": 3600}]
    _, checked = client(served, product, key, steps)
    assert checked["ok"], checked
    assert checked["ttl"] == 3600
    certificate = checked["certificate"]
    forged = {"op": "license_file", "key": key, "certificate": certificate}
    (other_account,) = client(served, product, key, [forged], public_key=OTHER_PUBLIC_KEY)
    assert other_account["ok"] is False
    assert '"type":"LicenseFileNotGenuine"' in other_account["message"]
    wrong_key = {"op": "license_file", "key": "OFFLINE-FILE-9999", "certificate": certificate}
    (undecryptable,) = client(served, product, key, [wrong_key])
    assert undecryptable["ok"] is False
    assert '"type":"DecryptionError"' in undecryptable["message"]
    (genuine,) = client(served, product, key, [forged])
    assert genuine["ok"] is True


def test_the_client_checks_out_a_machine_file(served: Served, product: str) -> None:
    """``machine.checkout()`` (its default include, ``license.entitlements``, brings the license
    into ``included``) gives a file the client decrypts under the license key and the
    fingerprint, with the machine and its license."""
    key, fp = "OFFLINE-MACHINE-0001", "fp-offline-1"
    license = new_license(served, product, key)
    machine = activate_as_the_client_does(served, key, license["id"], fp)
    steps = [
        {"op": "validate", "fingerprints": [fp]},
        {"op": "machine_checkout", "machine": fp, "ttl": 86_400},
    ]
    _, checked = client(served, product, key, steps)
    assert checked == {
        "op": "machine_checkout",
        "ok": True,
        "machine": machine,
        "fingerprint": fp,
        "license": license["id"],
        "ttl": 86_400,
        "file_ttl": 86_400,
    }
    with served.admin() as admin:
        shown = admin.get(f"/v1/machines/{machine}").json()["data"]["attributes"]
    assert shown["lastCheckOut"] is not None


def _signed_license(served: Served, product: str, key: str | None = None) -> dict[str, Any]:
    with served.admin() as admin:
        rel = {"product": {"data": {"type": "products", "id": product}}}
        attributes = {"name": "Signed", "scheme": "ED25519_SIGN"}
        body = {"data": {"type": "policies", "attributes": attributes, "relationships": rel}}
        policy = _created(admin.post("/v1/policies", json=body))["id"]
        rel = {"policy": {"data": {"type": "policies", "id": policy}}}
        sent = {"key": key} if key is not None else {}
        body = {"data": {"type": "licenses", "attributes": sent, "relationships": rel}}
        return _created(admin.post("/v1/licenses", json=body))


def _dataset(key: str) -> str:
    encoded = key.split(".", maxsplit=1)[0].removeprefix("key/")
    return base64.urlsafe_b64decode(encoded).decode()


def test_the_client_verifies_a_signed_key_offline_and_uses_it_online(
    served: Served, product: str
) -> None:
    """A key minted under ED25519_SIGN passes ``keygen_sh.verify`` with the account's public
    key, which returns Keygen's default dataset; a forged signature does not; the same key
    validates online and checks out a file encrypted under it."""
    license = _signed_license(served, product)
    key = license["attributes"]["key"]
    (verified,) = client(served, product, key, [{"op": "verify_key", "key": key}])
    assert verified["ok"], verified
    dataset = json.loads(verified["dataset"])
    assert dataset["license"]["id"] == license["id"]
    assert dataset["policy"]["id"] == license["relationships"]["policy"]["data"]["id"]
    assert dataset["product"] == {"id": product}
    signing_data, signature = key.rsplit(".", 1)
    forged = f"{signing_data}.{signature[:-4]}AAA="
    (refused,) = client(served, product, key, [{"op": "verify_key", "key": forged}])
    assert refused["error"] == "LicenseKeyNotGenuine"
    steps = [{"op": "validate", "fingerprints": []}, {"op": "checkout"}]
    valid, checked = client(served, product, key, steps)
    assert valid["ok"], valid
    assert valid["id"] == license["id"]
    assert checked["ok"], checked
    assert checked["key"] == key


def test_a_signed_key_of_keygens_largest_dataset_works_through_serve(
    served: Served, product: str
) -> None:
    """A 16 KiB dataset (Keygen's limit) makes a key of about 22 KB: the client verifies it
    offline, and ``serve`` finds the license by it (validate-key and ``License <key>``)."""
    seed = "S" * 16_384
    license = _signed_license(served, product, seed)
    key = license["attributes"]["key"]
    assert len(key) > 21_000
    (verified,) = client(served, product, key, [{"op": "verify_key", "key": key}])
    assert verified == {"op": "verify_key", "ok": True, "dataset": seed}
    headers = {"Authorization": f"License {key}", "Content-Type": "application/vnd.api+json"}
    me = httpx.get(f"{served.url}/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    assert me.json()["data"]["id"] == license["id"]
    assert _dataset(key) == seed
