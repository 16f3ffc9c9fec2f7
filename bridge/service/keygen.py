"""The Keygen relay: Keygen's usage, mirrored and forwarded exactly once, and Keygen's counters
reset at each period close.

- ``handle``: a stored ``/v1/webhooks/keygen`` delivery, inside the webhook worker's
  transaction: the license is mirrored (product, policy and license rows with Keygen's ids,
  metadata under both key spellings), its snapshot recorded, and the delta it brings
  (``bridge.domain.keygen.change``) written to the ledger and the outbox like any change.
- ``check``: the periodic check, paced under Keygen's rate limits: reads the licenses with recent
  activity and, slowly, the rest; a difference is forwarded as a correction (actor
  ``keygen:correction``).
- ``close_due``: the period-close hook: a mirrored license whose period has ended is checked
  first (so its last changes count in the period they were made in), then closed.
- ``reset_due``: the Keygen reset of each closed period (``reset-usage``), retried on 409, 429
  (after ``Retry-After``) and outages; made once; recorded with the period.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import structlog

from bridge.domain.delivery import forwarded
from bridge.domain.errors import KeygenRefused, KeygenUnavailable, Transient
from bridge.domain.keygen import (
    DocumentInvalid,
    KeygenApi,
    KeygenDelivery,
    KeygenEvent,
    KeygenLicense,
    KeygenReset,
    KeygenStatus,
    Mirror,
    ResetStatus,
    Snapshot,
    SnapshotSource,
    Version,
    both_cases,
    change,
    read_delivery,
    read_license,
)
from bridge.domain.model import (
    ExpirationBasis,
    License,
    OverageStrategy,
    Policy,
    Product,
    UsageEntry,
    UsageKind,
)
from bridge.domain.periods import PeriodRule
from bridge.domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from bridge.domain.webhooks import DeliveryStatus, WebhookDelivery
from bridge.service.periods import roll_over

log = structlog.get_logger(__name__)

ACTOR = "keygen"  # a delta a webhook brought
CORRECTION_ACTOR = "keygen:correction"  # a delta the check found (a delivery was lost)
CLOSED_BY = "keygen"  # a period the relay closed (after its pre-close check)
_ACTED_ON = frozenset(e.value for e in KeygenEvent)


class MirrorRefused(Exception):
    """The license cannot be mirrored (a local license has its key)."""


class RaceLost(Exception, Transient):
    """The license's period closed under the change: the transaction is retried."""


@dataclass(frozen=True, slots=True)
class KeygenPolicy:
    usage_period: PeriodRule | None = None  # given to each Keygen policy when first mirrored
    requests_per_s: float = 1.0
    check_interval_s: float = 300.0
    sweep_s: float = 86400.0
    checks_per_run: int = 200
    reset_retry_base_s: float = 2.0
    reset_retry_cap_s: float = 600.0


@dataclass
class CheckSummary:
    checked: int = 0
    corrections: int = 0
    corrected: int = 0
    gone: int = 0
    failed: int = 0
    stopped: str | None = None  # why the run stopped early (rate limited, unavailable)
    closed: int = 0
    resets_done: int = 0
    resets_pending: int = 0
    details: list[str] = field(default_factory=list)


