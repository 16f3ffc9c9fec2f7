"""Logs that can be followed and leak nothing: context on every line, secrets redacted."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from bridge.bootstrap import Container
from bridge.domain.access import Principal, Role
from bridge.domain.commands import NewLicense, NewPolicy, NewProduct
from bridge.domain.model import UsageKind
from bridge.logging import configure
from bridge.service import licenses, policies, products
from bridge.service.batch_writer import BatchWriter
from bridge.service.usage import UsageChange, UsageOutcome, UsageService
from bridge.testing import FakeClock
from tests.fakes.lago import LAGO_SPEC, SPEC_MISSING, FakeLago
from tests.fakes.loopback import LoopbackServer
from tests.fakes.m3ter import API, CLIENT_SECRET, INGEST, ORG, FakeM3ter
from tests.served import free_port
from tests.waiting import wait_for

DEADLINE_S = 30.0
ADMIN = Principal(Role.ADMIN, "test")
LAGO_KEY = "lago-api-key-7d1c0e9a"
LICENSE_KEY = "LIC-KEY-5f2b8c41"


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# Redaction -----------------------------------------------------------------------------------
def test_secrets_are_redacted_by_pattern_in_fields_text_and_exceptions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Secret fields by any name, credentials inside free text, database error text (bound
    parameters, PostgreSQL's DETAIL) and exception tracebacks, from structlog and from the
    standard library alike, never reach the output."""
    configure("info", "json")
    token = "admin-" + "ab" * 32
    log = structlog.get_logger("probe.redaction")
    log.info(
        "probe_logged",
        client_secret="s3cr3t-client",
        access_token="tok-access-1",
        lago_api_key="key-lago-1",
        headers={"Authorization": f"Bearer {token}", "accept": "json"},
        detail=f"The requested license '{LICENSE_KEY}' was not found",
        path=f"/v1/licenses/{LICENSE_KEY}/actions/increment-usage",
        idempotency_key="kept-as-is",
    )
    database_error = (
        "(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint\n"  # noqa: S608
        f"DETAIL:  Key (key)=({LICENSE_KEY}) already exists.\n"
        "[SQL: INSERT INTO licenses (id, key) VALUES (%(id)s, %(key)s)]\n"
        f"[parameters: {{'id': 'x', 'key': '{LICENSE_KEY}'}}]"
    )
    try:
        raise RuntimeError(database_error)
    except RuntimeError:
        log.exception("probe_failed", authorization=f"License {LICENSE_KEY}")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("uvicorn.error").error("header was %s", f"Basic {token}")
    err = capsys.readouterr().err
    for secret in (token, "s3cr3t-client", "tok-access-1", "key-lago-1", LICENSE_KEY):
        assert secret not in err, secret
    lines = _lines(err)
    assert [line["event"] for line in lines][:2] == ["probe_logged", "probe_failed"]
    assert lines[0]["idempotency_key"] == "kept-as-is"
    assert lines[0]["headers"]["accept"] == "json"
    assert "[redacted]" in lines[1]["exception"]
    assert len(lines) == 4  # the standard library's records went through the same pipeline


SOURCES = Path(__file__).resolve().parents[1]
EVENT = re.compile(r"\blog\.(?:debug|info|warning|error|exception|critical)\(\s*\"([^\"]*)\"")


