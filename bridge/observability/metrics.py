"""The bridge's Prometheus metrics, and one small function per thing the code counts.

The metric objects are process-wide, as Prometheus clients expect: the code that counts calls
the functions below (``usage_change(...)``, ``delivered(...)``), never the objects, so names
and labels live in one place. What the store already knows (the outbox's depth and oldest item
per sink) is not counted here but read from the database at each scrape
(``bridge.observability.exposition``), so every process reports the same figure once.

Several processes (API replicas, a worker, a scheduler on one machine) share their counters
through the client's multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
before they start, and ``/metrics`` of any of them sums all of them. The client decides the
mode when it is first imported, so the variable must be in the environment, not set later;
``serve --workers N`` is the exception (``shared_directory``). There are no ``Gauge`` objects
here, so no gauge needs a multiprocess mode: the gauges (the outbox's depth) are read from the
store by the scraped process.

Labels are bounded: route templates (never raw paths), sink and provider names, status codes,
the domain's error codes and delivery reasons.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram, values

NAMESPACE = "bridge"

_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
    namespace=NAMESPACE,
)
_USAGE = Counter(
    "usage_changes",
    "Usage changes asked over the API, accepted or rejected (by error code)",
    ["action", "result", "code"],
    namespace=NAMESPACE,
)
_USAGE_CHILDREN: dict[tuple[str, str | None], Any] = {}
_DELIVERIES = Counter(
    "outbox_deliveries",
    "Outbox items handled by the relay: delivered, retried or dead, by reason",
    ["sink", "outcome", "reason"],
    namespace=NAMESPACE,
)
_LAG = Histogram(
    "delivery_lag_seconds",
    "From a change's acceptance to the platform's acknowledgement",
    ["sink"],
    namespace=NAMESPACE,
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
)
_CIRCUIT = Counter(
    "sink_circuit_opened",
    "Times a sink's circuit opened after failed batches in a row",
    ["sink"],
    namespace=NAMESPACE,
)
_PERIODS = Counter(
    "period_closes",
    "Usage periods closed, by who closed them (usage, scheduler, webhook)",
    ["closed_by"],
    namespace=NAMESPACE,
)
_FINDINGS = Counter(
    "reconciliation_findings",
    "Reconciled (period, license, sink) findings, by status (ok, mismatch, unchecked)",
    ["sink", "status"],
    namespace=NAMESPACE,
)
_DISCREPANCIES = Counter(
    "reconciliation_discrepancies",
    "Changes found to disagree by reconciliation: undelivered, missing at or unknown to the "
    "platform",
    ["sink", "kind"],
    namespace=NAMESPACE,
)
_WEBHOOKS = Counter(
    "webhook_deliveries",
    "Incoming webhook deliveries, by provider and outcome (received, duplicate, refused, "
    "applied, ignored, unmatched, retried, failed)",
    ["provider", "outcome"],
    namespace=NAMESPACE,
)
_CHECKINS = Counter(
    "checkin_records",
    "Check-in records, by result",
    ["result"],
    namespace=NAMESPACE,
)
_PURGED = Counter(
    "purged_rows",
    "Rows deleted by the retention purge, by table",
    ["table"],
    namespace=NAMESPACE,
)


def request(route: str, method: str, status: int) -> None:
    _REQUESTS.labels(route, method, str(status)).inc()


def usage_change(action: str, code: str | None) -> None:
    """A usage change over the API: accepted (``code`` None) or rejected with ``code``."""
    key = (action, code)
    child = _USAGE_CHILDREN.get(key)
    if child is None:  # ``labels`` costs more than the increment: one lookup per label set
        outcome, reason = ("accepted", "") if code is None else ("rejected", code)
        child = _USAGE_CHILDREN.setdefault(key, _USAGE.labels(action, outcome, reason))
    child.inc()


def deliveries(sink: str, outcome: str, reason: str, count: int) -> None:
    """``count`` items of ``sink`` delivered, retried or dead (``reason``, "" if delivered)."""
    if count:
        _DELIVERIES.labels(sink, outcome, reason).inc(count)


def delivery_lags(sink: str, seconds: Sequence[float]) -> None:
    """The lag of each item of a delivered batch, observed together: ``Histogram.observe``
    per item (its lock, its walk of the buckets, in multiprocess mode two file writes) cost
    about as much as delivering the item; here each bucket and the sum are bumped once per
    batch. The histogram keeps per-bucket (not cumulative) counts until it is collected."""
    child = _LAG.labels(sink)
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another client version
        for lag in seconds:
            child.observe(max(lag, 0.0))
        return
    counts = [0] * len(bounds)
    for lag in seconds:
        counts[bisect_left(bounds, lag)] += 1  # the first bucket whose bound is >= lag
    total.inc(sum(max(lag, 0.0) for lag in seconds))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


def circuit_opened(sink: str) -> None:
    _CIRCUIT.labels(sink).inc()


def periods_closed(closed_by: str, count: int) -> None:
    if count:
        _PERIODS.labels(closed_by).inc(count)


def reconciliation_finding(
    sink: str, status: str, *, undelivered: int, missing: int, unknown: int
) -> None:
    _FINDINGS.labels(sink, status).inc()
    for kind, count in (("undelivered", undelivered), ("missing", missing), ("unknown", unknown)):
        if count:
            _DISCREPANCIES.labels(sink, kind).inc(count)


def webhook_delivery(provider: str, outcome: str) -> None:
    _WEBHOOKS.labels(provider, outcome).inc()


def checkin_record(result: str) -> None:
    """One offline usage record of a check-in, by its result: ``accepted``, ``late`` (accepted
    into a period that had closed), ``duplicate`` or ``rejected``."""
    _CHECKINS.labels(result).inc()


def purged(table: str, count: int) -> None:
    if count:
        _PURGED.labels(table).inc(count)


_flushes: weakref.WeakSet[Any] = weakref.WeakSet()  # objects whose counts are buffered


def on_flush(flush: Callable[[], None]) -> None:
    """Have the bound method ``flush`` (of an object buffering counts on a hot path) run before
    each scrape of this process, for as long as its object lives."""
    _flushes.add(flush.__self__)  # type: ignore[attr-defined]


def flush() -> None:
    for buffered in list(_flushes):
        buffered.flush()


def http_requests_child(route: str, method: str, status: int) -> Any:
    """The counter of one (route, method, status), for the HTTP middleware to keep."""
    return _REQUESTS.labels(route, method, str(status))


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_ALL = (
    _REQUESTS,
    _USAGE,
    _DELIVERIES,
    _LAG,
    _CIRCUIT,
    _PERIODS,
    _FINDINGS,
    _DISCREPANCIES,
    _WEBHOOKS,
    _CHECKINS,
    _PURGED,
)


def multiprocess_dir() -> str | None:
    """The directory the processes share their metrics through, if multiprocess mode is on."""
    return os.environ.get(MULTIPROC_ENV) or None


@contextmanager
def shared_directory() -> Iterator[Path]:
    """Multiprocess mode for this process and the processes it starts from here on (``serve
    --workers N``: the API processes it spawns, and its own relay and scheduler).

    The operator's ``PROMETHEUS_MULTIPROC_DIR`` if set (created if missing, never emptied: other
    processes may be writing it); else a fresh private directory (mode 0700) that is removed
    when the block ends. A process that imported the client without the variable counts in
    memory, so it is switched to the files here: label children counted so far (none at
    start-up) are dropped, and each one created from now on writes its file."""
    given = multiprocess_dir()
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="meterbridge-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)  # inherited by the processes started from now on
    switched = not getattr(values.ValueClass, "_multiprocess", False)
    if switched:  # (a second value class on the same files would overwrite the first's)
        before = values.ValueClass
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        _clear()
    try:
        yield path
    finally:
        if switched:
            values.ValueClass = before
            _clear()
            values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]
        if not given:
            del os.environ[MULTIPROC_ENV]
            shutil.rmtree(path, ignore_errors=True)


def _clear() -> None:
    for metric in _ALL:
        metric.clear()
    _USAGE_CHILDREN.clear()  # its children were dropped with the rest


def process_exited(pid: int) -> None:
    """Drop a stopped process's live gauges (multiprocess mode; a no-op otherwise)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
