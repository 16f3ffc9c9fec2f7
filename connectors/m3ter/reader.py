"""What m3ter holds, for reconciliation: the usage query (reference A.3).

``POST {api}/organizations/{orgId}/usage/query`` sums the Meter's MEASURE field for the
license's Account over ``[startDate, endDate)`` (filtered on the measurements' ``ts``). The
query takes Meter and Account UUIDs, so the codes are looked up once through the list
endpoints (``GET .../meters?codes=`` and ``.../accounts?codes=``) and cached.

m3ter reports totals, not measurements: a reconciliation against m3ter compares sums and
counts, and a repair resends every change of a short period (m3ter ingests a uid once in 35
days, so those it holds are not counted twice). Unverified: the keys of a result row, which
m3ter documents as free-form; ``usage_sum_key`` / ``usage_count_key`` name them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bridge.domain.delivery import LicenseFacts
from bridge.domain.ports import PlatformUnavailable
from bridge.domain.reconcile import PlatformView
from connectors._http import read_json
from connectors._template import MappingMissing, render
from connectors.m3ter.auth import M3terAuth
from connectors.m3ter.mapping import policy_meter_code
from connectors.m3ter.settings import M3terSinkSettings


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class M3terReader:
    def __init__(self, settings: M3terSinkSettings, client: httpx.Client, auth: M3terAuth) -> None:
        self.settings = settings
        self.client = client
        self.auth = auth
        self.base = f"{settings.api_url}/organizations/{settings.org_id}"
        self._ids: dict[tuple[str, str], str] = {}

    @property
    def dedupe_window(self) -> timedelta | None:
        days = self.settings.dedupe_window_days
        return timedelta(days=days) if days is not None else None

    def read(self, license: LicenseFacts, start: datetime, end: datetime) -> PlatformView:
        try:
            meter = policy_meter_code(license.policy_id, self.settings)
            account = render(self.settings.account_template, license, license.id)
        except MappingMissing as exc:
            raise PlatformUnavailable(str(exc)) from exc
        meter_id = self._id("meters", meter)
        account_id = self._id("accounts", account)
        field = self.settings.measure_field
        query = {
            "startDate": _iso(start),
            "endDate": _iso(end),
            "meterIds": [meter_id],
            "accountIds": [account_id],
            "aggregations": [
                {"meterId": meter_id, "fieldCode": field, "fieldType": "MEASURE", "function": f}
                for f in ("SUM", "COUNT")
            ],
            "groups": [{"groupType": "ACCOUNT"}],
        }
        body = self._call("POST", f"{self.base}/usage/query", json=query)
        if body.get("hasMoreData"):
            raise PlatformUnavailable("m3ter truncated the usage query; narrow the period")
        try:
            rows = body["data"]
            total = sum(int(r.get(self.settings.usage_sum_key) or 0) for r in rows)
            count = sum(int(r.get(self.settings.usage_count_key) or 0) for r in rows)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlatformUnavailable(f"m3ter: unexpected usage rows: {exc!r}") from exc
        return PlatformView(total=total, count=count)

    def _id(self, kind: str, code: str) -> str:
        key = (kind, code)
        if key not in self._ids:
            body = self._call("GET", f"{self.base}/{kind}", params={"codes": code})
            found = [x["id"] for x in body.get("data", []) if x.get("code") == code]
            if not found:
                raise PlatformUnavailable(f"m3ter has no {kind[:-1]} with code {code!r}")
            self._ids[key] = found[0]
        return self._ids[key]

    def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        return read_json("m3ter", self.client, method, url, auth=self.auth, **kwargs)
