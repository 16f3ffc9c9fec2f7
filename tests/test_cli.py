"""The meterbridge command line, on a real SQLite file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bridge.cli import app


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.delenv("BRIDGE_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that rich does not fold cells
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, result.output
        return result

    return invoke


def _json(result: Any) -> Any:
    return json.loads(result.stdout)


def test_usage_round_trip(run: Any) -> None:
    """Create product, policy and license, then increment to the limit and read the history."""
    run("db", "upgrade")
    product = _json(run("product", "create", "--name", "App", "--json"))["id"]
    policy = _json(
        run("policy", "create", "--product", product, "--name", "P", "--max-uses", "2", "--json")
    )["id"]
    lic = _json(run("license", "create", "--policy", policy, "--key", "cli-key-1", "--json"))
    assert (lic["uses"], lic["max_uses"]) == (0, 2)
    assert _json(run("usage", "increment", "cli-key-1", "--by", "2", "--json"))["uses"] == 2
    failed = run("usage", "increment", "cli-key-1", code=1)
    assert "USES_LIMIT_EXCEEDED" in failed.output
    assert _json(run("usage", "decrement", "cli-key-1", "--json"))["uses"] == 1
    assert _json(run("usage", "reset", "cli-key-1", "--json"))["uses"] == 0
    history = _json(run("usage", "history", "cli-key-1", "--json"))
    assert [e["kind"] for e in history] == ["reset", "decrement", "increment"]
    shown = _json(run("license", "show", lic["id"], "--json"))
    assert shown["key"] == "cli-key-1"


def test_idempotency_key_on_the_cli(run: Any) -> None:
    """--idempotency-key makes a repeated command a no-op that prints the first answer."""
    product = _json(run("product", "create", "--name", "App", "--json"))["id"]
    policy = _json(run("policy", "create", "--product", product, "--name", "P", "--json"))["id"]
    run("license", "create", "--policy", policy, "--key", "cli-key-2")
    first = _json(run("usage", "increment", "cli-key-2", "--idempotency-key", "k", "--json"))
    again = _json(run("usage", "increment", "cli-key-2", "--idempotency-key", "k", "--json"))
    assert first == again
    assert first["uses"] == 1


def test_tables_are_the_default_output(run: Any) -> None:
    """Without --json the lists print readable tables."""
    product = _json(run("product", "create", "--name", "Tabled", "--json"))["id"]
    run(
        "policy",
        "create",
        "--product",
        product,
        "--name",
        "Shown",
        "--first-use",
        "--duration",
        "86400",
    )
    listing = run("policy", "list").stdout
    assert "Shown" in listing
    assert "FROM_FIRST_USE" in listing
    assert "Products (1)" in run("product", "list").stdout
    assert "Licenses (0)" in run("license", "list").stdout


def test_unknown_license_and_missing_config(run: Any, tmp_path: Path) -> None:
    """Errors print their stable code and exit non-zero; a missing config file exits 2."""
    run("db", "upgrade")  # read-only commands do not migrate
    assert "NOT_FOUND" in run("license", "show", "nope", code=1).output
    assert "not found" in run("db", "upgrade", "--config", str(tmp_path / "x.toml"), code=2).output


READ_ONLY = [
    ["outbox", "status"],
    ["outbox", "dead-letters"],
    ["product", "list"],
    ["policy", "list"],
    ["license", "list"],
    ["license", "show", "some-key"],
    ["usage", "history", "some-key"],
    ["machine", "list"],
    ["reconcile", "report"],
]


def test_read_only_commands_never_migrate_and_say_when_the_schema_is_behind(
    run: Any, tmp_path: Path
) -> None:
    """On a database that is empty, or one migration behind, every read-only command exits 1
    with SCHEMA_BEHIND and leaves the schema as it was; at head they answer; a database
    migrated by a newer version is SCHEMA_UNKNOWN."""
    from bridge.store.engine import make_engine
    from bridge.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")

    def revision() -> str | None:
        with engine.connect() as conn:
            tables = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")
            if "alembic_version" not in tables.scalars().all():
                return None
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()

    try:
        for command in READ_ONLY:
            failed = run(*command, code=1)
            assert "error SCHEMA_BEHIND" in failed.output, command
            assert "db upgrade" in failed.output
        assert revision() is None
        upgrade(engine, "0002")
        assert "SCHEMA_BEHIND" in run("outbox", "status", code=1).output
        assert revision() == "0002"
        run("db", "upgrade")
        assert "Licenses (0)" in run("license", "list").stdout
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00d'")
        assert "error SCHEMA_UNKNOWN" in run("license", "list", code=1).output
    finally:
        engine.dispose()


def test_worker_once_forwards_to_the_file_sink(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker --once delivers what is due and exits; outbox status shows it delivered."""
    sink = tmp_path / "usage.ndjson"
    monkeypatch.setenv("BRIDGE_SINKS__FILE__PATH", str(sink))
    product = _json(run("product", "create", "--name", "App", "--json"))["id"]
    policy = _json(run("policy", "create", "--product", product, "--name", "P", "--json"))["id"]
    run("license", "create", "--policy", policy, "--key", "cli-key-3")
    entry = _json(run("usage", "increment", "cli-key-3", "--by", "5", "--json"))["entry_id"]
    assert _json(run("outbox", "status", "--json")) == [
        {
            "sink": "file",
            "status": "pending",
            "count": 1,
            "mapping_missing": 0,
            "reasons": {},
            "oldest_age_s": pytest.approx(0, abs=60),
        }
    ]
    assert "handled 1 outbox items" in run("worker", "--once").stdout
    line = json.loads(sink.read_text())
    assert (line["id"], line["delta"]) == (entry, 5)
    status = _json(run("outbox", "status", "--json"))
    assert status == [
        {
            "sink": "file",
            "status": "delivered",
            "count": 1,
            "mapping_missing": 0,
            "reasons": {},
            "oldest_age_s": None,
        }
    ]


