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
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from remoteappmanager.services.leadership import Leadership
from remoteappmanager.web.keys import METRICS

# Requests that match no route share one label value, so that scanners cannot blow up the
# number of time series.
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# The loop-lag probe: a 10 ms timer, as the usual event-loop monitors use; 100 wake-ups a
# second cost well under 1 % of a core.
LOOP_LAG_INTERVAL = 0.01
LOOP_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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
        # ``labels()`` validates and locks on every call: the series of a (route, method,
        # status) are looked up once. The key space is bounded as the labels are.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

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
