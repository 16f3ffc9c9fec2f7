"""Reconciliation: what a closed usage period counted, what the bridge delivered to a sink, and
what the platform holds, compared. Pure functions; the service feeds them.

For one (period, sink):

- **ledger**: the period's usage changes this sink bills (its policy and decrement filters);
- **delivered**: those of them whose outbox row for the sink is delivered;
- **platform**: what the platform reports for the license's mapping over the period, event by
  event where it can list events (Lago), else as a total (m3ter's usage query).

A period is ``ok`` when everything billed was delivered and the platform holds exactly that.
Otherwise the finding says where it differs: ``undelivered`` (still in the outbox or dead),
``missing`` (delivered, absent at the platform), ``unknown`` (at the platform, not in the ledger),
or only the totals when the platform reports totals.
"""

from __future__ import annotations

import calendar
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from bridge.domain.delivery import LicenseFacts
from bridge.domain.errors import ReconcileWindowInvalid
from bridge.domain.validation import instant_in_range

MAX_LISTED = 1000  # ids kept per finding; the counts stay exact


class WindowField(StrEnum):
    START = "start"  # periods that started in the window (the CLI's --period / --from --to)
    END = "end"  # periods that ended in the window (the daily run)


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    field: WindowField = WindowField.START

    @classmethod
    def parse(cls, period: str | None, start: str | None = None, end: str | None = None) -> Window:
        """``--period YYYY-MM`` (a calendar month in UTC) or ``--from`` and ``--to``
        (ISO-8601 dates or date-times, UTC when no offset is given)."""
        try:
            if period is not None:
                if start is not None or end is not None:
                    raise ValueError("period excludes from/to")
                year, month = (int(part) for part in period.split("-"))
                first = datetime(year, month, 1, tzinfo=UTC)
                days = calendar.monthrange(year, month)[1]
                window = cls(first, first + timedelta(days=days))
            elif start is None or end is None:
                raise ValueError("both from and to are needed")
            else:
                window = cls(_instant(start), _instant(end))
        except (ValueError, OverflowError):
            raise ReconcileWindowInvalid from None
        if not (instant_in_range(window.start) and instant_in_range(window.end)):
            raise ReconcileWindowInvalid("from and to must lie between the years 1900 and 9000")
        if window.start >= window.end:
            raise ReconcileWindowInvalid("from must be before to")
        return window

    @classmethod
    def ended_within(cls, now: datetime, days: int) -> Window:
        return cls(now - timedelta(days=days), now, WindowField.END)


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ClosedPeriodRef:
    id: int
    license_id: str
    start: datetime
    end: datetime
    license: LicenseFacts | None  # None when the license was deleted since


@dataclass(frozen=True, slots=True)
class LedgerChange:
    """One usage change of a period as the reconciler sees it for one sink."""

    entry_id: str
    delta: int
    occurred_at: datetime
    delivered: bool


@dataclass(frozen=True, slots=True)
class PlatformView:
    """What a platform holds for one license over one period."""

    total: int
    count: int
    values: dict[str, int] | None = None  # event id -> value, when events can be listed


@dataclass(frozen=True, slots=True)
class Finding:
    ledger_total: int
    ledger_count: int
    delivered_total: int
    delivered_count: int
    undelivered_count: int
    platform_total: int | None
    platform_count: int | None
    missing: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()
    to_resend: tuple[str, ...] = field(default=(), compare=False)
    unrepairable: int = 0
    unchecked: bool = False  # the platform could not be read

    @property
    def status(self) -> str:
        """``ok``, ``mismatch``, or ``unchecked`` (the bridge agrees with itself, but the
        platform could not be asked)."""
        if self.undelivered_count or self.missing or self.unknown:
            return MISMATCH
        if self.platform_total is not None and (self.platform_total, self.platform_count) != (
            self.delivered_total,
            self.delivered_count,
        ):
            return MISMATCH
        return UNCHECKED if self.unchecked else OK


OK, MISMATCH, UNCHECKED = "ok", "mismatch", "unchecked"


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """A stored finding: one closed period of one license, against one sink."""

    period_id: int
    license_id: str
    sink: str
    period_start: datetime
    period_end: datetime
    status: str
    ledger_total: int
    ledger_count: int
    delivered_total: int
    delivered_count: int
    undelivered_count: int
    platform_total: int | None
    platform_count: int | None
    missing: tuple[str, ...]
    unknown: tuple[str, ...]
    repaired: int
    unrepairable: int  # lost changes outside the platform's dedupe window: never resent
    checked_at: datetime
    resendable: int = 0  # lost changes inside it: what a repair resends (or resent)
    late: int = 0  # offline records dated inside the period that arrived after it closed


def compare(
    changes: Sequence[LedgerChange],
    platform: PlatformView | None,
    *,
    now: datetime,
    dedupe_window: timedelta | None,
    unchecked: bool = False,
) -> Finding:
    """The finding for one (period, sink), and what a repair may resend.

    A repair resends only inside the platform's dedupe window (``dedupe_window``, counted from
    the change's own time, which is never later than its first delivery): there a resend is
    counted at most once whatever the platform already holds. Outside it, nothing is resent and
    the changes are counted in ``unrepairable``. ``dedupe_window=None``: the sink cannot be
    repaired by resending.
    """
    delivered = [c for c in changes if c.delivered]
    finding = Finding(
        ledger_total=sum(c.delta for c in changes),
        ledger_count=len(changes),
        delivered_total=sum(c.delta for c in delivered),
        delivered_count=len(delivered),
        undelivered_count=len(changes) - len(delivered),
        platform_total=platform.total if platform is not None else None,
        platform_count=platform.count if platform is not None else None,
        unchecked=unchecked,
    )
    if platform is None:
        return finding
    if platform.values is not None:
        known = {c.entry_id for c in changes}
        lost = [c for c in delivered if c.entry_id not in platform.values]
        unknown = sorted(i for i in platform.values if i not in known)
    elif platform.total < finding.delivered_total or platform.count < len(delivered):
        # Only totals: which change is missing is unknown, so all of them are candidates;
        # the platform's dedupe makes resending those it has harmless.
        lost, unknown = list(delivered), []
    else:
        lost, unknown = [], []
    window = dedupe_window
    resendable = [c for c in lost if window is not None and now - c.occurred_at < window]
    listed = lost if platform.values is not None else []
    return dataclasses.replace(
        finding,
        missing=tuple(c.entry_id for c in listed[:MAX_LISTED]),
        unknown=tuple(unknown[:MAX_LISTED]),
        to_resend=tuple(c.entry_id for c in resendable),
        unrepairable=len(lost) - len(resendable),
    )
