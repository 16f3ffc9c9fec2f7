"""The account's signing key: configured, stored beside the database, created once."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest

from bridge.keys import AccountKey, SigningKeyInvalid, ensure_key, key_path, load_key
from bridge.settings import load_settings
from tests.served import cli_in

SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"  # RFC 8032 test 1
PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def test_the_two_public_forms() -> None:
    """Hex as Keygen's dashboard shows it; base64 of that hex as its API shows it."""
    key = AccountKey.from_hex(SEED, source="test")
    assert key.public_hex() == PUBLIC
    assert base64.b64decode(key.public_base64()) == PUBLIC.encode()
    assert key.private_hex() == SEED


def test_created_once_beside_the_sqlite_file_mode_0600(tmp_path: Path) -> None:
    """The first ensure writes the key beside the database, readable by its owner only; later
    calls (and loads) return the same key and create nothing."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'data' / 'b.db'}")
    assert load_key(settings) is None
    key, created = ensure_key(settings)
    assert created == tmp_path / "data" / "meterbridge-signing.key"
    assert stat.S_IMODE(os.stat(created).st_mode) == 0o600
    again, created_again = ensure_key(settings)
    assert created_again is None
    assert again.public_hex() == key.public_hex()
    loaded = load_key(settings)
    assert loaded is not None
    assert loaded.public_hex() == key.public_hex()
    assert sorted(p.name for p in created.parent.iterdir()) == ["meterbridge-signing.key"]


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    """Concurrent first starts publish one key: every caller gets the same one."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'b.db'}")
    barrier = threading.Barrier(8)
    keys: list[str] = []

    def start() -> None:
        barrier.wait()
        keys.append(ensure_key(settings)[0].public_hex())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["meterbridge-signing.key"]


def test_the_configured_key_wins_and_is_checked(tmp_path: Path) -> None:
    """``signing.key`` is used over any file; a malformed key is refused with its source."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    key, created = ensure_key(load_settings(database_url=url, signing={"key": SEED}))
    assert (key.public_hex(), created) == (PUBLIC, None)
    assert not key_path(load_settings(database_url=url)).exists()
    with pytest.raises(SigningKeyInvalid, match=r"signing\.key"):
        load_key(load_settings(database_url=url, signing={"key": "abc"}))


def test_postgres_keeps_the_file_in_the_working_directory() -> None:
    """Without a SQLite file the default is the working directory (or ``signing.key_file``)."""
    settings = load_settings(database_url="postgresql+psycopg://u@h/db")
    assert key_path(settings) == Path("meterbridge-signing.key")
    chosen = load_settings(database_url="postgresql+psycopg://u@h/db", signing={"key_file": "/k"})
    assert key_path(chosen) == Path("/k")


def test_keys_show_prints_both_forms_and_refuses_without_a_key(tmp_path: Path) -> None:
    """``meterbridge keys show`` prints the public key; with no key yet it says how to get one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["BRIDGE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'b.db'}"
    missing = cli_in(env, "keys", "show")
    assert missing.exit_code == 1
    assert "meterbridge serve" in missing.stderr
    env["BRIDGE_SIGNING__KEY"] = SEED
    shown = cli_in({**env, "COLUMNS": "200"}, "keys", "show")
    assert shown.exit_code == 0, shown.output
    assert PUBLIC in shown.stdout
    assert AccountKey.from_hex(SEED, source="t").public_base64() in shown.stdout
    assert list(tmp_path.iterdir()) == []  # showing creates nothing


def test_the_key_survives_a_restart(tmp_path: Path) -> None:
    """A second ``serve`` on the same data directory signs with the key the first one created."""
    from tests.served import Served
    from tests.test_signatures import verify_raw

    with Served(tmp_path) as first:
        created = first.public_key
    with Served(tmp_path) as second:
        assert second.public_key == created
        response = second.raw("GET", "/healthz")
        verify_raw(second, response, "GET", "/healthz")
