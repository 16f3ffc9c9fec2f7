"""A fake m3ter: the token endpoint and the Ingest API, as an ``httpx`` request handler, called
in process through ``httpx.MockTransport`` or served over real HTTP on loopback by
``tests.fakes.loopback.LoopbackServer`` (one server per host, ``as_url=API`` and ``INGEST``).

It follows the reference notes (shared/reference/m3ter-stripe-openmeter.md, section A):
- ``POST {api}/oauth/token`` with HTTP Basic ``accessKeyId:apiSecret`` and grant type
  ``client_credentials`` (JSON or form) answers ``{"token_type": "Bearer", "access_token",
  "expires_in", "scope": null}``; a token is good until ``expires_in`` on the shared clock.
- ``POST {ingest}/organizations/{orgId}/measurements`` with a live Bearer token takes 1 to 1,000
  measurements in a body of less than 512,000 bytes (over-size: 403), checks each measurement's
  fields (``meter``, ``account``, ``ts`` required; string maps and number maps) and rejects a
  future ``ts``; it answers ``{"result": "accepted"}`` and stores each ``uid`` once.
- ``GET {api}/organizations/{orgId}/meters?codes=`` and ``.../accounts?codes=`` find the UUIDs
  of codes it has seen; ``POST {api}/organizations/{orgId}/usage/query`` (A.3) sums a MEASURE
  field by account over ``[startDate, endDate)`` of ``ts``. Its rows carry ``sum`` and
  ``count``: m3ter documents rows as free-form, so that shape is this fake's (unverified).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx

from bridge.testing import FakeClock

API = "https://api.m3ter.test"
INGEST = "https://ingest.m3ter.test"
ORG = "org-1"
CLIENT_ID = "key-1"
CLIENT_SECRET = "secret-1"

MAX_MEASUREMENTS = 1000
MAX_BYTES = 512_000  # a body must be *less than* this
_STRING_MAPS = ("who", "where", "what", "other", "metadata")
_NUMBER_MAPS = ("measure", "cost", "income")
_FIELDS = {"uid", "meter", "account", "ts", "ets", *_STRING_MAPS, *_NUMBER_MAPS}


def _iso(value: object) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _uuid(kind: str, code: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"m3ter:{kind}:{code}"))


def problems(m: object) -> list[str]:
    """What is wrong with one measurement, per m3ter's field rules."""
    if not isinstance(m, dict):
        return ["a measurement must be an object"]
    found = [f"unknown field {k!r}" for k in m if k not in _FIELDS]
    for key in ("meter", "account"):
        if not isinstance(m.get(key), str) or not m[key]:
            found.append(f"{key} is required (a code)")
    if "uid" in m and not isinstance(m["uid"], str):
        found.append("uid must be a string")
    if _iso(m.get("ts")) is None:
        found.append("ts is required (ISO-8601 date-time with offset)")
    if "ets" in m and _iso(m["ets"]) is None:
        found.append("ets must be an ISO-8601 date-time")
    for key in _STRING_MAPS:
        v = m.get(key, {})
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            found.append(f"{key} must map strings to strings")
    for key in _NUMBER_MAPS:
        v = m.get(key, {})
        if not isinstance(v, dict) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in v.values()
        ):
            found.append(f"{key} must map strings to numbers")
    return found


