"""Usage periods: the pure arithmetic of billing-period boundaries.

A rule is an interval (day, week, month, quarter or year, times a count), an anchor and an IANA
timezone. Boundaries are wall-clock instants in that timezone, counted from an origin:

- CALENDAR: periods start on calendar boundaries, counted from 2000-01-01 00:00 local (weeks from
  Monday 2000-01-03), so monthly periods start on the 1st, quarterly ones in Jan/Apr/Jul/Oct.
- ANNIVERSARY: counted from the license's ``periodAnchor`` (or its creation), at that wall time.

Boundary k is the origin plus ``k * count`` intervals, always computed from the origin, never
from the previous boundary: a month-end anchor clamps and recovers (Jan 31 -> Feb 28/29 -> Mar 31),
and a DST change makes a day 23 or 25 hours long but never moves a boundary off its wall time.
A wall time that falls in a DST gap resolves with the offset before the gap (``fold=0``), so
boundaries stay strictly increasing and no period is duplicated or skipped.

The words, one per concept (code, log events and the README use these, and no others):

- *period*: one interval ``[start, end)`` of a license's effective rule. A license has at most
  one period *open* (``period_start``, ``period_end``, and the count it opened with).
- *open*: a license gets a period. The first opens when the license gets a rule (created with
  one, or its policy or itself gains one), at that instant; each later one opens at the end of
  the one before.
- *due*: a period whose end has passed and that is not closed yet.
- *close*: a period ends, at its end and never earlier: its record (``usage_periods``) and its
  ``period_reset`` ledger entry, timestamped at the end. That entry is the *period reset*; a
  *reset* alone is the manual usage action, counted inside the period. A billing platform's
  webhook may name an earlier boundary (``close_period``): that boundary becomes the end.
- *rollover*: what brings a license's period up to now: it closes every due period in order
  (after the first, those with no usage at 0), then opens the period now falls in (none if the
  license lost its rule); a license with a rule and no period only opens one. ``plan_rollover``
  computes it, a store *writes* it (``PeriodWriter.write``), and a license is *rolled over*:
  lazily by the first usage change after a boundary (``closed_by`` ``usage``), by the
  scheduled job that closes due periods (``scheduler``), or by a webhook (``webhook``).
- *stale*: a license whose count or period changed between the read a rollover was planned
  from and its write; the write's guard refuses it (a conflict, or left out for the next run).
- *apply*: a changed rule applies from the next boundary: the open period keeps its end, and
  the new rule's first period opens there.
- *align*: a webhook (``align_period``) sets the open period's bounds to the platform's billing
  period, closing nothing (``PeriodWriter.align``).

Names that are an API keep theirs even where they read otherwise: the CLI command
``meterbridge periods close``; the HTTP attributes ``usagePeriod``, ``periodAnchor``,
``periodStart``, ``periodEnd``; the error codes ``USAGE_PERIOD_INVALID`` and
``PERIOD_ANCHOR_INVALID``; the stored columns (``period_open_uses``, ``uses_at_open``,
``uses_at_close``, ``closed_by``, ``closed_at``, ...) and values (``period_reset``, ``usage``,
``scheduler``, ``webhook``); the webhook actions ``close_period`` and ``align_period``; the job
and lock name ``close-periods``.
"""

from __future__ import annotations

import calendar
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from bridge.domain.errors import UsagePeriodInvalid


class PeriodInterval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"


class PeriodAnchor(StrEnum):
    CALENDAR = "CALENDAR"
    ANNIVERSARY = "ANNIVERSARY"


_MONTHS = {PeriodInterval.MONTH: 1, PeriodInterval.QUARTER: 3, PeriodInterval.YEAR: 12}
_DAYS = {PeriodInterval.DAY: 1, PeriodInterval.WEEK: 7}
_CALENDAR_ORIGIN = {
    PeriodInterval.WEEK: datetime(2000, 1, 3),  # noqa: DTZ001 - a wall time, zoned later
}
_DEFAULT_ORIGIN = datetime(2000, 1, 1)  # noqa: DTZ001 - a wall time, zoned later
MAX_COUNT = 1000


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # inclusive, UTC
    end: datetime  # exclusive, UTC


