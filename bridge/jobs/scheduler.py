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


def triggers(settings: Settings) -> dict[str, tuple[str, Any]]:
    """Each job's name, its schedule in words and its trigger (APScheduler's), in the order
    they are added."""
    every_close = settings.scheduler.close_interval_s
    every_reap = settings.machines.reap_interval_s
    purge = settings.scheduler.purge_cron
    purge_trigger = CronTrigger.from_crontab(purge, timezone=UTC)
    reconcile = settings.scheduler.reconcile_cron
    jobs: dict[str, tuple[str, Any]] = {
        "close-periods": (
            f"every {every_close:g}s",
            IntervalTrigger(seconds=every_close, timezone=UTC),
        ),
        "reap-machines": (
            f"every {every_reap:g}s",
            IntervalTrigger(seconds=every_reap, timezone=UTC),
        ),
        "purge-idempotency-keys": (f"cron {purge}", purge_trigger),
        "purge-outbox": (f"cron {purge}", purge_trigger),
        "purge-webhooks": (f"cron {purge}", purge_trigger),
        "reconcile": (f"cron {reconcile}", CronTrigger.from_crontab(reconcile, timezone=UTC)),
    }
    if settings.keygen.enabled:
        every_keygen = settings.keygen.check_interval_s
        jobs["keygen"] = (
            f"every {every_keygen:g}s",
            IntervalTrigger(seconds=every_keygen, timezone=UTC),
        )
    return jobs


def build_scheduler(jobs: Jobs, settings: Settings, *, blocking: bool) -> BaseScheduler:
    """Period closing and machine reaping every minute (and at start-up); the purges
    (Idempotency-Keys, delivered outbox items, handled webhooks) and reconciliation daily."""
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(
        timezone=UTC,
        # A run missed while the process was busy or down is run once, not once per miss.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    now = datetime.now(UTC)
    run: dict[str, Callable[[], Any]] = {
        "close-periods": jobs.close_periods,
        "reap-machines": jobs.reap_machines,
        "purge-idempotency-keys": jobs.purge_idempotency_keys,
        "purge-outbox": jobs.purge_outbox,
        "purge-webhooks": jobs.purge_webhooks,
        "reconcile": jobs.reconcile_recent,
        "keygen": jobs.keygen,
    }
    for name, (_words, trigger) in triggers(settings).items():
        at_start = isinstance(trigger, IntervalTrigger)  # catch up at once after downtime
        scheduler.add_job(
            _logged(name, run[name]),
            trigger,
            id=name,
            **({"next_run_time": now} if at_start else {}),
        )
    return scheduler
