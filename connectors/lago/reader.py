"""What Lago holds, for reconciliation: ``GET /api/v1/events`` (operationId ``findAllEvents``).

The list is filtered by ``external_subscription_id``, ``code`` and ``timestamp_from`` /
``timestamp_to`` (reference 2.3) and paged until ``meta.next_page`` is null. Lago's timestamp
filter is read as inclusive at both ends, so events at the period's end (which belong to the
next period) are dropped here. Event by event, so a missing or foreign ``transaction_id`` is
named, not only counted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import httpx

from bridge.domain.delivery import LicenseFacts
from bridge.domain.ports import PlatformUnavailable
from bridge.domain.reconcile import PlatformView
from connectors._http import read_json
from connectors._template import MappingMissing, render
from connectors.lago.mapping import metric_code
from connectors.lago.settings import LagoSinkSettings


def events_url(api_url: str) -> str:
    base = api_url.rstrip("/")
    if not base.endswith("/api/v1"):
        base += "/api/v1"
    return f"{base}/events"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _floor_ms(moment: datetime) -> datetime:
    """Lago keeps milliseconds, and the sink floors to them (``mapping.timestamp``)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class LagoReader:
    def __init__(self, settings: LagoSinkSettings, client: httpx.Client) -> None:
        if settings.api_key is None:
            raise ValueError("the Lago reader needs an api_key")
        self.settings = settings
        self.client = client
        self.url = events_url(settings.api_url)
        self._headers = {
            "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
            "Accept": "application/json",
        }

    @property
    def dedupe_window(self) -> timedelta | None:
        days = self.settings.dedupe_window_days
        return timedelta(days=days) if days is not None else None

    def subscription_period(self, external_id: str) -> tuple[datetime, datetime] | None:
        """The subscription's current billing period (``findSubscription``): Lago's
        ``current_billing_period_started_at`` and ``_ending_at`` (a whole-second exclusive end),
        or ``None`` when Lago has no such active subscription or no period (product catalog)."""
        url = events_url(self.settings.api_url).removesuffix("/events")
        try:
            response = self.client.get(
                f"{url}/subscriptions/{quote(external_id, safe='')}", headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise PlatformUnavailable(f"Lago: {type(exc).__name__}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PlatformUnavailable(f"Lago answered {response.status_code}")
        sub = response.json().get("subscription") or {}
        start = _parse_time(sub.get("current_billing_period_started_at"))
        end = _parse_time(sub.get("current_billing_period_ending_at"))
        if start is None or end is None:
            return None
        if end.second == 59 or end.microsecond:  # Lago's end_of_day: the next second
            end = end.replace(microsecond=0) + timedelta(seconds=1)
        return start, end

    def read(self, license: LicenseFacts, start: datetime, end: datetime) -> PlatformView:
        try:
            subscription = render(self.settings.subscription_template, license, license.id)
            code = metric_code(license.policy_id, self.settings)
        except MappingMissing as exc:
            raise PlatformUnavailable(str(exc)) from exc
        low, high = _floor_ms(start), _floor_ms(end)
        values: dict[str, int] = {}
        page: int | None = 1
        while page is not None:
            params: dict[str, Any] = {
                "external_subscription_id": subscription,
                "code": code,
                "timestamp_from": _iso(low),
                "timestamp_to": _iso(high),
                "page": page,
                "per_page": self.settings.read_page_size,
            }
            body = self._get(params)
            for event in body["events"]:
                when = datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
                if low <= when < high:
                    values[event["transaction_id"]] = self._value(event)
            page = body["meta"].get("next_page")
        return PlatformView(total=sum(values.values()), count=len(values), values=values)

    def _get(self, params: dict[str, Any]) -> dict[str, Any]:
        body = read_json("lago", self.client, "GET", self.url, params=params, headers=self._headers)
        if not {"events", "meta"} <= body.keys():
            raise PlatformUnavailable("lago: an events page needs events and meta")
        return body

    def _value(self, event: dict[str, Any]) -> int:
        raw = (event.get("properties") or {}).get(self.settings.property_field, 0)
        try:
            return int(Decimal(str(raw)))
        except (InvalidOperation, ValueError):
            return 0


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
