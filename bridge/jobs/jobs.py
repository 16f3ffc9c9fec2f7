"""The scheduled jobs, each run by one replica at a time (``bridge.store.locks``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import TypeVar

import structlog

from bridge.domain.ports import Clock, UnitOfWorkFactory
from bridge.domain.reconcile import Window
from bridge.service.keygen import CheckSummary, KeygenRelay
from bridge.service.machines import MachineService
from bridge.service.periods import close_due_periods
from bridge.service.reconcile import Reconciler, RunSummary
from bridge.service.retention import purge_outbox, purge_webhooks

log = structlog.get_logger(__name__)

T = TypeVar("T")
_REAP_BATCH = 1000
_PURGE_BATCH = 10_000
LockFactory = Callable[[str], AbstractContextManager[bool]]


class Jobs:
    def __init__(
        self,
        uows: UnitOfWorkFactory,
        clock: Clock,
        locks: LockFactory,
        reconciler: Reconciler,
        machines: MachineService,
        *,
        lookback_days: int,
        close_batch: int = 5000,
        close_workers: int = 1,
        key_retention_days: int = 30,
        outbox_retention: Mapping[str, timedelta] | None = None,
        webhook_retention: timedelta = timedelta(days=30),
        purge_batch: int = 5000,
        keygen: KeygenRelay | None = None,
        keygen_close_limit: int = 50,
    ) -> None:
        self._outbox_retention = dict(outbox_retention or {})
        self._webhook_retention = webhook_retention
        self._purge_batch = purge_batch
        self._keygen = keygen
        self._keygen_close_limit = keygen_close_limit
        self._key_retention_days = key_retention_days
        self._close_batch = close_batch
        self._close_workers = close_workers
        self._machines = machines
        self._uows = uows
        self._clock = clock
        self._locks = locks
        self._reconciler = reconciler
        self._lookback_days = lookback_days

    def close_periods(self) -> int | None:
        """Close every due usage period; ``None`` if another replica is at it. Licenses mirrored
        from Keygen are checked against Keygen's API first (a bounded number per run)."""
        return self._exclusive("close-periods", self._close_all)

    def _close_all(self) -> int:
        closed = 0
        if self._keygen is not None:
            closed += self._keygen.close_due(self._keygen_close_limit).closed
        return closed + close_due_periods(
            self._uows, self._clock, batch=self._close_batch, workers=self._close_workers
        )

    def keygen(self) -> CheckSummary | None:
        """The Keygen relay's job: the resets of closed periods, then the periodic check."""
        keygen = self._keygen
        if keygen is None:
            return None
        return self._exclusive("keygen", keygen.run)

    def reap_machines(self) -> int | None:
        """Deactivate every machine whose heartbeat is overdue, freeing its cores."""
        return self._exclusive("reap-machines", self._reap_all)

    def _reap_all(self) -> int:
        total = 0
        while (reaped := self._machines.reap_dead_machines(limit=_REAP_BATCH)) > 0:
            total += reaped
            if reaped < _REAP_BATCH:
                break
        return total

    def purge_idempotency_keys(self) -> int | None:
        """Forget Idempotency-Key answers older than the retention: a retry that late is
        treated as a new request."""
        return self._exclusive("purge-idempotency-keys", self._purge_keys)

    def _purge_keys(self) -> int:
        before = self._clock.now() - timedelta(days=self._key_retention_days)
        total = 0
        while True:  # a transaction a batch: the usage path keeps writing meanwhile
            with self._uows(write=True) as uow:
                purged = uow.idempotency.purge(before, _PURGE_BATCH)
                uow.commit()
            total += purged
            if purged < _PURGE_BATCH:
                return total

    def purge_outbox(self) -> int | None:
        """Delete the delivered outbox items past their sink's retention."""
        return self._exclusive(
            "purge-outbox",
            lambda: purge_outbox(
                self._uows, self._clock, self._outbox_retention, batch=self._purge_batch
            ),
        )

    def purge_webhooks(self) -> int | None:
        """Delete the webhook deliveries handled for good past their retention."""
        return self._exclusive(
            "purge-webhooks",
            lambda: purge_webhooks(
                self._uows, self._clock, self._webhook_retention, batch=self._purge_batch
            ),
        )

    def reconcile_recent(self) -> RunSummary | None:
        """Reconcile the periods that ended in the last ``lookback_days`` (report only: a
        repair is an operator's decision, ``meterbridge reconcile --repair``)."""
        window = Window.ended_within(self._clock.now(), self._lookback_days)
        return self._exclusive("reconcile", lambda: self._reconciler.run(window))

    def _exclusive(self, name: str, job: Callable[[], T]) -> T | None:
        with self._locks(name) as mine:
            if not mine:
                log.info("job_skipped", job=name, reason="another replica is running it")
                return None
            return job()
