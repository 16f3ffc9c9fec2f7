"""Usage periods: the lazy rollover of a usage change, and the job that closes idle licenses.

A license's ``uses`` is always the count of its current period. The first usage change after a
boundary closes the old period in its own transaction (``roll_period``), so no timer decides
what a period holds. The scheduled job (``close_due_periods``) only closes, soon after each
boundary, the periods of licenses that saw no change since; it writes exactly what the lazy
rollover would have written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import structlog

from bridge.domain.model import License
from bridge.domain.periods import PeriodRule
from bridge.domain.ports import Clock, PeriodWriter, StoreConflict, UnitOfWorkFactory

log = structlog.get_logger(__name__)


def roll_period(periods: PeriodWriter, license: License, now: datetime, closed_by: str) -> License:
    """``license`` with its usage period brought up to ``now``, written through ``periods``."""
    rollover = license.rollover(now)
    if rollover is None:
        return license
    periods.roll([(license, rollover)], now, closed_by)
    return license.rolled(rollover)


def parse_rule(value: PeriodRule | dict[str, Any] | None) -> PeriodRule | None:
    """A rule as the API sends it (an object or null), or one already parsed."""
    if value is None or isinstance(value, PeriodRule):
        return value
    return PeriodRule.parse(value, "/data/attributes/usagePeriod")


def open_periods(periods: PeriodWriter, licenses: Sequence[License], now: datetime) -> None:
    """Open a usage period at ``now`` for each license that has a rule but no period yet."""
    plans = [(lic, r) for lic in licenses if (r := lic.rollover(now)) is not None]
    if plans:
        periods.roll(plans, now, "usage")


def close_due_periods(
    uows: UnitOfWorkFactory,
    clock: Clock,
    *,
    batch: int = 2000,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Close every usage period that has ended, in order per license, a batch per transaction.

    Returns how many periods were closed. Safe beside usage changes and other closers: a
    license rolled over concurrently fails the batch on its guard, and the batch is re-read.
    """
    closed = 0
    conflicts = 0
    while True:
        now = clock.now()
        try:
            with uows(write=True) as uow:
                due = uow.periods.due(now, batch)
                plans = [(lic, r) for lic in due if (r := lic.rollover(now)) is not None]
                if not plans:
                    break
                uow.periods.roll(plans, now, "scheduler")
                uow.commit()
        except StoreConflict:
            conflicts += 1
            if conflicts > 10:
                raise
            continue
        count = sum(len(r.closed) for _, r in plans)
        closed += count
        if progress is not None:
            progress(count)
    if closed:
        log.info("periods.closed", periods=closed)
    return closed
