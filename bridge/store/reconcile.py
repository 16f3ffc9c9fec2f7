"""Reconciliation: its findings table, and its reads of closed periods in a window and of their
usage changes with each change's delivery to a sink.

SQLAlchemy Core (``bridge.store.tables``); the rows it joins from the ledger and the licenses
go through those modules' mappers, and the repair's re-enqueue is the outbox's statement.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, literal, select
from sqlalchemy.engine import Connection

from bridge.domain.delivery import OutboxStatus
from bridge.domain.model import UsageEntry, UsageKind
from bridge.domain.reconcile import ClosedPeriodRef, Finding, Reconciliation, Window, WindowField
from bridge.store.ledger import entry_from_row
from bridge.store.licenses import facts_from_row
from bridge.store.outbox import SqlOutbox
from bridge.store.tables import ledger, licenses, outbox, periods
from bridge.store.tables import reconciliations as results

_BILLABLE = (UsageKind.INCREMENT.value, UsageKind.DECREMENT.value)


def _in_window(window: Window) -> Any:
    column = periods.c.period_start if window.field is WindowField.START else periods.c.period_end
    return and_(column >= window.start, column < window.end)


class SqlReconciliation:
    def __init__(self, conn: Connection, outbox: SqlOutbox) -> None:
        self._conn = conn
        self._outbox = outbox

    def count_periods(self, window: Window) -> int:
        query = select(func.count()).select_from(periods).where(_in_window(window))
        return int(self._conn.execute(query).scalar_one())

    def periods(self, window: Window, after_id: int, limit: int) -> list[ClosedPeriodRef]:
        """Closed periods in ``window`` with ids above ``after_id``, by id (keyset paging)."""
        query = (
            select(
                periods.c.id,
                periods.c.license_id,
                periods.c.period_start,
                periods.c.period_end,
                licenses.c.key,
                licenses.c.policy_id,
                licenses.c.metadata,
            )
            .outerjoin(licenses, licenses.c.id == periods.c.license_id)
            .where(_in_window(window), periods.c.id > after_id)
            .order_by(periods.c.id)
            .limit(limit)
        )
        return [
            ClosedPeriodRef(
                id=r["id"],
                license_id=r["license_id"],
                start=r["period_start"],
                end=r["period_end"],
                license=facts_from_row(r),
            )
            for r in self._conn.execute(query).mappings()
        ]

    def changes(
        self, period_ids: Sequence[int], sink: str
    ) -> dict[int, list[tuple[UsageEntry, bool]]]:
        """The billable changes of each period, each with whether it reached ``sink``."""
        query = (
            select(periods.c.id.label("period_id"), ledger, outbox.c.status.label("delivery"))
            .join(
                ledger,
                and_(
                    ledger.c.license_id == periods.c.license_id,
                    ledger.c.occurred_at >= periods.c.period_start,
                    ledger.c.occurred_at < periods.c.period_end,
                ),
            )
            .outerjoin(outbox, and_(outbox.c.entry_id == ledger.c.id, outbox.c.sink == sink))
            .where(
                periods.c.id.in_(list(period_ids)),
                ledger.c.kind.in_(_BILLABLE),
                ledger.c.delta != 0,
            )
            .order_by(ledger.c.seq)
        )
        # Delivered items older than the sink's purge watermark may have been deleted (the
        # retention purge): a change without its item from before then was delivered.
        purged_before = self._outbox.purged_before().get(sink)
        found: dict[int, list[tuple[UsageEntry, bool]]] = defaultdict(list)
        for r in self._conn.execute(query).mappings():
            entry = entry_from_row(r)
            delivered = r["delivery"] == OutboxStatus.DELIVERED.value or (
                r["delivery"] is None
                and purged_before is not None
                and entry.occurred_at < purged_before
            )
            found[r["period_id"]].append((entry, delivered))
        return found

    def save(
        self, period: ClosedPeriodRef, sink: str, finding: Finding, repaired: int, now: datetime
    ) -> None:
        """Replace the period's finding for ``sink`` (the latest run is the one kept)."""
        self._conn.execute(
            delete(results).where(results.c.period_id == period.id, results.c.sink == sink)
        )
        self._conn.execute(
            insert(results).values(
                period_id=period.id,
                license_id=period.license_id,
                sink=sink,
                period_start=period.start,
                period_end=period.end,
                ledger_total=finding.ledger_total,
                ledger_count=finding.ledger_count,
                delivered_total=finding.delivered_total,
                delivered_count=finding.delivered_count,
                undelivered_count=finding.undelivered_count,
                platform_total=finding.platform_total,
                platform_count=finding.platform_count,
                missing=list(finding.missing),
                unknown=list(finding.unknown),
                repaired=repaired,
                unrepairable=finding.unrepairable,
                resendable=len(finding.to_resend),
                # Late records (``bridge.domain.checkin``) are counted on the period's record.
                late=select(periods.c.late_entries)
                .where(periods.c.id == period.id)
                .scalar_subquery(),
                status=finding.status,
                checked_at=now,
            )
        )

    def requeue(self, entry_ids: Sequence[str], sink: str, now: datetime) -> int:
        """Delivered items of these entries back to pending, due now (the outbox's statement)."""
        return self._outbox.requeue_delivered(entry_ids, sink, now)

    def results(
        self,
        window: Window | None,
        sink: str | None,
        status: str | None,
        *,
        offset: int,
        limit: int,
    ) -> tuple[list[Reconciliation], int]:
        conditions: list[Any] = [literal(True)]
        if window is not None:
            column = (
                results.c.period_start
                if window.field is WindowField.START
                else results.c.period_end
            )
            conditions += [column >= window.start, column < window.end]
        if sink is not None:
            conditions.append(results.c.sink == sink)
        if status is not None:
            conditions.append(results.c.status == status)
        where = and_(*conditions)
        query = (
            select(results)
            .where(where)
            .order_by(results.c.period_start, results.c.license_id, results.c.sink)
            .offset(offset)
            .limit(limit)
        )
        rows = [
            Reconciliation(
                period_id=r["period_id"],
                license_id=r["license_id"],
                sink=r["sink"],
                period_start=r["period_start"],
                period_end=r["period_end"],
                status=r["status"],
                ledger_total=r["ledger_total"],
                ledger_count=r["ledger_count"],
                delivered_total=r["delivered_total"],
                delivered_count=r["delivered_count"],
                undelivered_count=r["undelivered_count"],
                platform_total=r["platform_total"],
                platform_count=r["platform_count"],
                missing=tuple(r["missing"]),
                unknown=tuple(r["unknown"]),
                repaired=r["repaired"],
                unrepairable=r["unrepairable"],
                resendable=r["resendable"],
                checked_at=r["checked_at"],
                late=r["late"],
            )
            for r in self._conn.execute(query).mappings()
        ]
        total = self._conn.execute(select(func.count()).select_from(results).where(where))
        return rows, int(total.scalar_one())