@dataclass
class FakeM3ter:
    """Call it with a request (``httpx.MockTransport(fake)``); inspect ``accepted``.

    ``outages`` answers the next measurement requests with these statuses (``"timeout"``
    raises a read timeout); ``max_bytes`` can be lowered to play a limit smaller than the
    sink's setting.
    """

    clock: FakeClock
    expires_in: int = 18_000
    max_bytes: int = MAX_BYTES
    retry_after: str | None = None
    outages: list[int | str] = field(default_factory=list)
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)  # by uid
    submitted: int = 0  # measurements in accepted requests, duplicates included
    requests: list[int] = field(default_factory=list)  # measurement count of each request
    token_calls: int = 0
    tokens: dict[str, datetime] = field(default_factory=dict)  # token -> expiry
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def expire_tokens(self) -> None:
        """Every issued token is now refused with 401 (as after expiry or revocation)."""
        with self._lock:
            self.tokens.clear()

    def lose(self, uid: str) -> None:
        """Forget an ingested measurement (as if it never arrived)."""
        with self._lock:
            del self.accepted[uid]

    def inject(self, measurement: dict[str, Any]) -> None:
        """Store a measurement that did not come from the bridge."""
        with self._lock:
            self.accepted[measurement["uid"]] = measurement

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            url = str(request.url.copy_with(query=None))
            if request.method == "POST" and url == f"{API}/oauth/token":
                return self._token(request)
            if request.method == "POST" and url == f"{INGEST}/organizations/{ORG}/measurements":
                return self._measurements(request)
            if not url.startswith(f"{API}/organizations/{ORG}/"):
                return httpx.Response(404, json={"message": f"no route {request.method} {url}"})
            if not self._authorized(request):
                return httpx.Response(401, json={"message": "Unauthorized"})
            tail = url.removeprefix(f"{API}/organizations/{ORG}/")
            if request.method == "GET" and tail in ("meters", "accounts"):
                return self._lookup(tail, request)
            if request.method == "POST" and tail == "usage/query":
                return self._usage_query(request)
            return httpx.Response(404, json={"message": f"no route {request.method} {url}"})

    def _authorized(self, request: httpx.Request) -> bool:
        auth = request.headers.get("authorization", "")
        expiry = (
            self.tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        )
        return expiry is not None and self.clock.now() < expiry

    def _lookup(self, kind: str, request: httpx.Request) -> httpx.Response:
        field_name = "meter" if kind == "meters" else "account"
        known = {m[field_name] for m in self.accepted.values()}
        codes = request.url.params.get_list("codes")
        data = [{"id": _uuid(kind, c), "code": c} for c in codes if c in known]
        return httpx.Response(200, json={"data": data, "nextToken": None})

    def _usage_query(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        start, end = _iso(body.get("startDate")), _iso(body.get("endDate"))
        aggregations = body.get("aggregations") or []
        if start is None or end is None or not aggregations:
            return httpx.Response(400, json={"message": "startDate, endDate, aggregations"})
        for a in aggregations:
            if a.get("fieldType") not in ("MEASURE", "DIMENSION") or a.get("function") not in (
                "SUM",
                "MIN",
                "MAX",
                "COUNT",
                "LATEST",
                "MEAN",
                "UNIQUE",
            ):
                return httpx.Response(400, json={"message": f"bad aggregation {a}"})
        field_code = aggregations[0]["fieldCode"]
        meters, accounts = set(body.get("meterIds") or []), set(body.get("accountIds") or [])
        rows: dict[str, dict[str, Any]] = {}
        for m in self.accepted.values():
            when = _iso(m["ts"])
            if when is None or not start <= when < end:
                continue
            account_id = _uuid("accounts", m["account"])
            if meters and _uuid("meters", m["meter"]) not in meters:
                continue
            if accounts and account_id not in accounts:
                continue
            row = rows.setdefault(account_id, {"accountId": account_id, "sum": 0, "count": 0})
            row["sum"] += m.get("measure", {}).get(field_code, 0)
            row["count"] += 1
        return httpx.Response(200, json={"data": list(rows.values()), "hasMoreData": False})

    def _token(self, request: httpx.Request) -> httpx.Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return httpx.Response(401, json={"message": "Bad credentials"})
        if request.headers.get("content-type", "").startswith("application/json"):
            grant = json.loads(request.content).get("grant_type")
        else:
            grant = parse_qs(request.content.decode()).get("grant_type", [None])[0]
        if grant != "client_credentials":
            return httpx.Response(400, json={"message": "grant_type must be client_credentials"})
        self.token_calls += 1
        token = f"jwt-{self.token_calls}"
        self.tokens[token] = self.clock.now() + timedelta(seconds=self.expires_in)
        body = {
            "token_type": "Bearer",
            "access_token": token,
            "expires_in": self.expires_in,
            "scope": None,
        }
        return httpx.Response(200, json=body)

    def _measurements(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ")
        expiry = self.tokens.get(token) if auth.startswith("Bearer ") else None
        if expiry is None or self.clock.now() >= expiry:
            return httpx.Response(401, json={"message": "Unauthorized"})
        if self.outages:
            outage = self.outages.pop(0)
            if outage == "timeout":
                raise httpx.ReadTimeout("fake m3ter is slow", request=request)
            assert isinstance(outage, int)
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            return httpx.Response(outage, json={"message": "outage"}, headers=headers)
        if len(request.content) >= self.max_bytes:
            return httpx.Response(403, json={"message": "Forbidden"})
        try:
            body = json.loads(request.content)
        except ValueError:
            return httpx.Response(400, json={"message": "body is not JSON"})
        ms = body.get("measurements") if isinstance(body, dict) else None
        if not isinstance(ms, list) or not 1 <= len(ms) <= MAX_MEASUREMENTS:
            return httpx.Response(400, json={"message": "measurements: 1 - 1000 elements"})
        now = self.clock.now()
        for i, m in enumerate(ms):
            found = problems(m)
            when = _iso(m.get("ts")) if isinstance(m, dict) else None
            if when is not None and when > now:
                found.append("ts is in the future")
            if found:
                return httpx.Response(400, json={"message": f"measurements[{i}]: {found}"})
        self.requests.append(len(ms))
        for m in ms:
            self.submitted += 1
            self.accepted.setdefault(m.get("uid") or f"no-uid-{self.submitted}", m)
        return httpx.Response(200, json={"result": "accepted"})
