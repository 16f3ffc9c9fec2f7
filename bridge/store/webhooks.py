"""The webhook inbox: verified deliveries, unique per (provider, delivery id)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from bridge.domain.model import License
from bridge.domain.webhooks import (
    DeliveryStatus,
    NewDelivery,
    SubjectMapper,
    WebhookDelivery,
    WebhookEffect,
)
from bridge.store.tables import webhook_deliveries as deliveries
from bridge.store.tables import webhook_effects as effects
from bridge.store.tables import webhook_subjects as subjects


def _delivery(row: RowMapping) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        provider=row["provider"],
        delivery_id=row["delivery_id"],
        event_type=row["event_type"],
        status=DeliveryStatus(row["status"]),
        subject=row["subject"],
        body=row["body"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        last_error=row["last_error"],
        received_at=row["received_at"],
        handled_at=row["handled_at"],
        effects=tuple(row["effects"] or ()),
    )


class SqlWebhookInbox:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(self, delivery: NewDelivery, now: datetime) -> WebhookDelivery:
        values: dict[str, Any] = {
            "provider": delivery.provider,
            "delivery_id": delivery.delivery_id,
            "event_type": delivery.event_type,
            "status": DeliveryStatus.RECEIVED,
            "subject": delivery.subject,
            "body": delivery.body,
            "attempts": 0,
            "next_attempt_at": now,
            "effects": [],
            "received_at": now,
        }
        dialect = postgresql if self._conn.dialect.name == "postgresql" else sqlite
        # A concurrent insert of the same key waits for the first, then does nothing.
        self._conn.execute(dialect.insert(deliveries).values(values).on_conflict_do_nothing())
        query = select(deliveries).where(
            deliveries.c.provider == delivery.provider,
            deliveries.c.delivery_id == delivery.delivery_id,
        )
        return _delivery(self._conn.execute(query).mappings().one())

    def get(self, id: int) -> WebhookDelivery | None:
        row = self._conn.execute(select(deliveries).where(deliveries.c.id == id)).mappings().first()
        return _delivery(row) if row is not None else None

    def search(
        self, provider: str | None, status: DeliveryStatus | None, *, offset: int, limit: int
    ) -> list[WebhookDelivery]:
        query = select(deliveries)
        if provider is not None:
            query = query.where(deliveries.c.provider == provider)
        if status is not None:
            query = query.where(deliveries.c.status == status)
        query = query.order_by(deliveries.c.id.desc()).offset(offset).limit(limit)
        return [_delivery(r) for r in self._conn.execute(query).mappings()]

    def claim(self, now: datetime, lease_until: datetime, limit: int) -> list[WebhookDelivery]:
        due = or_(
            deliveries.c.status == DeliveryStatus.RECEIVED,
            deliveries.c.status == DeliveryStatus.INFLIGHT,
        )
        ids = list(
            self._conn.execute(
                select(deliveries.c.id)
                .where(and_(due, deliveries.c.next_attempt_at <= now))
                .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not ids:
            return []
        self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id.in_(ids))
            .values(
                status=DeliveryStatus.INFLIGHT,
                next_attempt_at=lease_until,
                attempts=deliveries.c.attempts + 1,
            )
        )
        query = select(deliveries).where(deliveries.c.id.in_(ids)).order_by(deliveries.c.id)
        return [_delivery(r) for r in self._conn.execute(query).mappings()]

    def finish(
        self,
        id: int,
        status: DeliveryStatus,
        *,
        now: datetime,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
        effects: Sequence[str] = (),
        attempt: int | None = None,
    ) -> bool:
        values: dict[str, Any] = {"status": status, "last_error": error, "effects": list(effects)}
        if status == DeliveryStatus.RECEIVED:
            values["next_attempt_at"] = next_attempt_at or now
        else:
            values["handled_at"] = now
        query = update(deliveries).where(deliveries.c.id == id)
        if attempt is not None:  # the claim's fence: still ours, not re-claimed after its lease
            query = query.where(
                deliveries.c.status == DeliveryStatus.INFLIGHT, deliveries.c.attempts == attempt
            )
        return bool(self._conn.execute(query.values(values)).rowcount)

    def requeue(self, id: int, now: datetime) -> bool:
        result = self._conn.execute(
            update(deliveries)
            .where(deliveries.c.id == id, deliveries.c.status != DeliveryStatus.INFLIGHT)
            .values(status=DeliveryStatus.RECEIVED, next_attempt_at=now, attempts=0)
        )
        return bool(result.rowcount)

    def purge_handled(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` deliveries handled for good (applied, ignored) and received
        before ``before``, oldest first; their effects stay (the licenses' webhook history).
        Unmatched and failed ones wait for an operator and are kept."""
        oldest = (
            select(deliveries.c.id)
            .where(
                deliveries.c.received_at < before,
                deliveries.c.status.in_((DeliveryStatus.APPLIED, DeliveryStatus.IGNORED)),
            )
            .order_by(deliveries.c.received_at)
            .limit(limit)
        )
        ids = list(self._conn.execute(oldest).scalars())
        if not ids:
            return 0
        self._conn.execute(delete(deliveries).where(deliveries.c.id.in_(ids)))
        return len(ids)

    def counts(self) -> dict[tuple[str, str], int]:
        """How many deliveries each (provider, status) has."""
        query = select(deliveries.c.provider, deliveries.c.status, func.count()).group_by(
            deliveries.c.provider, deliveries.c.status
        )
        return {(p, st): int(n) for p, st, n in self._conn.execute(query)}


class SqlSubjectIndex:
    """webhook_subjects, written with each license (``put``/``drop``), read by key."""

    def __init__(self, conn: Connection, *, mapper: SubjectMapper | None) -> None:
        self._conn = conn
        self._mapper = mapper

    def put(self, license: License) -> None:
        if self._mapper is None:
            return
        self.drop(license.id)
        rows = [
            {"provider": p, "subject": s[:255], "license_id": license.id}
            for p, s in dict.fromkeys(self._mapper(license))
        ]
        if rows:
            self._conn.execute(insert(subjects), rows)

    def drop(self, license_id: str) -> None:
        if self._mapper is not None:
            self._conn.execute(delete(subjects).where(subjects.c.license_id == license_id))


class SqlWebhookLicenses:
    """What the webhook handler reads and writes about licenses."""

    def __init__(self, conn: Connection, *, index: SqlSubjectIndex) -> None:
        self._conn = conn
        self._index = index

    def licenses_for(self, provider: str, subject: str) -> list[str]:
        query = (
            select(subjects.c.license_id)
            .where(subjects.c.provider == provider, subjects.c.subject == subject)
            .order_by(subjects.c.license_id)
        )
        return list(self._conn.execute(query).scalars())

    def reindex(self, licenses: Sequence[License]) -> None:
        for license in licenses:
            self._index.put(license)

    def record_effect(self, effect: WebhookEffect) -> None:
        self._conn.execute(
            insert(effects).values(
                license_id=effect.license_id,
                delivery=effect.delivery,
                provider=effect.provider,
                delivery_id=effect.delivery_id,
                action=effect.action,
                detail=effect.detail,
                at=effect.at,
            )
        )

    def effects(self, license_id: str) -> list[WebhookEffect]:
        query = select(effects).where(effects.c.license_id == license_id).order_by(effects.c.id)
        return [
            WebhookEffect(
                r["license_id"],
                r["delivery"],
                r["provider"],
                r["delivery_id"],
                r["action"],
                r["detail"],
                r["at"],
            )
            for r in self._conn.execute(query).mappings()
        ]