class KeygenRelay:
    def __init__(
        self,
        uows: UnitOfWorkFactory,
        clock: Clock,
        sinks: Sequence[str],
        api: KeygenApi | None,
        policy: KeygenPolicy,
        *,
        sleep: Callable[[float], object] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._uows = uows
        self._clock = clock
        self._sinks = tuple(sinks)
        self._api = api
        self.policy = policy
        self._stop = stop or threading.Event()
        self._sleep = sleep or self._stop.wait
        self._last_call: float | None = None

    # webhooks --------------------------------------------------------------------------
    def handle(self, uow: UnitOfWork, d: WebhookDelivery) -> tuple[DeliveryStatus, list[str]]:
        """One stored delivery, in the worker's transaction (its outcome is fenced with it)."""
        try:
            delivery = read_delivery(json.loads(d.body))
        except (DocumentInvalid, ValueError) as exc:
            return DeliveryStatus.IGNORED, [f"unreadable: {exc}"]
        if delivery.event not in _ACTED_ON:
            return DeliveryStatus.IGNORED, [f"no rule for {delivery.event}"]
        try:
            kl = read_license(delivery.payload)
        except DocumentInvalid as exc:
            return DeliveryStatus.IGNORED, [f"the payload is not a license: {exc}"]
        now = self._clock.now()
        if delivery.event == KeygenEvent.DELETED:
            return DeliveryStatus.APPLIED, [self._deleted(uow, kl.id, now)]
        try:
            mirror = self._mirror(uow, kl, now, created=delivery.event == KeygenEvent.CREATED)
        except MirrorRefused as exc:
            return DeliveryStatus.UNMATCHED, [str(exc)]
        return DeliveryStatus.APPLIED, [self._observe_delivery(uow, mirror, kl, delivery, now)]

    def _observe_delivery(
        self,
        uow: UnitOfWork,
        mirror: Mirror,
        kl: KeygenLicense,
        delivery: KeygenDelivery,
        now: datetime,
    ) -> str:
        is_reset = delivery.event == KeygenEvent.RESET
        snap = Snapshot(Version.of(kl.updated, delivery.created, reset=is_reset), kl.uses, is_reset)
        delta = self._observe(uow, mirror, snap, SnapshotSource.WEBHOOK, now)
        if is_reset:
            own = uow.keygen.own_reset(kl.id, kl.updated)
            whose = "the bridge's own (period close)" if own else "made in Keygen"
            return f"{kl.id}: reset {whose}: the end of a count, not usage (forwarded {delta})"
        return f"{kl.id}: {delivery.event}: uses {kl.uses}, forwarded {delta}"

    def _deleted(self, uow: UnitOfWork, license_id: str, now: datetime) -> str:
        mirror = uow.keygen.mirror(license_id)
        if mirror is None:
            return f"{license_id}: deleted in Keygen; it was never mirrored"
        uow.keygen.put_mirror(replace(mirror, deleted_at=now, last_delivery_at=now))
        return f"{license_id}: deleted in Keygen; kept here for its history"

    # the mirror --------------------------------------------------------------------------
    def _mirror(
        self, uow: UnitOfWork, kl: KeygenLicense, now: datetime, *, created: bool
    ) -> Mirror:
        """The license's rows, created or brought up to date from Keygen's document."""
        policy = self._policy(uow, kl, now)
        uow.licenses.lock(kl.id)
        local = uow.licenses.get(kl.id)
        metadata = both_cases(kl.metadata)
        if local is None:
            if uow.licenses.key_exists(kl.key):
                raise MirrorRefused(f"{kl.id}: a local license has the key; not mirrored")
            license = License(
                id=kl.id,
                key=kl.key,
                name=kl.name,
                policy_id=policy.id,
                product_id=policy.product_id,
                uses=0,
                max_uses_override=None,
                protected=False,
                suspended=False,
                expiry=None,
                metadata=metadata,
                created=now,
                updated=now,
                terms=policy.terms,
            ).current(now)
            uow.licenses.add(license)
        else:
            changed = (local.key, local.name, local.policy_id, local.metadata) != (
                kl.key,
                kl.name,
                policy.id,
                metadata,
            )
            if changed:
                moved = local.replace(
                    key=kl.key, name=kl.name, policy_id=policy.id, metadata=metadata, updated=now
                )
                uow.licenses.update(moved.under(policy.terms))
        mirror = uow.keygen.mirror(kl.id)
        if mirror is None:
            epoch = uow.keygen.first_mirrored_at() or now
            # Usage from before the bridge listened is not the bridge's to forward.
            baseline = 0 if created or kl.created >= epoch else kl.uses
            mirror = Mirror(
                license_id=kl.id,
                baseline=baseline,
                max_uses=kl.max_uses,
                keygen_uses=baseline,
                keygen_updated=kl.updated,
                forwarded=0,
                corrections=0,
                corrected=0,
                mirrored_at=now,
                last_delivery_at=None,
                last_check_at=None,
                next_check_at=now + timedelta(seconds=self.policy.check_interval_s),
            )
        elif mirror.max_uses != kl.max_uses or mirror.deleted_at is not None:
            mirror = replace(mirror, max_uses=kl.max_uses, deleted_at=None)
        return mirror

    def _policy(self, uow: UnitOfWork, kl: KeygenLicense, now: datetime) -> Policy:
        policy = uow.policies.get(kl.policy_id)
        if policy is not None:
            return policy
        product_id = kl.product_id or "keygen"
        if uow.products.get(product_id) is None:
            uow.products.add(
                Product(
                    product_id, f"Keygen product {product_id}", None, {"keygen": True}, now, now
                )
            )
        policy = Policy(
            id=kl.policy_id,
            product_id=product_id,
            name=f"Keygen policy {kl.policy_id}",
            max_uses=None,  # Keygen's limit is the one that counts: the bridge never rejects
            max_machines=None,
            max_cores=None,
            floating=True,
            strict=False,
            overage_strategy=OverageStrategy.NO_OVERAGE,
            protected=False,
            duration=None,
            expiration_basis=ExpirationBasis.FROM_CREATION,
            metadata={"keygen": True},
            created=now,
            updated=now,
            usage_period=self.policy.usage_period,
        )
        uow.policies.add(policy)
        return policy

    # snapshots -> deltas ---------------------------------------------------------------
    def _observe(
        self, uow: UnitOfWork, mirror: Mirror, snap: Snapshot, source: SnapshotSource, now: datetime
    ) -> int:
        """Record ``snap`` and forward the delta it brings; saves the mirror."""
        license_id = mirror.license_id
        delta = change(uow.keygen.timeline(license_id), snap, mirror.baseline)
        uow.keygen.record_snapshot(license_id, snap, source, delta, now)
        if delta:
            self._forward(uow, license_id, delta, snap.version.updated, source, now)
        newer = snap.version.updated >= mirror.keygen_updated
        correction = source is SnapshotSource.CHECK and delta != 0
        mirror = replace(
            mirror,
            keygen_uses=snap.uses if newer else mirror.keygen_uses,
            keygen_updated=snap.version.updated if newer else mirror.keygen_updated,
            forwarded=mirror.forwarded + delta,
            corrections=mirror.corrections + correction,
            corrected=mirror.corrected + (delta if correction else 0),
        )
        if source is SnapshotSource.WEBHOOK:
            soon = now + timedelta(seconds=self.policy.check_interval_s)
            mirror = replace(
                mirror, last_delivery_at=now, next_check_at=min(mirror.next_check_at, soon)
            )
        else:
            sweep = now + timedelta(seconds=self.policy.sweep_s)
            mirror = replace(mirror, last_check_at=now, next_check_at=sweep)
        uow.keygen.put_mirror(mirror)
        return delta

    def _forward(
        self,
        uow: UnitOfWork,
        license_id: str,
        delta: int,
        keygen_at: datetime,
        source: SnapshotSource,
        now: datetime,
    ) -> None:
        """One ledger entry (and its outbox rows), timestamped at Keygen's time of the change,
        within the license's open period (a change learnt after its period closed counts in the
        next one) and never in the future."""
        license = uow.licenses.get(license_id)
        assert license is not None, "a mirrored license has its row"
        at = min(keygen_at, now)
        if license.period_start is not None and at < license.period_start:
            at = license.period_start
        license = roll_over(uow.periods, license, at, closed_by=CLOSED_BY)
        after = uow.keygen.add_uses(license_id, delta, at)
        if after is None:
            raise RaceLost(f"license {license_id}'s period closed under the change")
        entry = UsageEntry(
            id=str(uuid.uuid4()),
            license_id=license_id,
            kind=UsageKind.INCREMENT if delta > 0 else UsageKind.DECREMENT,
            delta=delta,
            uses_before=after - delta,
            uses_after=after,
            actor=CORRECTION_ACTOR if source is SnapshotSource.CHECK else ACTOR,
            idempotency_key=None,
            request_id=None,
            occurred_at=at,
        )
        uow.ledger.add(entry)
        if forwarded(entry):
            uow.outbox.add(entry, self._sinks)

    # Keygen's API ------------------------------------------------------------------------
    def _require_api(self) -> KeygenApi:
        if self._api is None:
            raise KeygenRefused("no [keygen] token is configured for Keygen's API", upstream=401)
        return self._api

    def _pace(self) -> None:
        """At most ``requests_per_s`` calls to Keygen's API."""
        gap = 1.0 / self.policy.requests_per_s
        now = self._clock.now().timestamp()
        if self._last_call is not None and now - self._last_call < gap:
            self._sleep(gap - (now - self._last_call))
        self._last_call = self._clock.now().timestamp()

    def check_one(self, license_id: str) -> tuple[int, bool]:
        """Read the license from Keygen and record what it says: (the correction forwarded,
        whether Keygen still has it). Raises ``KeygenUnavailable`` / ``KeygenRefused``."""
        api = self._require_api()
        self._pace()
        document = api.get_license(license_id)
        now = self._clock.now()
        for _ in range(8):
            try:
                with self._uows(write=True) as uow:
                    if document is None:
                        self._deleted(uow, license_id, now)
                        uow.commit()
                        return 0, False
                    kl = read_license(document)
                    mirror = self._mirror(uow, kl, now, created=False)
                    snap = Snapshot(Version.of(kl.updated, None), kl.uses)
                    delta = self._observe(uow, mirror, snap, SnapshotSource.CHECK, now)
                    uow.commit()
                    return delta, True
            except RaceLost:
                continue
        raise KeygenUnavailable(f"license {license_id} is too contended to check right now")

    def check(self, license_id: str | None = None) -> CheckSummary:
        """The periodic check (``license_id``: that one license, mirrored or not)."""
        summary = CheckSummary()
        if license_id is not None:
            ids = [license_id]
        else:
            with self._uows() as uow:
                ids = uow.keygen.checks_due(self._clock.now(), self.policy.checks_per_run)
        for lid in ids:
            if not self._checked(lid, summary):
                break
        if summary.checked or summary.stopped:
            log.info(
                "keygen_checked",
                checked=summary.checked,
                corrections=summary.corrections,
                stopped=summary.stopped,
            )
        return summary

    def _checked(self, license_id: str, summary: CheckSummary) -> bool:
        """Check one license into ``summary``; False when the run should stop."""
        if self._stop.is_set():
            summary.stopped = "stopping"
            return False
        try:
            delta, present = self.check_one(license_id)
        except KeygenUnavailable as exc:  # 429, 409, 5xx, down: the next run tries again
            summary.stopped = str(exc)
            return False
        except (KeygenRefused, DocumentInvalid, MirrorRefused) as exc:
            summary.failed += 1
            summary.details.append(f"{license_id}: {exc}")
            log.warning("keygen_check_failed", license_id=license_id, error=str(exc))
            return True
        summary.checked += 1
        summary.gone += not present
        if delta:
            summary.corrections += 1
            summary.corrected += delta
            summary.details.append(f"{license_id}: correction {delta:+d}")
            log.info("keygen_corrected", license_id=license_id, delta=delta)
        return True

    # periods ----------------------------------------------------------------------------
    def close_due(self, limit: int) -> CheckSummary:
        """Check, then close, the mirrored licenses whose usage period has ended (at most
        ``limit``; the scheduler closes the rest without the check)."""
        summary = CheckSummary()
        now = self._clock.now()
        with self._uows() as uow:
            due = uow.keygen.periods_due(now, limit)
        for license_id in due:
            if self._api is not None and summary.stopped is None:
                self._checked(license_id, summary)
            with self._uows(write=True) as uow:
                license = uow.licenses.get(license_id)
                if license is not None and license.rollover(now) is not None:
                    roll_over(uow.periods, license, now, closed_by=CLOSED_BY)
                    summary.closed += 1
                uow.commit()
        return summary

    def reset_due(self, limit: int = 100) -> CheckSummary:
        """Plan a reset for each newly closed period of a mirrored license, then make the due
        ones."""
        summary = CheckSummary()
        now = self._clock.now()
        with self._uows(write=True) as uow:
            uow.keygen.plan_resets(now, limit)
            uow.commit()
        with self._uows() as uow:
            due = uow.keygen.resets_due(now, limit)
        for reset in due:
            if self._stop.is_set():
                summary.stopped = "stopping"
                break
            outcome = self._reset_one(reset.id)
            if outcome is ResetStatus.DONE:
                summary.resets_done += 1
            elif outcome is ResetStatus.PENDING:
                summary.resets_pending += 1
                summary.stopped = "Keygen asked to wait"
                break
        return summary

    def _reset_one(self, reset_id: int) -> ResetStatus:
        now = self._clock.now()
        with self._uows(write=True) as uow:
            reset = uow.keygen.reset(reset_id)
            if reset is None or reset.status is not ResetStatus.PENDING:
                return ResetStatus.DONE
            mirror = uow.keygen.mirror(reset.license_id)
            if uow.keygen.later_reset(reset.license_id, reset.period_end):
                uow.keygen.update_reset(reset_id, status=ResetStatus.SUPERSEDED.value, done_at=now)
                uow.commit()
                return ResetStatus.SUPERSEDED
            timeline = uow.keygen.timeline(reset.license_id)
            seen, _ = timeline.resets_around(Version.of(now + timedelta(days=3650), None))
            if reset.attempts > 0 and seen is not None and seen.updated >= reset.period_end:
                # A reset after the period's end is known (its webhook came back, the answer
                # to the call was lost): the close already reset Keygen; never reset twice.
                uow.keygen.update_reset(
                    reset_id, status=ResetStatus.DONE.value, reset_at=seen.updated, done_at=now
                )
                uow.commit()
                return ResetStatus.DONE
            uow.keygen.update_reset(reset_id, attempts=reset.attempts + 1)
            uow.commit()
        if mirror is None or mirror.deleted_at is not None:
            return self._finish_reset(reset_id, ResetStatus.GONE, "deleted in Keygen")
        api = self._require_api()
        uses_before: int | None = None
        try:
            _, present = self.check_one(reset.license_id)  # the count it ends, exactly
            if not present:
                return self._finish_reset(reset_id, ResetStatus.GONE, "deleted in Keygen")
            with self._uows() as uow:
                current = uow.keygen.mirror(reset.license_id)
                uses_before = current.keygen_uses if current else None
            self._pace()
            document = api.reset_usage(reset.license_id)
        except KeygenUnavailable as exc:
            return self._retry_reset(reset, exc)
        except KeygenRefused as exc:
            if exc.upstream == 404:
                return self._finish_reset(reset_id, ResetStatus.GONE, str(exc))
            return self._retry_reset(reset, exc)
        kl = read_license(document)
        now = self._clock.now()
        with self._uows(write=True) as uow:
            mirror = uow.keygen.mirror(reset.license_id)
            assert mirror is not None
            snap = Snapshot(Version.of(kl.updated, None, reset=True), 0, reset=True)
            self._observe(uow, mirror, snap, SnapshotSource.RESET, now)
            uow.keygen.update_reset(
                reset_id,
                status=ResetStatus.DONE.value,
                reset_at=kl.updated,
                uses_before=uses_before,
                done_at=now,
                last_error=None,
            )
            uow.commit()
        log.info("keygen_reset", license_id=reset.license_id, uses_before=uses_before)
        return ResetStatus.DONE

    def _retry_reset(self, reset: KeygenReset, exc: Exception) -> ResetStatus:
        now = self._clock.now()
        wait = min(
            self.policy.reset_retry_cap_s,
            self.policy.reset_retry_base_s * 2 ** max(0, reset.attempts),
        )
        if isinstance(exc, KeygenUnavailable) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        with self._uows(write=True) as uow:
            uow.keygen.update_reset(
                reset.id,
                next_attempt_at=now + timedelta(seconds=wait),
                last_error=str(exc)[:1000],
            )
            uow.commit()
        log.warning("keygen_reset_deferred", license_id=reset.license_id, error=str(exc)[:200])
        return ResetStatus.PENDING

    def _finish_reset(self, reset_id: int, status: ResetStatus, error: str | None) -> ResetStatus:
        with self._uows(write=True) as uow:
            uow.keygen.update_reset(
                reset_id, status=status.value, done_at=self._clock.now(), last_error=error
            )
            uow.commit()
        return status

    # the scheduled job -------------------------------------------------------------------
    def run(self) -> CheckSummary:
        """Resets first (they end counts), then the check of the licenses whose turn it is."""
        resets = self.reset_due()
        summary = self.check() if self._api is not None else CheckSummary()
        summary.resets_done, summary.resets_pending = resets.resets_done, resets.resets_pending
        return summary


def status(uows: UnitOfWorkFactory, clock: Clock) -> KeygenStatus:
    with uows() as uow:
        return uow.keygen.status(clock.now())


def mirrors(uows: UnitOfWorkFactory, *, offset: int = 0, limit: int = 100) -> list[Mirror]:
    with uows() as uow:
        return uow.keygen.mirrors(offset=offset, limit=limit)
