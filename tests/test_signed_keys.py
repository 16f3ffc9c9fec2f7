"""Signed license keys (``ED25519_SIGN``), checked with a verifier written here (PyNaCl).

Keygen mints ``key/<base64url(dataset)>.<base64url(signature)>`` (``app/models/license.rb``,
``generate_ed25519_signed_key!``, Ruby's padded ``Base64.urlsafe_encode64``); keygen-rs verifies
the signature over ``key/<base64url(dataset)>`` (``src/verifier.rs``, ``verify_key``). The
published client verifies the same keys in ``tests/test_checkout_keygen_client.py``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from nacl.signing import VerifyKey
from sqlalchemy import inspect
from typer.testing import CliRunner

from bridge.cli import app as cli
from bridge.keys import AccountKey, load_key
from bridge.settings import load_settings
from bridge.store.engine import make_engine
from bridge.store.migrate import alembic_config, upgrade
from bridge.testing import FakeClock
from tests.conftest import Api, error_of, make_container
from tests.old_stores import OLD_KEY, store_with_a_license
from tests.test_checkout import TEST_PUBLIC, keyed_api

_SHAPE = re.compile(r"key/([A-Za-z0-9_=-]+)\.([A-Za-z0-9_=-]+)")


def verified_dataset(key: str, public: str = TEST_PUBLIC) -> str:
    """The dataset of a genuine signed key (raises ``BadSignatureError`` otherwise)."""
    match = _SHAPE.fullmatch(key)
    assert match is not None, key
    encoded, signature = match.groups()
    assert len(encoded) % 4 == 0  # padded, as Ruby's urlsafe_encode64
    assert len(signature) == 88
    VerifyKey(bytes.fromhex(public)).verify(
        f"key/{encoded}".encode(), base64.urlsafe_b64decode(signature)
    )
    return base64.urlsafe_b64decode(encoded).decode()


@pytest.fixture
def api(sqlite_url: str, clock: FakeClock) -> Iterator[Api]:
    yield from keyed_api(sqlite_url, clock)


@pytest.fixture
def any_db_api(db_url: str, clock: FakeClock) -> Iterator[Api]:
    yield from keyed_api(db_url, clock)


def _create(api: Api, policy: str, **attributes: Any) -> Any:
    body = {
        "data": {
            "type": "licenses",
            "attributes": attributes,
            "relationships": {"policy": {"data": {"type": "policies", "id": policy}}},
        }
    }
    return api.request("POST", "/v1/licenses", json=body)


def test_a_key_minted_without_one_sent_is_keygens_default_dataset(any_db_api: Api) -> None:
    """No key sent: Keygen's default dataset (account, product, policy, no user, the license's
    id, creation and expiry, compact JSON), signed; the license and policy show the scheme, and
    the key authenticates and validates."""
    api = any_db_api
    product = api.product()
    policy = api.policy(product, scheme="ED25519_SIGN", duration=86_400)
    shown = api.ok("GET", f"/v1/policies/{policy}")["data"]["attributes"]
    assert shown["scheme"] == "ED25519_SIGN"
    license = api.license(policy)
    key = license["attributes"]["key"]
    assert license["attributes"]["scheme"] == "ED25519_SIGN"
    assert verified_dataset(key) == (
        '{"account":{"id":"default"},"product":{"id":"' + product + '"},'
        '"policy":{"id":"' + policy + '","duration":86400},"user":null,'
        '"license":{"id":"' + license["id"] + '","created":"2026-01-01T00:00:00.000Z",'
        '"expiry":"2026-01-02T00:00:00.000Z"}}'
    )
    me = api.request("GET", "/v1/me", token=None, headers={"Authorization": f"License {key}"})
    assert me.status_code == 200, me.text
    assert me.json()["data"]["id"] == license["id"]
    validated = api.ok("POST", "/v1/licenses/actions/validate-key", json={"meta": {"key": key}})
    assert validated["meta"]["code"] == "VALID"


def test_a_sent_key_is_the_dataset_with_keygens_template_variables(api: Api) -> None:
    """A sent key is signed as the dataset, ``{{name}}`` filled in (any case), unknown names
    empty; the same dataset twice is KEY_TAKEN (Ed25519 is deterministic)."""
    policy = api.policy(scheme="ED25519_SIGN")
    license = api.license(policy, key="{{id}}|{{ACCOUNT}}|{{policy}}|{{email}}|{{expiry}}")
    dataset = verified_dataset(license["attributes"]["key"])
    assert dataset == f"{license['id']}|default|{policy}||"
    api.license(policy, key='{"plan":"pro"}')
    taken = _create(api, policy, key='{"plan":"pro"}')
    assert taken.status_code == 422, taken.text
    assert error_of(taken)["code"] == "KEY_TAKEN"


def test_keys_up_to_keygens_size_limit_are_found_by_digest(any_db_api: Api) -> None:
    """A 16384-byte dataset (Keygen's limit) gives a key of about 22 KB that the store finds
    (a B-tree index could not hold it on PostgreSQL); one byte more is KEY_INVALID. Unsigned
    keys may be as long."""
    api = any_db_api
    policy = api.policy(scheme="ED25519_SIGN")
    license = api.license(policy, key="é" * 8192)  # 16384 bytes of UTF-8
    key = license["attributes"]["key"]
    assert len(key) > 21_000
    assert verified_dataset(key) == "é" * 8192
    found = api.ok(
        "GET",
        f"/v1/licenses/{license['id']}",
        headers={"Authorization": f"License {key}"},
        token=None,
    )
    assert found["data"]["attributes"]["key"] == key
    too_long = _create(api, policy, key="x" * 16_385)
    assert too_long.status_code == 422, too_long.text
    error = error_of(too_long)
    assert (error["code"], error["source"]) == ("KEY_INVALID", {"pointer": "/data/attributes/key"})
    plain = api.license(api.policy(), key="P" * 16_384)
    assert api.ok("GET", f"/v1/licenses/{plain['id']}")["data"]["attributes"]["key"] == "P" * 16_384
    assert _create(api, api.policy(), key="P" * 16_385).status_code == 422


def test_the_scheme_is_keygens_and_fixed_at_creation(api: Api) -> None:
    """Only ED25519_SIGN (Keygen's other schemes need RSA or ECDSA keys); a PATCH cannot change
    it; a signed key cannot be changed either."""
    product = api.product()
    for scheme, detail in [
        ("FOO", "unsupported signing scheme"),
        (
            "RSA_2048_PKCS1_PSS_SIGN_V2",
            "unsupported signing scheme (the bridge signs with its Ed25519 key only: ED25519_SIGN)",
        ),
    ]:
        body = {
            "data": {
                "type": "policies",
                "attributes": {"name": "P", "scheme": scheme},
                "relationships": {"product": {"data": {"type": "products", "id": product}}},
            }
        }
        refused = api.request("POST", "/v1/policies", json=body)
        assert refused.status_code == 422, refused.text
        error = error_of(refused)
        assert (error["code"], error["detail"], error["source"]) == (
            "SCHEME_NOT_ALLOWED",
            detail,
            {"pointer": "/data/attributes/scheme"},
        )
    policy = api.policy(product, scheme="ED25519_SIGN")
    patch = {"data": {"type": "policies", "attributes": {"scheme": None}}}
    unpermitted = api.request("PATCH", f"/v1/policies/{policy}", json=patch)
    assert unpermitted.status_code == 400, unpermitted.text
    assert error_of(unpermitted)["code"] == "PARAMETER_UNPERMITTED"
    license = api.license(policy)["id"]
    patch = {"data": {"type": "licenses", "attributes": {"key": "NEW-KEY-1"}}}
    changed = api.request("PATCH", f"/v1/licenses/{license}", json=patch)
    assert changed.status_code == 422, changed.text
    assert error_of(changed)["code"] == "KEY_INVALID"
    plain = api.license(api.policy(product))
    assert plain["attributes"]["scheme"] is None


def test_the_cli_signs_with_the_stored_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``license create`` on an ED25519_SIGN policy signs with the stored account key (created
    first, as ``serve`` would), so ``keys show`` verifies it."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("BRIDGE_DATABASE_URL", url)
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    product = run("product", "create", "--name", "App")["id"]
    policy = run(
        "policy", "create", "--product", product, "--name", "S", "--scheme", "ED25519_SIGN"
    )
    key = run("license", "create", "--policy", policy["id"], "--key", "cli-signed")["key"]
    stored = load_key(load_settings(database_url=url))
    assert isinstance(stored, AccountKey)
    assert verified_dataset(key, stored.public_hex()) == "cli-signed"


def test_the_migration_gives_existing_keys_their_digest(tmp_path: Path) -> None:
    """Licenses created before 0009 are found by their key afterwards."""
    engine = store_with_a_license(tmp_path / "old.db", "0008")
    upgrade(engine)
    engine.dispose()
    container = make_container(f"sqlite:///{tmp_path / 'old.db'}", FakeClock())
    with container.uows() as uow:
        found = uow.licenses.find(OLD_KEY)
    container.dispose()
    assert found is not None
    assert found.id == "l"


def test_the_migration_downgrades_and_upgrades_again(db_url: str) -> None:
    """This migration, down to the one before it, restores the unique key column (under its
    dialect's name), and up again finds it."""
    engine = make_engine(db_url)
    upgrade(engine)
    config = alembic_config(engine)
    script = ScriptDirectory.from_config(config)
    (mine,) = [r for r in script.walk_revisions() if (r.doc or "").startswith("Offline validation")]
    assert isinstance(mine.down_revision, str)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, mine.down_revision)
        columns = {c["name"] for c in inspect(conn).get_columns("licenses")}
    assert "key_digest" not in columns
    upgrade(engine)
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one()
    engine.dispose()
    assert version == script.get_current_head()
