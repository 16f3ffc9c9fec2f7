"""Period arithmetic: month ends, leap years, DST, timezones far from UTC, and rollover plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.domain.errors import Field, UsagePeriodInvalid
from bridge.domain.periods import (
    Period,
    PeriodAnchor,
    PeriodInterval,
    PeriodRule,
    period_at,
    plan_rollover,
    rule_from_json,
)

ZONES = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/St_Johns",
]

# Hypothesis takes naive bounds and attaches the timezone itself.
NAIVE_FROM = datetime(1990, 1, 1)  # noqa: DTZ001
NAIVE_TO = datetime(2040, 1, 1)  # noqa: DTZ001


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def monthly(anchor: PeriodAnchor = PeriodAnchor.ANNIVERSARY, tz: str = "UTC") -> PeriodRule:
    return PeriodRule(PeriodInterval.MONTH, 1, anchor, tz)


def test_month_end_anniversary_clamps_and_recovers() -> None:
    rule, anchor = monthly(), utc(2024, 1, 31, 10)
    starts = [period_at(rule, anchor, utc(2024, m, 15)).start for m in range(2, 6)]
    assert starts == [
        utc(2024, 1, 31, 10),
        utc(2024, 2, 29, 10),
        utc(2024, 3, 31, 10),
        utc(2024, 4, 30, 10),
    ]
    # Not a leap year: February clamps to the 28th, March recovers the 31st.
    assert period_at(rule, utc(2023, 1, 31), utc(2023, 3, 1)) == Period(
        utc(2023, 2, 28), utc(2023, 3, 31)
    )


def test_leap_day_anniversary_yearly() -> None:
    rule = PeriodRule(PeriodInterval.YEAR, anchor=PeriodAnchor.ANNIVERSARY)
    assert period_at(rule, utc(2024, 2, 29), utc(2025, 6, 1)) == Period(
        utc(2025, 2, 28), utc(2026, 2, 28)
    )
    assert period_at(rule, utc(2024, 2, 29), utc(2028, 3, 1)).start == utc(2028, 2, 29)


def test_calendar_boundaries() -> None:
    at = utc(2026, 11, 28, 13, 5)
    assert period_at(PeriodRule(PeriodInterval.DAY), at, at) == Period(
        utc(2026, 11, 28), utc(2026, 11, 29)
    )
    week = period_at(PeriodRule(PeriodInterval.WEEK), at, at)
    assert week == Period(utc(2026, 11, 23), utc(2026, 11, 30))  # Monday to Monday
    assert period_at(PeriodRule(PeriodInterval.MONTH), at, at) == Period(
        utc(2026, 11, 1), utc(2026, 12, 1)
    )
    assert period_at(PeriodRule(PeriodInterval.QUARTER), at, at) == Period(
        utc(2026, 10, 1), utc(2027, 1, 1)
    )
    assert period_at(PeriodRule(PeriodInterval.YEAR), at, at) == Period(
        utc(2026, 1, 1), utc(2027, 1, 1)
    )
    two_months = period_at(PeriodRule(PeriodInterval.MONTH, 2), at, at)
    assert two_months == Period(utc(2026, 11, 1), utc(2027, 1, 1))


def test_daily_periods_keep_local_midnight_across_dst() -> None:
    rule = PeriodRule(PeriodInterval.DAY, timezone="America/New_York")
    spring = period_at(rule, utc(2026, 1, 1), utc(2026, 3, 8, 12))
    assert spring.end - spring.start == timedelta(hours=23)
    autumn = period_at(rule, utc(2026, 1, 1), utc(2026, 11, 1, 12))
    assert autumn.end - autumn.start == timedelta(hours=25)
    zone = ZoneInfo("America/New_York")
    for p in (spring, autumn):
        assert p.start.astimezone(zone).hour == 0
        assert p.end.astimezone(zone).hour == 0


def test_anchor_inside_a_dst_gap_neither_duplicates_nor_skips() -> None:
    # 02:30 does not exist in New York on 2026-03-08.
    rule = PeriodRule(
        PeriodInterval.DAY, anchor=PeriodAnchor.ANNIVERSARY, timezone="America/New_York"
    )
    anchor = datetime(2026, 3, 1, 2, 30, tzinfo=ZoneInfo("America/New_York"))
    p = period_at(rule, anchor, utc(2026, 3, 8, 7, 0))
    q = period_at(rule, anchor, p.end)
    assert p.start < p.end == q.start < q.end


def test_timezone_far_from_utc_calendar_month() -> None:
    rule = monthly(PeriodAnchor.CALENDAR, "Pacific/Kiritimati")  # UTC+14
    p = period_at(rule, utc(2026, 1, 1), utc(2026, 11, 30, 12))
    assert p.start == utc(2026, 11, 30, 10)  # 1 December 00:00 in Kiritimati
    assert p.start.astimezone(ZoneInfo("Pacific/Kiritimati")).day == 1


@settings(max_examples=300, deadline=None)
@given(
    interval=st.sampled_from(list(PeriodInterval)),
    count=st.integers(1, 5),
    anchor_kind=st.sampled_from(list(PeriodAnchor)),
    tz=st.sampled_from(ZONES),
    anchor=st.datetimes(NAIVE_FROM, NAIVE_TO, timezones=st.just(UTC)),
    at=st.datetimes(NAIVE_FROM, NAIVE_TO, timezones=st.just(UTC)),
)
def test_periods_tile_time(
    interval: PeriodInterval,
    count: int,
    anchor_kind: PeriodAnchor,
    tz: str,
    anchor: datetime,
    at: datetime,
) -> None:
    """Any instant is in exactly one period; the next starts where it ends, the previous ends
    where it starts (no gap, no overlap, no duplicate), whatever the zone and anchor."""
    rule = PeriodRule(interval, count, anchor_kind, tz)
    p = period_at(rule, anchor, at)
    assert p.start <= at < p.end
    assert period_at(rule, anchor, p.end).start == p.end
    before = period_at(rule, anchor, p.start - timedelta(microseconds=1))
    assert before.end == p.start
    zone = ZoneInfo(tz)
    if anchor_kind is PeriodAnchor.CALENDAR and interval is not PeriodInterval.WEEK:
        local = p.start.astimezone(zone)
        assert local.day == 1 or interval is PeriodInterval.DAY


def test_rule_parsing_rejects_bad_input_naming_the_field() -> None:
    bad = [
        "monthly",
        {"interval": "fortnight"},
        {"interval": "month", "count": 0},
        {"interval": "month", "count": True},
        {"interval": "month", "anchor": "SOMETIMES"},
        {"interval": "month", "timezone": "Mars/Olympus"},
        {"interval": "month", "every": 2},
    ]
    for raw in bad:
        with pytest.raises(UsagePeriodInvalid) as info:
            PeriodRule.parse(raw)
        assert info.value.field is Field.USAGE_PERIOD
    rule = PeriodRule.parse({"interval": "MONTH", "timezone": "Europe/Paris"})
    assert rule_from_json(rule.to_json()) == rule


def test_rollover_closes_each_missed_period_in_order() -> None:
    rule = monthly(PeriodAnchor.CALENDAR)
    plan = plan_rollover(
        rule, utc(2026, 1, 1), utc(2026, 1, 1), utc(2026, 2, 1), 7, 2, utc(2026, 4, 15)
    )
    assert plan is not None
    assert [(c.start, c.end, c.uses_at_open, c.uses_at_close) for c in plan.closed] == [
        (utc(2026, 1, 1), utc(2026, 2, 1), 2, 7),
        (utc(2026, 2, 1), utc(2026, 3, 1), 0, 0),
        (utc(2026, 3, 1), utc(2026, 4, 1), 0, 0),
    ]
    assert (plan.start, plan.end, plan.uses) == (utc(2026, 4, 1), utc(2026, 5, 1), 0)


def test_rollover_is_none_inside_the_period_and_opens_a_missing_one() -> None:
    rule = monthly(PeriodAnchor.CALENDAR)
    start, end = utc(2026, 1, 1), utc(2026, 2, 1)
    assert plan_rollover(rule, start, start, end, 3, 0, utc(2026, 1, 31, 23)) is None
    assert plan_rollover(None, start, None, None, 3, 0, utc(2026, 1, 5)) is None
    opened = plan_rollover(rule, start, None, None, 3, 0, utc(2026, 1, 5))
    assert opened is not None
    assert (opened.closed, opened.start, opened.end, opened.uses, opened.open_uses) == (
        (),
        utc(2026, 1, 5),
        end,
        3,
        3,
    )


def test_rollover_of_a_removed_rule_closes_the_last_period_and_opens_none() -> None:
    start, end = utc(2026, 1, 1), utc(2026, 2, 1)
    plan = plan_rollover(None, start, start, end, 4, 0, utc(2026, 3, 2))
    assert plan is not None
    assert len(plan.closed) == 1
    assert (plan.start, plan.end, plan.uses) == (None, None, 0)
