"""A fake Lago for the events batch endpoint: an ``httpx`` request handler, called in process
through ``httpx.MockTransport`` (``client()``) or served over real HTTP on loopback by
``tests.fakes.loopback.LoopbackServer``. It is thread-safe: requests are answered one at a time.

It behaves like lago-api on its default Postgres events store (../shared/reference/lago.md,
1.3-1.5): Bearer auth, at most ``max_batch`` events per request, all-or-nothing batches, and a
422 with ``error_details`` keyed by the 0-based index (as a string) for each invalid event and
each ``transaction_id`` already stored for that subscription (``value_already_exist``). Every
request body is checked against ``EventBatchInput`` of the saved OpenAPI spec; what does not
match is recorded in ``violations`` (tests assert it stays empty) and answered 400.

Faults are queued and used by the next requests, in order: ``fail`` (5xx), ``throttle`` (429
with ``X-RateLimit-Reset``), ``time_out`` (before or after storing the batch, so the answer is
lost; over loopback, no answer at all until the client gives up). ``reject`` makes one
transaction id invalid for good.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import yaml

SPECS = Path(__file__).parents[2].parent / "shared" / "specs"
LAGO_SPEC = SPECS / "lago-openapi.yaml"
SPEC_MISSING = f"the Lago OpenAPI spec is not at {LAGO_SPEC} (../shared/specs of the repo)"
BATCH_PATH = "/api/v1/events/batch"
EVENTS_PATH = "/api/v1/events"
SUBSCRIPTIONS_PATH = "/api/v1/subscriptions/"
PUBLIC_KEY_PATH = "/api/v1/webhooks/json_public_key"
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@cache
def load_spec(path: Path = LAGO_SPEC) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        spec: dict[str, Any] = yaml.safe_load(f)
    return spec


def batch_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The request body schema of operation ``createBatchEvents`` (``POST /events/batch``)."""
    operation = spec["paths"]["/events/batch"]["post"]
    assert operation["operationId"] == "createBatchEvents"
    schema: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"]
    return schema


