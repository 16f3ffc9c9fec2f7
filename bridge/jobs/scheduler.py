"""The APScheduler 3 scheduler of the scheduled jobs: inside ``serve`` (in the background) or
alone as ``meterbridge scheduler`` (in the foreground).

The interval jobs also run at start-up, so a scheduler that was down catches up at once: the
period job closes every period that fell due meanwhile, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge.jobs.jobs import Jobs
from bridge.settings import Settings

log = structlog.get_logger(__name__)


def _logged(name: str, job: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with structlog.contextvars.bound_contextvars(job=name):  # on every line of the run
            try:
                result = job()
            except Exception:  # a failed run is logged and retried at the next trigger
                log.exception("job_failed")
                return
            log.debug("job_finished", result=result)

    return run


def build_scheduler(jobs: Jobs, settings: Settings, *, blocking: bool) -> BaseScheduler:
    """Period closing and machine reaping every minute; the key purge and reconciliation
    daily."""
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(
        timezone=UTC,
        # A run missed while the process was busy or down is run once, not once per miss.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    now = datetime.now(UTC)
    scheduler.add_job(
        _logged("close-periods", jobs.close_periods),
        IntervalTrigger(seconds=settings.scheduler.close_interval_s, timezone=UTC),
        id="close-periods",
        next_run_time=now,
    )
    scheduler.add_job(
        _logged("reap-machines", jobs.reap_machines),
        IntervalTrigger(seconds=settings.machines.reap_interval_s, timezone=UTC),
        id="reap-machines",
        next_run_time=now,
    )
    scheduler.add_job(
        _logged("purge-idempotency-keys", jobs.purge_idempotency_keys),
        CronTrigger.from_crontab(settings.scheduler.purge_cron, timezone=UTC),
        id="purge-idempotency-keys",
    )
    scheduler.add_job(
        _logged("reconcile", jobs.reconcile_recent),
        CronTrigger.from_crontab(settings.scheduler.reconcile_cron, timezone=UTC),
        id="reconcile",
    )
    if settings.keygen.enabled:
        scheduler.add_job(
            _logged("keygen", jobs.keygen),
            IntervalTrigger(seconds=settings.keygen.check_interval_s, timezone=UTC),
            id="keygen",
            next_run_time=now,
        )
    return scheduler
