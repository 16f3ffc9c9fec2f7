"""Usage periods: the lazy rollover of a usage change, and the job that closes due periods.

The words are those of ``bridge.domain.periods``. A license's ``uses`` is always the count of
its open period. The first usage change after a boundary rolls the license over in its own
transaction (``roll_over``), so no timer decides what a period holds. The scheduled job
(``close_due_periods``) rolls over, soon after each boundary, the licenses whose period is due
and that saw no change since; it writes exactly what the lazy rollover would have written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import structlog

from bridge.domain.model import License
from bridge.domain.periods import PeriodState
from bridge.domain.ports import Clock, PeriodWriter, UnitOfWorkFactory
from bridge.observability import metrics

log = structlog.get_logger(__name__)


def roll_over(periods: PeriodWriter, license: License, now: datetime, closed_by: str) -> License:
    """``license`` rolled over to ``now`` (if it is due), the rollover written to ``periods``."""
    rollover = license.rollover(now)
    if rollover is None:
        return license
    periods.write([(license.period_state, rollover)], now, closed_by)
    # Counted when written: a change that then fails (rolled back) counts a close that the
    # next change or the job makes again; rare enough for a rate.
    metrics.periods_closed(closed_by, len(rollover.closed))
    return license.rolled_over(rollover)


def open_periods(periods: PeriodWriter, states: Sequence[PeriodState], now: datetime) -> None:
    """Open a usage period at ``now`` for each license that has a rule but no period yet."""
    plans = [(state, r) for state in states if (r := state.rollover(now)) is not None]
    if plans:
        periods.write(plans, now, "usage")


def close_due_periods(
    uows: UnitOfWorkFactory,
    clock: Clock,
    *,
    batch: int = 5000,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Close every due usage period (ended by now): roll each such license over, a batch per
    transaction; ``workers`` transactions at a time (PostgreSQL; SQLite has one writer).

    Returns how many periods were closed. Safe beside usage changes and other closers: a
    license gone stale between read and write fails its guard and is left out (a usage change
    rolled it over, or the next run reads it afresh).
    """
    now = clock.now()
    closed = 0

    def close(states: list[PeriodState]) -> int:
        with uows(write=True) as uow:
            plans = [(state, r) for state in states if (r := state.rollover(now)) is not None]
            count = uow.periods.write(plans, now, "scheduler", skip_stale=True) if plans else 0
            uow.commit()
        if progress is not None and count:
            progress(count)
        return count

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="close-periods") as pool:
        pending: deque[Future[int]] = deque()
        after: tuple[datetime, str] | None = None
        while True:
            with uows() as uow:
                due = uow.periods.due(now, batch, after)
            if not due:
                break
            last = due[-1]
            assert last.end is not None, "a due license has a period end"
            after = (last.end, last.license_id)
            pending.append(pool.submit(close, due))
            while len(pending) > workers:  # bounded: at most ``workers`` batches ahead
                closed += pending.popleft().result()
        while pending:
            closed += pending.popleft().result()
    if closed:
        metrics.periods_closed("scheduler", closed)
        log.info("periods_closed", periods=closed)
    return closed