class SpecValidator:
    """The JSON Schema keywords the events schemas use: ``$ref``, ``type``, ``required``,
    ``properties``, ``additionalProperties``, ``items``, ``allOf``, ``anyOf``, ``oneOf``.

    ``oneOf`` is checked as ``anyOf``: ``EventInputObject.properties`` values are
    ``oneOf: [string, integer, number]``, which any integer matches twice, so a strict ``oneOf``
    rejects ``{"units": 3}`` that Lago accepts (reference, section 6, trap 1).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.spec
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def errors(self, schema: dict[str, Any], value: Any, at: str = "$") -> Iterator[str]:
        schema = self.resolve(schema)
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(self._is(name, value) for name in names):
                yield f"{at}: {json.dumps(value)} is not of type {names}"
                return
        for sub in schema.get("allOf", []):
            yield from self.errors(sub, value, at)
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if options and all(any(self.errors(o, value, at)) for o in options):
                yield f"{at}: {json.dumps(value)} matches none of {key}"
        if isinstance(value, dict):
            yield from self._object_errors(schema, value, at)
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                yield from self.errors(schema["items"], item, f"{at}[{i}]")

    def _object_errors(
        self, schema: dict[str, Any], value: dict[str, Any], at: str
    ) -> Iterator[str]:
        for name in schema.get("required", []):
            if name not in value:
                yield f"{at}: {name!r} is required"
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                yield from self.errors(props[name], item, f"{at}.{name}")
            elif extra is False:
                yield f"{at}: {name!r} is not allowed"
            elif isinstance(extra, dict):
                yield from self.errors(extra, item, f"{at}.{name}")

    @staticmethod
    def _is(name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return name == "boolean"
        return isinstance(value, _TYPES[name])


@dataclass(frozen=True)
class Fault:
    kind: str  # "status", "throttle", "timeout", "timeout_after_storing"
    status: int = 503
    reset: int = 0


class FakeLago:
    """An ``httpx.MockTransport`` handler; ``client()`` is an ``httpx.Client`` on it."""

    def __init__(
        self,
        api_key: str = "lago-test-key",
        *,
        max_batch: int = 100,
        first_duplicate_only: bool = False,
        spec_path: Path = LAGO_SPEC,
    ) -> None:
        spec = load_spec(spec_path)
        self.validator = SpecValidator(spec)
        self.schema = batch_schema(spec)
        events = self.validator.resolve(self.schema)["properties"]["events"]
        self.event_fields = set(self.validator.resolve(events["items"])["properties"])
        self.api_key = api_key
        self.max_batch = max_batch
        self.first_duplicate_only = first_duplicate_only  # lago-api before v1.39
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}  # (subscription, txn) -> event
        self.ingested: list[str] = []  # transaction ids in the order they were stored
        self.batches: list[list[dict[str, Any]]] = []  # every events array posted
        self.violations: list[str] = []
        self.rejections: dict[str, Any] = {}
        self.faults: list[Fault] = []
        self.list_operation = spec["paths"]["/events"]["get"]
        assert self.list_operation["operationId"] == "findAllEvents"
        self.list_params = {
            self.validator.resolve(p)["name"] for p in self.list_operation["parameters"]
        }
        self.subscription_schema = spec["components"]["schemas"]["SubscriptionObject"]
        self.subscriptions: dict[str, dict[str, Any]] = {}  # external_id -> SubscriptionObject
        self.webhook_public_key: str | None = None  # PEM served by json_public_key
        self.key_reads = 0
        self._lock = threading.Lock()

    # -- test controls -------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))

    def fail(self, times: int = 1, status: int = 503) -> None:
        self.faults += [Fault("status", status=status)] * times

    def throttle(self, times: int = 1, reset: int = 30) -> None:
        self.faults += [Fault("throttle", status=429, reset=reset)] * times

    def time_out(self, times: int = 1, *, after_storing: bool = False) -> None:
        kind = "timeout_after_storing" if after_storing else "timeout"
        self.faults += [Fault(kind)] * times

    def reject(self, transaction_id: str, error: Any) -> None:
        """Lago finds this event invalid (``error`` is its ``error_details`` entry)."""
        self.rejections[transaction_id] = error

    def delete(self, transaction_id: str) -> None:
        """Lose an ingested event (as if Lago never stored it)."""
        with self._lock:
            for key in [k for k in self.stored if k[1] == transaction_id]:
                del self.stored[key]

    def subscribe(self, external_id: str, started_at: str, ending_at: str) -> dict[str, Any]:
        """An active subscription whose current billing period is [started_at, ending_at]
        (Lago's form: ``...T00:00:00Z`` to ``...T23:59:59Z``); checked against the spec."""
        subscription: dict[str, Any] = {
            "lago_id": f"lago-{external_id}",
            "external_id": external_id,
            "lago_customer_id": "lago-cust-1",
            "external_customer_id": "cust-1",
            "name": None,
            "plan_code": "metered",
            "status": "active",
            "billing_time": "anniversary",
            "subscription_at": started_at,
            "started_at": started_at,
            "created_at": started_at,
            "canceled_at": None,
            "ending_at": None,
            "terminated_at": None,
            "trial_ended_at": None,
            "previous_plan_code": None,
            "next_plan_code": None,
            "downgrade_plan_date": None,
            "on_termination_credit_note": None,
            "on_termination_invoice": "generate",
            "current_billing_period_started_at": started_at,
            "current_billing_period_ending_at": ending_at,
        }
        problems = list(self.validator.errors(self.subscription_schema, subscription))
        assert not problems, problems
        with self._lock:
            self.subscriptions[external_id] = subscription
        return subscription

    def inject(self, event: dict[str, Any]) -> None:
        """Store an event that did not come from the bridge."""
        with self._lock:
            self.stored[(event["external_subscription_id"], event["transaction_id"])] = event

    # -- the endpoints -------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            return self._answer(request)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return httpx.Response(401, json={"status": 401, "error": "Unauthorized"})
        if request.method == "GET" and request.url.path == EVENTS_PATH:
            return self._list(request)
        if request.method == "GET" and request.url.path.startswith(SUBSCRIPTIONS_PATH):
            found = self.subscriptions.get(request.url.path.removeprefix(SUBSCRIPTIONS_PATH))
            if found is None:
                return _error(404, "Not Found", "subscription_not_found")
            return httpx.Response(200, json={"subscription": found})
        if request.method == "GET" and request.url.path == PUBLIC_KEY_PATH:
            if self.webhook_public_key is None:
                return _error(404, "Not Found", "not_found")
            self.key_reads += 1
            encoded = base64.encodebytes(self.webhook_public_key.encode()).decode()
            return httpx.Response(200, json={"webhook": {"public_key": encoded}})
        if request.method != "POST" or request.url.path != BATCH_PATH:
            return _error(404, "Not Found", "not_found")
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None and fault.kind == "timeout":
            raise httpx.ReadTimeout("fake Lago did not answer", request=request)
        if fault is not None and fault.kind == "throttle":
            headers = {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0"}
            headers["X-RateLimit-Reset"] = str(fault.reset)
            return httpx.Response(429, headers=headers, json={"status": 429, "error": "Too Many"})
        if fault is not None and fault.kind == "status":
            return _error(fault.status, "Internal Server Error", "internal_error")
        response = self._batch(request)
        if fault is not None and fault.kind == "timeout_after_storing":
            raise httpx.ReadTimeout(
                "fake Lago stored the batch, the answer was lost", request=request
            )
        return response

    def _batch(self, request: httpx.Request) -> httpx.Response:
        events, problem = self._parse(request)
        if events is None:
            return self._violation(problem)
        self.batches.append(events)
        if not events:
            return _unprocessable({"events": ["no_events"]})
        if len(events) > self.max_batch:
            return _unprocessable({"events": ["too_many_events"]})
        details = self._details(events)
        if details:  # all or nothing: the batch is rolled back
            return _unprocessable(details)
        return self._store(events)

    def _parse(self, request: httpx.Request) -> tuple[list[dict[str, Any]] | None, str]:
        """The events of a spec-valid body, else None and what is wrong."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            return None, f"content-type {request.headers.get('content-type')!r}"
        try:
            body = json.loads(request.content)
        except ValueError:
            return None, "body is not JSON"
        problems = list(self.validator.errors(self.schema, body))
        if problems:
            return None, "; ".join(problems)
        events: list[dict[str, Any]] = body["events"]
        for i, event in enumerate(events):  # Rails drops unpermitted fields without a word
            problems += [
                f"$.events[{i}]: {k!r} not in the spec" for k in set(event) - self.event_fields
            ]
        return (None, "; ".join(problems)) if problems else (events, "")

    def _details(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        """Lago's ``error_details``: per invalid or already stored event, by index."""
        details: dict[str, Any] = {}
        seen: set[tuple[str, str]] = set()
        for i, event in enumerate(events):
            key = (event["external_subscription_id"], event["transaction_id"])
            if event["transaction_id"] in self.rejections:
                details[str(i)] = self.rejections[event["transaction_id"]]
            elif "timestamp" in event and not _numeric(event["timestamp"]):
                details[str(i)] = {"timestamp": ["invalid_format"]}
            elif key in self.stored or key in seen:
                details[str(i)] = {"transaction_id": ["value_already_exist"]}
                if self.first_duplicate_only:
                    break
            seen.add(key)
        return details

    def _store(self, events: list[dict[str, Any]]) -> httpx.Response:
        created = []
        for event in events:
            self.stored[(event["external_subscription_id"], event["transaction_id"])] = event
            self.ingested.append(event["transaction_id"])
            created.append(_event_object(event))
        return httpx.Response(200, json={"events": created})

    def _list(self, request: httpx.Request) -> httpx.Response:
        """``findAllEvents``: the spec's filters, newest first, paged; the answer is checked
        against ``EventsPaginated`` like requests are against their schemas."""
        params = dict(request.url.params)
        unknown = set(params) - self.list_params
        if unknown:
            return self._violation(f"GET /events: parameters {sorted(unknown)} not in the spec")
        page, per_page = int(params.get("page", 1)), int(params.get("per_page", 100))
        low = _seconds(params.get("timestamp_from"))
        high = _seconds(params.get("timestamp_to"))
        found = [
            e
            for (subscription, _), e in self.stored.items()
            if subscription == params.get("external_subscription_id", subscription)
            and e["code"] == params.get("code", e["code"])
            and (low is None or Decimal(str(e["timestamp"])) >= low)
            and (high is None or Decimal(str(e["timestamp"])) <= high)
        ]
        found.sort(key=lambda e: e["transaction_id"])
        found.sort(key=lambda e: Decimal(str(e["timestamp"])), reverse=True)
        pages = max(1, -(-len(found) // per_page))
        chunk = found[(page - 1) * per_page : page * per_page]
        body = {
            "events": [_event_object(e) for e in chunk],
            "meta": {
                "current_page": page,
                "next_page": page + 1 if page < pages else None,
                "prev_page": page - 1 if page > 1 else None,
                "total_pages": pages,
                "total_count": len(found),
            },
        }
        schema = self.list_operation["responses"]["200"]["content"]["application/json"]["schema"]
        problems = list(self.validator.errors(schema, body))
        assert not problems, problems  # the fake itself must answer what the spec promises
        return httpx.Response(200, json=body)

    def _violation(self, problem: str) -> httpx.Response:
        self.violations.append(problem)
        return _error(400, f"BadRequest: {problem}", "bad_request")


def _numeric(value: Any) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    try:
        Decimal(str(value))
    except InvalidOperation:
        return False
    return True


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    seconds = Decimal(str(value))
    when = datetime.fromtimestamp(float(seconds), UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: str | None) -> Decimal | None:
    if value is None:
        return None
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return Decimal(str(round(when.timestamp() * 1000))) / 1000


def _event_object(event: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``EventObject`` of a stored event."""
    return {
        "lago_id": str(uuid.uuid5(uuid.NAMESPACE_URL, event["transaction_id"])),
        "transaction_id": event["transaction_id"],
        "lago_customer_id": None,
        "code": event["code"],
        "timestamp": _iso(event.get("timestamp")),
        "properties": event.get("properties") or {},
        "lago_subscription_id": None,
        "external_subscription_id": event["external_subscription_id"],
        "created_at": datetime.now(UTC).isoformat(),
    }


def _error(status: int, error: str, code: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "error": error, "code": code})


def _unprocessable(details: dict[str, Any]) -> httpx.Response:
    body = {
        "status": 422,
        "error": "Unprocessable Entity",
        "code": "validation_errors",
        "error_details": details,
    }
    return httpx.Response(422, json=body)
