"""Handling stored webhook deliveries: the sibling of the outbox relay, on the same claim and
lease machinery (``SKIP LOCKED`` on PostgreSQL), so several workers share the inbox.

Each delivery is handled in one transaction that also records its outcome, fenced by its claim:
its effects are written at most once, however often it is delivered or claimed. A handling
failure is retried with exponential backoff; after ``max_attempts`` the delivery is parked
(``failed``) until ``webhooks replay``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from bridge.domain.model import License
from bridge.domain.periods import ClosedPeriod, Rollover, period_at
from bridge.domain.ports import Clock, UnitOfWork, UnitOfWorkFactory
from bridge.domain.webhooks import DeliveryStatus, WebhookDelivery, WebhookEffect
from bridge.observability import metrics
from bridge.webhooks.rules import LICENSE_ACTIONS, Action, Instruction, actions_for, interpret

log = structlog.get_logger(__name__)

CLOSED_BY = "webhook"
# Reads the platform's current billing period of a subscription (Lago), when one is wired.
PeriodReader = Callable[[str], tuple[datetime, datetime] | None]
# Handles a provider's deliveries itself (the Keygen relay), in the delivery's transaction.
Handler = Callable[[UnitOfWork, WebhookDelivery], tuple[DeliveryStatus, list[str]]]


@dataclass(frozen=True, slots=True)
class WebhookPolicy:
    batch_size: int = 20
    lease_s: float = 60.0
    max_attempts: int = 8
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    idle_s: float = 0.5


class Unhandled(Exception):
    """A delivery whose claim was taken over: its transaction is rolled back."""


class WebhookWorker:
    def __init__(
        self,
        uows: UnitOfWorkFactory,
        clock: Clock,
        rules: Mapping[str, Mapping[str, str]],
        policy: WebhookPolicy,
        *,
        readers: Mapping[str, PeriodReader] | None = None,
        handlers: Mapping[str, Handler] | None = None,
    ) -> None:
        self.handlers = dict(handlers or {})
        self.uows = uows
        self.clock = clock
        self.rules = rules  # provider kind -> overrides of the default rules
        self.policy = policy
        self.readers = dict(readers or {})

    def run_once(self) -> int:
        """Handle one batch of due deliveries; returns how many were claimed."""
        now = self.clock.now()
        with self.uows(write=True) as uow:
            claimed = uow.webhooks.claim(
                now, now + timedelta(seconds=self.policy.lease_s), self.policy.batch_size
            )
            uow.commit()
        for delivery in claimed:
            self._handle(delivery)
        return len(claimed)

    def run(self, stop: threading.Event) -> None:
        log.info("webhook_worker_started")
        while not stop.is_set():
            try:
                handled = self.run_once()
            except Exception:  # the store is down, say: stay alive and try again
                log.exception("webhook_pass_failed")
                handled = 0
            if not handled:
                stop.wait(self.policy.idle_s)
        log.info("webhook_worker_stopped")

    def _handle(self, delivery: WebhookDelivery) -> None:
        bound = {"provider": delivery.provider, "delivery": delivery.id}
        try:
            with self.uows(write=True) as uow:
                status, effects = self._apply(uow, delivery)
                fenced = uow.webhooks.finish(
                    delivery.id,
                    status,
                    now=self.clock.now(),
                    effects=effects,
                    attempt=delivery.attempts,
                )
                if not fenced:
                    raise Unhandled
                uow.commit()
            metrics.webhook_delivery(delivery.provider, status.value)
            log.info("webhook_handled", status=status.value, **bound)
        except Unhandled:
            log.warning("webhook_claim_lost", **bound)
        except Exception as exc:
            self._failed(delivery, exc)

    def _failed(self, delivery: WebhookDelivery, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:1000]
        now = self.clock.now()
        parked = delivery.attempts >= self.policy.max_attempts
        delay = min(
            self.policy.retry_cap_s, self.policy.retry_base_s * 2 ** (delivery.attempts - 1)
        )
        with self.uows(write=True) as uow:
            uow.webhooks.finish(
                delivery.id,
                DeliveryStatus.FAILED if parked else DeliveryStatus.RECEIVED,
                now=now,
                next_attempt_at=now + timedelta(seconds=delay),
                error=error,
                attempt=delivery.attempts,
            )
            uow.commit()
        metrics.webhook_delivery(delivery.provider, "failed" if parked else "retried")
        log.warning(
            "webhook_parked" if parked else "webhook_retry",
            provider=delivery.provider,
            delivery=delivery.id,
            attempts=delivery.attempts,
            error=type(exc).__name__,
        )

    # the rules ---------------------------------------------------------------------------
    def _apply(self, uow: UnitOfWork, d: WebhookDelivery) -> tuple[DeliveryStatus, list[str]]:
        kind = d.provider.split("/", 1)[0]
        handler = self.handlers.get(kind)
        if handler is not None:
            return handler(uow, d)
        actions = actions_for(d.provider, d.event_type, self.rules.get(kind, {}))
        if not actions:
            return DeliveryStatus.IGNORED, [f"no rule for {d.event_type}"]
        event = json.loads(d.body)
        ins = interpret(d.provider, d.event_type, event, actions)
        if ins.skip is not None:
            return DeliveryStatus.IGNORED, [ins.skip]
        effects: list[str] = []
        if Action.REJECT_ENTRIES in actions:
            reason = f"{d.provider} {d.event_type} ({d.delivery_id}): {ins.note}"
            per_license = uow.outbox.reject_after_acceptance(ins.transaction_ids, kind, reason)
            now = self.clock.now()
            for license_id, count in sorted(per_license.items()):
                detail = f"{count} delivered items rejected after acceptance: {ins.note}"
                uow.webhook_licenses.record_effect(
                    WebhookEffect(
                        license_id,
                        d.id,
                        d.provider,
                        d.delivery_id,
                        Action.REJECT_ENTRIES.value,
                        detail,
                        now,
                    )
                )
            effects.append(
                f"rejected_after_acceptance: {sum(per_license.values())} outbox items of "
                f"{len(ins.transaction_ids)} transaction ids"
            )
        on_license = [a for a in actions if a in LICENSE_ACTIONS]
        if not on_license:
            return DeliveryStatus.APPLIED, effects
        if d.subject is None:
            return DeliveryStatus.UNMATCHED, [*effects, "the event names no subscription"]
        ids = uow.webhook_licenses.licenses_for(d.provider, d.subject)
        if not ids:
            return DeliveryStatus.UNMATCHED, [*effects, f"no license maps to {d.subject}"]
        now = self.clock.now()
        for license_id in ids:
            uow.licenses.lock(license_id)
            license = uow.licenses.get(license_id)
            if license is None:
                continue
            for action in on_license:
                detail, license = self._act(uow, license, action, ins, d, now)
                uow.webhook_licenses.record_effect(
                    WebhookEffect(
                        license.id, d.id, d.provider, d.delivery_id, action.value, detail, now
                    )
                )
                effects.append(f"{license.id}: {action.value}: {detail}")
        return DeliveryStatus.APPLIED, effects

    def _act(
        self,
        uow: UnitOfWork,
        license: License,
        action: Action,
        ins: Instruction,
        d: WebhookDelivery,
        now: datetime,
    ) -> tuple[str, License]:
        if action is Action.SUSPEND or action is Action.REINSTATE:
            suspended = action is Action.SUSPEND
            if license.suspended == suspended:
                return ("already suspended" if suspended else "not suspended"), license
            if not suspended and not self._suspended_by(uow, license, d):
                return "suspended by hand or another provider; left suspended", license
            license = dataclasses.replace(license, suspended=suspended, updated=now)
            uow.licenses.update(license)
            return ("suspended" if suspended else "reinstated"), license
        if action is Action.FLAG or action is Action.RECORD:
            return ins.note or d.event_type, license
        if action is Action.CLOSE_PERIOD:
            return self._close(uow, license, ins.boundary, ins.end, now)
        assert action is Action.ALIGN_PERIOD
        start, end = ins.start, ins.end
        reader = self.readers.get(d.provider)
        if reader is not None and d.subject is not None:
            # The platform's current state, not the event's: deliveries may come out of order.
            read = reader(d.subject)
            if read is not None:
                start, end = read
        return self._align(uow, license, start, end, now)

    @staticmethod
    def _suspended_by(uow: UnitOfWork, license: License, d: WebhookDelivery) -> bool:
        """Whether this provider's webhook suspended the license (its latest change of
        suspension): a reinstatement never lifts a suspension an operator made."""
        for effect in reversed(uow.webhook_licenses.effects(license.id)):
            if effect.detail in ("suspended", "reinstated"):
                return effect.detail == "suspended" and effect.provider == d.provider
        return False

    def _close(
        self,
        uow: UnitOfWork,
        license: License,
        boundary: datetime | None,
        next_end: datetime | None,
        now: datetime,
    ) -> tuple[str, License]:
        """Close the open period at ``boundary``: exactly once, whoever closes first (the
        unique period key and the old-end guard make a second close impossible)."""
        state = license.period_state
        if boundary is None:
            return "the event gives no period boundary", license
        if boundary > now:
            return f"boundary {boundary.isoformat()} is in the future; not closed", license
        if state.start is None or state.end is None:
            return "the license has no open usage period", license
        if boundary <= state.start:
            return f"period already closed at {state.start.isoformat()}", license
        if boundary >= state.end:  # the local boundary came first: the usual rollover
            rollover = license.rollover(now)
            if rollover is None:
                return "period current", license
        else:
            following = next_end if next_end is not None and next_end > boundary else None
            if following is None and state.rule is not None:
                following = period_at(state.rule, state.anchor, boundary).end
            closed = ClosedPeriod(state.start, boundary, state.open_uses, state.uses)
            start = boundary if following is not None else None
            rollover = Rollover((closed,), start, following, 0, 0)
        uow.periods.write([(state, rollover)], now, CLOSED_BY)
        closed_at = rollover.closed[-1].end.isoformat()
        return f"period closed at {closed_at}", license.rolled_over(rollover)

    def _align(
        self,
        uow: UnitOfWork,
        license: License,
        start: datetime | None,
        end: datetime | None,
        now: datetime,
    ) -> tuple[str, License]:
        """The license's usage period becomes the platform's [start, end)."""
        if start is None or end is None or end <= start:
            return "the subscription has no current billing period", license
        state = license.period_state
        if (state.start, state.end) == (start, end):
            return "already aligned", license
        if state.start is not None and state.start < start <= now:
            return self._close(uow, license, start, end, now)
        if state.end is None:
            rollover = Rollover((), start, end, state.uses, state.uses)
            uow.periods.write([(state, rollover)], now, CLOSED_BY)
            license = license.rolled_over(rollover)
        elif uow.periods.align(license.id, state.end, start, end):
            license = dataclasses.replace(license, period_start=start, period_end=end)
        else:
            raise RuntimeError("the license went stale while aligning its period")  # retried
        return f"period aligned to {start.isoformat()} .. {end.isoformat()}", license
