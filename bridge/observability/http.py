"""The HTTP side of the metrics: a pure ASGI middleware that counts each answer by route
template and status, and the Prometheus exposition of everything counted.

The middleware costs one wrapped ``send`` and a dictionary update per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.observability import metrics

Scope = dict[str, Any]
Message = dict[str, Any]
_UNDELIVERED = ("pending", "inflight", "dead")
UNROUTED = "unrouted"  # refused before routing (413, 415) or no route matched (404)


class RequestCounts:
    """``bridge_http_requests_total{route,method,status}``, counted cheaply: per answer it only
    adds one to a dictionary (on the event loop's one thread; an uncontended lock guards it,
    because a scrape flushes it from another thread); the counts go to the Prometheus counters
    at most once a second, and at each scrape of this process (``metrics.flush``), which keeps
    the counter's lock and, in multiprocess mode, its file write off the request path. Another
    process's scrape may therefore see this one's last second late."""

    def __init__(self, flush_every_s: float = 1.0) -> None:
        self._pending: dict[tuple[str, str, int], int] = {}
        self._children: dict[tuple[str, str, int], Any] = {}
        self._every = flush_every_s
        self._flushed = time.monotonic()
        self._lock = threading.Lock()
        metrics.on_flush(self.flush)

    def count(self, route: str, method: str, status: int) -> None:
        key = (route, method, status)
        with self._lock:
            pending = self._pending
            pending[key] = pending.get(key, 0) + 1
        if time.monotonic() - self._flushed >= self._every:
            self.flush()

    def flush(self) -> None:
        """Add the counts since the last flush to the counters."""
        with self._lock:
            self._flushed = time.monotonic()
            pending, self._pending = self._pending, {}
        for key, count in pending.items():
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = metrics.http_requests_child(*key)
            child.inc(count)


class RequestMetrics:
    """Counts every HTTP answer in ``counts``; the route is the template FastAPI matched
    (``/v1/licenses/{license_id}``), never the raw path."""

    def __init__(self, app: Any, counts: RequestCounts | None = None) -> None:
        self.app = app
        self.counts = counts if counts is not None else RequestCounts()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes is answered 500 by the server

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.counts.count(_template(scope), scope["method"], status)


def _template(scope: Scope) -> str:
    """The full template of the route that answered: FastAPI keeps the route of an included
    router relative to it (``/licenses/{license_id}``), and the prefix it was included under
    (``/v1``, ``/v1/accounts/{account}``) in its routing context. ``tests/test_metrics.py``
    holds this to the FastAPI version in use."""
    context = scope.get("fastapi", {}).get("effective_route_context")
    full = getattr(context, "path_format", None)
    if full:
        return str(full)
    path = getattr(scope.get("route"), "path", None)
    if path is None:
        return UNROUTED
    # A route answered outside the router (the usage fast path): its prefix from the URL form.
    if path.startswith("/v1") or not scope["path"].startswith("/v1/"):
        return str(path)
    if "account" in scope.get("path_params", {}):
        return f"/v1/accounts/{{account}}{path}"
    return f"/v1{path}"


# The store's view, read at each scrape: per sink and undelivered status, the count and the
# oldest item's age in seconds (``bridge.service.status.outbox_depth``).
Depth = tuple[str, str, int, float | None]


class StoreCollector(Collector):
    """Gauges read from the database when scraped (a failure is reported, not raised)."""

    def __init__(self, depth: Callable[[], Iterable[Depth]], sinks: Sequence[str]) -> None:
        self._depth = depth
        self._sinks = tuple(sinks)  # reported at 0 when they have nothing undelivered

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "bridge_store_up", "Whether the last scrape could read the store (1) or not (0)"
        )
        items = GaugeMetricFamily(
            "bridge_outbox_items",
            "Outbox items not delivered yet, per sink and status (pending, inflight, dead)",
            labels=["sink", "status"],
        )
        oldest = GaugeMetricFamily(
            "bridge_outbox_oldest_age_seconds",
            "Age of the oldest undelivered (pending or inflight) item, per sink",
            labels=["sink"],
        )
        try:
            rows = list(self._depth())
        except Exception:  # the store is down: say so instead of failing the scrape
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        counts = {(sink, status): 0 for sink in self._sinks for status in _UNDELIVERED}
        ages = dict.fromkeys(self._sinks, 0.0)
        for sink, status, count, age in rows:
            counts[sink, status] = counts.get((sink, status), 0) + count
            if status != "dead" and age is not None:
                ages[sink] = max(age, ages.get(sink, 0.0))
            ages.setdefault(sink, 0.0)
        for (sink, status), count in sorted(counts.items()):
            items.add_metric([sink, status], count)
        for sink, age in sorted(ages.items()):
            oldest.add_metric([sink], age)
        yield from (up, items, oldest)


def registry(depth: Callable[[], Iterable[Depth]], sinks: Sequence[str] = ()) -> CollectorRegistry:
    """The metrics to expose (this process's, or every process's sharing
    ``PROMETHEUS_MULTIPROC_DIR``) with the store's gauges."""
    exposed = CollectorRegistry(auto_describe=False)
    if metrics.multiprocess_dir() is not None:
        multiprocess.MultiProcessCollector(exposed)  # type: ignore[no-untyped-call]
    else:
        exposed.register(_Default())
    exposed.register(StoreCollector(depth, sinks))
    return exposed


def renderer(exposed: CollectorRegistry) -> Callable[[], tuple[bytes, str]]:
    """A function that renders ``exposed`` in Prometheus' text format, with its content type."""

    def render() -> tuple[bytes, str]:
        metrics.flush()
        return generate_latest(exposed), CONTENT_TYPE_LATEST

    return render


def serve_port(exposed: CollectorRegistry, host: str, port: int) -> Callable[[], None]:
    """Serve ``exposed`` on a port of its own (a daemon thread); returns its stop."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, host, registry=exposed)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


class _Default(Collector):
    """The process's own metrics (the default registry: ours, the process and GC ones)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()
