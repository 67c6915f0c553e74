"""Prometheus metrics: request counts and latency by route, method and status.

Built on ``prometheus-client`` rather than a home-made registry: its text exposition (escaping,
histogram buckets, ``_created`` samples) is what Prometheus parses, and the same registry is
there for the rest of the service to add its own metrics (container starts, the gate) to.
Each application has its own ``CollectorRegistry``: nothing is global, so tests and several
applications in one process never mix their numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from remoteappmanager.domain.sessions import StartStep
from remoteappmanager.services.leadership import Leadership
from remoteappmanager.services.reconcile import ReconcileReport
from remoteappmanager.web.gate.listener import GateStats
from remoteappmanager.web.keys import METRICS

# Requests that match no route share one label value, so that scanners cannot blow up the
# number of time series.
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The loop-lag probe: a 10 ms timer, as the usual event-loop monitors use; 100 wake-ups a
# second cost well under 1 % of a core.
LOOP_LAG_INTERVAL = 0.01
# Fine around the 10-50 ms where a busy loop's turns fall, so that "20 ms" can be told apart.
LOOP_LAG_BUCKETS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.035)
LOOP_LAG_BUCKETS += (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# A start's steps take from milliseconds (routing) to the network timeout (an application
# that never answers).
START_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The service's metric registry and the HTTP metrics the middleware records."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "remoteapp_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "remoteapp_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "remoteapp_event_loop_lag_seconds",
            "How late the event loop ran a timer due every LOOP_LAG_INTERVAL seconds: the time "
            "during which nothing else (requests, the gate) could run.",
            buckets=LOOP_LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "remoteapp_event_loop_lag_max_seconds",
            "The worst event loop lag seen since the service started.",
            registry=self.registry,
        )
        self.dependency_calls = Histogram(
            "remoteapp_dependency_call_duration_seconds",
            "Calls to the hub, the proxy, the Docker engine and the database (one SQL "
            "statement each), by dependency, operation and outcome (ok, refused: an answer "
            "such as not found; failed: unreachable or nonsense).",
            ("dependency", "operation", "outcome"),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.reconcile_actions = Counter(
            "remoteapp_reconcile_actions",
            "What the reconciler changed: routes added or removed, exited containers removed, "
            "repairs that failed.",
            ("action",),
            registry=self.registry,
        )
        for action in ("route_added", "route_removed", "container_removed", "failed"):
            self.reconcile_actions.labels(action)
        self.reconcile_seconds = Histogram(
            "remoteapp_reconcile_pass_duration_seconds",
            "How long one reconcile pass took.",
            registry=self.registry,
        )
        self.running_sessions = Gauge(
            "remoteapp_running_sessions",
            "Running sessions of this realm by image, as the last reconcile pass found them.",
            ("image",),
            registry=self.registry,
        )
        self.start_steps = Histogram(
            "remoteapp_session_start_step_duration_seconds",
            "How long each step of an application's start took, by image and step "
            "(creating, starting, pulling the image, waiting for the app, routing); a step "
            "that failed is "
            "counted in remoteapp_session_start_failures instead.",
            ("image", "step"),
            buckets=START_STEP_BUCKETS,
            registry=self.registry,
        )
        self.starts = Counter(
            "remoteapp_session_starts",
            "Application starts that ended, by image and outcome (started, failed).",
            ("image", "outcome"),
            registry=self.registry,
        )
        self.start_failures = Counter(
            "remoteapp_session_start_failures",
            "Failed application starts, by image, the step they failed at and the reason "
            "(unable, unavailable, invalid_request, not_found, conflict, cancelled, error...).",
            ("image", "step", "reason"),
            registry=self.registry,
        )
        self.session_stops = Counter(
            "remoteapp_session_stops",
            "Sessions ended, by reason (user, admin, idle, lifetime, oom, died, reconcile); "
            "idle and lifetime are the culler's.",
            ("reason",),
            registry=self.registry,
        )
        # ``labels()`` validates and locks on every call: the series of a (route, method,
        # status) are looked up once. The key space is bounded as the labels are.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._dependency_series: dict[tuple[str, str, str], Histogram] = {}
        self._running_images: set[str] = set()

    def watch_leadership(self, leadership: Leadership) -> None:
        """Export whether this replica leads (runs the reconciler and the other led jobs)."""
        gauge = Gauge(
            "remoteapp_leader",
            "1 while this replica leads: it runs the jobs that act on the whole realm "
            "(reconciling, culling); 0 while another replica does.",
            registry=self.registry,
        )
        gauge.set_function(lambda: 1.0 if leadership.leading else 0.0)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in _METHODS else "other", status)
        series = self._series.get(key)
        if series is None:
            series = (
                self.requests.labels(key[0], key[1], str(status)),
                self.latency.labels(key[0], key[1], str(status)),
            )
            self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def observe_dependency(
        self, dependency: str, operation: str, seconds: float, outcome: str
    ) -> None:
        """One call to a dependency (the signature of ``adapters.observed.Observe``)."""
        key = (dependency, operation, outcome)
        series = self._dependency_series.get(key)
        if series is None:
            series = self.dependency_calls.labels(dependency, operation, outcome)
            self._dependency_series[key] = series
        series.observe(seconds)

    def observe_reconcile(self, report: ReconcileReport) -> None:
        """One reconcile pass: what it changed and the running sessions it saw."""
        actions = self.reconcile_actions
        for action, done in (
            ("route_added", report.routes_added),
            ("route_removed", report.routes_removed),
            ("container_removed", report.containers_removed),
            ("failed", report.errors),
        ):
            if done:
                actions.labels(action).inc(len(done))
        self.reconcile_seconds.observe(report.seconds)
        running = self.running_sessions
        seen = set(report.running_by_image)
        for image in self._running_images - seen:  # an image no longer running: no series
            running.remove(image)
        for image, count in report.running_by_image.items():
            running.labels(image).set(count)
        self._running_images = seen

    def watch_gate(self, stats: GateStats, open_websockets: Callable[[], int]) -> None:
        """Export the gate's plain counters, read when metrics are scraped."""
        self.registry.register(_GateCollector(stats, open_websockets))

    # ------------------------------------------------------------ StartObserver
    def step_finished(self, image: str, step: StartStep, seconds: float) -> None:
        self.start_steps.labels(image, step.value).observe(seconds)

    def start_finished(self, image: str, failed_step: StartStep | None, reason: str | None) -> None:
        if failed_step is None and reason is None:
            self.starts.labels(image, "started").inc()
            return
        self.starts.labels(image, "failed").inc()
        step = failed_step.value if failed_step is not None else "none"
        self.start_failures.labels(image, step, reason or "error").inc()

    def count_stop(self, reason: str) -> None:
        self.session_stops.labels(reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499
        raise
    finally:
        request.app[METRICS].observe(
            route_label(request), request.method, status, time.perf_counter() - started
        )


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def watch_loop_lag(
    metrics: Metrics,
    *,
    interval: float = LOOP_LAG_INTERVAL,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Record, until cancelled, how late a timer due every ``interval`` seconds fires.

    A late timer means a callback held the loop (a synchronous call, bulk work, a long GC
    pause): every request and gate connection waited as long.
    """
    worst = 0.0
    while True:
        due = clock() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, clock() - due)
        metrics.loop_lag.observe(lag)
        if lag > worst:
            worst = lag
            metrics.loop_lag_max.set(worst)


async def loop_lag_lifespan(app: web.Application) -> AsyncIterator[None]:
    """The loop-lag probe runs while the application does."""
    task = asyncio.create_task(watch_loop_lag(app[METRICS]), name="loop-lag")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _GateCollector(Collector):
    """The gate's plain counters, turned into metrics when scraped (nothing per request)."""

    def __init__(self, stats: GateStats, open_websockets: Callable[[], int]) -> None:
        self._stats = stats
        self._open_websockets = open_websockets

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats
        requests = CounterMetricFamily(
            "remoteapp_gate_requests",
            "Requests to running applications, by what the gate did with them.",
            labels=("outcome",),
        )
        for outcome, value in (
            ("forwarded", stats.forwarded),
            ("answered", stats.answered),
            ("failed", stats.failed),
            ("malformed", stats.malformed),
        ):
            requests.add_metric((outcome,), value)
        yield requests
        yield CounterMetricFamily(
            "remoteapp_gate_upgrades",
            "Connections switched to another protocol (WebSocket) through the gate.",
            value=stats.upgraded,
        )
        yield GaugeMetricFamily(
            "remoteapp_gate_connections",
            "Open connections from the proxy to the gate.",
            value=stats.connections,
        )
        yield CounterMetricFamily(
            "remoteapp_gate_crowded",
            "Requests refused (429) because their user had too many under way at once.",
            value=stats.crowded,
        )
        closed = CounterMetricFamily(
            "remoteapp_gate_websockets_closed",
            "WebSockets the gate closed: a protocol violation (either side), or a leg that "
            "did not answer the gate's ping.",
            labels=("reason",),
        )
        yield GaugeMetricFamily(
            "remoteapp_gate_websockets_open",
            "WebSockets open through the gate now.",
            value=self._open_websockets(),
        )
        moved = CounterMetricFamily(
            "remoteapp_gate_bytes",
            "Bytes the gate relayed, by direction (to_apps, to_clients).",
            labels=("direction",),
        )
        moved.add_metric(("to_apps",), stats.bytes_to_apps)
        moved.add_metric(("to_clients",), stats.bytes_to_clients)
        yield moved
        closed.add_metric(("violation",), stats.ws_refused)
        closed.add_metric(("unanswered_ping",), stats.ws_dead)
        yield closed
