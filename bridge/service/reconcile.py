"""Reconciliation runs: every closed period in a window, against every sink (or one).

Periods are read a batch at a time (keyset paging) and each batch's findings are written in its
own transaction, so memory stays bounded whatever the window holds and an interrupted run keeps
what it finished. Platform reads happen outside any transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from bridge.domain.errors import NotFound
from bridge.domain.model import UsageEntry
from bridge.domain.ports import Clock, PlatformReader, PlatformUnavailable, Sink, UnitOfWorkFactory
from bridge.domain.reconcile import (
    MISMATCH,
    UNCHECKED,
    ClosedPeriodRef,
    Finding,
    LedgerChange,
    PlatformView,
    Reconciliation,
    Window,
    compare,
)
from bridge.observability import metrics
from bridge.service.common import Page, PageRequest

log = structlog.get_logger(__name__)

Progress = Callable[[int, int], None]  # (periods done, periods in the window)


@dataclass
class RunSummary:
    periods: int = 0
    checked: int = 0  # (period, sink) pairs
    ok: int = 0
    mismatched: int = 0
    unchecked: int = 0
    resent: int = 0
    resendable: int = 0  # lost changes inside the dedupe window: what --repair resends
    unrepairable: int = 0  # lost changes outside it
    by_sink: dict[str, int] = field(default_factory=dict)  # mismatches per sink


class Reconciler:
    def __init__(
        self,
        uows: UnitOfWorkFactory,
        clock: Clock,
        sinks: Sequence[Sink],
        readers: Mapping[str, PlatformReader],
        *,
        batch: int = 500,
    ) -> None:
        self._uows = uows
        self._clock = clock
        self._accepts = {s.name: s.accepts for s in sinks}  # the relay's own filter
        self._sinks = tuple(self._accepts)
        self._readers = dict(readers)
        self._batch = batch

    def run(
        self,
        window: Window,
        *,
        sink: str | None = None,
        repair: bool = False,
        progress: Progress | None = None,
    ) -> RunSummary:
        sinks = self._sinks if sink is None else (sink,)
        if sink is not None and sink not in self._sinks:
            raise NotFound.resource("sink", sink)
        summary = RunSummary()
        with self._uows() as uow:
            total = uow.reconciliation.count_periods(window)
        after = 0
        while True:
            with self._uows() as uow:
                batch = uow.reconciliation.periods(window, after, self._batch)
                changes = {s: uow.reconciliation.changes([p.id for p in batch], s) for s in sinks}
            if not batch:
                break
            after = batch[-1].id
            findings = [
                (period, s, self._check(period, s, changes[s].get(period.id, [])))
                for period in batch
                for s in sinks
            ]
            now = self._clock.now()
            with self._uows(write=True) as uow:
                for period, s, finding in findings:
                    resent = uow.reconciliation.requeue(finding.to_resend, s, now) if repair else 0
                    uow.reconciliation.save(period, s, finding, resent, now)
                    _count(summary, s, finding, resent, repair)
                uow.commit()
            summary.periods += len(batch)
            if progress is not None:
                progress(summary.periods, total)
        log.info(
            "reconciliation_finished",
            window_start=window.start.isoformat(),
            window_end=window.end.isoformat(),
            periods=summary.periods,
            mismatched=summary.mismatched,
            unchecked=summary.unchecked,
            resent=summary.resent,
            resendable=summary.resendable,
            unrepairable=summary.unrepairable,
        )
        return summary

    def _check(
        self, period: ClosedPeriodRef, sink: str, rows: list[tuple[UsageEntry, bool]]
    ) -> Finding:
        reader = self._readers.get(sink)
        accepts = self._accepts[sink]
        changes = [
            LedgerChange(entry.id, entry.delta, entry.occurred_at, delivered)
            for entry, delivered in rows
            if accepts(entry, period.license)
        ]
        platform: PlatformView | None = None
        unchecked = False
        if reader is not None:
            try:
                if period.license is None:
                    raise PlatformUnavailable("the license was deleted; its mapping is unknown")
                platform = reader.read(period.license, period.start, period.end)
            except PlatformUnavailable as exc:
                unchecked = True
                log.warning(
                    "reconciliation_unchecked", sink=sink, period=period.id, reason=str(exc)
                )
        finding = compare(
            changes,
            platform,
            now=self._clock.now(),
            dedupe_window=reader.dedupe_window if reader is not None else None,
            unchecked=unchecked,
        )
        if finding.status == MISMATCH:
            log.warning(
                "reconciliation_mismatched",
                sink=sink,
                license=period.license_id,
                period_start=period.start.isoformat(),
                ledger=finding.ledger_total,
                delivered=finding.delivered_total,
                platform=finding.platform_total,
                missing=len(finding.missing),
                unknown=len(finding.unknown),
            )
        return finding


def _count(summary: RunSummary, sink: str, finding: Finding, resent: int, repair: bool) -> None:
    metrics.reconciliation_finding(
        sink,
        finding.status,
        undelivered=finding.undelivered_count,
        missing=len(finding.missing),
        unknown=len(finding.unknown),
    )
    summary.checked += 1
    summary.resent += resent
    if not repair:
        summary.resendable += len(finding.to_resend)
    summary.unrepairable += finding.unrepairable
    if finding.status == MISMATCH:
        summary.mismatched += 1
        summary.by_sink[sink] = summary.by_sink.get(sink, 0) + 1
    elif finding.status == UNCHECKED:
        summary.unchecked += 1
    else:
        summary.ok += 1


def reconciliation_report(
    uows: UnitOfWorkFactory,
    window: Window | None,
    sink: str | None,
    status: str | None,
    page: PageRequest,
) -> Page[Reconciliation]:
    with uows() as uow:
        items, total = uow.reconciliation.results(
            window, sink, status, offset=page.offset, limit=page.size
        )
    return Page(items, total, page)