def test_dead_letters_and_retry_commands(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """outbox dead-letters lists what failed for good; outbox retry sends it again."""
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("BRIDGE_SINKS__FILE__PATH", str(blocker / "usage.ndjson"))
    monkeypatch.setenv("BRIDGE_RELAY__RETRY_HORIZON_S", "0.000001")  # dead-letter on failure
    product = _json(run("product", "create", "--name", "App", "--json"))["id"]
    policy = _json(run("policy", "create", "--product", product, "--name", "P", "--json"))["id"]
    run("license", "create", "--policy", policy, "--key", "cli-key-4")
    entry = _json(run("usage", "increment", "cli-key-4", "--json"))["entry_id"]
    run("worker", "--once")
    letters = _json(run("outbox", "dead-letters", "--json"))
    assert [d["entry_id"] for d in letters] == [entry]
    assert "retry horizon passed" in letters[0]["error"]
    monkeypatch.setenv("BRIDGE_SINKS__FILE__PATH", str(tmp_path / "usage.ndjson"))
    assert "requeued 1 dead letters" in run("outbox", "retry", "--sink", "file").stdout
    run("worker", "--once")
    assert json.loads((tmp_path / "usage.ndjson").read_text())["id"] == entry
    assert _json(run("outbox", "dead-letters", "--json")) == []


def test_machine_commands(run: Any) -> None:
    """Activate machines within the core limit, list them, deactivate one and reap."""
    product = _json(run("product", "create", "--name", "App", "--json"))["id"]
    limits = ("--floating", "--max-cores", "8")
    policy = _json(run("policy", "create", "--product", product, "--name", "C", *limits, "--json"))
    policy = policy["id"]
    run("license", "create", "--policy", policy, "--key", "cli-cores-1")
    first = _json(
        run("machine", "activate", "cli-cores-1", "--fingerprint", "a", "--cores", "6", "--json")
    )
    assert (first["fingerprint"], first["cores"]) == ("a", 6)
    failed = run("machine", "activate", "cli-cores-1", "--fingerprint", "b", "--cores", "3", code=1)
    assert "MACHINE_CORE_LIMIT_EXCEEDED" in failed.output
    run("machine", "activate", "cli-cores-1", "--fingerprint", "b", "--cores", "2")
    listed = _json(run("machine", "list", "--license", "cli-cores-1", "--json"))
    assert sorted(m["fingerprint"] for m in listed) == ["a", "b"]
    assert first["id"] in run("machine", "deactivate", first["id"]).output
    assert [m["fingerprint"] for m in _json(run("machine", "list", "--json"))] == ["b"]
    assert "deactivated 0 dead machines" in run("machine", "reap").output


def test_create_commands_take_the_api_rules(run: Any) -> None:
    """The CLI's typed commands are checked as the API's are: a usage period and a license's
    maxUses override apply, and a bad rule or key fails with its stable code."""
    product = _json(run("product", "create", "--name", "App", "--json"))["id"]
    bad = ("--period", "fortnight")
    failed = run("policy", "create", "--product", product, "--name", "P", *bad, code=1)
    assert "USAGE_PERIOD_INVALID" in failed.output
    monthly = ("--period", "month", "--period-timezone", "Europe/Paris", "--max-uses", "9")
    policy = _json(run("policy", "create", "--product", product, "--name", "P", *monthly, "--json"))
    lic = _json(run("license", "create", "--policy", policy["id"], "--max-uses", "3", "--json"))
    assert lic["max_uses"] == 3
    assert (
        "KEY_INVALID"
        in run("license", "create", "--policy", policy["id"], "--key", "x", code=1).output
    )