@dataclass(frozen=True, slots=True)
class PeriodRule:
    interval: PeriodInterval
    count: int = 1
    anchor: PeriodAnchor = PeriodAnchor.CALENDAR
    timezone: str = "UTC"

    @classmethod
    def parse(cls, raw: Any) -> PeriodRule:
        """A rule from its API form ``{"interval", "count", "anchor", "timezone"}``."""
        if not isinstance(raw, dict):
            raise UsagePeriodInvalid("must be an object or null")
        unknown = set(raw) - {"interval", "count", "anchor", "timezone"}
        if unknown:
            raise UsagePeriodInvalid(f"unknown field {sorted(unknown)[0]!r}")
        try:
            interval = PeriodInterval(str(raw.get("interval", "")).lower())
        except ValueError:
            names = ", ".join(i.value for i in PeriodInterval)
            raise UsagePeriodInvalid(f"interval must be one of {names}") from None
        count = raw.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
            raise UsagePeriodInvalid(f"count must be an integer from 1 to {MAX_COUNT}")
        try:
            anchor = PeriodAnchor(str(raw.get("anchor", PeriodAnchor.CALENDAR)).upper())
        except ValueError:
            raise UsagePeriodInvalid("anchor must be CALENDAR or ANNIVERSARY") from None
        timezone = raw.get("timezone", "UTC")
        if not isinstance(timezone, str) or not _known_zone(timezone):
            raise UsagePeriodInvalid("timezone must be an IANA timezone name")
        return cls(interval, count, anchor, timezone)

    def to_api(self) -> dict[str, Any]:
        return {
            "interval": self.interval.value,
            "count": self.count,
            "anchor": self.anchor.value,
            "timezone": self.timezone,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_api(), separators=(",", ":"))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@lru_cache(maxsize=1024)
def rule_from_json(raw: str | None) -> PeriodRule | None:
    """The stored form back to a rule (cached: the usage hot path reads it on every change)."""
    if raw is None:
        return None
    return PeriodRule.parse(json.loads(raw))


MAX_ZONE_NAME = 64  # the longest IANA name is 32 characters


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _known_zone(name: str) -> bool:
    """An IANA zone name (not a path, not a file of the zone database that is no zone)."""
    if len(name) > MAX_ZONE_NAME or name not in _zone_names():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _add_months(origin: datetime, months: int) -> datetime:
    """``origin`` plus whole months, the day clamped to the target month's length."""
    index = origin.year * 12 + origin.month - 1 + months
    year, month = divmod(index, 12)
    day = min(origin.day, calendar.monthrange(year, month + 1)[1])
    return origin.replace(year=year, month=month + 1, day=day)


def advance(at: datetime, interval: str, count: int) -> datetime:
    """``at`` plus ``count`` days, weeks, months or years, as Rails' ``count.interval.since``:
    months and years are calendar ones, the day clamped to the month's length (UTC)."""
    if interval in ("month", "year"):
        return _add_months(at, count * (12 if interval == "year" else 1))
    return at + timedelta(days=count * (7 if interval == "week" else 1))


def _wall_boundary(rule: PeriodRule, origin: datetime, k: int) -> datetime:
    if rule.interval in _MONTHS:
        return _add_months(origin, k * rule.count * _MONTHS[rule.interval])
    return origin + timedelta(days=k * rule.count * _DAYS[rule.interval])


def _to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _origin(rule: PeriodRule, anchor: datetime) -> datetime:
    if rule.anchor is PeriodAnchor.ANNIVERSARY:
        return anchor.astimezone(rule.zone).replace(tzinfo=None)
    return _CALENDAR_ORIGIN.get(rule.interval, _DEFAULT_ORIGIN)


