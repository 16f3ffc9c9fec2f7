"""The Keygen relay's tables: the mirrored licenses, their usage snapshots (read back as the
domain's ``Timeline``) and the Keygen reset of each closed period. SQLAlchemy Core.

The one statement on another table is the mirrored counter's change (``add_uses``): a Keygen
delta is never checked against a limit (Keygen's is the one that counts), only against the
open usage period it is timestamped in, like every change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, insert, literal, not_, or_, select, update
from sqlalchemy.engine import Connection, RowMapping

from bridge.domain.keygen import (
    KeygenReset,
    KeygenStatus,
    Mirror,
    ResetStatus,
    Snapshot,
    SnapshotSource,
    Version,
)
from bridge.store.tables import keygen_licenses as mirrors
from bridge.store.tables import keygen_resets as resets
from bridge.store.tables import keygen_snapshots as snapshots
from bridge.store.tables import licenses, periods

_MIRROR_FIELDS = (
    "license_id",
    "baseline",
    "max_uses",
    "keygen_uses",
    "keygen_updated",
    "forwarded",
    "corrections",
    "corrected",
    "mirrored_at",
    "last_delivery_at",
    "last_check_at",
    "next_check_at",
    "deleted_at",
)


def _mirror(row: RowMapping) -> Mirror:
    return Mirror(**{name: row[name] for name in _MIRROR_FIELDS})


def _reset(row: RowMapping) -> KeygenReset:
    return KeygenReset(
        id=row["id"],
        license_id=row["license_id"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        status=ResetStatus(row["status"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        uses_before=row["uses_before"],
        reset_at=row["reset_at"],
        last_error=row["last_error"],
        created=row["created"],
        done_at=row["done_at"],
    )


class SqlTimeline:
    """One license's snapshots as the domain's ``Timeline`` (``ix_keygen_snapshots_order``)."""

    def __init__(self, conn: Connection, license_id: str) -> None:
        self._conn = conn
        self._of = snapshots.c.license_id == license_id

    def resets_around(self, version: Version) -> tuple[Version | None, Version | None]:
        is_reset = and_(self._of, snapshots.c.reset.is_(True))
        low = self._conn.execute(
            select(func.max(snapshots.c.version)).where(
                is_reset, snapshots.c.version <= version.key
            )
        ).scalar()
        high = self._conn.execute(
            select(func.min(snapshots.c.version)).where(is_reset, snapshots.c.version > version.key)
        ).scalar()
        return (Version(low) if low else None), (Version(high) if high else None)

    def last_between(self, low: Version | None, high: Version | None) -> Snapshot | None:
        query = select(snapshots.c.version, snapshots.c.uses).where(
            self._of, snapshots.c.reset.is_(False)
        )
        if low is not None:
            query = query.where(snapshots.c.version >= low.key)
        if high is not None:
            query = query.where(snapshots.c.version < high.key)
        query = query.order_by(snapshots.c.version.desc(), snapshots.c.id.desc()).limit(1)
        row = self._conn.execute(query).mappings().first()
        return None if row is None else Snapshot(Version(row["version"]), row["uses"])

    def has_reset(self, version: Version) -> bool:
        query = select(literal(1)).where(
            self._of, snapshots.c.reset.is_(True), snapshots.c.version == version.key
        )
        return self._conn.execute(query).first() is not None


class SqlKeygen:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # mirrors ------------------------------------------------------------------------------
    def mirror(self, license_id: str) -> Mirror | None:
        row = (
            self._conn.execute(select(mirrors).where(mirrors.c.license_id == license_id))
            .mappings()
            .first()
        )
        return None if row is None else _mirror(row)

    def put_mirror(self, mirror: Mirror) -> None:
        values = {name: getattr(mirror, name) for name in _MIRROR_FIELDS}
        done = self._conn.execute(
            update(mirrors).where(mirrors.c.license_id == mirror.license_id).values(values)
        )
        if done.rowcount == 0:
            self._conn.execute(insert(mirrors).values(values))

    def first_mirrored_at(self) -> datetime | None:
        found: datetime | None = self._conn.execute(
            select(func.min(mirrors.c.mirrored_at))
        ).scalar()
        return found

    def checks_due(self, now: datetime, limit: int) -> list[str]:
        """Mirrored licenses whose check is due, the longest waiting first."""
        query = (
            select(mirrors.c.license_id)
            .where(mirrors.c.next_check_at <= now, mirrors.c.deleted_at.is_(None))
            .order_by(mirrors.c.next_check_at, mirrors.c.license_id)
            .limit(limit)
        )
        return list(self._conn.execute(query).scalars())

    def periods_due(self, now: datetime, limit: int) -> list[str]:
        """Mirrored licenses (not deleted in Keygen) whose usage period has ended."""
        query = (
            select(licenses.c.id)
            .join(mirrors, mirrors.c.license_id == licenses.c.id)
            .where(licenses.c.period_end <= now, mirrors.c.deleted_at.is_(None))
            .order_by(licenses.c.period_end, licenses.c.id)
            .limit(limit)
        )
        return list(self._conn.execute(query).scalars())

    # snapshots ----------------------------------------------------------------------------
    def timeline(self, license_id: str) -> SqlTimeline:
        return SqlTimeline(self._conn, license_id)

    def record_snapshot(
        self,
        license_id: str,
        snap: Snapshot,
        source: SnapshotSource,
        delta: int,
        now: datetime,
    ) -> None:
        self._conn.execute(
            insert(snapshots).values(
                license_id=license_id,
                version=snap.version.key,
                uses=snap.uses,
                reset=snap.reset,
                source=source.value,
                delta=delta,
                recorded_at=now,
            )
        )

    def add_uses(self, license_id: str, delta: int, at: datetime) -> int | None:
        """The mirrored license's counter plus ``delta``, if its open period holds ``at``."""
        in_period = or_(
            licenses.c.period_end.is_(None),
            and_(licenses.c.period_start <= at, licenses.c.period_end > at),
        )
        statement = (
            update(licenses)
            .where(licenses.c.id == license_id, in_period)
            .values(uses=licenses.c.uses + delta, updated=at)
            .returning(licenses.c.uses)
        )
        found = self._conn.execute(statement).scalar()
        return None if found is None else int(found)

    # resets -------------------------------------------------------------------------------
    def plan_resets(self, now: datetime, limit: int) -> int:
        """A pending reset for each closed period of a mirrored license that has none (closed
        after the license was mirrored); returns how many were planned."""
        missing = (
            select(periods.c.license_id, periods.c.period_start, periods.c.period_end)
            .join(mirrors, mirrors.c.license_id == periods.c.license_id)
            .where(
                periods.c.period_end > mirrors.c.mirrored_at,
                mirrors.c.deleted_at.is_(None),
                not_(
                    exists().where(
                        resets.c.license_id == periods.c.license_id,
                        resets.c.period_start == periods.c.period_start,
                    )
                ),
            )
            .order_by(periods.c.period_end)
            .limit(limit)
        )
        rows = list(self._conn.execute(missing).mappings())
        for row in rows:
            self._conn.execute(
                insert(resets).values(
                    license_id=row["license_id"],
                    period_start=row["period_start"],
                    period_end=row["period_end"],
                    status=ResetStatus.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created=now,
                )
            )
        return len(rows)

    def resets_due(self, now: datetime, limit: int) -> list[KeygenReset]:
        query = (
            select(resets)
            .where(resets.c.status == ResetStatus.PENDING.value, resets.c.next_attempt_at <= now)
            .order_by(resets.c.next_attempt_at, resets.c.id)
            .limit(limit)
        )
        return [_reset(r) for r in self._conn.execute(query).mappings()]

    def reset(self, reset_id: int) -> KeygenReset | None:
        row = self._conn.execute(select(resets).where(resets.c.id == reset_id)).mappings().first()
        return None if row is None else _reset(row)

    def later_reset(self, license_id: str, period_end: datetime) -> bool:
        """Whether a later period of the license has a reset planned or made."""
        query = select(literal(1)).where(
            resets.c.license_id == license_id, resets.c.period_end > period_end
        )
        return self._conn.execute(query).first() is not None

    def update_reset(self, reset_id: int, **values: Any) -> None:
        self._conn.execute(update(resets).where(resets.c.id == reset_id).values(**values))

    def own_reset(self, license_id: str, at: datetime) -> bool:
        """Whether the bridge made the reset Keygen stamped ``at`` (its answer said so), or has
        one in flight for a period that ended by then (its answer was lost)."""
        query = select(literal(1)).where(
            resets.c.license_id == license_id,
            or_(
                resets.c.reset_at == at,
                and_(
                    resets.c.status == ResetStatus.PENDING.value,
                    resets.c.attempts > 0,
                    resets.c.period_end <= at,
                ),
            ),
        )
        return self._conn.execute(query).first() is not None

    def resets_of(self, license_id: str) -> list[KeygenReset]:
        query = select(resets).where(resets.c.license_id == license_id).order_by(resets.c.id)
        return [_reset(r) for r in self._conn.execute(query).mappings()]

    # status -------------------------------------------------------------------------------
    def status(self, now: datetime) -> KeygenStatus:
        row = self._conn.execute(
            select(
                func.count(),
                func.count(mirrors.c.deleted_at),
                func.max(mirrors.c.last_delivery_at),
                func.max(mirrors.c.last_check_at),
                func.coalesce(func.sum(mirrors.c.corrections), 0),
                func.coalesce(func.sum(mirrors.c.corrected), 0),
                func.coalesce(func.sum(mirrors.c.forwarded), 0),
                func.count().filter(
                    and_(mirrors.c.next_check_at <= now, mirrors.c.deleted_at.is_(None))
                ),
            )
        ).one()
        by_status = self._conn.execute(
            select(resets.c.status, func.count()).group_by(resets.c.status)
        ).all()
        return KeygenStatus(
            mirrored=row[0],
            deleted=row[1],
            last_delivery_at=row[2],
            last_check_at=row[3],
            corrections=int(row[4]),
            corrected=int(row[5]),
            forwarded=int(row[6]),
            resets={str(status): int(count) for status, count in by_status},
            checks_due=row[7],
        )

    def mirrors(self, *, offset: int, limit: int) -> list[Mirror]:
        query = select(mirrors).order_by(mirrors.c.mirrored_at, mirrors.c.license_id)
        rows = self._conn.execute(query.offset(offset).limit(limit)).mappings()
        return [_mirror(r) for r in rows]