def test_every_event_name_follows_the_convention() -> None:
    """Each event the code logs is snake_case, a noun then what happened to it (two words at
    least), never a sentence or a dotted name."""
    names = {
        name
        for package in ("bridge", "connectors")
        for path in (SOURCES / package).rglob("*.py")
        for name in EVENT.findall(path.read_text())
    }
    assert len(names) > 20  # the pattern finds them
    assert sorted(n for n in names if not re.fullmatch(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+", n)) == []


# Context ---------------------------------------------------------------------------------------
class _LoggingUsage(UsageService):
    def apply_in(self, uow: Any, principal: Principal, change: UsageChange) -> UsageOutcome:
        outcome = super().apply_in(uow, principal, change)
        structlog.get_logger("probe.writer").info("usage_probed")
        return outcome


def test_the_batch_writer_thread_logs_under_the_submitters_request_id(
    container: Container, capsys: pytest.CaptureFixture[str]
) -> None:
    """A change applied on the BatchWriter's thread logs with the request id bound where it was
    submitted, and with the license id once the license is resolved."""
    configure("info", "json")
    product = products.create_product(container.uows, container.clock, ADMIN, NewProduct(name="p"))
    policy = policies.create_policy(
        container.uows, container.clock, ADMIN, NewPolicy(product.id, name="p")
    )
    lic = licenses.create_license(container.uows, container.clock, ADMIN, NewLicense(policy.id))
    writer = BatchWriter(container.usage_uows, _LoggingUsage(container.usage_uows, container.clock))
    try:
        with structlog.contextvars.bound_contextvars(request_id="req-1"):
            writer.submit(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)).result(DEADLINE_S)
        with structlog.contextvars.bound_contextvars(request_id="req-2"):
            writer.submit(ADMIN, UsageChange(lic.id, UsageKind.INCREMENT, 1)).result(DEADLINE_S)
    finally:
        writer.close()
    probes = [line for line in _lines(capsys.readouterr().err) if line["event"] == "usage_probed"]
    assert [(p["request_id"], p["license_id"]) for p in probes] == [
        ("req-1", lic.id),
        ("req-2", lic.id),
    ]
    assert "request_id" not in structlog.contextvars.get_contextvars()


# A full run -----------------------------------------------------------------------------------


@pytest.fixture
def platforms() -> Iterator[tuple[FakeLago, FakeM3ter, str, str, str]]:
    """The fake Lago and the fake m3ter (token and ingest hosts) over HTTP on loopback."""
    if not LAGO_SPEC.exists():
        pytest.skip(SPEC_MISSING)
    # The served bridge stamps changes with the real time; the fake m3ter refuses future ones.
    lago, m3ter = FakeLago(LAGO_KEY), FakeM3ter(FakeClock(datetime.now(UTC) + timedelta(hours=1)))
    with (
        LoopbackServer(lago) as lago_http,
        LoopbackServer(m3ter, as_url=API) as m3ter_api,
        LoopbackServer(m3ter, as_url=INGEST) as m3ter_ingest,
    ):
        yield lago, m3ter, lago_http.url, m3ter_api.url, m3ter_ingest.url
    assert lago.violations == []


def test_a_full_serve_run_logs_no_secret_and_every_request_line_has_its_id(
    tmp_path: Path, platforms: tuple[FakeLago, FakeM3ter, str, str, str]
) -> None:
    """``meterbridge serve`` at debug level, with JSON logs: API calls with every kind of
    credential (admin, product and license tokens, a license key, wrong ones), errors, and the
    relay to Lago (an API key) and m3ter (client secret, access tokens, a 401 and a refresh)
    through failures. No secret appears in its logs; each request line carries the request's
    id, and each delivery line its sink and batch."""
    lago, m3ter, lago_url, m3ter_api, m3ter_ingest = platforms
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
        "BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'full.db'}",
        "BRIDGE_LOG_LEVEL": "debug",
        "BRIDGE_LOG_FORMAT": "json",
        "BRIDGE_ACCESS_LOG": "true",  # off by default with JSON logs
        "BRIDGE_SINKS__FILE__PATH": str(tmp_path / "usage.ndjson"),
        "BRIDGE_RELAY__IDLE_S": "0.05",
        "BRIDGE_RELAY__RETRY_BASE_S": "0.05",
        "BRIDGE_RELAY__RETRY_CAP_S": "0.1",
        "BRIDGE_SINKS__LAGO__ENABLED": "true",
        "BRIDGE_SINKS__LAGO__API_URL": lago_url,
        "BRIDGE_SINKS__LAGO__API_KEY": LAGO_KEY,
        "BRIDGE_SINKS__LAGO__DEFAULT_METRIC_CODE": "api_calls",
        "BRIDGE_SINKS__M3TER__ENABLED": "true",
        "BRIDGE_SINKS__M3TER__ORG_ID": ORG,
        "BRIDGE_SINKS__M3TER__API_URL": m3ter_api,
        "BRIDGE_SINKS__M3TER__INGEST_URL": m3ter_ingest,
        "BRIDGE_SINKS__M3TER__CLIENT_ID": "key-1",
        "BRIDGE_SINKS__M3TER__CLIENT_SECRET": CLIENT_SECRET,
        "BRIDGE_SINKS__M3TER__DEFAULT_METER_CODE": "api_calls",
    }
    log_file = tmp_path / "stderr.log"
    with log_file.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert proc.stdout is not None
        admin = next(m.group(0) for line in proc.stdout if (m := re.search(r"admin-\w{64}", line)))
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(base), "serve did not become ready")
        secrets, answered = _exercise(base, admin, lago, m3ter)
        wait_for(lambda: len(lago.ingested) >= 3 and len(m3ter.accepted) >= 3, "not forwarded")
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE_S)
        if proc.stdout is not None:
            proc.stdout.close()
    text = log_file.read_text()
    secrets += [LAGO_KEY, CLIENT_SECRET, *(f"jwt-{n}" for n in range(1, m3ter.token_calls + 1))]
    assert m3ter.token_calls >= 2  # the refresh after the 401 happened
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into the logs"
    lines = _lines(text)
    requests = [line for line in lines if line["event"] == "request_completed"]
    assert {line["request_id"] for line in requests} >= answered
    assert all(line.get("request_id") for line in requests)
    delivered = [line for line in lines if line["event"] == "outbox_delivered"]
    assert {line["sink"] for line in delivered} == {"file", "lago", "m3ter"}
    assert all(line.get("batch") for line in delivered)


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _exercise(
    base: str, admin: str, lago: FakeLago, m3ter: FakeM3ter
) -> tuple[list[str], set[str]]:
    """Drive the API with every credential; return the secrets used and the request ids."""
    answered: set[str] = set()

    def call(method: str, path: str, credential: str, **kwargs: Any) -> httpx.Response:
        headers = {"Content-Type": "application/vnd.api+json"}
        if credential:
            headers["Authorization"] = credential
        response = httpx.request(method, f"{base}{path}", headers=headers, timeout=10, **kwargs)
        answered.add(response.headers["x-request-id"])
        return response

    bearer = f"Bearer {admin}"

    def create(path: str, kind: str, attributes: dict[str, Any], **rel: str) -> str:
        types = {"product": "products", "policy": "policies"}
        relationships = {k: {"data": {"type": types[k], "id": v}} for k, v in rel.items()}
        data: dict[str, Any] = {"type": kind, "attributes": attributes}
        if relationships:
            data["relationships"] = relationships
        body = {"data": data}
        response = call("POST", path, bearer, json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["data"]["id"])

    product = create("/v1/products", "products", {"name": "App"})
    policy = create("/v1/policies", "policies", {"name": "P", "maxUses": 4}, product=product)
    metadata = {"lago_subscription_id": "sub-1", "m3ter_account_code": "acme"}
    lic = create(
        "/v1/licenses", "licenses", {"key": LICENSE_KEY, "metadata": metadata}, policy=policy
    )
    product_token = call("POST", f"/v1/products/{product}/tokens", bearer).json()
    product_token = product_token["data"]["attributes"]["token"]
    license_token = call("POST", f"/v1/licenses/{lic}/tokens", bearer).json()
    license_token = license_token["data"]["attributes"]["token"]

    lago.fail(1, status=500)  # the first batch fails, the retry goes through
    m3ter.outages.append(500)
    increment = f"/v1/licenses/{LICENSE_KEY}/actions/increment-usage"
    assert call("POST", increment, f"License {LICENSE_KEY}").status_code == 200
    assert call("POST", increment, f"Bearer {license_token}").status_code == 200
    wait_for(lambda: len(lago.ingested) >= 2 and len(m3ter.accepted) >= 2, "first changes")
    m3ter.expire_tokens()  # the next measurement gets a 401 and the sink takes a new token
    assert call("POST", increment, f"Bearer {product_token}").status_code == 200
    validate = call(
        "POST", "/v1/licenses/actions/validate-key", "", json={"meta": {"key": LICENSE_KEY}}
    )
    assert validate.json()["meta"]["valid"] is True
    assert call("GET", f"/v1/licenses/{LICENSE_KEY}", f"Bearer {product_token}").status_code == 200
    # Errors: over the limit, an unknown key, a wrong token, a wrong key.
    call("POST", increment, bearer, json={"meta": {"increment": 10}})
    assert call("GET", "/v1/licenses/NOT-A-KEY-9e8d", bearer).status_code == 404
    assert call("GET", "/v1/licenses", "Bearer admin-" + "0" * 64).status_code == 401
    assert call("GET", "/v1/licenses", "License WRONG-KEY-31c2").status_code == 401
    secrets = [admin, product_token, license_token, LICENSE_KEY, "NOT-A-KEY-9e8d"]
    return [*secrets, "admin-" + "0" * 64, "WRONG-KEY-31c2"], answered
