"""Admission of requests and the garbage collector: keeping the event loop's turns short.

Under a crowd (hundreds of requests arriving together) the event loop would start every
handler in one turn: at ~0.3 ms each, 200 of them hold every timer, every WebSocket the gate
relays and every other callback for 60 ms. ``admission_middleware`` lets at most
``Settings.max_concurrent_requests`` reads run at once and queues the others first come, first
served (``asyncio.Semaphore`` wakes its waiters in order), so a turn does a bounded amount of
work and latency is shared evenly instead of some requests waiting behind many turns. Writes
(a start waits for the engine for a second) and the operators' ``health`` and ``metrics`` are
not queued.

``tune_garbage_collector``, called once by ``serve`` when the service has started, moves what
start-up built (modules, settings, caches) out of the
collector's sight (``gc.freeze``) and makes collections less frequent: a full collection walks
every tracked object, tens of milliseconds in a large process, during which nothing else runs.
"""

from __future__ import annotations

import asyncio
import gc

from aiohttp import web
from aiohttp.typedefs import Handler

from remoteappmanager.web.keys import ADMISSION, SETTINGS, URLS

_QUEUED_METHODS = frozenset({"GET", "HEAD"})
# Connections the kernel keeps for the service until it accepts them. A crowd connecting at
# once (a proxy's pool filling up, a class signing in together) would otherwise overflow the
# default of 128, and the dropped handshakes are retried after a second.
LISTEN_BACKLOG = 1024
# The young generation is collected 20 times less often than Python's default (700
# allocations): each request allocates thousands of short-lived objects, most of them gone
# before a collection could see them.
GC_THRESHOLDS = (20_000, 20, 50)


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    gate = request.app.get(ADMISSION)
    if gate is None or request.method not in _QUEUED_METHODS or _exempt(request):
        return await handler(request)
    async with gate:
        return await handler(request)


def _exempt(request: web.Request) -> bool:
    prefix = request.app[URLS].prefix
    return request.path in (prefix + "health", prefix + "metrics")


def setup_admission(app: web.Application) -> None:
    """Bound concurrent reads as the settings say (no bound with 0); the middleware must be
    in the application's list (after the request id and metrics: queueing is timed)."""
    limit = app[SETTINGS].max_concurrent_requests
    if limit > 0:
        app[ADMISSION] = asyncio.Semaphore(limit)


def tune_garbage_collector() -> None:
    """Freeze what exists now and collect less often (see the module's docstring)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