def _estimate(rule: PeriodRule, origin: datetime, wall: datetime) -> int:
    if rule.interval in _MONTHS:
        months = (wall.year - origin.year) * 12 + wall.month - origin.month
        return months // (rule.count * _MONTHS[rule.interval])
    days = (wall.date() - origin.date()).days
    return days // (rule.count * _DAYS[rule.interval])


def period_at(rule: PeriodRule, anchor: datetime, at: datetime) -> Period:
    """The period of ``rule`` that contains the instant ``at``.

    ``anchor`` (aware) is the anniversary origin; calendar rules ignore it.
    """
    zone = rule.zone
    origin = _origin(rule, anchor)
    k = _estimate(rule, origin, at.astimezone(zone).replace(tzinfo=None))
    start = _to_utc(_wall_boundary(rule, origin, k), zone)
    while start > at:  # the estimate is at most one interval off either way
        k -= 1
        start = _to_utc(_wall_boundary(rule, origin, k), zone)
    end = _to_utc(_wall_boundary(rule, origin, k + 1), zone)
    while end <= at:
        k += 1
        start, end = end, _to_utc(_wall_boundary(rule, origin, k + 1), zone)
    return Period(start, end)


def _period_after(rule: PeriodRule, anchor: datetime, end: datetime) -> Period:
    """``period_at(rule, anchor, end)``; memoized for calendar rules, whose periods do not
    depend on the anchor (the scheduler closes thousands of licenses on the same boundary)."""
    if rule.anchor is PeriodAnchor.CALENDAR:
        return _calendar_period_at(rule, end)
    return period_at(rule, anchor, end)


@lru_cache(maxsize=1024)
def _calendar_period_at(rule: PeriodRule, at: datetime) -> Period:
    return period_at(rule, at, at)


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    start: datetime
    end: datetime
    uses_at_open: int
    uses_at_close: int


@dataclass(frozen=True, slots=True)
class Rollover:
    """What bringing a license's period up to ``now`` takes: the periods to close, in order,
    and the period left open (``None`` bounds when the license no longer has a rule)."""

    closed: tuple[ClosedPeriod, ...]
    start: datetime | None
    end: datetime | None
    uses: int  # the counter afterwards
    open_uses: int  # the counter at the start of the open period


@dataclass(frozen=True, slots=True)
class PeriodState:
    """What a license's usage period is made of: all a rollover reads and writes."""

    license_id: str
    uses: int
    rule: PeriodRule | None  # the effective rule
    anchor: datetime  # the anniversary origin
    start: datetime | None
    end: datetime | None
    open_uses: int

    def rollover(self, now: datetime) -> Rollover | None:
        return plan_rollover(
            self.rule, self.anchor, self.start, self.end, self.uses, self.open_uses, now
        )


def plan_rollover(
    rule: PeriodRule | None,
    anchor: datetime,
    start: datetime | None,
    end: datetime | None,
    uses: int,
    open_uses: int,
    now: datetime,
) -> Rollover | None:
    """The rollover to ``now``; ``None`` when nothing is due. A license with a rule and no open
    period opens one at ``now`` (keeping its count); a due period closes at its end, and so does
    every later period that ended with no usage, each on its own."""
    if end is None:
        if rule is None:
            return None
        return Rollover((), now, period_at(rule, anchor, now).end, uses, uses)
    if now < end:
        return None
    assert start is not None, "both bounds are set together"
    closed = [ClosedPeriod(start, end, open_uses, uses)]
    while rule is not None:
        following = _period_after(rule, anchor, closed[-1].end)
        # A changed rule applies from here: its first period opens where the old one ended.
        if following.end > now:
            return Rollover(tuple(closed), closed[-1].end, following.end, 0, 0)
        closed.append(ClosedPeriod(closed[-1].end, following.end, 0, 0))
    return Rollover(tuple(closed), None, None, 0, 0)
